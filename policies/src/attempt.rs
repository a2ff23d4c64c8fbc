//! The fate of a message, one attempt at a time: a pure state machine.
//!
//! After each delivery attempt the pipeline hands the machine what happened (the app's
//! [`Reply`], the classifier's [`Verdict`], the attempt number, the time) and gets back the one
//! [`Next`] to execute: complete the dedup record and ack, deliver again after a wait (in place,
//! or behind the shared throttle gate), write a retry copy (retry mode `queue`), or
//! dead-letter. The machine keeps what it needs across attempts ([`Attempts`]): when the message
//! was first seen and first failed, how often it was throttled, which hop of a retry queue it
//! is on. It never sleeps, calls a store or reads the clock: the worker does, with what it is
//! told.
//!
//! The rules:
//! - `ack` and `drop` complete the key (a dropped key's duplicates are skipped too) and ack.
//! - `dead-letter` dead-letters now; the dedup record is reset so a resubmission starts at
//!   attempt 1.
//! - `throttle` spends no attempt: the claim is refunded and every delivery waits behind the
//!   gate for the app's `Retry-After` or the backoff of the throttle count, unless that wait
//!   would outlive `retry.max_age`, which dead-letters it.
//! - `retry` spends the attempt: while attempts and age allow, the message is delivered again
//!   after the app's `Retry-After` or the backoff (in place), written to the retry queue of its
//!   tier (queue mode), or handed back to the broker to be redelivered after that delay
//!   (redeliver mode); once either budget is spent, it is dead-lettered with the reason.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use outrigger_core::{Action, Coordinates, DeadLetter, Message, Release, Reply, Trail};
use rand::Rng;

use crate::classify::Verdict;
use crate::retry::{Exhausted, RetryDecision, RetryPolicy};

/// Retry mode `queue`: the delay tiers of the retry queues, and what the messages parked behind
/// a dead-lettered one do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryTiers {
    /// The delay of each tier, shortest first by convention.
    pub tiers: Vec<Duration>,
    /// Whether the messages parked behind a dead-lettered one follow it.
    pub dead_letter_parked: bool,
}

impl RetryTiers {
    /// The tier of the copy written after failed attempt `attempt` (from 1): the n-th failure
    /// waits in the n-th tier (the last from then on), or in the first tier at least as long
    /// as the app's `Retry-After`, whichever is later.
    pub fn tier_for(&self, attempt: u32, retry_after: Option<Duration>) -> usize {
        let last = self.tiers.len().saturating_sub(1);
        let by_attempt = (attempt.max(1) as usize - 1).min(last);
        let by_app = retry_after.map_or(0, |wanted| {
            self.tiers
                .iter()
                .position(|delay| *delay >= wanted)
                .unwrap_or(last)
        });
        by_attempt.max(by_app)
    }
}

/// The policy the machine applies: the retry budget and, in queue mode, the tiers.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptPolicy {
    /// Attempts, age limit and backoff.
    pub retry: RetryPolicy,
    /// Retry mode `queue`; `None` retries in place (or by redelivery).
    pub queue: Option<RetryTiers>,
    /// Retry mode `redeliver`: a retry goes back to the broker, which hands it out again after
    /// the delay; the message's age counts from when it was published. Not with `queue`.
    pub redeliver: bool,
    /// An app that cannot be reached is the app's fault (the circuit breaker is on): an
    /// attempt that never got to it spends nothing and waits for the app.
    pub app_faults: bool,
}

/// What a message's attempts have been so far. Starts from the message (a retry copy carries
/// its origin's progress in its trail) and is updated by [`AttemptPolicy::after`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempts {
    /// Where the message was first consumed: the origin a retry copy names.
    origin: Coordinates,
    /// When the sidecar first took it; the age limit counts from here.
    first_seen: SystemTime,
    /// When its first attempt failed.
    first_failure: Option<SystemTime>,
    /// Attempts spent, as far as this sidecar knows (the store's count wins when there is one).
    spent: u32,
    /// Throttle answers so far: the backoff of the next throttle wait.
    throttles: u32,
    /// Attempts in a row that could not reach the app: the backoff of the next wait for it.
    unreachable: u32,
    /// The retry-queue hop of the copy being delivered (0 when not from a retry queue).
    hop: u32,
}

/// Why a message waits before its next delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// It failed: its own backoff (or the app's `Retry-After`), the attempt spent.
    Retry,
    /// The app asked to slow down: every delivery waits at the shared gate, no attempt spent.
    Throttle,
    /// The app could not be reached: it waits for the app (the circuit breaker), no attempt
    /// spent.
    AppDown,
}

/// Whether a completed message was delivered or dropped on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// The app handled it.
    Delivered,
    /// The app (or a rule) asked for it to be dropped.
    Dropped,
}

