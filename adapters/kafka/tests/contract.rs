//! The source contract against real Kafka-protocol brokers: a tansu process per point (behind
//! a proxy of the test's own where the point cuts connections), and librdkafka's in-process
//! mock cluster where it needs dead-letter writes to fail, which tansu cannot be made to do.
//! The fixture's topic has one partition, so its records come in order.
//!
//! tansu must be on PATH (or at `OUTRIGGER_TEST_TANSU`); without it these tests fail.

use std::collections::BTreeMap;
use std::time::Duration;

use outrigger_core::Message;
use outrigger_kafka::{Kafka as KafkaBroker, KafkaConfig};
use outrigger_testkit::kafka::{self, to_message, Kafka};
use outrigger_testkit::{unique, AfterCut, Faults, Outgoing, Redelivery, SourceFixture, Tansu};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// The broker a point runs on.
enum Server {
    Tansu(Tansu),
    Mock(MockCluster<'static, DefaultProducerContext>),
}

/// A topic, its dead-letter topic and a group of the test's own.
struct KafkaContract {
    server: Server,
    kafka: Kafka,
    producer: FutureProducer,
    topic: String,
    dead_letter_topic: String,
    group: String,
}

impl SourceFixture for KafkaContract {
    type Broker = KafkaBroker;
    const DEADLINE: Duration = kafka::DEADLINE;
    const REDELIVERY: Redelivery = Redelivery::NextSource;
    const MARKS_REDELIVERED: bool = false;

    async fn new(faults: Faults) -> Self {
        let topic = unique("contract");
        let dead_letter_topic = format!("{topic}.dlq");
        let (server, kafka) = match faults {
            Faults::DeadLetterWrites => {
                let mock = MockCluster::new(1).unwrap();
                // The mock cluster does not implement CreateTopics.
                mock.create_topic(&topic, 1, 1).unwrap();
                mock.create_topic(&dead_letter_topic, 1, 1).unwrap();
                let kafka = Kafka {
                    bootstrap: mock.bootstrap_servers(),
                };
                (Server::Mock(mock), kafka)
            }
            Faults::ConnectionCuts | Faults::None => {
                let tansu = if faults == Faults::ConnectionCuts {
                    Tansu::behind_proxy().await
                } else {
                    Tansu::start().await
                };
                let kafka = tansu.kafka.clone();
                kafka.create_topic(&topic, 1).await;
                kafka.create_topic(&dead_letter_topic, 1).await;
                (Server::Tansu(tansu), kafka)
            }
        };
        Self {
            server,
            producer: kafka.producer(),
            kafka,
            topic,
            dead_letter_topic,
            group: unique("contract-group"),
        }
    }

    /// Fast commits and a short revoke timeout, as every Kafka test here runs.
    fn config(&self) -> KafkaConfig {
        let mut properties = BTreeMap::new();
        if let Server::Mock(_) = self.server {
            // Dead-letter writes give up quickly, so that a refused one shows within the test.
            properties.insert("message.timeout.ms".into(), "1500".into());
            // The mock cluster's coordinator lets a restarted consumer join only once the
            // stopped one's session has expired: keep that short.
            properties.insert("session.timeout.ms".into(), "6000".into());
            properties.insert("heartbeat.interval.ms".into(), "500".into());
        }
        KafkaConfig {
            properties,
            commit_interval: Duration::from_millis(100),
            revoke_timeout: Duration::from_secs(2),
            ..KafkaConfig::new(&self.kafka.bootstrap, [&self.topic], &self.group)
        }
    }

    /// Key, value and headers; Kafka has no message ids or content types of its own (the
    /// adapter reads a `content-type` header), so those are left out.
    async fn publish(&self, message: Outgoing) {
        let headers: Vec<(&str, Option<&[u8]>)> = message
            .headers
            .iter()
            .map(|h| (h.name.as_str(), Some(&h.value[..])))
            .collect();
        self.kafka
            .produce(
                &self.producer,
                &self.topic,
                0,
                message.key.as_deref(),
                Some(&message.payload),
                &headers,
            )
            .await;
    }

    async fn dead_letters(&self) -> Vec<Message> {
        let records = self.kafka.read_all(&self.dead_letter_topic, 0).await;
        records.iter().map(to_message).collect()
    }

    /// tansu advertises the proxy: the cut breaks the bootstrap connection and every broker
    /// connection. librdkafka reconnects by itself and the consumer keeps its assignment.
    fn cut_connections(&self) -> AfterCut {
        let Server::Tansu(tansu) = &self.server else {
            panic!("cuts need Faults::ConnectionCuts");
        };
        tansu
            .proxy()
            .expect("tansu behind a proxy (Faults::ConnectionCuts)")
            .cut();
        AfterCut::Kept
    }

    /// Every produce request fails with a retriable error until the fault is cleared.
    async fn break_dead_letter_writes(&self) {
        let not_enough_replicas = RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS;
        self.mock()
            .request_errors(RDKafkaApiKey::Produce, &[not_enough_replicas; 500]);
    }

    async fn heal_dead_letter_writes(&self) {
        self.mock().clear_request_errors(RDKafkaApiKey::Produce);
    }
}

impl KafkaContract {
    fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        match &self.server {
            Server::Mock(mock) => mock,
            Server::Tansu(_) => panic!("failing writes need Faults::DeadLetterWrites"),
        }
    }
}

outrigger_testkit::source_contract!(KafkaContract);
