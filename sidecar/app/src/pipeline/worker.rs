//! One message's journey: claim, deliver, classify, and settle exactly once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use outrigger_core::dead_letters::resubmit_headers;
use outrigger_core::{
    Acker, Action, Claim, Completion, DeadLetter, DedupStore, Delivery, Message, ParkingStore,
    Release, Reply, Settlement, Trail,
};
use outrigger_policies::{Arrival, Exhausted, Finish, KeyError, RetryDecision, Turn};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn, Instrument};

use super::parking::{self, Link, Role, Step};
use super::{sleep_unless, Backoff, Pipeline, StoreFailureMode, WAIT_MAX};
use crate::delivery::Attempt;

/// Outcome labels of `outrigger_messages_settled_total`.
mod outcome {
    pub const DELIVERED: &str = "delivered";
    pub const DUPLICATE: &str = "duplicate";
    pub const DROPPED: &str = "dropped";
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Written to a retry queue after a failure (retry mode `queue`).
    pub const RETRY_QUEUED: &str = "retry_queued";
    /// Written to a retry queue to wait behind its key's parked head.
    pub const PARKED: &str = "parked";
    /// A retry copy that was read again after its message was settled.
    pub const STALE: &str = "stale";
}

/// The failure class of dead letters a chain caused (followers, interrupted writes).
const PARKED_CLASS: &str = "parked";

/// Longest wait between writes of a dead letter or retry copy the broker did not confirm.
const PUBLISH_WAIT_MAX: Duration = Duration::from_secs(5);
/// Longest pause between polls of a key another holder is working on: short, because the
/// holder usually finishes long before its lease runs out.
const BUSY_POLL_MAX: Duration = Duration::from_millis(250);