/// What the pipeline does next with the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Record the key done (compare-and-set on the fence), then ack at the broker.
    Complete(Done),
    /// Release the claim as `release`, wait `delay`, and deliver again.
    Again {
        /// How the claim is given up meanwhile: `Retry` spends the attempt, `Refund` not.
        release: Release,
        /// How long to wait.
        delay: Duration,
        /// Why, and so whose wait it is.
        wait: Wait,
    },
    /// Release the claim (the attempt counts), then write a retry copy carrying this trail and
    /// ack the original once the broker confirmed it.
    RetryQueue(Trail),
    /// Write the dead letter, ack the original once the broker confirmed it, then record the
    /// key as dead-lettered (the claim is kept until then, so no copy runs meanwhile).
    DeadLetter(DeadLetter),
    /// Hand the message back to the broker unsettled, its claim refunded: shutdown came first.
    Requeue,
    /// Release the claim (the attempt counts), then hand the message back to the broker to be
    /// delivered again once `delay` has passed (retry mode `redeliver`).
    Redeliver(Duration),
}

impl Next {
    /// How the dedup claim is given up before the step's broker call, if it is.
    pub fn release(&self) -> Option<Release> {
        match self {
            Next::Complete(_) => None,
            Next::Again { release, .. } => Some(*release),
            Next::RetryQueue(_) => Some(Release::Retry),
            Next::DeadLetter(_) => None,
            Next::Requeue => Some(Release::Refund),
            Next::Redeliver(_) => Some(Release::Retry),
        }
    }
}

impl Attempts {
    /// The progress of `message` as it arrives at `now`: fresh, or its origin's from a retry
    /// copy's trail.
    pub fn start(message: &Message, now: SystemTime) -> Self {
        // The broker's count of earlier hand-outs is a floor: each was an attempt that ended
        // without an outcome (the consumer died during it), even if nothing recorded it.
        let handed_out_before = message.deliveries.map_or(0, |n| n.saturating_sub(1));
        let mut state = match &message.trail {
            Some(trail) => Self {
                origin: trail.origin.clone(),
                first_seen: trail.first_seen,
                first_failure: trail.first_failure,
                spent: trail.attempts,
                throttles: 0,
                unreachable: 0,
                hop: trail.hop,
            },
            None => Self {
                origin: message.coordinates.clone(),
                first_seen: now,
                first_failure: None,
                spent: 0,
                throttles: 0,
                unreachable: 0,
                hop: 0,
            },
        };
        state.spent = state.spent.max(handed_out_before);
        state
    }

    /// The number of the attempt about to start: the store's count when it keeps one
    /// (`claimed`, counting across restarts and replicas), never below what this sidecar and
    /// the broker know were spent.
    pub fn begin(&mut self, claimed: Option<u32>) -> u32 {
        self.spent = claimed.unwrap_or(0).max(self.spent + 1);
        self.spent
    }

    /// How long ago the message was first seen, at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.first_seen).unwrap_or_default()
    }

    /// When the sidecar first took the message.
    pub fn first_seen(&self) -> SystemTime {
        self.first_seen
    }

    /// When its first attempt failed, if one did.
    pub fn first_failure(&self) -> Option<SystemTime> {
        self.first_failure
    }
}

/// One attempt, as it ended.
#[derive(Clone, Copy, Debug)]
pub struct Tried<'a> {
    /// Its number, from 1.
    pub attempt: u32,
    /// What the app answered, or why it did not.
    pub reply: &'a Reply,
    /// What the classifier made of it.
    pub verdict: &'a Verdict,
    /// The message's idempotency key, when one was made: a dead letter names it.
    pub key: Option<&'a str>,
}

impl AttemptPolicy {
    /// The progress of `message` as it arrives at `now` ([`Attempts::start`]). In redeliver
    /// mode a message handed out before lived since it was published, as far as the sidecar
    /// can tell: its age counts from then, so `max_age` bounds it across redeliveries.
    pub fn start(&self, message: &Message, now: SystemTime) -> Attempts {
        let mut state = Attempts::start(message, now);
        let handed_out_before = message.deliveries.is_some_and(|n| n > 1);
        if self.redeliver && handed_out_before && message.trail.is_none() {
            if let Some(published) = message.timestamp {
                state.first_seen = state.first_seen.min(published);
            }
        }
        state
    }

