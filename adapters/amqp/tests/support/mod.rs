//! Test support: a test's own queues on the broker, and a proxy that can cut connections.

pub mod proxy;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lapin::message::Delivery as LapinDelivery;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use outrigger_amqp::{AmqpAcker, AmqpSettings, AmqpSource};
use outrigger_core::{DeadLetter, Delivery, Source};

/// Upper bound for anything the broker is expected to do; tests pass far below it.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Long enough for a delivery that would come to arrive on loopback.
pub const QUIET: Duration = Duration::from_millis(300);
/// Leaked test queues (a test that panicked) delete themselves after this long unused.
const QUEUE_EXPIRES_MS: i32 = 120_000;

/// The broker the tests use.
pub fn url() -> String {
    std::env::var("OUTRIGGER_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A queue name no other test run uses.
pub fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("outrigger-test.{test}.{}.{nanos}", std::process::id())
}

/// A test's own connection to the broker, its queues, and helpers to look into them.
pub struct Fixture {
    connection: Connection,
    pub queue: String,
    pub dead_letter_queue: String,
}

impl Fixture {
    pub async fn new(test: &str) -> Self {
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ must run on 127.0.0.1:5672 for these tests");
        let queue = unique(test);
        let fixture = Self {
            connection,
            dead_letter_queue: format!("{queue}.dlq"),
            queue,
        };
        fixture.declare(&fixture.queue).await;
        fixture.declare(&fixture.dead_letter_queue).await;
        fixture
    }

    pub fn config(&self) -> AmqpSettings {
        AmqpSettings {
            prefetch: 10,
            dead_letter_queue: self.dead_letter_queue.clone(),
            declare_dead_letter_queue: false,
            ..AmqpSettings::new(url(), &self.queue)
        }
    }

    pub async fn declare(&self, queue: &str) {
        let mut arguments = FieldTable::default();
        arguments.insert("x-expires".into(), AMQPValue::LongInt(QUEUE_EXPIRES_MS));
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
            .await
            .unwrap();
    }

    pub async fn delete(&self, queue: &str) {
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }

    pub async fn publish(&self, body: &[u8], properties: BasicProperties) {
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirmation = channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                options,
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            confirmation,
            Confirmation::Ack(None),
            "test publish not taken"
        );
    }

    /// Ready messages and consumers of a queue. A fresh channel each time: a passive declare
    /// of a missing queue closes its channel.
    pub async fn counts(&self, queue: &str) -> (u32, u32) {
        let channel = self.connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let q = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .unwrap();
        (q.message_count(), q.consumer_count())
    }

    /// Waits until `queue` has no consumer and exactly `messages` ready ones. With no consumer
    /// left, every delivery that was never acked is back among the ready ones.
    pub async fn wait_for_ready(&self, queue: &str, messages: u32) {
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                if self.counts(queue).await == (messages, 0) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "queue {queue} still has (ready, consumers) = {:?}, expected ({messages}, 0)",
            self.counts(queue).await
        );
    }

    /// Takes the next message from `queue` (auto-ack), waiting for one up to the deadline.
    pub async fn take(&self, queue: &str) -> LapinDelivery {
        let channel = self.connection.create_channel().await.unwrap();
        let options = BasicGetOptions { no_ack: true };
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(got) = channel.basic_get(queue.into(), options).await.unwrap() {
                    return got.delivery;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing arrived in {queue}"))
    }

    pub async fn cleanup(self) {
        self.delete(&self.queue).await;
        self.delete(&self.dead_letter_queue).await;
    }
}

/// The next delivery, which must come before the deadline.
pub async fn recv(source: &mut AmqpSource) -> Delivery<AmqpAcker> {
    tokio::time::timeout(DEADLINE, source.recv())
        .await
        .expect("no delivery before the deadline")
        .expect("recv failed")
        .expect("source ended")
}

/// A typical failure context.
pub fn dead_letter() -> DeadLetter {
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    DeadLetter {
        reason: "app answered HTTP 400".into(),
        class: "4xx".into(),
        last_status: Some(400),
        attempts: 3,
        first_failure: at,
        last_failure: at,
        key: Some("order-7".into()),
        response_excerpt: Bytes::from_static(b"bad order"),
    }
}
