//! One message's journey: claim, deliver, classify, and settle exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use outrigger_core::{
    Acker, Action, Claim, Completion, DeadLetter, DedupStore, Delivery, Message, Release, Reply,
    Settlement,
};
use outrigger_policies::{Exhausted, RetryDecision};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn, Instrument};

use super::{Pipeline, StoreFailureMode};
use crate::delivery::Attempt;

/// Outcome labels of `outrigger_messages_settled_total`.
mod outcome {
    pub const DELIVERED: &str = "delivered";
    pub const DUPLICATE: &str = "duplicate";
    pub const DROPPED: &str = "dropped";
    pub const DEAD_LETTERED: &str = "dead_lettered";
}

/// Backoff bounds for waiting on the dedup store or the dead-letter destination.
const WAIT_MIN: Duration = Duration::from_millis(50);
const WAIT_MAX: Duration = Duration::from_secs(2);
/// Longest pause between polls of a key another holder is working on: short, because the
/// holder usually finishes long before its lease runs out.
const BUSY_POLL_MAX: Duration = Duration::from_millis(250);

/// How a message leaves the pipeline.
enum Fate {
    /// Ack at the broker; the label says why.
    Ack(&'static str),
    /// Publish to the dead-letter destination, then ack.
    DeadLetter(DeadLetter),
    /// Hand back to the broker unsettled (shutdown past its grace period).
    Requeue,
}

/// A live dedup claim.
#[derive(Clone, Copy)]
struct Held {
    fence: u64,
    attempt: u32,
}

/// Processes one delivery to its settlement; the permit is held until then.
pub(super) async fn process<A, D>(
    pipeline: Arc<Pipeline<D>>,
    delivery: Delivery<A>,
    abort: CancellationToken,
    _permit: OwnedSemaphorePermit,
    _lane: super::LaneDone,
) where
    A: Acker,
    D: DedupStore,
{
    let Delivery { message, acker } = delivery;
    let metrics = &pipeline.metrics;
    let bytes = message.payload.len() as i64;
    metrics.consumed.inc();
    metrics.in_flight.inc();
    metrics.buffered_bytes.add(bytes);
    let span = tracing::debug_span!("delivery", source = %message.coordinates);
    async {
        let job = Job {
            p: &pipeline,
            message: &message,
            abort: &abort,
        };
        let fate = job.decide().await;
        job.settle(acker, fate).await;
    }
    .instrument(span)
    .await;
    metrics.in_flight.dec();
    metrics.buffered_bytes.sub(bytes);
}

struct Job<'a, D> {
    p: &'a Pipeline<D>,
    message: &'a Message,
    abort: &'a CancellationToken,
}