    /// The step after `tried`, at `now`; `state` learns what the attempt changed.
    pub fn after(
        &self,
        state: &mut Attempts,
        tried: Tried<'_>,
        now: SystemTime,
        rng: &mut impl Rng,
    ) -> Next {
        let Tried {
            attempt,
            reply,
            verdict,
            key,
        } = tried;
        let age = state.age(now);
        let exceeds_age = |delay: Duration| {
            self.retry
                .max_age
                .is_some_and(|max| age.saturating_add(delay) > max)
        };
        if self.app_faults && reply.unreachable() {
            // The attempt never got to the app: nothing is spent, the message waits for it.
            state.unreachable += 1;
            let delay = self.retry.backoff.delay(state.unreachable, rng);
            if exceeds_age(delay) {
                let reason = format!(
                    "gave up when the retry age limit ran out: {}",
                    reply.describe()
                );
                let first = state.first_failure.unwrap_or(now);
                return Next::DeadLetter(dead_letter(reply, reason, attempt, first, now, key));
            }
            state.spent = attempt.saturating_sub(1);
            return Next::Again {
                release: Release::Refund,
                delay,
                wait: Wait::AppDown,
            };
        }
        state.unreachable = 0;
        match verdict.action {
            Action::Ack => Next::Complete(Done::Delivered),
            Action::Drop => Next::Complete(Done::Dropped),
            Action::DeadLetter => {
                let first = state.first_failure.unwrap_or(now);
                Next::DeadLetter(dead_letter(
                    reply,
                    reply.describe(),
                    attempt,
                    first,
                    now,
                    key,
                ))
            }
            Action::Throttle => {
                state.throttles += 1;
                let delay = verdict
                    .retry_after
                    .unwrap_or_else(|| self.retry.backoff.delay(state.throttles, rng));
                // Throttling spends no attempt, but the age limit still bounds it.
                if exceeds_age(delay) {
                    let reason = format!(
                        "still throttled when the retry age limit ran out: {}",
                        reply.describe()
                    );
                    let first = state.first_failure.unwrap_or(now);
                    return Next::DeadLetter(dead_letter(reply, reason, attempt, first, now, key));
                }
                // Refunded: without a store to count attempts, the next one has this number again.
                state.spent = attempt.saturating_sub(1);
                Next::Again {
                    release: Release::Refund,
                    delay,
                    wait: Wait::Throttle,
                }
            }
            Action::Retry => {
                let first = *state.first_failure.get_or_insert(now);
                match self.retry.decide(attempt, age, verdict.retry_after, rng) {
                    RetryDecision::RetryAfter(delay) => match &self.queue {
                        Some(queue) => Next::RetryQueue(Trail {
                            origin: state.origin.clone(),
                            hop: state.hop + 1,
                            attempts: attempt,
                            tier: queue.tier_for(attempt, verdict.retry_after),
                            first_seen: state.first_seen,
                            first_failure: Some(first),
                            due: None,
                        }),
                        None if self.redeliver => Next::Redeliver(delay),
                        None => Next::Again {
                            release: Release::Retry,
                            delay,
                            wait: Wait::Retry,
                        },
                    },
                    RetryDecision::Exhausted(why) => {
                        let limit = match why {
                            Exhausted::Attempts => format!("gave up after {attempt} attempts"),
                            Exhausted::Age => "gave up when the retry age limit ran out".to_owned(),
                        };
                        let reason = format!("{limit}: {}", reply.describe());
                        Next::DeadLetter(dead_letter(reply, reason, attempt, first, now, key))
                    }
                }
            }
        }
    }
}

impl AttemptPolicy {
    /// Before attempt `attempt` goes out: a message past its budget before it is even
    /// delivered (its earlier attempts ended without an outcome, a crash during each) goes to
    /// the dead-letter queue instead of the app. `None`: deliver it.
    pub fn before(
        &self,
        state: &Attempts,
        attempt: u32,
        key: Option<&str>,
        now: SystemTime,
    ) -> Option<Next> {
        if attempt <= self.retry.max_attempts {
            return None;
        }
        let reason = format!(
            "gave up after {} attempts: attempt {attempt} would be past the budget, the earlier \
             ones ended without an outcome (the sidecar or the app stopped during each)",
            self.retry.max_attempts
        );
        let first = state.first_failure.unwrap_or(now);
        let none = Reply::Undeliverable("no attempt ended with an answer".to_owned());
        let mut dl = dead_letter(&none, reason, attempt - 1, first, now, key);
        dl.class = "exhausted".to_owned();
        Some(Next::DeadLetter(dl))
    }

    /// The step for a message whose wait for the app (an open circuit) outlived the age
    /// limit at `now`: the dead-letter queue, saying why. `None` while it may wait on.
    pub fn waited_too_long(
        &self,
        state: &Attempts,
        last: &Reply,
        key: Option<&str>,
        now: SystemTime,
    ) -> Option<Next> {
        let max = self.retry.max_age?;
        if state.age(now) < max {
            return None;
        }
        let reason = format!(
            "gave up when the retry age limit ran out: {}",
            last.describe()
        );
        let first = state.first_failure.unwrap_or(now);
        Some(Next::DeadLetter(dead_letter(
            last,
            reason,
            state.spent,
            first,
            now,
            key,
        )))
    }

    /// How much longer a message may wait for the app, at `now`; `None` without an age limit.
    pub fn time_left(&self, state: &Attempts, now: SystemTime) -> Option<Duration> {
        self.retry
            .max_age
            .map(|max| max.saturating_sub(state.age(now)))
    }
}

/// The dead letter of a message whose last attempt got `reply`.
fn dead_letter(
    reply: &Reply,
    reason: String,
    attempts: u32,
    first_failure: SystemTime,
    last_failure: SystemTime,
    key: Option<&str>,
) -> DeadLetter {
    let response_excerpt = match reply {
        Reply::Response(r) => r.body_excerpt.clone(),
        _ => Bytes::new(),
    };
    DeadLetter {
        reason,
        class: reply.class().to_owned(),
        last_status: reply.status(),
        attempts,
        first_failure,
        last_failure,
        key: key.map(str::to_owned),
        response_excerpt,
    }
}

#[cfg(test)]
mod tests;
