//! The baselines: plain rdkafka group consumers that POST each record to the app and store its
//! offset for the next auto-commit, as a team writes them by hand, in two shapes.
//!
//! [`Shape::Unordered`] is not what the sidecar does: records of a partition or a key run in
//! parallel in any order, a partition's stored offset is the highest one delivered, so a crash
//! can lose a record still in flight below it (the sidecar commits only the settled prefix),
//! and librdkafka prefetches as much as its defaults let it (64 MiB; the sidecar bounds its
//! prefetch per partition). That makes it the fastest honest yardstick.
//!
//! [`Shape::Ordered`] is what a team writes when order matters: one record in flight per
//! partition, consume → POST → store its offset → the next record. Each partition reads from a
//! queue of its own, so a slow record holds back its own partition only, and the stored offset
//! is always the next record to deliver: a crash loses nothing. It is the fair peer of the
//! sidecar's `partition` mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::app::AppClient;

/// The sidecar's default `commit_interval`.
const COMMIT_INTERVAL_MS: &str = "1000";
/// Pause between attempts when the app does not take a record.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How the raw consumer runs records.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// Up to `in_flight` records at once (the sidecar's `backpressure.max_in_flight`), in any
    /// order.
    Unordered {
        /// Records POSTed at once.
        in_flight: u16,
    },
    /// One record at a time in each partition, in offset order.
    Ordered {
        /// The topic's partitions, `0..partitions`.
        partitions: u16,
    },
}

impl Shape {
    /// The report's column, also the name of its run in progress lines.
    pub fn label(self) -> &'static str {
        match self {
            Shape::Unordered { .. } => "raw",
            Shape::Ordered { .. } => "raw ordered",
        }
    }
}

/// What the raw consumer is told.
pub struct RawSpec<'a> {
    /// `bootstrap.servers`.
    pub bootstrap: &'a str,
    /// The topic consumed.
    pub topic: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// How records are run.
    pub shape: Shape,
    /// librdkafka properties set last, as the sidecar's `[source.kafka.properties]`.
    pub properties: &'a [(String, String)],
}

impl RawSpec<'_> {
    /// A consumer in the group, subscribed to the topic, that stores only the offsets it is
    /// given and commits them every [`COMMIT_INTERVAL_MS`].
    fn subscribe(&self) -> anyhow::Result<StreamConsumer> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap)
            .set("group.id", self.group)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", COMMIT_INTERVAL_MS)
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        for (key, value) in self.properties {
            config.set(key, value);
        }
        let consumer: StreamConsumer =
            config.create().context("creating the raw Kafka consumer")?;
        consumer
            .subscribe(&[self.topic])
            .with_context(|| format!("subscribing to {}", self.topic))?;
        Ok(consumer)
    }
}

/// A running raw consumer.
pub struct RawConsumer {
    consumer: Arc<StreamConsumer>,
    delivered: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

/// What each record's delivery shares.
struct Shared {
    consumer: Arc<StreamConsumer>,
    topic: String,
    app: AppClient,
    /// The highest offset stored per partition; the lock also orders the store calls.
    stored: Mutex<HashMap<i32, i64>>,
    delivered: Arc<AtomicUsize>,
}

impl RawConsumer {
    /// Joins the group and POSTs its records to `app` as `spec.shape` says.
    pub async fn start(spec: &RawSpec<'_>, app: &str) -> anyhow::Result<Self> {
        let consumer = Arc::new(spec.subscribe()?);
        let delivered = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            consumer: consumer.clone(),
            topic: spec.topic.to_owned(),
            app: AppClient::new(app)?,
            stored: Mutex::new(HashMap::new()),
            delivered: delivered.clone(),
        });
        let tasks = match spec.shape {
            Shape::Unordered { in_flight } => {
                let permits = Arc::new(Semaphore::new(in_flight.into()));
                vec![tokio::spawn(consume(shared, permits))]
            }
            Shape::Ordered { partitions } => consume_in_order(shared, partitions)?,
        };
        Ok(Self {
            consumer,
            delivered,
            tasks,
        })
    }

    /// Records delivered (and their offsets stored) so far.
    pub fn delivered(&self) -> usize {
        self.delivered.load(Ordering::Acquire)
    }

    /// Stops consuming and leaves the group, committing the stored offsets.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        // The last reference: dropping it closes the consumer, which blocks on the broker.
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    }
}

/// Unordered: takes a permit, then a record, and hands both to a task of its own.
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
            shared.deliver(partition, offset, payload).await;
            drop(permit);
        });
    }
}

/// Ordered: a task per partition, each delivering its partition's records one at a time, and
/// one serving the consumer's events (rebalances, commits) from its main queue. Every queue is
/// split off before the consumer is first polled, so no record reaches the main queue.
fn consume_in_order(shared: Arc<Shared>, partitions: u16) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let queues = (0..i32::from(partitions))
        .map(|partition| {
            let queue = shared
                .consumer
                .split_partition_queue(&shared.topic, partition)
                .with_context(|| {
                    format!("a queue for partition {partition} of {}", shared.topic)
                })?;
            Ok((partition, queue))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tasks: Vec<_> = queues
        .into_iter()
        .map(|(partition, queue)| tokio::spawn(deliver_partition(shared.clone(), partition, queue)))
        .collect();
    tasks.push(tokio::spawn(serve_events(shared.consumer.clone())));
    Ok(tasks)
}

/// Delivers the records of one partition in offset order, the next one once the app took it.
async fn deliver_partition(
    shared: Arc<Shared>,
    partition: i32,
    queue: StreamPartitionQueue<DefaultConsumerContext>,
) {
    loop {
        let (offset, payload) = match queue.recv().await {
            Ok(message) => (
                message.offset(),
                Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            ),
            Err(error) => {
                eprintln!("raw ordered: consumer error on partition {partition}: {error}");
                continue;
            }
        };
        shared.deliver(partition, offset, payload).await;
    }
}

/// Polls the consumer's main queue, which serves its events; a record there would have missed
/// its partition's queue, and is reported rather than delivered out of order.
async fn serve_events(consumer: Arc<StreamConsumer>) {
    loop {
        match consumer.recv().await {
            Ok(message) => eprintln!(
                "raw ordered: a record of partition {} came on the main queue; not delivered",
                message.partition()
            ),
            Err(error) => eprintln!("raw ordered: consumer error: {error}"),
        }
    }
}

impl Shared {
    /// POSTs `payload` until the app takes it, then stores its offset and counts it.
    async fn deliver(&self, partition: i32, offset: i64, payload: Bytes) {
        while !self.app.post(payload.clone()).await {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        self.store(partition, offset);
        self.delivered.fetch_add(1, Ordering::AcqRel);
    }

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
