//! The poll thread: the one place the consumer and its partition queues are read, so the one
//! place rebalance callbacks run.
//!
//! Each partition's records come in a queue of their own (split off in the assign), which the
//! thread reads only while the partition and the whole source are below their in-flight limits.
//! A queue left unread is how fetching pauses: librdkafka stops fetching that partition once its
//! prefetch is queued, and nothing fetched is thrown away. The consumer's own queue (rebalances,
//! errors, commits) is served all the while: that is what keeps the member in its group
//! (`max.poll.interval.ms`) and rebalances served while the app is slow.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use outrigger_core::SourceError;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use crate::context::Consumer;
use crate::partition::TopicPartition;
use crate::record::{self, Fetched};
use crate::state::Shared;

/// The longest the thread sleeps with nothing to do: how often the consumer's queue is served
/// when nothing wakes the thread.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Starts the poll thread. It owns `consumer` and drops it (leaving the group, committing the
/// watermarks in the revoke) after a stop, then signals `closed`.
pub(crate) fn spawn(
    consumer: Arc<Consumer>,
    shared: Arc<Shared>,
    closed: oneshot::Sender<()>,
) -> Result<(), SourceError> {
    std::thread::Builder::new()
        .name("outrigger-kafka".into())
        .spawn(move || run(consumer, shared, closed))
        .map(drop)
        .map_err(|e| SourceError::Connection(format!("starting the Kafka poll thread: {e}")))
}

fn run(consumer: Arc<Consumer>, shared: Arc<Shared>, closed: oneshot::Sender<()>) {
    // Which partition's queue is read first next time.
    let mut first = 0;
    while !shared.shutdown.load(Ordering::Acquire) {
        let served = serve_consumer(&consumer, &shared);
        let took = take_records(&shared, &mut first);
        if !served && !took {
            shared.wake.wait(POLL_INTERVAL);
        }
    }
    // Ackers take the consumer only under the lock and let go before releasing it, and the
    // partition queues, which hold it too, are dropped first: after this the poll thread
    // holds the last reference and the close below runs here.
    let (taken, queues) = {
        let mut st = shared.state.lock();
        (st.consumer.take(), st.take_queues())
    };
    drop(queues);
    drop(taken);
    drop(consumer);
    let _ = closed.send(());
}

/// Serves the consumer's own queue until it is empty: rebalances, errors, commit results,
/// and the records of a partition whose queue could not be split. Returns whether it served
/// anything.
fn serve_consumer(consumer: &Consumer, shared: &Arc<Shared>) -> bool {
    let mut served = false;
    loop {
        let events = shared.events.load(Ordering::Acquire);
        match consumer.poll(Duration::ZERO) {
            Some(Ok(message)) => {
                shared.health.set(true);
                let fetched = record::fetched(&message);
                drop(message);
                shared.accept(&mut shared.state.lock(), fetched);
                shared.ready.notify_one();
            }
            Some(Err(error)) => on_error(shared, error),
            // Empty, unless it served an event through a callback (a log line, statistics, a
            // rebalance, a commit result), which returns nothing too.
            None if shared.events.load(Ordering::Acquire) == events => return served,
            None => {}
        }
        served = true;
    }
}

/// Reads the queues of the partitions that may take more, one record of each in turn, until
/// each is empty or at a limit: under the global limit, the partitions with records share it.
/// A retry copy read before it is due is held, and its partition read no further, until then.
/// Returns whether it took anything.
fn take_records(shared: &Arc<Shared>, first: &mut usize) -> bool {
    let mut took = false;
    let mut errors = Vec::new();
    {
        let mut guard = shared.state.lock();
        let st = &mut *guard;
        let mut turn: Vec<TopicPartition> = st.partitions.keys().cloned().collect();
        // A different partition goes first each time.
        if !turn.is_empty() {
            let at = *first % turn.len();
            turn.rotate_left(at);
            *first = first.wrapping_add(1);
        }
        let now = SystemTime::now();
        let not_due = |record: &Fetched| record.due.is_some_and(|due| due > now);
        while !turn.is_empty() {
            turn.retain(|tp| {
                let Some(p) = st.partitions.get_mut(tp) else {
                    return false;
                };
                if !p.open(&st.global) {
                    return false;
                }
                // A retry copy waits for its time, and its partition with it.
                if let Some(held) = &p.feed.delayed {
                    if not_due(held) {
                        return false;
                    }
                    let record = p.feed.delayed.take().expect("checked above");
                    shared.accept(st, record);
                    took = true;
                    return true;
                }
                let Some(queue) = &p.feed.queue else {
                    return false;
                };
                match queue.poll(Duration::ZERO) {
                    None => false,
                    Some(Err(error)) => {
                        errors.push(error);
                        true
                    }
                    Some(Ok(message)) => {
                        let record = record::fetched(&message);
                        drop(message);
                        if not_due(&record) {
                            p.feed.delayed = Some(record);
                            return false;
                        }
                        shared.accept(st, record);
                        took = true;
                        true
                    }
                }
            });
        }
    }
    if took {
        shared.health.set(true);
        shared.ready.notify_one();
    }
    for error in errors {
        on_error(shared, error);
    }
    took
}

/// Consumer errors: fatal ones and refusals end the source, the rest librdkafka recovers from.
fn on_error(shared: &Shared, error: KafkaError) {
    match &error {
        KafkaError::MessageConsumptionFatal(code) => {
            error!(%error, "The Kafka consumer failed fatally.");
            shared.fail(SourceError::Rejected(format!(
                "Kafka consumer failed: {code}"
            )));
        }
        KafkaError::MessageConsumption(code) => match code {
            RDKafkaErrorCode::AllBrokersDown => {
                warn!("All Kafka brokers are down; librdkafka keeps reconnecting.");
                shared.health.set(false);
            }
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication => {
                error!(%error, "Kafka refused the consumer.");
                shared.fail(SourceError::Rejected(format!(
                    "Kafka refused the consumer: {code}"
                )));
            }
            RDKafkaErrorCode::PartitionEOF
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve => {
                debug!(%error, "Kafka consumer error; librdkafka recovers.")
            }
            _ => warn!(%error, "Kafka consumer error; librdkafka retries."),
        },
        _ => warn!(%error, "Kafka consumer error."),
    }
}
