//! Waiting for a condition with a deadline, never a fixed sleep.

use std::time::{Duration, Instant};

/// Polls `check` until it gives a value; panics with `what` once `timeout` has passed.
pub fn until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
