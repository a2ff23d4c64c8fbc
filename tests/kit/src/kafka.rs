//! Kafka for tests: a broker a test reaches (a [`Tansu`] process of its own, or librdkafka's
//! mock cluster), its topics and groups, producing into them, and reading back what was
//! committed and written.

pub mod tansu;

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use outrigger_core::{Acker, Coordinates, Delivery, Header as CoreHeader, Settlement};
use outrigger_kafka::{KafkaAcker, KafkaSettings, KafkaSource, PartitionStats};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub use tansu::Tansu;

use crate::names::unique;
use crate::wait::wait_until;
use crate::{Policy, TestApp};

/// Upper bound for anything the broker is expected to do (a group join takes a few seconds);
/// tests pass far below it.
pub const DEADLINE: Duration = Duration::from_secs(40);
/// Long enough for a record that would come to arrive on loopback.
pub const QUIET: Duration = Duration::from_millis(1500);

/// A broker the tests reach at `bootstrap`.
#[derive(Clone, Debug)]
pub struct Kafka {
    /// `host:port` of the broker.
    pub bootstrap: String,
}

impl Kafka {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// The source config the tests start from: fast commits, a short revoke timeout.
    pub fn config(&self, topics: &[&str], group: &str) -> KafkaSettings {
        KafkaSettings {
            commit_interval: Duration::from_millis(100),
            revoke_timeout: Duration::from_secs(2),
            ..KafkaSettings::new(self.bootstrap.clone(), topics.iter().copied(), group)
        }
    }

    /// Creates `topic` with `partitions` partitions, one replica.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let results = admin
            .create_topics(
                [&NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(DEADLINE)),
            )
            .await
            .unwrap();
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }

    /// Partition count of a topic, `None` when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Option<usize> {
        let consumer: BaseConsumer = self.client().create().unwrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(None, DEADLINE).unwrap();
            metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
        })
        .await
        .unwrap()
    }

    /// A producer that writes every record as a record batch of its own.
    ///
    /// tansu 0.6.0 answers a fetch only with the batches that start at or after the fetch
    /// offset (`offsets.split_off(&offset)` in its dynostore `fetch`), where Kafka answers with
    /// the batch that holds the offset. A consumer that starts inside a batch (at a committed
    /// offset after a rebalance or a restart) would get nothing from it until more records are
    /// produced. With one record per batch every offset is the start of one.
    pub fn producer(&self) -> FutureProducer {
        self.client()
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .create()
            .unwrap()
    }

    /// Produces one record, confirmed, and returns its offset.
    pub async fn produce(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> i64 {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header { key, value: *value })
        });
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer
            .send(record, DEADLINE)
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"))
            .offset
    }

    /// `count` records with payloads `"<partition>-<i>"` into every partition, in turn.
    pub async fn produce_numbered(&self, topic: &str, partitions: i32, count: usize) {
        let producer = self.producer();
        for i in 0..count {
            for p in 0..partitions {
                let body = format!("{p}-{i}");
                self.produce(&producer, topic, p, None, Some(body.as_bytes()), &[])
                    .await;
            }
        }
    }

    /// Produces `(key, payload)` records, 500 at a time, each confirmed, letting the
    /// partitioner place them by key.
    pub async fn produce_keyed(
        &self,
        topic: &str,
        records: &[(impl AsRef<[u8]>, impl AsRef<[u8]>)],
    ) {
        let producer = self.producer();
        for chunk in records.chunks(500) {
            let sends = chunk.iter().map(|(key, payload)| {
                producer.send(
                    FutureRecord::to(topic)
                        .key(key.as_ref())
                        .payload(payload.as_ref()),
                    DEADLINE,
                )
            });
            for result in futures_util::future::join_all(sends).await {
                result.unwrap_or_else(|(e, _)| panic!("produce: {e}"));
            }
        }
    }

    /// A producer as clients are by default: records sent together share a record batch. On
    /// tansu a consumer must then never fetch from inside such a batch (see
    /// [`Kafka::producer`]): not after a restart or a rebalance, nor after holding back.
    pub fn batching_producer(&self) -> FutureProducer {
        self.client()
            .set("acks", "all")
            .set("linger.ms", "100")
            .create()
            .unwrap()
    }

    /// `count` records with payloads `"<partition>-<i>"` into one partition, sent all at once
    /// and confirmed afterwards, as a busy producer (or the pipeline tests) sends them.
    pub async fn produce_burst(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: i32,
        count: usize,
    ) {
        let mut confirmations = Vec::with_capacity(count);
        for i in 0..count {
            let body = format!("{partition}-{i}");
            let record = FutureRecord::<[u8], [u8]>::to(topic)
                .partition(partition)
                .payload(body.as_bytes());
            let confirmation = producer
                .send_result(record)
                .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
            confirmations.push(confirmation);
        }
        for confirmation in confirmations {
            confirmation
                .await
                .expect("the producer went away")
                .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
        }
    }

    /// The group's committed offset of each partition, as another client sees it.
    pub async fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let consumer: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let list = tokio::task::spawn_blocking(move || {
            consumer.committed_offsets(list, Duration::from_secs(10))
        })
        .await
        .unwrap()
        .expect("fetching committed offsets");
        (0..partitions)
            .map(
                |p| match list.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect()
    }

    /// Waits until the group's committed offsets are exactly `expected`.
    pub async fn wait_committed(&self, group: &str, topic: &str, expected: &[Option<i64>]) {
        let partitions = expected.len() as i32;
        let what = format!("committed offsets of {topic} in {group} to be {expected:?}");
        wait_until(&what, DEADLINE, || async {
            self.committed(group, topic, partitions).await == expected
        })
        .await;
    }

    /// Reads `count` records from one partition of `topic` from the start, without a group.
    pub async fn read(&self, topic: &str, partition: i32, count: usize) -> Vec<OwnedMessage> {
        self.read_from_start(topic, partition, Until::Count(count))
            .await
    }

    /// Every record of one partition of `topic`, from the start to its end now, without a
    /// group.
    pub async fn read_all(&self, topic: &str, partition: i32) -> Vec<OwnedMessage> {
        self.read_from_start(topic, partition, Until::End).await
    }

    /// Every record of every partition of `topic` (partitions `0..partitions`), each from its
    /// start to its end now, partition by partition.
    pub async fn read_topic(&self, topic: &str, partitions: i32) -> Vec<OwnedMessage> {
        let mut out = Vec::new();
        for p in 0..partitions {
            out.extend(self.read_all(topic, p).await);
        }
        out
    }

    /// Reads one partition of `topic` from its start with a consumer of no group, until `until`.
    async fn read_from_start(
        &self,
        topic: &str,
        partition: i32,
        until: Until,
    ) -> Vec<OwnedMessage> {
        let mut config = self.client();
        config
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false");
        if until == Until::End {
            config
                .set("enable.partition.eof", "true")
                .set("fetch.wait.max.ms", "100");
        }
        let consumer: BaseConsumer = config.create().unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&list).unwrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let start = std::time::Instant::now();
            loop {
                let late = match until {
                    Until::Count(count) if out.len() >= count => return out,
                    Until::Count(count) => {
                        format!("only {} of {count} records arrived in {topic}", out.len())
                    }
                    Until::End => format!("the end of {topic}/{partition} did not come"),
                };
                assert!(start.elapsed() < DEADLINE, "{late}");
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => out.push(m.detach()),
                    Some(Err(KafkaError::PartitionEOF(_))) if until == Until::End => return out,
                    Some(Err(e)) => panic!("reading {topic}/{partition}: {e}"),
                    None => {}
                }
            }
        })
        .await
        .unwrap()
    }
}

