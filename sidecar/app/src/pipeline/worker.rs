//! One message's journey: claim, deliver, and execute what the attempt machine
//! (`outrigger_policies::attempt`) and the chain rules (`outrigger_policies::chain::link`)
//! decide, until the message is settled exactly once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use outrigger_core::dlq::resubmit_headers;
use outrigger_core::{
    Acker, Claim, Completion, DeadLetter, DedupStore, Delivery, Message, OrderingMode,
    ParkingStore, Release, Reply, SequenceStore, Settlement, StoreError, Trail,
};
use outrigger_policies::chain::link::{self, ChainStep, Meeting, Settling};
use outrigger_policies::{Attempts, Done, Keyed, Next, Tried, Wait};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn, Instrument};

use super::parking::{self, Link};
use super::preclaim::{self, PreClaim};
use super::sequence::Sequenced;
use super::{sleep_unless, Doubling, Pipeline, Route, StoreFailureMode, WAIT_MAX};
use crate::config::RouteAction;
use crate::delivery::Attempt;

/// Outcome labels of `outrigger_messages_settled_total`.
mod outcome {
    pub const DELIVERED: &str = "delivered";
    pub const DUPLICATE: &str = "duplicate";
    /// A copy of a message whose dead letter was already written (read again after a crash).
    pub const ALREADY_DEAD_LETTERED: &str = "already_dead_lettered";
    pub const DROPPED: &str = "dropped";
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Written to a retry queue after a failure (retry mode `queue`).
    pub const RETRY_QUEUED: &str = "retry_queued";
    /// Handed back to the broker after a failure, to be redelivered after the backoff (retry
    /// mode `redeliver`).
    pub const REDELIVERY: &str = "redelivery";
    /// Written to a retry queue to wait behind its key's parked head.
    pub const PARKED: &str = "parked";
    /// A retry copy that was read again after its message was settled.
    pub const STALE: &str = "stale";
}

/// The claim to record as dead-lettered, when there is one.
fn mark(key: Option<&str>, held: Option<Held>) -> Option<Mark> {
    Some(Mark {
        key: key?.to_owned(),
        held: held?,
    })
}

/// The failure class of dead letters a chain caused (followers, interrupted writes).
const PARKED_CLASS: &str = "parked";

/// The failure class of dead letters a route with `action = "dead_letter"` wrote.
const ROUTE_CLASS: &str = "route";

/// The failure class of dead letters the reorder buffer wrote: behind their key's sequence, or
/// given up with their gap.
const SEQUENCE_CLASS: &str = "sequence";

/// The failure class of a message whose sequence cannot be read.
const DECODE_CLASS: &str = "decode";

/// Longest wait between writes of a dead letter or retry copy the broker did not confirm.
const PUBLISH_WAIT_MAX: Duration = Duration::from_secs(5);
/// Longest pause between polls of a key another holder is working on: short, because the
/// holder usually finishes long before its lease runs out.
const BUSY_POLL_MAX: Duration = Duration::from_millis(250);

/// How a message leaves the pipeline.
enum Fate {
    /// Ack at the broker; the label says why.
    Ack(&'static str),
    /// Publish to the dead-letter destination, then ack; then, when the message held a claim,
    /// record its key as dead-lettered, so a copy handed out again is not delivered and
    /// dead-lettered a second time.
    DeadLetter(DeadLetter, Option<Mark>),
    /// Write to a retry queue, then ack (retry mode `queue`).
    Retry(Trail),
    /// Hand back to the broker unsettled (shutdown past its grace period).
    Requeue,
    /// Hand back to the broker, to be redelivered after the delay (retry mode `redeliver`).
    Redeliver(Duration),
}

impl Fate {
    /// What the message's chain needs to know of this fate.
    fn settling(&self) -> Settling<'_> {
        match self {
            Fate::Ack(_) => Settling::Ack,
            Fate::DeadLetter(dl, _) => Settling::DeadLetter(&dl.reason),
            Fate::Retry(t) => Settling::Retry {
                tier: t.tier,
                hop: t.hop,
            },
            // No chains outside queue mode: handed back like a requeue.
            Fate::Requeue | Fate::Redeliver(_) => Settling::Requeue,
        }
    }
}

