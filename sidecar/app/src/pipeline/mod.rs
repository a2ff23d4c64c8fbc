//! The per-message pipeline: dedup claim → HTTP delivery → classification → settlement, with
//! in-place retries, throttling and dead letters.
//!
//! [`run`] is the consumer loop: it takes deliveries while a permit of the in-flight limit is
//! free, queues each in its ordering lane, runs the head of every lane in its own task
//! ([`worker`]), and on shutdown stops the source, returns what never started, lets in-flight
//! messages finish within the grace period, then releases the rest back to the broker.

mod batcher;
pub mod breaker;
mod concurrency;
mod parking;
mod preclaim;
mod route;
mod sequence;
mod throttle;
mod unrecorded;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use outrigger_core::{
    Acker, DedupStore, Delivery, Episode, Message, OrderingMode, ParkingStore, SequenceId,
    SequenceStore, Settlement, Source, SourceError,
};
use outrigger_policies::sequence::{resolve, Reorder, Resolution};
use outrigger_policies::{Lane, Lanes};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::SourceMetrics;

pub use batcher::Batcher;
pub use breaker::{Breaker, BreakerSettings, BreakerState, Probe};
pub use concurrency::AppConcurrency;
pub use route::{Route, RouteTable, Routes};
pub use sequence::Sequencer;
pub use throttle::ThrottleGate;
pub use unrecorded::Unrecorded;

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
    /// Claims and completions of concurrent messages, sharing store calls.
    pub batcher: Batcher,
    /// Behaviour while the store is unreachable.
    pub on_failure: StoreFailureMode,
    /// Outcomes the store has not heard of yet; no new claim is made while there are any.
    pub unrecorded: Unrecorded,
    /// The store being unreachable, logged once while it lasts.
    pub down: Episode,
    /// How long a claim holds its key (`dedup.lease`): bounds how early one may be made.
    pub lease: Duration,
}

/// Everything a message meets between the broker and its settlement.
pub struct Pipeline<D> {
    /// Per-message policy: the route each message takes.
    pub routes: RouteTable,
    /// Dedup store, or `None` when dedup is off.
    pub dedup: Option<Dedup<D>>,
    /// Messages taken and not yet settled (running, waiting in a lane or for a retry).
    pub max_in_flight: usize,
    /// In ordering mode `none`, messages of one key delivered at once; `None`: no limit.
    pub max_in_flight_per_key: Option<usize>,
    /// Messages waiting for a predecessor in the reorder buffer at most, all keys together
    /// (`ordering.max_waiting`); below `max_in_flight`.
    pub max_waiting: usize,
    /// The keys' next sequences (`ordering.sequence`).
    pub sequencer: Sequencer,
    /// Deliveries to the app at once.
    pub concurrency: AppConcurrency,
    /// The circuit breaker in front of the app.
    pub breaker: Arc<Breaker>,
    /// How long in-flight messages may finish after shutdown begins.
    pub grace_period: Duration,
    /// Metrics of this source.
    pub metrics: SourceMetrics,
}

