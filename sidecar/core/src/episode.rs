//! A condition that repeats (a store that is down, a broker being reconnected to), logged once
//! when it starts, with a count while it lasts, and once when it clears: an outage of a
//! second is three lines, not one per failed call.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{info, warn};

/// How often a condition that lasts is reported again, with what happened since.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// One kind of repeated failure and its log lines.
#[derive(Debug)]
pub struct Episode {
    /// Logged (WARN) when it starts and while it lasts: `"Dedup store unreachable; holding
    /// messages until it is back."`.
    started: &'static str,
    /// Logged (INFO) when it clears: `"Dedup store reachable again."`.
    cleared: &'static str,
    /// Fast path: nothing to clear while nothing failed.
    active: AtomicBool,
    run: Mutex<Option<Run>>,
}

#[derive(Debug)]
struct Run {
    since: Instant,
    reminded: Instant,
    failures: u64,
}

impl Episode {
    /// A condition with these two log lines.
    pub const fn new(started: &'static str, cleared: &'static str) -> Self {
        Self {
            started,
            cleared,
            active: AtomicBool::new(false),
            run: Mutex::new(None),
        }
    }

    /// One more failure: logged when it starts the condition, and every 30 s while it lasts
    /// (with how many failed since it started); otherwise only counted.
    pub fn failed(&self, error: &dyn Display) {
        let now = Instant::now();
        let mut run = self.run.lock();
        match run.as_mut() {
            None => {
                *run = Some(Run {
                    since: now,
                    reminded: now,
                    failures: 1,
                });
                self.active.store(true, Ordering::Release);
                drop(run);
                warn!(error = %error, "{}", self.started);
            }
            Some(r) => {
                r.failures += 1;
                if now.duration_since(r.reminded) >= REMIND_EVERY {
                    r.reminded = now;
                    let (failures, lasted) = (r.failures, now.duration_since(r.since));
                    drop(run);
                    warn!(
                        error = %error,
                        failures,
                        lasted = %humantime::format_duration(round(lasted)),
                        "{} (still)",
                        self.started
                    );
                }
            }
        }
    }

    /// It worked: when that ends the condition, logged once with how long it lasted.
    pub fn recovered(&self) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let Some(run) = self.run.lock().take() else {
            return;
        };
        self.active.store(false, Ordering::Release);
        info!(
            failures = run.failures,
            lasted = %humantime::format_duration(round(run.since.elapsed())),
            "{}",
            self.cleared
        );
    }

    /// Whether the condition lasts now.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }
}

/// Whole milliseconds: humantime prints nanoseconds otherwise.
fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_starts_once_and_clears_once() {
        let e = Episode::new("down", "up");
        assert!(!e.is_active());
        e.recovered();
        for _ in 0..100 {
            e.failed(&"refused");
        }
        assert!(e.is_active());
        assert_eq!(e.run.lock().as_ref().map(|r| r.failures), Some(100));
        e.recovered();
        assert!(!e.is_active());
        e.failed(&"refused");
        assert_eq!(
            e.run.lock().as_ref().map(|r| r.failures),
            Some(1),
            "a new episode"
        );
    }
}