/// What waiting at the circuit breaker came to.
enum Admitted<'a> {
    /// Deliver.
    Go(super::breaker::Pass<'a>),
    /// The message leaves without a delivery: shutdown, or it outlived its age limit.
    Gone(Fate),
}

/// The claim of a message going to the dead-letter queue, to record as dead-lettered once the
/// broker confirmed the dead letter.
struct Mark {
    key: String,
    held: Held,
}

/// A live dedup claim.
#[derive(Clone, Copy)]
struct Held {
    fence: u64,
    attempt: u32,
}

/// What was found out about a message before its worker runs.
pub(super) struct Before<D: DedupStore> {
    /// Its key's claim, made while it waited for its lane.
    pub(super) early: Option<PreClaim<D>>,
    /// Where it stands in its key's sequence, when it has one.
    pub(super) sequence: Option<Sequenced>,
}

/// Processes one delivery to its settlement; the permit is held until then.
pub(super) async fn process<A, D>(
    pipeline: Arc<Pipeline<D>>,
    route: Arc<Route>,
    delivery: Delivery<A>,
    abort: CancellationToken,
    _permit: OwnedSemaphorePermit,
    before: Before<D>,
    lane: super::LaneDone,
) where
    A: Acker,
    D: DedupStore + ParkingStore + SequenceStore,
{
    let Delivery { message, acker } = delivery;
    let metrics = &pipeline.metrics;
    let bytes = message.payload.len() as i64;
    metrics.consumed.inc();
    if message.redelivered || message.deliveries.is_some_and(|n| n > 1) {
        metrics.redelivered.inc();
    }
    metrics.in_flight.inc();
    metrics.buffered_bytes.add(bytes);
    let span = tracing::debug_span!("delivery", source = %message.coordinates);
    async {
        let job = Job {
            p: &pipeline,
            route: &route,
            message: &message,
            abort: &abort,
            lane: parking_lot::Mutex::new(Some(lane)),
            early: parking_lot::Mutex::new(before.early),
            sequence: before.sequence,
        };
        job.run(acker).await;
    }
    .instrument(span)
    .await;
    metrics.in_flight.dec();
    metrics.buffered_bytes.sub(bytes);
}

struct Job<'a, D: DedupStore> {
    p: &'a Pipeline<D>,
    route: &'a Route,
    message: &'a Message,
    abort: &'a CancellationToken,
    /// The message's place in its ordering lane, given up as soon as the next one of the lane
    /// may go (the app answered), else when the job ends.
    lane: parking_lot::Mutex<Option<super::LaneDone>>,
    /// The key's claim made while the message waited for its lane, until its first attempt
    /// takes it (or, dropped unused, gives it back).
    early: parking_lot::Mutex<Option<PreClaim<D>>>,
    /// Where it stands in its key's sequence (`ordering.sequence`), when it has one.
    sequence: Option<Sequenced>,
}

/// The idempotency key of `message` on `route`: the original's for a resubmitted dead letter
/// (see `resubmit_headers::KEY`), else what the route's key policy makes of the message.
pub(super) fn idempotency_key(route: &Route, message: &Message) -> Keyed {
    match message.header_str(resubmit_headers::KEY) {
        Some(key) if !key.is_empty() => Keyed::Key(key.to_owned()),
        _ => route.keys.key(message),
    }
}

