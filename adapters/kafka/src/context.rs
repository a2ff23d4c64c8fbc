//! The group consumer's librdkafka callbacks: logs into `tracing`, statistics and commit
//! results into the stats, rebalances into the bookkeeping. With the shared state, the one
//! pair of modules that know each other: the state holds the consumer, whose context holds it.
//!
//! Every consumer callback runs on the poll thread (the consumer's queue is served only there),
//! so a revoke may block it while in-flight records settle without stalling the async runtime.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::base_consumer::PartitionQueue as RdPartitionQueue;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;
use tracing::{debug, warn};

use crate::logging::log;
use crate::state::Shared;

/// The group consumer, with the adapter's callbacks.
pub(crate) type Consumer = BaseConsumer<Context>;

/// The records of one partition, split off the consumer's queue.
pub(crate) type PartitionQueue = RdPartitionQueue<Context>;

/// The consumer's context: the shared bookkeeping.
pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
}

// Logs, statistics, rebalances and commit results reach these callbacks as events of the
// consumer's queue, served by the poll thread; each counts in `Shared::events`.
impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.shared.events.fetch_add(1, Ordering::Release);
        log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        self.shared.events.fetch_add(1, Ordering::Release);
        self.shared.observe_statistics(&statistics);
    }

    // Consumer errors also come out of `poll`, where the poll thread handles them.
    fn error(&self, error: KafkaError, reason: &str) {
        debug!(%error, reason, "librdkafka reported an error.");
    }
}

impl ConsumerContext for Context {
    // New partitions are taken in before librdkafka is told to assign them, so their queues
    // are split off before it fetches anything for them.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.shared.events.fetch_add(1, Ordering::Release);
        match rebalance {
            Rebalance::Revoke(partitions) => self.shared.revoke(consumer, partitions),
            Rebalance::Assign(partitions) => self.shared.assign(partitions),
            Rebalance::Error(error) => warn!(%error, "Kafka consumer group rebalance failed."),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.shared.events.fetch_add(1, Ordering::Release);
        match result {
            Ok(()) => self.shared.observe_commit(offsets),
            // The auto-commit found nothing new to commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                warn!(%error, "Committing Kafka offsets failed; the next commit retries.")
            }
        }
    }
}