/// Consumes `source` until `shutdown` is cancelled or the source ends, then drains.
///
/// Each delivery holds one permit of the in-flight limit from receipt to settlement, whether
/// it runs or waits in its ordering lane, so buffered messages are bounded too.
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
    D: DedupStore + ParkingStore + SequenceStore,
{
    let permits = Arc::new(Semaphore::new(pipeline.max_in_flight.max(1)));
    // Cancelled once the grace period is over: workers then release their claims and requeue.
    let abort = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut lanes: Lanes<Job<S::Acker, D>> = Lanes::default();
    // Workers report their lane when they settle; bounded by the permits in circulation.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Lane>();
    // Sequenced messages ahead of their key's next come back to wait, with their permits.
    let mut reorder: Reorder<SequenceId, Job<S::Acker, D>> = Reorder::new(pipeline.max_waiting);
    let (wait_tx, mut wait_rx) = mpsc::unbounded_channel::<Waiting<S::Acker, D>>();
    // A finite source that said it is drained is asked again once something settles.
    let mut drained = false;
    // Keys with waiting messages are read again from the store, for other replicas' progress.
    let mut refresh = tokio::time::interval(sequence::REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut permit = None;
    let mut failure = None;
    let mut backoff = Duration::from_millis(100);
    let source_down = Episode::new(
        "The broker connection failed; retrying with backoff.",
        "The broker connection is back.",
    );
    // The breaker is probed for as long as any message may wait for the app, drain included.
    let stop_probing = CancellationToken::new();
    let prober = {
        let breaker = pipeline.breaker.clone();
        let stop = stop_probing.clone();
        tokio::spawn(async move { breaker.probe_while_open(stop).await })
    };
    let mut breaker = pipeline.breaker.watch();
    let spawn = |tasks: &mut JoinSet<()>, job: Job<S::Acker, D>| {
        let done = LaneDone {
            lane: job.lane.clone(),
            tx: done_tx.clone(),
        };
        pipeline
            .metrics
            .lane_wait
            .observe(job.received.elapsed().as_secs_f64());
        let (pipeline, abort, wait_tx) = (pipeline.clone(), abort.clone(), wait_tx.clone());
        tasks.spawn(async move {
            let gate = sequence::gate(
                &pipeline.sequencer,
                pipeline.dedup.as_ref(),
                &pipeline.metrics,
                &job.route,
                &job.delivery.message,
                job.resolution,
                &abort,
            )
            .await;
            let sequenced = match gate {
                Some(sequence::Gate::Free) => None,
                Some(sequence::Gate::Run(ticket)) => Some(Ok(ticket)),
                Some(sequence::Gate::Unreadable(why)) => Some(Err(why)),
                Some(sequence::Gate::Wait { id, seq }) => {
                    // Back to the loop to wait; its lane goes on meanwhile (`done` drops).
                    if let Err(back) = wait_tx.send(Waiting { job, id, seq }) {
                        requeue(back.0.job).await;
                    }
                    return;
                }
                // Shutdown during a store outage: the broker delivers it again.
                None => return requeue(job).await,
            };
            worker::process(
                pipeline,
                job.route,
                job.delivery,
                abort,
                job.permit,
                worker::Before {
                    early: job.early,
                    sequence: sequenced,
                },
                done,
            )
            .await;
        });
    };
    loop {
        // While the app cannot be reached, nothing more is taken from the broker: Kafka's
        // prefetch and RabbitMQ's unacked window sit where they are.
        let app_up = *breaker.borrow_and_update() == BreakerState::Closed;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Ok(()) = breaker.changed() => {}
            Some(lane) = done_rx.recv() => {
                drained = false;
                if let Some(next) = lanes.finish(&lane) {
                    spawn(&mut tasks, next);
                }
            }
            Some(waiting) = wait_rx.recv() => {
                drained = false;
                for job in wait(&pipeline, &mut reorder, &mut lanes, waiting) {
                    spawn(&mut tasks, job);
                }
                pipeline.metrics.reorder_waiting.set(reorder.len() as i64);
            }
            raised = pipeline.sequencer.raised(), if !reorder.is_empty() => {
                for id in raised {
                    let Some(next) = pipeline.sequencer.known(&id) else { continue };
                    let ready = reorder.ready(&id, next, std::time::Instant::now());
                    let jobs = ready.into_iter().map(|(_, job)| job).collect();
                    for job in offer_first(&mut lanes, jobs) {
                        spawn(&mut tasks, job);
                    }
                }
                pipeline.metrics.reorder_waiting.set(reorder.len() as i64);
            }
            _ = gap_deadline(reorder.next_deadline()), if !reorder.is_empty() => {
                for id in reorder.due(std::time::Instant::now()) {
                    let waiting = reorder.take(&id);
                    let why = "A gap in a key's sequence outlived ordering.gap_timeout";
                    for job in give_up(&pipeline, &mut lanes, &id, waiting, why) {
                        spawn(&mut tasks, job);
                    }
                }
                pipeline.metrics.reorder_waiting.set(reorder.len() as i64);
            }
            _ = refresh.tick(), if !reorder.is_empty() && pipeline.dedup.is_some() => {
                let ids = reorder.keys().take(sequence::REFRESH_MAX).cloned().collect();
                let pipeline = pipeline.clone();
                tokio::spawn(async move {
                    if let Some(dedup) = &pipeline.dedup {
                        pipeline.sequencer.refresh(&*dedup.store, ids).await;
                    }
                });
            }
            Some(done) = tasks.join_next(), if drained && !tasks.is_empty() => {
                drained = false;
                if let Err(e) = done {
                    warn!(error = %e, "Delivery task failed.");
                }
            }
            p = permits.clone().acquire_owned(), if permit.is_none() => {
                permit = Some(p.expect("semaphore is never closed"));
            }
            next = source.recv(), if permit.is_some() && app_up && !drained => match next {
                Ok(Some(delivery)) => {
                    backoff = Duration::from_millis(100);
                    source_down.recovered();
                    let route = pipeline.routes.pick(&delivery.message);
                    let (lane, width) =
                        lane_of(route.ordering, pipeline.max_in_flight_per_key, &delivery.message);
                    // Queued behind its lane: its key is claimed while it waits.
                    let early = match &pipeline.dedup {
                        Some(dedup) if lanes.would_wait(lane.as_ref(), width) => {
                            early_claim(dedup, &route, &delivery.message)
                        }
                        _ => None,
                    };
                    let job = Job {
                        lane: lane.clone(),
                        route,
                        received: std::time::Instant::now(),
                        delivery,
                        permit: permit.take().expect("guarded by the select"),
                        early,
                        resolution: None,
                    };
                    if let Some(job) = lanes.offer(lane.as_ref(), width, job) {
                        spawn(&mut tasks, job);
                    }
                    pipeline.metrics.ordering_waiting.set(lanes.waiting() as i64);
                }
                Ok(None) if tasks.is_empty() && lanes.waiting() == 0 && reorder.is_empty() => break,
                // A finite source said it is drained, but work is still settling or waiting:
                // ask again once some of it moved.
                Ok(None) => drained = true,
                Err(e) if !e.is_retryable() => {
                    failure = Some(e);
                    break;
                }
                Err(e) => {
                    source_down.failed(&e);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            },
        }
        while let Some(done) = tasks.try_join_next() {
            drained = false;
            if let Err(e) = done {
                warn!(error = %e, "Delivery task failed.");
            }
        }
    }
    // Messages still waiting in a lane or for a predecessor never started: hand them straight
    // back. Gates still running send theirs back once this receiver is gone.
    wait_rx.close();
    while let Ok(waiting) = wait_rx.try_recv() {
        requeue(waiting.job).await;
    }
    for job in lanes.drain_waiting().into_iter().chain(reorder.drain()) {
        requeue(job).await;
    }
    pipeline.metrics.ordering_waiting.set(0);
    pipeline.metrics.reorder_waiting.set(0);
    drain(&mut tasks, pipeline.grace_period, &abort).await;
    stop_probing.cancel();
    let _ = prober.await;
    // Only now: stopping commits (Kafka) what the drained work settled, and closes the channel
    // whose deliveries those workers acked (RabbitMQ). Nothing new was taken since the loop
    // ended; what the broker pushed meanwhile goes back with the stop.
    source.stop().await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A sequenced message ahead of its key's next, back from its gate to wait.
struct Waiting<A, D: DedupStore> {
    job: Job<A, D>,
    id: SequenceId,
    seq: u64,
}

/// Hands a message that never started back to the broker.
async fn requeue<A: Acker, D: DedupStore>(job: Job<A, D>) {
    if let Err(unsettled) = job.delivery.acker.settle(Settlement::Requeue).await {
        warn!(error = %unsettled.error, "Could not return a waiting message; the broker will redeliver it.");
    }
}

/// A delivery with its permit, on its way to a worker.
struct Job<A, D: DedupStore> {
    lane: Option<Lane>,
    route: Arc<Route>,
    /// When it was taken from the broker, for the time it waits for its lane.
    received: std::time::Instant,
    delivery: Delivery<A>,
    permit: OwnedSemaphorePermit,
    /// Its key's claim, made while it waits for its lane.
    early: Option<preclaim::PreClaim<D>>,
    /// What a given-up gap in its key's sequence made of it, when it waited behind one.
    resolution: Option<Resolution>,
}

/// The claim of a message queued behind its lane, when one can be made early: the message has
/// an idempotency key, and its route has no parked-key chain (whose turn is taken before any
/// claim, and may settle the message without one) and no sequence.
fn early_claim<D: DedupStore>(
    dedup: &Dedup<D>,
    route: &Route,
    message: &Message,
) -> Option<preclaim::PreClaim<D>> {
    // A sequenced message may wait for its predecessors after its lane took it: no claim
    // may run out meanwhile.
    if route.attempts.queue.is_some() || route.sequence.is_some() {
        return None;
    }
    match worker::idempotency_key(route, message) {
        outrigger_policies::Keyed::Key(key) => preclaim::PreClaim::start(dedup, key),
        _ => None,
    }
}

/// Waits until `deadline`; never without one.
async fn gap_deadline(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Where a message ahead of its key's next goes: into the reorder buffer, or back to its lane
/// (its turn came while it went back, or the buffer is full and its key's gap is given up).
/// Returns the jobs that may start now.
fn wait<A, D>(
    pipeline: &Pipeline<D>,
    reorder: &mut Reorder<SequenceId, Job<A, D>>,
    lanes: &mut Lanes<Job<A, D>>,
    waiting: Waiting<A, D>,
) -> Vec<Job<A, D>>
where
    D: DedupStore,
{
    let Waiting { job, id, seq } = waiting;
    if pipeline
        .sequencer
        .known(&id)
        .is_some_and(|next| seq <= next)
    {
        return offer_first(lanes, vec![job]);
    }
    let Some((max_per_key, gap_timeout)) =
        (job.route.sequence.as_ref()).map(|policy| (policy.max_per_key, policy.gap_timeout))
    else {
        return offer_first(lanes, vec![job]);
    };
    let now = std::time::Instant::now();
    match reorder.hold(id.clone(), seq, job, max_per_key, gap_timeout, now) {
        Ok(()) => Vec::new(),
        Err(job) => {
            let mut waiting = reorder.take(&id);
            waiting.push((seq, job));
            // Stable: copies of one sequence keep their arrival order.
            waiting.sort_by_key(|(seq, _)| *seq);
            let why = "The reorder buffer is full";
            give_up(pipeline, lanes, &id, waiting, why)
        }
    }
}

/// Gives up the gap before `waiting` (a key's messages, lowest sequence first) as the lowest
/// one's route says (`ordering.on_gap`); returns the jobs that may start now.
fn give_up<A, D>(
    pipeline: &Pipeline<D>,
    lanes: &mut Lanes<Job<A, D>>,
    id: &SequenceId,
    waiting: Vec<(u64, Job<A, D>)>,
    why: &str,
) -> Vec<Job<A, D>>
where
    D: DedupStore,
{
    let Some((lowest, first)) = waiting.first() else {
        return Vec::new();
    };
    let Some((on_gap, start)) =
        (first.route.sequence.as_ref()).map(|policy| (policy.on_gap, policy.start(*lowest)))
    else {
        return offer_first(lanes, waiting.into_iter().map(|(_, job)| job).collect());
    };
    let missing = pipeline.sequencer.known(id).unwrap_or(start);
    let metrics = &pipeline.metrics;
    match on_gap {
        outrigger_policies::OnGap::Deliver => metrics.gaps_delivered.inc(),
        outrigger_policies::OnGap::DeadLetter => metrics.gaps_dead_lettered.inc(),
    }
    warn!(
        sequence = %id,
        missing,
        waiting = waiting.len(),
        on_gap = on_gap.as_str(),
        "{why}; giving up the gap in the key's sequence."
    );
    let jobs = resolve(on_gap, missing, waiting)
        .into_iter()
        .map(|(mut job, how)| {
            job.resolution = Some(how);
            job
        })
        .collect();
    offer_first(lanes, jobs)
}

/// Puts `jobs` (of one key, in order) before whatever waits in their lane; returns those that
/// may start now.
fn offer_first<A, D: DedupStore>(
    lanes: &mut Lanes<Job<A, D>>,
    jobs: Vec<Job<A, D>>,
) -> Vec<Job<A, D>> {
    let Some(lane) = jobs.first().and_then(|job| job.lane.clone()) else {
        return jobs;
    };
    lanes.offer_first(Some(&lane), 1, jobs)
}

/// Tells the consumer loop a lane is free when the worker is done, even if it panicked.
pub(crate) struct LaneDone {
    lane: Option<Lane>,
    tx: mpsc::UnboundedSender<Lane>,
}

impl Drop for LaneDone {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            let _ = self.tx.send(lane);
        }
    }
}

/// The lane a message keeps its order in, and how many of the lane run at once: one for an
/// ordering lane, `per_key` for a key's lane in mode `none` (no lane without a limit).
fn lane_of(mode: OrderingMode, per_key: Option<usize>, message: &Message) -> (Option<Lane>, usize) {
    let key = || message.key.clone().filter(|k| !k.is_empty());
    match mode {
        OrderingMode::None => match per_key {
            Some(width) => (key(), width),
            None => (None, 1),
        },
        OrderingMode::Key => (key(), 1),
        OrderingMode::Partition => (Some(Bytes::from(message.coordinates.partition())), 1),
    }
}

/// Doubling bounds while the dedup store is unreachable.
const WAIT_MIN: Duration = Duration::from_millis(50);
const WAIT_MAX: Duration = Duration::from_secs(2);

/// Sleeps for `delay` unless shutdown's `abort` comes first; false then.
async fn sleep_unless(abort: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = abort.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// The doubling wait between tries of a failing call, from [`WAIT_MIN`] up to a cap.
struct Doubling {
    wait: Duration,
    max: Duration,
}

impl Doubling {
    fn up_to(max: Duration) -> Self {
        Self {
            wait: WAIT_MIN,
            max,
        }
    }

    /// Sleeps the current wait, then doubles it; false when `abort` came first.
    async fn pause(&mut self, abort: &CancellationToken) -> bool {
        let slept = sleep_unless(abort, self.wait).await;
        self.wait = (self.wait * 2).min(self.max);
        slept
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
