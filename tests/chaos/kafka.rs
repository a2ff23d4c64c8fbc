//! Kafka: a tansu broker of the run's own behind the kit's proxy (every client, the sidecar's
//! and the test's, reaches it through the proxy, so a cut breaks them all), a four-partition
//! topic and its `.dlq`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use outrigger_testkit::kafka::{headers_of, DEADLINE};
use outrigger_testkit::Tansu;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::broker::{ChaosBroker, DeadRecord};
use super::workload::{copy_of, Event};
use crate::support::{unique, Policy};

const PARTITIONS: i32 = 4;

/// The run's broker, topics, group, producer and dead-letter reader.
pub struct Kafka {
    tansu: Tansu,
    topic: String,
    group: String,
    producer: FutureProducer,
    dlq: StreamConsumer,
    offsets: Arc<BaseConsumer>,
}

impl ChaosBroker for Kafka {
    const NAME: &'static str = "kafka";
    // The restarted member waits for the killed one's session (3 s below) to end before the
    // group hands it the partitions.
    const TAKEOVER: Duration = Duration::from_secs(4);

    async fn start() -> Self {
        let tansu = Tansu::behind_proxy().await;
        let topic = unique("outrigger-chaos");
        let dead_letters = format!("{topic}.dlq");
        tansu.kafka.create_topic(&topic, PARTITIONS).await;
        tansu.kafka.create_topic(&dead_letters, 1).await;
        let client = |group: &str| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", &tansu.kafka.bootstrap)
                .set("group.id", group)
                .set("enable.auto.commit", "false");
            c
        };
        let dlq: StreamConsumer = client(&unique("dlq-reader"))
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&dead_letters, 0, Offset::Beginning)
            .unwrap();
        dlq.assign(&list).unwrap();
        let group = unique("g");
        Self {
            producer: tansu.kafka.producer(),
            offsets: Arc::new(client(&group).create().unwrap()),
            dlq,
            group,
            topic,
            tansu,
        }
    }

    fn policy(&self, app_url: &str, namespace: &str) -> Policy {
        Policy::kafka(
            &self.tansu.kafka.bootstrap,
            &self.topic,
            &self.group,
            app_url,
            namespace,
        )
        // A killed member's partitions go to its successor within seconds, not the 45 s
        // default.
        .kafka_property("session.timeout.ms", "3000")
        .kafka_property("heartbeat.interval.ms", "500")
    }

    async fn publish(&self, events: &[Event]) {
        let sends = events.iter().map(|e| {
            let headers = OwnedHeaders::new().insert(Header {
                key: "idempotency-key",
                value: Some(e.key.as_bytes()),
            });
            let record = FutureRecord::to(&self.topic)
                .key(e.key.as_bytes())
                .payload(&e.payload[..])
                .headers(headers);
            self.producer.send(record, DEADLINE)
        });
        for result in join_all(sends).await {
            result.unwrap_or_else(|(e, _)| panic!("producing to {}: {e}", self.topic));
        }
    }

    fn cut(&self) {
        self.tansu.proxy().expect("tansu behind the proxy").cut();
    }

    async fn dead_letters(&self) -> Vec<DeadRecord> {
        let mut out = Vec::new();
        // To the end of the topic as it is now: its end says so, or nothing more comes.
        loop {
            match tokio::time::timeout(Duration::from_millis(500), self.dlq.recv()).await {
                Ok(Ok(m)) => out.push(dead_record(&m.detach())),
                Ok(Err(KafkaError::PartitionEOF(_))) | Err(_) => break,
                // A cut through the proxy: the reader reconnects, the next read goes on.
                Ok(Err(_)) => break,
            }
        }
        out
    }

    async fn backlog(&self) -> u64 {
        let offsets = self.offsets.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let mut list = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                list.add_partition(&topic, p);
            }
            let Ok(committed) = offsets.committed_offsets(list, Duration::from_secs(5)) else {
                return u64::MAX;
            };
            let mut behind = 0;
            for p in 0..PARTITIONS {
                let Ok((low, high)) = offsets.fetch_watermarks(&topic, p, Duration::from_secs(5))
                else {
                    return u64::MAX;
                };
                let done = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => low,
                };
                behind += (high - done).max(0) as u64;
            }
            behind
        })
        .await
        .unwrap()
    }

    async fn clean_up(self) {}
}

fn dead_record(m: &OwnedMessage) -> DeadRecord {
    let headers = headers_of(m);
    let text = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    DeadRecord {
        key: text("outrigger-dlq-key"),
        copy: copy_of(m.payload().unwrap_or_default()),
        class: text("outrigger-dlq-class").unwrap_or_default(),
        source: text("outrigger-dlq-source").unwrap_or_default(),
        attempts: text("outrigger-dlq-attempts").unwrap_or_default(),
    }
}