impl<D: DedupStore + ParkingStore + SequenceStore> Job<'_, D> {
    /// Finds the message's fate and settles it, keeping its key's chain in step (retry mode
    /// `queue`): what must be recorded before the broker settles happens before, the rest
    /// after, so a crash in between never loses a message or strands a chain.
    async fn run<A: Acker>(&self, acker: A) {
        // A route that delivers nothing settles its messages as they come. Not a retry copy:
        // its chain waits for it, so it runs to its end under the route that wrote it.
        if self.message.trail.is_none() {
            if let Some(fate) = self.without_delivery() {
                self.settle(acker, fate).await;
                return;
            }
        }
        let refused = match &self.sequence {
            Some(Err(why)) => Some((why.clone(), DECODE_CLASS)),
            Some(Ok(ticket)) => ticket.refusal().map(|why| (why, SEQUENCE_CLASS)),
            None => None,
        };
        let queue = self.route.attempts.queue.as_ref();
        let mut link = queue
            .and_then(|_| Link::of(self.message))
            .filter(|_| self.route.ordering != OrderingMode::None && refused.is_none());
        // Counted once it is sure to go: behind its key, or given up with its gap.
        let mut behind = false;
        let mut fate = match refused {
            Some((why, class)) => {
                let fate = self.refuse(why, class).await;
                behind = class == SEQUENCE_CLASS && matches!(fate, Fate::DeadLetter(..));
                fate
            }
            None => match self.enter(link.as_mut()).await {
                Some(fate) => fate,
                // A parked-key chain moves only once the head's outcome is recorded, and a
                // key's sequence once it is raised: the lane waits for the settlement.
                // Otherwise the lane goes on once the app answered.
                None => self.decide(link.is_none() && self.sequence.is_none()).await,
            },
        };
        let mark = match &mut fate {
            Fate::DeadLetter(_, mark) => mark.take(),
            _ => None,
        };
        let follow = queue.is_some_and(|q| q.dead_letter_parked);
        let (before, after) = match &link {
            Some(link) => link::around(link.role, fate.settling(), follow),
            None => (None, None),
        };
        if !self.sequence_moves(&fate).await {
            self.give_up(mark).await;
            self.settle(acker, Fate::Requeue).await;
            return;
        }
        if behind {
            self.p.metrics.sequence_behind.inc();
        }
        if let (Some(link), Some(step)) = (&link, &before) {
            if !self.chain(link, step).await {
                // Shutdown interrupted a store outage: the broker delivers it again.
                self.give_up(mark).await;
                self.settle(acker, Fate::Requeue).await;
                return;
            }
        }
        if self.settle(acker, fate).await {
            if let Some(mark) = mark {
                self.dead_lettered(mark).await;
            }
            if let (Some(link), Some(step)) = (&link, &after) {
                self.chain(link, step).await;
            }
        } else {
            self.give_up(mark).await;
        }
    }

    /// The dead letter of a claimed message is confirmed: its key is recorded as
    /// dead-lettered, waiting out a store outage like a completion (no new claim is made
    /// meanwhile), so a copy handed out again is settled without delivery.
    async fn dead_lettered(&self, mark: Mark) {
        let Some(dedup) = &self.p.dedup else {
            return;
        };
        let generation = self.generation();
        let mut backoff = Doubling::up_to(WAIT_MAX);
        let mut waiting = None;
        loop {
            match dedup
                .store
                .dead_lettered(&mark.key, mark.held.fence, generation)
                .await
            {
                Ok(_) => {
                    dedup.down.recovered();
                    return;
                }
                Err(e) => {
                    self.p.metrics.store_errors.inc();
                    dedup.down.failed(&e);
                    if dedup.on_failure == StoreFailureMode::Deliver {
                        return;
                    }
                    waiting.get_or_insert_with(|| dedup.unrecorded.wait_for(&mark.key));
                }
            }
            if !backoff.pause(self.abort).await {
                return;
            }
        }
    }

    /// A sequenced message leaving for good moves its key's sequence past it, before the broker
    /// settles it: a crash in between finds the message behind, and its dedup record settles
    /// it. False when shutdown interrupted a store outage: nothing moved, and the message goes
    /// back to the broker.
    async fn sequence_moves(&self, fate: &Fate) -> bool {
        let (Some(Ok(ticket)), Some(dedup)) = (&self.sequence, &self.p.dedup) else {
            return true;
        };
        let (Some(next), Fate::Ack(_) | Fate::DeadLetter(..)) = (ticket.moves_to(), fate) else {
            return true;
        };
        self.p
            .sequencer
            .raise(dedup, &self.p.metrics, &ticket.id, next, self.abort)
            .await
    }

    /// The fate of a message dead-lettered without delivery by its sequence (behind its key,
    /// given up with its gap, unreadable): its key is claimed first, so a copy already handled
    /// is settled as such, and the dead letter is recorded against the key.
    async fn refuse(&self, why: String, class: &str) -> Fate {
        let dl = self.undelivered_dead_letter(why, class);
        let Keyed::Key(key) = self.keyed() else {
            return Fate::DeadLetter(dl, None);
        };
        match self.claim(&key).await {
            None => Fate::Requeue,
            Some(Err(handled)) => handled,
            Some(Ok(None)) => Fate::DeadLetter(dl, None),
            Some(Ok(Some(held))) => Fate::DeadLetter(dl, mark(Some(&key), Some(held))),
        }
    }

    /// A dead letter that was not written after all (shutdown): its claim goes back, the
    /// attempt spent.
    async fn give_up(&self, mark: Option<Mark>) {
        if let Some(mark) = mark {
            self.release(Some(&mark.key), Some(mark.held), Some(Release::Retry))
                .await;
        }
    }

    /// Which resubmission this message is: 0 for one never resubmitted.
    fn generation(&self) -> u32 {
        self.message
            .header_str(resubmit_headers::COUNT)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Retry mode `queue`: what the message's chain says before it may run. `None`: run it.
    async fn enter(&self, link: Option<&mut Link>) -> Option<Fate> {
        let link = link?;
        let dedup = self.p.dedup.as_ref()?;
        let (store, down) = (&dedup.store, &dedup.down);
        let metrics = &self.p.metrics;
        let (role, meeting) = match &self.message.trail {
            None => {
                let arrival = parking::update(&**store, down, &link.id, self.abort, metrics, |c| {
                    c.arrive(&link.entry)
                })
                .await?;
                link::arrive(arrival, &self.message.coordinates, SystemTime::now())
            }
            Some(trail) => {
                let turn = parking::update(&**store, down, &link.id, self.abort, metrics, |c| {
                    c.turn(&link.entry, trail.hop)
                })
                .await?;
                link::take_turn(turn, trail)
            }
        };
        link.role = role;
        match meeting {
            Meeting::Run => None,
            Meeting::Park(trail) => Some(Fate::Retry(trail)),
            Meeting::Stale => Some(Fate::Ack(outcome::STALE)),
            Meeting::DeadLetter(reason) => Some(Fate::DeadLetter(
                self.undelivered_dead_letter(reason, PARKED_CLASS),
                None,
            )),
        }
    }

    async fn chain(&self, link: &Link, step: &ChainStep) -> bool {
        let Some(dedup) = &self.p.dedup else {
            return true;
        };
        let (store, down) = (&*dedup.store, &dedup.down);
        parking::apply(store, down, link, step, self.abort, &self.p.metrics).await
    }

    /// The fate of a message on a route that does not deliver.
    fn without_delivery(&self) -> Option<Fate> {
        match self.route.action {
            RouteAction::Deliver => None,
            RouteAction::Drop => Some(Fate::Ack(outcome::DROPPED)),
            RouteAction::DeadLetter => Some(Fate::DeadLetter(
                self.undelivered_dead_letter(
                    format!(
                        "route {:?} dead-letters every message it takes, without delivery",
                        self.route.name
                    ),
                    ROUTE_CLASS,
                ),
                None,
            )),
        }
    }

    /// The dead letter of a message sent to the dead-letter queue without a delivery (by its
    /// chain, or by its route): the attempts its trail carries, if any.
    fn undelivered_dead_letter(&self, reason: String, class: &str) -> DeadLetter {
        let now = SystemTime::now();
        let trail = self.message.trail.as_ref();
        DeadLetter {
            reason,
            class: class.to_owned(),
            last_status: None,
            attempts: trail.map_or(0, |t| t.attempts),
            first_failure: trail.and_then(|t| t.first_failure).unwrap_or(now),
            last_failure: now,
            key: self.dedup_key(),
            response_excerpt: Bytes::new(),
        }
    }

    /// The idempotency key; see [`idempotency_key`].
    fn keyed(&self) -> Keyed {
        idempotency_key(self.route, self.message)
    }

    /// The idempotency key, when one can be made.
    fn dedup_key(&self) -> Option<String> {
        match self.keyed() {
            Keyed::Key(key) => Some(key),
            Keyed::Unkeyed(_) | Keyed::Missing(_) => None,
        }
    }

    /// Runs attempts until the message has a fate: each attempt's outcome goes to the attempt
    /// machine, and its answer is executed here.
    async fn decide(&self, free_lane_early: bool) -> Fate {
        // A message without a key is delivered without dedup when the policy says so
        // (`unkeyed`), and cannot be delivered otherwise.
        let (key, unkeyed) = match self.keyed() {
            Keyed::Key(k) => (Ok(k), false),
            Keyed::Unkeyed(why) => {
                self.p.metrics.delivered_without_key.inc();
                (Err(why.to_string()), true)
            }
            Keyed::Missing(why) => (Err(why.to_string()), false),
        };
        let mut state = self.route.attempts.start(self.message, SystemTime::now());
        // What the last attempt found, for a dead letter when the wait for the app runs out.
        let mut last: Option<Reply> = None;
        loop {
            // Wait for the app before claiming: a message waiting for it holds no claim.
            let pass = match &key {
                Err(_) if !unkeyed => None,
                _ => match self.admit(&state, last.as_ref()).await {
                    Admitted::Go(pass) => Some(pass),
                    Admitted::Gone(fate) => return fate,
                },
            };
            let held = match &key {
                Ok(k) => match self.claim(k).await {
                    Some(Ok(held)) => held,
                    Some(Err(fate)) => return fate,
                    None => return Fate::Requeue,
                },
                Err(_) => None,
            };
            let attempt = state.begin(held.map(|h| h.attempt));
            let now = SystemTime::now();
            if let Some(Next::DeadLetter(dl)) =
                self.route
                    .attempts
                    .before(&state, attempt, key.as_deref().ok(), now)
            {
                // Past its budget before it is even sent: the earlier attempts died with the
                // sidecar or the app; it goes where an operator sees it, not to the app again.
                return Fate::DeadLetter(dl, mark(key.as_deref().ok(), held));
            }
            let reply = match &key {
                Err(why) if !unkeyed => Reply::Undeliverable(why.clone()),
                _ => match self.deliver(key.as_deref().ok(), attempt, held).await {
                    Some(reply) => reply,
                    None => {
                        let release = Next::Requeue.release();
                        self.release(key.as_deref().ok(), held, release).await;
                        return Fate::Requeue;
                    }
                },
            };
            if let Some(pass) = pass {
                self.p.breaker.record(pass, &reply);
            }
            let key = key.as_deref().ok();
            self.p.metrics.attempt(reply.class());
            let verdict = self.route.classifier.classify(&reply);
            debug!(attempt, class = reply.class(), action = %verdict.action, "Attempt classified.");
            let tried = Tried {
                attempt,
                reply: &reply,
                verdict: &verdict,
                key,
            };
            let next =
                self.route
                    .attempts
                    .after(&mut state, tried, SystemTime::now(), &mut rand::rng());
            let release = next.release();
            match next {
                Next::Complete(done) => {
                    // Queued before the lane goes on, so a copy of this key the lane takes
                    // next sees it done; recorded (and acked) while the next one is delivered.
                    let first = match (key, held, &self.p.dedup) {
                        (Some(k), Some(h), Some(d)) => Some(d.batcher.complete(k, h.fence)),
                        _ => None,
                    };
                    if free_lane_early {
                        self.lane.lock().take();
                    }
                    if let (Some(k), Some(h)) = (key, held) {
                        if !self.complete(k, h, first).await {
                            return Fate::Requeue;
                        }
                    }
                    return Fate::Ack(match done {
                        Done::Delivered => outcome::DELIVERED,
                        Done::Dropped => outcome::DROPPED,
                    });
                }
                Next::Again {
                    delay,
                    wait: Wait::Throttle,
                    ..
                } => {
                    self.p.metrics.throttled.inc();
                    self.route.throttle.engage(delay);
                    self.release(key, held, release).await;
                }
                Next::Again { delay, wait, .. } => {
                    match wait {
                        Wait::Retry => self.p.metrics.retried.inc(),
                        // Its dead letter, should it wait out its age limit, says why.
                        _ => last = Some(reply.clone()),
                    }
                    self.release(key, held, release).await;
                    if !sleep_unless(self.abort, delay).await {
                        return Fate::Requeue;
                    }
                }
                Next::RetryQueue(trail) => {
                    self.p.metrics.retried.inc();
                    self.release(key, held, release).await;
                    return Fate::Retry(trail);
                }
                Next::DeadLetter(dl) => {
                    self.release(key, held, release).await;
                    return Fate::DeadLetter(dl, mark(key, held));
                }
                Next::Requeue => {
                    self.release(key, held, release).await;
                    return Fate::Requeue;
                }
                Next::Redeliver(delay) => {
                    self.p.metrics.retried.inc();
                    self.release(key, held, release).await;
                    return Fate::Redeliver(delay);
                }
            }
        }
    }

    /// Waits at the circuit breaker for leave to deliver, no longer than the message may still
    /// live: past its age limit while the app is down, it goes to the dead-letter queue.
    async fn admit(&self, state: &Attempts, last: Option<&Reply>) -> Admitted<'_> {
        let now = SystemTime::now();
        let left = self.route.attempts.time_left(state, now);
        let admit = self.p.breaker.admit(self.abort);
        let waited = match left {
            Some(left) => tokio::time::timeout(left, admit).await.ok(),
            None => Some(admit.await),
        };
        match waited {
            Some(Some(pass)) => Admitted::Go(pass),
            Some(None) => Admitted::Gone(Fate::Requeue),
            None => {
                let last = last.cloned().unwrap_or_else(|| {
                    Reply::Undeliverable("the app could not be reached".to_owned())
                });
                let key = self.dedup_key();
                match self.route.attempts.waited_too_long(
                    state,
                    &last,
                    key.as_deref(),
                    SystemTime::now(),
                ) {
                    Some(Next::DeadLetter(dl)) => Admitted::Gone(Fate::DeadLetter(dl, None)),
                    _ => Admitted::Gone(Fate::Requeue),
                }
            }
        }
    }

    /// One delivery attempt, behind the throttle gate and the app's concurrency limit; `None`
    /// when shutdown's abort came first.
    async fn deliver(&self, key: Option<&str>, attempt: u32, held: Option<Held>) -> Option<Reply> {
        let size = self.message.payload.len() as u64;
        if size > self.route.max_message_size {
            return Some(Reply::Undeliverable(format!(
                "the payload of {size} bytes exceeds delivery.max_message_size ({} bytes)",
                self.route.max_message_size
            )));
        }
        let send = async {
            self.route.throttle.wait().await;
            // A batch takes one slot for all its events, when it is sent.
            let slot = match self.route.delivery.batches() {
                true => None,
                false => Some(self.p.concurrency.acquire().await),
            };
            let attempt = Attempt {
                key,
                attempt,
                fence: held.map(|h| h.fence),
            };
            let (reply, took) = self.route.delivery.send(self.message, attempt).await;
            if let Some(slot) = &slot {
                self.p.concurrency.record(slot, &reply, took);
            }
            (reply, took)
        };
        tokio::select! {
            biased;
            _ = self.abort.cancelled() => None,
            (reply, took) = send => {
                self.p.metrics.duration.observe(took.as_secs_f64());
                Some(reply)
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
            // What was delivered but not recorded goes to the store first (see `Unrecorded`),
            // also when the store comes back while this claim waits for it.
            if !dedup.unrecorded.settled(self.abort).await {
                return None;
            }
            let started = std::time::Instant::now();
            let early = self.early.lock().take().filter(|e| e.key() == key);
            if let Some(early) = early {
                let max_age = preclaim::max_age(dedup.lease, self.route.delivery.timeout());
                if let Some((fence, attempt)) = early.take(max_age).await {
                    self.p
                        .metrics
                        .claim_time
                        .observe(started.elapsed().as_secs_f64());
                    return Some(Ok(Some(Held { fence, attempt })));
                }
            }
            let claimed = dedup.batcher.claim(key).await;
            self.p
                .metrics
                .claim_time
                .observe(started.elapsed().as_secs_f64());
            if claimed.is_ok() {
                dedup.down.recovered();
            }
            let pause = match claimed {
                Ok(Claim::Acquired { fence, attempt }) => {
                    return Some(Ok(Some(Held { fence, attempt })))
                }
                Ok(Claim::Done) => return Some(Err(Fate::Ack(outcome::DUPLICATE))),
                Ok(Claim::DeadLettered { generation }) => {
                    // A resubmitted copy (a newer generation) is new work; any other copy is
                    // one whose dead letter is already written.
                    if self.generation() <= generation {
                        return Some(Err(Fate::Ack(outcome::ALREADY_DEAD_LETTERED)));
                    }
                    match dedup.store.revive(key, self.generation()).await {
                        Ok(_) => continue,
                        Err(e) => {
                            self.p.metrics.store_errors.inc();
                            dedup.down.failed(&e);
                            let w = wait;
                            wait = (wait * 2).min(WAIT_MAX);
                            w
                        }
                    }
                }
                // Another holder is working on this key: wait for it, never run twice at once.
                Ok(Claim::Busy { retry_in }) => {
                    let w = wait.min(retry_in).max(Duration::from_millis(1));
                    wait = (wait * 2).min(BUSY_POLL_MAX);
                    w
                }
                Err(e) => {
                    self.p.metrics.store_errors.inc();
                    dedup.down.failed(&e);
                    if dedup.on_failure == StoreFailureMode::Deliver {
                        return Some(Ok(None));
                    }
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
    /// `first` is the first try, already queued.
    async fn complete(
        &self,
        key: &str,
        held: Held,
        first: Option<impl std::future::Future<Output = Result<Completion, StoreError>>>,
    ) -> bool {
        let Some(dedup) = &self.p.dedup else {
            return true;
        };
        let mut backoff = Doubling::up_to(WAIT_MAX);
        // Held from the first failure until the completion is recorded: no claim is made
        // meanwhile, so no copy of this key can be delivered again in between.
        let mut waiting = None;
        let mut first = first;
        loop {
            let started = std::time::Instant::now();
            let completed = match first.take() {
                Some(queued) => queued.await,
                None => dedup.batcher.complete(key, held.fence).await,
            };
            self.p
                .metrics
                .complete_time
                .observe(started.elapsed().as_secs_f64());
            if completed.is_ok() {
                dedup.down.recovered();
            }
            match completed {
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
                    dedup.down.failed(&e);
                    if dedup.on_failure == StoreFailureMode::Deliver {
                        return true;
                    }
                    waiting.get_or_insert_with(|| dedup.unrecorded.wait_for(key));
                }
            }
            if !backoff.pause(self.abort).await {
                return false;
            }
        }
    }

    /// Gives up a claim; a failure only means the lease runs out on its own.
    async fn release(&self, key: Option<&str>, held: Option<Held>, how: Option<Release>) {
        let (Some(dedup), Some(key), Some(held), Some(how)) = (&self.p.dedup, key, held, how)
        else {
            return;
        };
        if let Err(e) = dedup.store.release(key, held.fence, how).await {
            self.p.metrics.store_errors.inc();
            debug!(error = %e, "Release failed; the lease will expire instead.");
        }
    }

    /// Settles at the broker; true once it did. A dead letter or retry copy is written again
    /// until the broker confirms it: the original is never acked before that.
    async fn settle<A: Acker>(&self, acker: A, fate: Fate) -> bool {
        let metrics = &self.p.metrics;
        let (label, class, settlement) = match fate {
            Fate::Ack(label) => (Some(label), None, Settlement::Ack),
            Fate::DeadLetter(dl, _) => {
                let class = dl.class.clone();
                let settlement = Settlement::DeadLetter {
                    context: dl,
                    // Whatever sent it there, a message's dead letter goes where its route says.
                    destination: self.route.dead_letter.clone(),
                };
                (Some(outcome::DEAD_LETTERED), Some(class), settlement)
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
            Fate::Redeliver(delay) => (
                Some(outcome::REDELIVERY),
                None,
                Settlement::Redeliver(delay),
            ),
        };
        let mut acker = acker;
        let mut settlement = settlement;
        let mut backoff = Doubling::up_to(PUBLISH_WAIT_MAX);
        let started = std::time::Instant::now();
        loop {
            match acker.settle(settlement).await {
                Ok(()) => {
                    metrics.settle_time.observe(started.elapsed().as_secs_f64());
                    break;
                }
                Err(unsettled) => {
                    let unsettled = *unsettled;
                    let what = match &unsettled.settlement {
                        Settlement::DeadLetter { .. } => "Dead-letter publish",
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
            Some(outcome::DUPLICATE | outcome::ALREADY_DEAD_LETTERED) => metrics.duplicates.inc(),
            Some(outcome::DROPPED) => metrics.dropped.inc(),
            _ => {}
        }
        if let Some(class) = class {
            metrics.dead_lettered(&class);
            warn!(source = %self.message.coordinates, class, "Dead-lettered message.");
        }
        if let Some(label) = label {
            metrics.settled(&self.route.name, label);
        }
        label.is_some()
    }
}