/// How far [`Kafka::read_from_start`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// This many records, waiting for them to arrive.
    Count(usize),
    /// The partition's end as it is when the reader gets there.
    End,
}

/// The headers of a record as (name, value) pairs, in order.
pub fn headers_of(message: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The next delivery, which must come within [`DEADLINE`].
pub async fn recv(source: &mut KafkaSource) -> Delivery<KafkaAcker> {
    crate::source::recv(source, DEADLINE).await
}

/// `n` deliveries, each within [`DEADLINE`].
pub async fn recv_n(source: &mut KafkaSource, n: usize) -> Vec<Delivery<KafkaAcker>> {
    crate::source::recv_n(source, n, DEADLINE).await
}

/// Asserts that no delivery arrives for [`QUIET`].
pub async fn assert_quiet(source: &mut KafkaSource, why: &str) {
    crate::source::assert_quiet(source, QUIET, why).await;
}

/// The stats of one partition, which must be assigned.
pub fn partition(stats: &[PartitionStats], topic: &str, partition: i32) -> PartitionStats {
    stats
        .iter()
        .find(|p| p.topic == topic && p.partition == partition)
        .unwrap_or_else(|| panic!("{topic}/{partition} not assigned: {stats:?}"))
        .clone()
}

/// The payload of a delivery as text.
pub fn text(delivery: &Delivery<KafkaAcker>) -> String {
    String::from_utf8(delivery.message.payload.to_vec()).unwrap()
}

/// Where a delivery sits: (partition, offset).
pub fn position(delivery: &Delivery<KafkaAcker>) -> (i32, i64) {
    match &delivery.message.coordinates {
        Coordinates::Kafka {
            partition, offset, ..
        } => (*partition, *offset),
        other => panic!("not a Kafka record: {other:?}"),
    }
}

/// Acks a delivery, which must succeed.
pub async fn ack(delivery: Delivery<KafkaAcker>) {
    delivery.acker.settle(Settlement::Ack).await.unwrap();
}

/// A record read back as a core message: payload and header values byte for byte (a null one
/// empty), the key, and where it sits.
pub fn to_message(record: &OwnedMessage) -> outrigger_core::Message {
    let mut message = outrigger_core::Message::new(
        Bytes::copy_from_slice(record.payload().unwrap_or_default()),
        Coordinates::Kafka {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
        },
    );
    message.key = record.key().map(Bytes::copy_from_slice);
    message.headers = headers_of(record)
        .into_iter()
        .map(|(name, value)| CoreHeader::new(name, value.unwrap_or_default()))
        .collect();
    message.timestamp = record
        .timestamp()
        .to_millis()
        .and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    message
}

/// `topic` on `broker` into `app`, with a consumer group and a Redis namespace of its own.
pub fn policy(broker: &Kafka, topic: &str, app: &TestApp) -> Policy {
    Policy::kafka(
        &broker.bootstrap,
        topic,
        &unique("g"),
        &app.url(),
        &unique("ns"),
    )
}
