//! The per-message pipeline: dedup claim → HTTP delivery → classification → settlement, with
//! in-place retries, throttling and dead letters.
//!
//! [`run`] is the consumer loop: it takes deliveries while a permit of the in-flight limit is
//! free, hands each to its own task ([`worker`]), and on shutdown stops the source, lets in-flight
//! messages finish within the grace period, then releases the rest back to the broker.

mod throttle;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{DedupStore, Source, SourceError};
use outrigger_policies::{Classifier, KeyTemplate, RetryPolicy};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery::HttpDelivery;
use crate::metrics::SourceMetrics;

pub use throttle::ThrottleGate;

/// What to do when the dedup store cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFailureMode {
    /// Hold the message (and, through the in-flight limit, consumption) until the store is back.
    Pause,
    /// Deliver without dedup. An explicit opt-in: duplicates may reach the app.
    Deliver,
}

/// The dedup side of the pipeline.
pub struct Dedup<D> {
    /// The store holding claims and done records.
    pub store: std::sync::Arc<D>,
    /// Behaviour while the store is unreachable.
    pub on_failure: StoreFailureMode,
}

/// Everything a message meets between the broker and its settlement.
pub struct Pipeline<D> {
    /// How the idempotency key is built.
    pub key: KeyTemplate,
    /// Dedup store, or `None` when dedup is off.
    pub dedup: Option<Dedup<D>>,
    /// The HTTP client to the app.
    pub delivery: HttpDelivery,
    /// Response → action rules.
    pub classifier: Classifier,
    /// Attempt budget and backoff.
    pub retry: RetryPolicy,
    /// Messages in flight at once; also the broker prefetch.
    pub max_in_flight: usize,
    /// How long in-flight messages may finish after shutdown begins.
    pub grace_period: Duration,
    /// Shared slow-down after throttle responses.
    pub throttle: ThrottleGate,
    /// Metrics of this source.
    pub metrics: SourceMetrics,
}

/// Consumes `source` until `shutdown` is cancelled or the source ends, then drains.
///
/// Returns an error only for a broker failure retrying cannot fix (a missing queue, refused
/// access); connection failures are retried by the adapter.
pub async fn run<S, D>(
    pipeline: Arc<Pipeline<D>>,
    mut source: S,
    shutdown: CancellationToken,
) -> Result<(), SourceError>
where
    S: Source,
    D: DedupStore,
{
    let permits = Arc::new(Semaphore::new(pipeline.max_in_flight.max(1)));
    // Cancelled once the grace period is over: workers then release their claims and requeue.
    let abort = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut failure = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            n = source.recv() => n,
        };
        match next {
            Ok(Some(delivery)) => {
                backoff = Duration::from_millis(100);
                let job = worker::process(pipeline.clone(), delivery, abort.clone(), permit);
                tasks.spawn(job);
            }
            Ok(None) => break,
            Err(e) if !e.is_retryable() => {
                failure = Some(e);
                break;
            }
            Err(e) => {
                warn!(error = %e, "Source failed; retrying.");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                warn!(error = %e, "Delivery task failed.");
            }
        }
    }
    source.stop().await;
    drain(&mut tasks, pipeline.grace_period, &abort).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Waits for in-flight work; past the grace period, tells it to release and requeue.
async fn drain(tasks: &mut JoinSet<()>, grace: Duration, abort: &CancellationToken) {
    if tasks.is_empty() {
        return;
    }
    info!(in_flight = tasks.len(), "Draining in-flight messages.");
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_done).await.is_ok() {
        return;
    }
    warn!(
        in_flight = tasks.len(),
        "Grace period over; returning unfinished messages to the broker."
    );
    abort.cancel();
    // Releasing is a store call and a nack each; give it a bounded moment, then stop waiting
    // (an unacked message goes back to the broker when the connection closes anyway).
    let released = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), released)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}
