//! The baseline: a plain rdkafka group consumer that POSTs each record to the app, up to a
//! number of records at once, and stores its offset for the next auto-commit.
//!
//! It is what a team writes by hand, not what the sidecar does: records of a partition or a
//! key run in parallel in any order, a partition's stored offset is the highest one delivered,
//! so a crash can lose a record still in flight below it (the sidecar commits only the settled
//! prefix), and librdkafka prefetches as much as its defaults let it (64 MiB; the sidecar
//! bounds its prefetch per partition). That makes it the fastest honest yardstick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::app::AppClient;

/// The sidecar's default `commit_interval`.
const COMMIT_INTERVAL_MS: &str = "1000";
/// Pause between attempts when the app does not take a record.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A running raw consumer.
pub struct RawConsumer {
    consumer: Arc<StreamConsumer>,
    delivered: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// What each record's task shares.
struct Shared {
    consumer: Arc<StreamConsumer>,
    topic: String,
    app: AppClient,
    /// The highest offset stored per partition; the lock also orders the store calls.
    stored: Mutex<HashMap<i32, i64>>,
    delivered: Arc<AtomicUsize>,
}

/// What the raw consumer is told.
pub struct RawSpec<'a> {
    /// `bootstrap.servers`.
    pub bootstrap: &'a str,
    /// The topic consumed.
    pub topic: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// Records POSTed at once, the sidecar's `backpressure.max_in_flight`.
    pub in_flight: u16,
    /// librdkafka properties set last, as the sidecar's `[source.kafka.properties]`.
    pub properties: &'a [(String, String)],
}

impl RawConsumer {
    /// Joins the group and POSTs up to `in_flight` records at once to `app`.
    pub async fn start(spec: &RawSpec<'_>, app: &str) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", spec.bootstrap)
            .set("group.id", spec.group)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", COMMIT_INTERVAL_MS)
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        for (key, value) in spec.properties {
            config.set(key, value);
        }
        let consumer: StreamConsumer =
            config.create().context("creating the raw Kafka consumer")?;
        consumer
            .subscribe(&[spec.topic])
            .with_context(|| format!("subscribing to {}", spec.topic))?;
        let consumer = Arc::new(consumer);
        let delivered = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            consumer: consumer.clone(),
            topic: spec.topic.to_owned(),
            app: AppClient::new(app)?,
            stored: Mutex::new(HashMap::new()),
            delivered: delivered.clone(),
        });
        let permits = Arc::new(Semaphore::new(spec.in_flight.into()));
        let task = tokio::spawn(consume(shared, permits));
        Ok(Self {
            consumer,
            delivered,
            task,
        })
    }

    /// Records delivered (and their offsets stored) so far.
    pub fn delivered(&self) -> usize {
        self.delivered.load(Ordering::Acquire)
    }

    /// Stops consuming and leaves the group, committing the stored offsets.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        // The last reference: dropping it closes the consumer, which blocks on the broker.
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    }
}

/// Takes a permit, then a record, and hands both to a task of its own.
async fn consume(shared: Arc<Shared>, permits: Arc<Semaphore>) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (partition, offset, payload) = match shared.consumer.recv().await {
            Ok(message) => (
                message.partition(),
                message.offset(),
                Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            ),
            Err(error) => {
                eprintln!("raw: consumer error: {error}");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            while !shared.app.post(payload.clone()).await {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            shared.store(partition, offset);
            shared.delivered.fetch_add(1, Ordering::AcqRel);
            drop(permit);
        });
    }
}

impl Shared {
    /// Stores `offset` for the next commit unless a higher one of the partition already is.
    fn store(&self, partition: i32, offset: i64) {
        let mut stored = self.stored.lock().expect("offset lock");
        let highest = stored.entry(partition).or_insert(-1);
        if offset > *highest {
            *highest = offset;
            // Stores offset + 1, the next record to read. A record of a revoked partition
            // cannot be stored; it is redelivered to the new owner, as for any consumer.
            let _ = self.consumer.store_offset(&self.topic, partition, offset);
        }
    }
}
