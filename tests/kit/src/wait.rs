//! Waiting for a condition with a deadline: no test sleeps to synchronise.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(20);

/// What a condition answers: `true` once it holds, or `Some(value)` once it has a value.
pub trait Reached {
    /// What [`wait_until`] returns once the condition is reached.
    type Value;

    /// `Some` once reached.
    fn reached(self) -> Option<Self::Value>;
}

impl Reached for bool {
    type Value = ();

    fn reached(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Reached for Option<T> {
    type Value = T;

    fn reached(self) -> Option<T> {
        self
    }
}

/// Polls `check` until it is reached and returns what it gave (nothing for a `bool`); panics
/// naming `what` once `limit` has passed.
///
/// The deadline is wall-clock time, so a test that pauses tokio's clock still fails in time.
pub async fn wait_until<F, Fut>(
    what: &str,
    limit: Duration,
    mut check: F,
) -> <Fut::Output as Reached>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Reached,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await.reached() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `future`'s output, which must come within `limit`; panics naming `what` otherwise.
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for: {what}"))
}