/// How a message leaves the pipeline.
enum Fate {
    /// Ack at the broker; the label says why.
    Ack(&'static str),
    /// Publish to the dead-letter destination, then ack.
    DeadLetter(DeadLetter),
    /// Write to a retry queue, then ack (retry mode `queue`).
    Retry(Trail),
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
    D: DedupStore + ParkingStore,
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
        job.run(acker).await;
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

impl<D: DedupStore + ParkingStore> Job<'_, D> {
    /// Finds the message's fate and settles it, keeping its key's chain in step (retry mode
    /// `queue`): what must be recorded before the broker settles happens before, the rest
    /// after, so a crash in between never loses a message or strands a chain.
    async fn run<A: Acker>(&self, acker: A) {
        let mut link = self
            .p
            .retry_queue
            .as_ref()
            .and_then(|_| Link::of(self.message))
            .filter(|_| self.p.ordering != outrigger_policies::OrderingMode::None);
        let fate = match self.enter(link.as_mut()).await {
            Some(fate) => fate,
            None => self.decide().await,
        };
        let (before, after) = match &link {
            Some(link) => self.chain_steps(link.role, &fate),
            None => (None, None),
        };
        if let (Some(link), Some(step)) = (&link, &before) {
            if !self.chain(link, step).await {
                // Shutdown interrupted a store outage: the broker delivers it again.
                self.settle(acker, Fate::Requeue).await;
                return;
            }
        }
        if self.settle(acker, fate).await {
            if let (Some(link), Some(step)) = (&link, &after) {
                self.chain(link, step).await;
            }
        }
    }

    /// Retry mode `queue`: what the message's chain says before it may run. `None`: run it.
    async fn enter(&self, link: Option<&mut Link>) -> Option<Fate> {
        let link = link?;
        let store = &self.p.dedup.as_ref()?.store;
        let metrics = &self.p.metrics;
        let now = SystemTime::now();
        match &self.message.trail {
            None => {
                let arrival = parking::update(&**store, &link.id, self.abort, metrics, |c| {
                    c.arrive(&link.entry)
                })
                .await;
                let Some(arrival) = arrival else {
                    return Some(Fate::Requeue);
                };
                match arrival {
                    Arrival::Free => None,
                    Arrival::Park { tier, hop } => {
                        link.role = Role::Parked;
                        Some(Fate::Retry(Trail {
                            origin: self.message.coordinates.clone(),
                            hop,
                            attempts: 0,
                            tier: tier.unwrap_or(0),
                            first_seen: now,
                            first_failure: None,
                            due: None,
                        }))
                    }
                }
            }
            Some(trail) => {
                let turn = parking::update(&**store, &link.id, self.abort, metrics, |c| {
                    c.turn(&link.entry, trail.hop)
                })
                .await;
                let Some(turn) = turn else {
                    return Some(Fate::Requeue);
                };
                match turn {
                    Turn::Run => {
                        link.role = Role::Head;
                        None
                    }
                    Turn::Stale => Some(Fate::Ack(outcome::STALE)),
                    Turn::Wait { tier } => {
                        link.role = Role::Parked;
                        Some(Fate::Retry(Trail {
                            tier: tier.unwrap_or(trail.tier),
                            due: None,
                            ..trail.clone()
                        }))
                    }
                    Turn::Follow { head } => {
                        link.role = Role::Doomed;
                        let reason = format!(
                            "parked behind {head}, which was dead-lettered (retry.parked_after_dead_letter = \"dead_letter\")"
                        );
                        Some(Fate::DeadLetter(self.chain_dead_letter(trail, reason)))
                    }
                    Turn::Redo { reason } => {
                        link.role = Role::Doomed;
                        Some(Fate::DeadLetter(self.chain_dead_letter(trail, reason)))
                    }
                }
            }
        }
    }

    /// The chain steps around a settlement: one before (recorded first), one after.
    fn chain_steps(&self, role: Role, fate: &Fate) -> (Option<Step>, Option<Step>) {
        let follow = self
            .p
            .retry_queue
            .as_ref()
            .is_some_and(|q| q.dead_letter_parked);
        match (role, fate) {
            (Role::Head, Fate::Ack(_)) => (Some(Step::Finish(Finish::Done)), None),
            (Role::Head | Role::Doomed, Fate::DeadLetter(dl)) => (
                Some(Step::Finish(Finish::DeadLettered {
                    reason: dl.reason.clone(),
                    follow: follow && role == Role::Head,
                })),
                Some(Step::Cleared),
            ),
            // A new chain exists before its head's copy can be read ...
            (Role::Free, Fate::Retry(t)) => (
                Some(Step::Failed {
                    tier: t.tier,
                    hop: t.hop,
                }),
                None,
            ),
            // ... and a head moves on only once its new copy is written.
            (Role::Head, Fate::Retry(t)) => (
                None,
                Some(Step::Failed {
                    tier: t.tier,
                    hop: t.hop,
                }),
            ),
            _ => (None, None),
        }
    }

    async fn chain(&self, link: &Link, step: &Step) -> bool {
        let Some(dedup) = &self.p.dedup else {
            return true;
        };
        parking::apply(&*dedup.store, link, step, self.abort, &self.p.metrics).await
    }

    /// The dead letter of a message its chain sends to the dead-letter queue.
    fn chain_dead_letter(&self, trail: &Trail, reason: String) -> DeadLetter {
        let now = SystemTime::now();
        DeadLetter {
            reason,
            class: PARKED_CLASS.to_owned(),
            last_status: None,
            attempts: trail.attempts,
            first_failure: trail.first_failure.unwrap_or(now),
            last_failure: now,
            key: self.dedup_key().ok(),
            response_excerpt: Bytes::new(),
        }
    }

    /// The idempotency key: the original's for a resubmitted dead letter (see
    /// `resubmit_headers::KEY`), else what the policy's template makes of the message.
    fn dedup_key(&self) -> Result<String, KeyError> {
        match self.message.header_str(resubmit_headers::KEY) {
            Some(key) if !key.is_empty() => Ok(key.to_owned()),
            _ => self.p.key.extract(self.message),
        }
    }

    /// Runs attempts until the message has a fate.
    async fn decide(&self) -> Fate {
        let key = self.dedup_key().map_err(|e| e.to_string());
        let trail = self.message.trail.as_ref();
        // Age counts from the first time the sidecar took the message, retry queues included.
        let first_seen = trail.map_or_else(SystemTime::now, |t| t.first_seen);
        let age = || first_seen.elapsed().unwrap_or_default();
        let mut first_failure = trail.and_then(|t| t.first_failure);
        let mut local_attempts = trail.map_or(0, |t| t.attempts);
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
                    if self.p.retry.max_age.is_some_and(|max| age() + delay > max) {
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
                    let decision =
                        self.p
                            .retry
                            .decide(attempt, age(), verdict.retry_after, &mut rand::rng());
                    match decision {
                        RetryDecision::RetryAfter(delay) => {
                            self.p.metrics.retried.inc();
                            if let Some(k) = key {
                                self.release(k, held, Release::Retry).await;
                            }
                            if let Some(queue) = &self.p.retry_queue {
                                return Fate::Retry(Trail {
                                    origin: self.message.coordinates.clone(),
                                    hop: trail.map_or(0, |t| t.hop) + 1,
                                    attempts: attempt,
                                    tier: queue.tier_for(attempt, verdict.retry_after),
                                    first_seen,
                                    first_failure: Some(first),
                                    due: None,
                                });
                            }
                            if !sleep_unless(self.abort, delay).await {
                                return Fate::Requeue;
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
            if !sleep_unless(self.abort, pause).await {
                return None;
            }
        }
    }

    /// Records the key as done before anything is acked. False when shutdown interrupted a store
    /// outage: the message then goes back to the broker.
    async fn complete(&self, key: &str, held: Held) -> bool {
        let Some(dedup) = &self.p.dedup else {
            return true;
        };
        let mut backoff = Backoff::up_to(WAIT_MAX);
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
            if !backoff.pause(self.abort).await {
                return false;
            }
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

    /// Settles at the broker; true once it did. A dead letter or retry copy is written again
    /// until the broker confirms it: the original is never acked before that.
    async fn settle<A: Acker>(&self, acker: A, fate: Fate) -> bool {
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
            Fate::Retry(trail) => {
                let label = if trail.attempts == 0 || trail.first_failure.is_none() {
                    outcome::PARKED
                } else {
                    outcome::RETRY_QUEUED
                };
                (Some(label), None, Settlement::Retry(trail))
            }
            Fate::Requeue => (None, None, Settlement::Requeue),
        };
        let mut acker = acker;
        let mut settlement = settlement;
        let mut backoff = Backoff::up_to(PUBLISH_WAIT_MAX);
        loop {
            match acker.settle(settlement).await {
                Ok(()) => break,
                Err(unsettled) => {
                    let unsettled = *unsettled;
                    let what = match &unsettled.settlement {
                        Settlement::DeadLetter(_) => "Dead-letter publish",
                        Settlement::Retry(_) => "Retry-queue write",
                        _ => {
                            // The broker redelivers what we could not settle; dedup skips it then.
                            warn!(error = %unsettled.error, "Could not settle the message; the broker will redeliver it.");
                            return false;
                        }
                    };
                    metrics.dlq_failures.inc();
                    error!(error = %unsettled.error, source = %self.message.coordinates, "{what} failed; the message stays unacked and will be retried.");
                    if !backoff.pause(self.abort).await {
                        let _ = unsettled.acker.settle(Settlement::Requeue).await;
                        return false;
                    }
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
        label.is_some()
    }
}