impl<D: DedupStore> Job<'_, D> {
    /// Runs attempts until the message has a fate.
    async fn decide(&self) -> Fate {
        let key = self.p.key.extract(self.message).map_err(|e| e.to_string());
        let first_seen = Instant::now();
        let mut first_failure = None;
        let mut local_attempts = 0u32;
        let mut throttles = 0u32;
        loop {
            let held = match &key {
                Ok(k) => match self.claim(k).await {
                    Some(Ok(held)) => held,
                    Some(Err(fate)) => return fate,
                    None => return Fate::Requeue,
                },
                Err(_) => None,
            };
            local_attempts += 1;
            let attempt = held.map_or(local_attempts, |h| h.attempt);

            let reply = match &key {
                Err(why) => Reply::Undeliverable(why.clone()),
                Ok(k) => {
                    let send = async {
                        self.p.throttle.wait().await;
                        let attempt = Attempt {
                            key: Some(k),
                            attempt,
                            fence: held.map(|h| h.fence),
                        };
                        self.p.delivery.send(self.message, attempt).await
                    };
                    tokio::select! {
                        biased;
                        _ = self.abort.cancelled() => {
                            self.release(k, held, Release::Refund).await;
                            return Fate::Requeue;
                        }
                        (reply, took) = send => {
                            self.p.metrics.duration.observe(took.as_secs_f64());
                            reply
                        }
                    }
                }
            };
            self.p.metrics.attempt(reply.class());
            let verdict = self.p.classifier.classify(&reply);
            let key = key.as_deref().ok();
            debug!(attempt, class = reply.class(), action = %verdict.action, "Attempt classified.");

            match verdict.action {
                Action::Ack => {
                    if let (Some(k), Some(h)) = (key, held) {
                        if !self.complete(k, h).await {
                            return Fate::Requeue;
                        }
                    }
                    return Fate::Ack(outcome::DELIVERED);
                }
                Action::Drop => {
                    // Dropping is a final outcome like success: its duplicates are skipped too.
                    if let (Some(k), Some(h)) = (key, held) {
                        if !self.complete(k, h).await {
                            return Fate::Requeue;
                        }
                    }
                    return Fate::Ack(outcome::DROPPED);
                }
                Action::DeadLetter => {
                    let now = SystemTime::now();
                    let dl = self.dead_letter(
                        &reply,
                        reply.describe(),
                        attempt,
                        first_failure.unwrap_or(now),
                        now,
                        key,
                    );
                    if let Some(k) = key {
                        self.release(k, held, Release::Reset).await;
                    }
                    return Fate::DeadLetter(dl);
                }
                Action::Throttle => {
                    self.p.metrics.throttled.inc();
                    throttles += 1;
                    let delay = verdict
                        .retry_after
                        .unwrap_or_else(|| self.p.retry.backoff.delay(throttles, &mut rand::rng()));
                    // Throttling spends no attempt, but the age limit still bounds it.
                    if self
                        .p
                        .retry
                        .max_age
                        .is_some_and(|max| first_seen.elapsed() + delay > max)
                    {
                        let now = SystemTime::now();
                        let reason = format!(
                            "still throttled when the retry age limit ran out: {}",
                            reply.describe()
                        );
                        let first = first_failure.unwrap_or(now);
                        let dl = self.dead_letter(&reply, reason, attempt, first, now, key);
                        if let Some(k) = key {
                            self.release(k, held, Release::Reset).await;
                        }
                        return Fate::DeadLetter(dl);
                    }
                    self.p.throttle.engage(delay);
                    if let Some(k) = key {
                        self.release(k, held, Release::Refund).await;
                    }
                }
                Action::Retry => {
                    let now = SystemTime::now();
                    let first = *first_failure.get_or_insert(now);
                    let decision = self.p.retry.decide(
                        attempt,
                        first_seen.elapsed(),
                        verdict.retry_after,
                        &mut rand::rng(),
                    );
                    match decision {
                        RetryDecision::RetryAfter(delay) => {
                            self.p.metrics.retried.inc();
                            if let Some(k) = key {
                                self.release(k, held, Release::Retry).await;
                            }
                            tokio::select! {
                                _ = self.abort.cancelled() => return Fate::Requeue,
                                _ = tokio::time::sleep(delay) => {}
                            }
                        }
                        RetryDecision::Exhausted(why) => {
                            let limit = match why {
                                Exhausted::Attempts => format!("gave up after {attempt} attempts"),
                                Exhausted::Age => {
                                    "gave up when the retry age limit ran out".to_owned()
                                }
                            };
                            let reason = format!("{limit}: {}", reply.describe());
                            let dl = self.dead_letter(&reply, reason, attempt, first, now, key);
                            if let Some(k) = key {
                                self.release(k, held, Release::Reset).await;
                            }
                            return Fate::DeadLetter(dl);
                        }
                    }
                }
            }
        }
    }

    /// Claims the key. `Some(Ok(None))`: deliver without a claim (dedup off, or the store is
    /// down and the policy says deliver). `Some(Err(fate))`: the message is settled without
    /// delivery (a duplicate). `None`: shutdown interrupted the wait.
    async fn claim(&self, key: &str) -> Option<Result<Option<Held>, Fate>> {
        let Some(dedup) = &self.p.dedup else {
            return Some(Ok(None));
        };
        let mut wait = Duration::from_millis(10);
        loop {
            let pause = match dedup.store.claim(key).await {
                Ok(Claim::Acquired { fence, attempt }) => {
                    return Some(Ok(Some(Held { fence, attempt })))
                }
                Ok(Claim::Done) => return Some(Err(Fate::Ack(outcome::DUPLICATE))),
                // Another holder is working on this key: wait for it, never run twice at once.
                Ok(Claim::Busy { retry_in }) => {
                    let w = wait.min(retry_in).max(Duration::from_millis(1));
                    wait = (wait * 2).min(BUSY_POLL_MAX);
                    w
                }
                Err(e) => {
                    self.p.metrics.store_errors.inc();
                    if dedup.on_failure == StoreFailureMode::Deliver {
                        warn!(error = %e, "Dedup store unreachable; delivering without dedup as configured.");
                        return Some(Ok(None));
                    }
                    warn!(error = %e, "Dedup store unreachable; holding the message until it is back.");
                    let w = wait;
                    wait = (wait * 2).min(WAIT_MAX);
                    w
                }
            };
            tokio::select! {
                _ = self.abort.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Records the key as done before anything is acked. False when shutdown interrupted a store
    /// outage: the message then goes back to the broker.
    async fn complete(&self, key: &str, held: Held) -> bool {
        let Some(dedup) = &self.p.dedup else {
            return true;
        };
        let mut wait = WAIT_MIN;
        loop {
            match dedup.store.complete(key, held.fence).await {
                Ok(Completion::Completed) => return true,
                Ok(Completion::Fenced { current }) => {
                    // A newer claimant owns the key now; its outcome decides the key's fate.
                    self.p.metrics.fenced.inc();
                    warn!(
                        fence = held.fence,
                        current,
                        "Completion fenced: the lease expired and another claim took over."
                    );
                    return true;
                }
                Err(e) => {
                    self.p.metrics.store_errors.inc();
                    if dedup.on_failure == StoreFailureMode::Deliver {
                        warn!(error = %e, "Dedup store unreachable; acking without a done record as configured.");
                        return true;
                    }
                    warn!(error = %e, "Dedup store unreachable; cannot record the delivery yet.");
                }
            }
            tokio::select! {
                _ = self.abort.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(WAIT_MAX);
        }
    }

    /// Gives up a claim; a failure only means the lease runs out on its own.
    async fn release(&self, key: &str, held: Option<Held>, how: Release) {
        let (Some(dedup), Some(held)) = (&self.p.dedup, held) else {
            return;
        };
        if let Err(e) = dedup.store.release(key, held.fence, how).await {
            self.p.metrics.store_errors.inc();
            debug!(error = %e, "Release failed; the lease will expire instead.");
        }
    }

    fn dead_letter(
        &self,
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

    /// Settles at the broker. A dead letter is retried until the broker confirms it: the
    /// original is never acked before that.
    async fn settle<A: Acker>(&self, acker: A, fate: Fate) {
        let metrics = &self.p.metrics;
        let (label, class, settlement) = match fate {
            Fate::Ack(label) => (Some(label), None, Settlement::Ack),
            Fate::DeadLetter(dl) => {
                let class = dl.class.clone();
                (
                    Some(outcome::DEAD_LETTERED),
                    Some(class),
                    Settlement::DeadLetter(dl),
                )
            }
            Fate::Requeue => (None, None, Settlement::Requeue),
        };
        let mut acker = acker;
        let mut settlement = settlement;
        let mut wait = WAIT_MIN;
        loop {
            match acker.settle(settlement).await {
                Ok(()) => break,
                Err(unsettled) => {
                    let unsettled = *unsettled;
                    if !matches!(unsettled.settlement, Settlement::DeadLetter(_)) {
                        // The broker redelivers what we could not settle; dedup skips it then.
                        warn!(error = %unsettled.error, "Could not settle the message; the broker will redeliver it.");
                        return;
                    }
                    metrics.dlq_failures.inc();
                    error!(error = %unsettled.error, source = %self.message.coordinates, "Dead-letter publish failed; the message stays unacked and will be retried.");
                    if self.abort.is_cancelled() {
                        let _ = unsettled.acker.settle(Settlement::Requeue).await;
                        return;
                    }
                    tokio::select! {
                        _ = self.abort.cancelled() => {
                            let _ = unsettled.acker.settle(Settlement::Requeue).await;
                            return;
                        }
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                    acker = unsettled.acker;
                    settlement = unsettled.settlement;
                }
            }
        }
        match label {
            Some(outcome::DELIVERED) => metrics.delivered.inc(),
            Some(outcome::DUPLICATE) => metrics.duplicates.inc(),
            Some(outcome::DROPPED) => metrics.dropped.inc(),
            _ => {}
        }
        if let Some(class) = class {
            metrics.dead_lettered(&class);
            warn!(source = %self.message.coordinates, class, "Dead-lettered message.");
        }
        if let Some(label) = label {
            metrics.settled(label);
        }
    }
}
