//! `[retry]`: how often and how patiently a failing message is tried again.

use std::time::Duration;

use outrigger_policies::{Backoff, BackoffKind, RetryPolicy};
use serde::Deserialize;

use super::de;

/// `[retry]`: the budget of a message whose attempts fail with a retryable error.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// `in_place`: wait and retry while what must keep its order behind the message waits too
    /// (see `[ordering]`). `queue` (kafka): write the message to a retry topic and move on;
    /// later messages with its key are parked behind it, so per-key order still holds.
    #[serde(default)]
    pub mode: RetryMode,
    /// `queue` mode: the delay of each retry topic (`<topic>.retry.1`, `.retry.2`, ...). The
    /// n-th failure waits in the n-th tier (the last one from then on), or in the first tier
    /// at least as long as the app's `Retry-After`. `backoff`, `initial`, `max`, `multiplier`
    /// and `jitter` apply to `in_place` mode and to throttling.
    #[serde(default = "default_tiers", deserialize_with = "de::durations")]
    pub tiers: Vec<Duration>,
    /// `queue` mode: what happens to the messages parked behind one that is dead-lettered:
    /// `continue` (the next one runs) or `dead_letter` (they follow it to the dead-letter
    /// topic, with a reason naming it).
    #[serde(default)]
    pub parked_after_dead_letter: ParkedAfterDeadLetter,
    /// Attempts in total, the first delivery included; then the message is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// No retry starts once the message is this old (counted from its first consumption).
    #[serde(default = "default_max_age", deserialize_with = "de::duration")]
    pub max_age: Duration,
    /// The delay curve: `constant`, `linear` or `exponential`.
    #[serde(default = "default_backoff")]
    pub backoff: BackoffKind,
    /// The delay before the second attempt.
    #[serde(default = "default_initial", deserialize_with = "de::duration")]
    pub initial: Duration,
    /// The longest delay between two attempts, whatever the curve says.
    #[serde(default = "default_max", deserialize_with = "de::duration")]
    pub max: Duration,
    /// Growth factor per attempt for `exponential` (at least 1).
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Fraction of each delay that is randomised (0 to 1), so replicas that failed together
    /// do not retry together.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

impl RetryConfig {
    /// The delay curve between attempts.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            kind: self.backoff,
            initial: self.initial,
            max: self.max,
            multiplier: self.multiplier,
            jitter: self.jitter,
        }
    }

    /// The whole retry budget, as the pipeline applies it.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            max_age: Some(self.max_age),
            backoff: self.backoff(),
        }
    }
}

/// How a message waits for its next attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    /// Block the queue, partition or key (see `[ordering]`) while waiting: keeps strict order.
    /// The default, because reordering is the surprise users notice first.
    #[default]
    InPlace,
    /// Write the message to a retry topic and go on; per-key order still holds (kafka).
    Queue,
    /// Hand the message back to the broker, which delivers it again after the backoff, and go
    /// on (nats: a nak with a delay). Frees the sidecar meanwhile, but later messages overtake
    /// the retried one: ordering must be `none`.
    Redeliver,
}

/// What the messages parked behind a dead-lettered one do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkedAfterDeadLetter {
    /// The next one runs: each event stands on its own. The default.
    #[default]
    Continue,
    /// They follow it to the dead-letter topic: for events that make no sense without it.
    DeadLetter,
}

/// A glitch, a restart, a short outage: three tiers cover what a retry can fix.
fn default_tiers() -> Vec<Duration> {
    vec![
        Duration::from_secs(1),
        Duration::from_secs(10),
        Duration::from_secs(60),
    ]
}

/// Enough to ride out a restart of the app or a brief dependency outage.
const fn default_max_attempts() -> u32 {
    5
}

/// An event an hour old is usually stale for its consumer; an operator should look at it.
fn default_max_age() -> Duration {
    Duration::from_secs(60 * 60)
}

/// Backs off fast from a struggling app, yet retries a one-off glitch quickly.
const fn default_backoff() -> BackoffKind {
    BackoffKind::Exponential
}

/// Short enough that a one-off glitch costs little latency.
fn default_initial() -> Duration {
    Duration::from_millis(200)
}

/// Caps the wait so a recovered app is noticed within half a minute.
fn default_max() -> Duration {
    Duration::from_secs(30)
}

/// Doubling: the usual exponential backoff.
const fn default_multiplier() -> f64 {
    2.0
}

/// Spreads retries of replicas that failed together over a fifth of the delay.
const fn default_jitter() -> f64 {
    0.2
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            mode: RetryMode::default(),
            tiers: default_tiers(),
            parked_after_dead_letter: ParkedAfterDeadLetter::default(),
            max_attempts: default_max_attempts(),
            max_age: default_max_age(),
            backoff: default_backoff(),
            initial: default_initial(),
            max: default_max(),
            multiplier: default_multiplier(),
            jitter: default_jitter(),
        }
    }
}
