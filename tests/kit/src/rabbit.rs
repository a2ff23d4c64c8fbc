//! The machine's RabbitMQ for tests: queues of a test's own, publishing with confirms, and
//! reading queues back.
//!
//! Queues are declared with `x-expires`, so the queues of a test that failed before cleaning
//! up delete themselves once unused for a while.

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use outrigger_amqp::{AmqpAcker, AmqpSettings, AmqpSource};
use outrigger_core::Delivery;

use crate::names::unique;
use crate::proxy::Proxy;
use crate::wait::wait_until;

/// Upper bound for anything the broker is expected to do; tests pass far below it.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Long enough for a delivery that would come to arrive on loopback.
pub const QUIET: Duration = Duration::from_millis(300);
/// Leaked test queues (a test that panicked) delete themselves after this long unused.
const QUEUE_EXPIRES_MS: i32 = 120_000;

/// The broker the tests use: `OUTRIGGER_TEST_AMQP_URL`, or the local one as guest.
pub fn url() -> String {
    std::env::var("OUTRIGGER_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The broker's address, for a [`Proxy`] in front of it.
pub async fn address() -> SocketAddr {
    let uri: AMQPUri = url().parse().expect("a valid AMQP URL");
    let authority = (uri.authority.host.clone(), uri.authority.port);
    tokio::net::lookup_host(authority)
        .await
        .expect("the broker's host resolves")
        .next()
        .expect("the broker's host has an address")
}

/// [`url`], through `proxy` (which must forward to [`address`]).
pub fn url_through(proxy: &Proxy) -> String {
    let mut uri: AMQPUri = url().parse().expect("a valid AMQP URL");
    uri.authority.host = proxy.addr.ip().to_string();
    uri.authority.port = proxy.addr.port();
    uri.to_string()
}

/// A connection with one confirming channel.
pub struct Rabbit {
    connection: Connection,
    channel: Channel,
}

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct Got {
    /// Body bytes.
    pub body: Vec<u8>,
    /// Properties, headers included.
    pub properties: BasicProperties,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Its delivery tag on the channel that read it.
    pub delivery_tag: u64,
}

impl Got {
    /// A header's value as text (long strings and byte arrays; other types in their debug
    /// form).
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = self.properties.headers().as_ref()?;
        let v = headers.inner().get(&ShortString::from(name.to_owned()))?;
        match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
            other => Some(format!("{other:?}")),
        }
    }
}

impl Rabbit {
    /// Connects to the broker at [`url`].
    pub async fn connect() -> Self {
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ must run on 127.0.0.1:5672 (or at OUTRIGGER_TEST_AMQP_URL)");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            connection,
            channel,
        }
    }

    /// Declares a durable queue that expires once unused for a while.
    pub async fn declare(&self, queue: &str) {
        let mut arguments = FieldTable::default();
        arguments.insert("x-expires".into(), AMQPValue::LongInt(QUEUE_EXPIRES_MS));
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
            .await
            .unwrap_or_else(|e| panic!("declaring {queue}: {e}"));
        let _ = channel.close(200, "done".into()).await;
    }

    /// Deletes a queue (nothing happens when it does not exist).
    pub async fn delete(&self, queue: &str) {
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {queue}: {e}"));
        let _ = channel.close(200, "done".into()).await;
    }

    /// Publishes to `queue` through the default exchange, persistent unless `properties` say
    /// otherwise, and waits until the broker confirmed and routed it.
    pub async fn publish(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        let properties = match properties.delivery_mode() {
            Some(_) => properties,
            None => properties.with_delivery_mode(2),
        };
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirmation = self
            .channel
            .basic_publish("".into(), queue.into(), options, body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            confirmation,
            Confirmation::Ack(None),
            "the broker confirmed and routed the test's publish to {queue}"
        );
    }

    /// Binds `queue` to `exchange` with `routing_key`, so messages can reach it with keys of
    /// their own (through the default exchange, the routing key is the queue's name).
    pub async fn bind(&self, queue: &str, exchange: &str, routing_key: &str) {
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("binding {queue} to {exchange} by {routing_key}: {e}"));
    }

    /// Publishes to `exchange` with `routing_key`, persistent, and waits until the broker
    /// confirmed and routed it.
    pub async fn publish_routed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirmation = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            confirmation,
            Confirmation::Ack(None),
            "the broker confirmed and routed the test's publish to {exchange} by {routing_key}"
        );
    }

    /// Publishes with an `idempotency-key` header and waits for the confirm.
    pub async fn publish_keyed(&self, queue: &str, key: &str, body: &[u8]) {
        self.publish_keyed_with(queue, key, &[], body).await;
    }

    /// Publishes with an `idempotency-key` header and these text headers, and waits for the
    /// confirm.
    pub async fn publish_keyed_with(
        &self,
        queue: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut table = FieldTable::default();
        for (name, value) in [("idempotency-key", key)].iter().chain(headers) {
            table.insert(
                (*name).into(),
                AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
            );
        }
        self.publish(queue, body, BasicProperties::default().with_headers(table))
            .await;
    }

    /// Ready messages and consumers of a queue, which must exist. A fresh channel each time: a
    /// passive declare of a missing queue closes its channel.
    pub async fn counts(&self, queue: &str) -> (u32, u32) {
        self.passive(queue)
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
    }

    /// Ready messages in the queue (unacked ones not counted); 0 when it does not exist.
    pub async fn depth(&self, queue: &str) -> u32 {
        self.passive(queue).await.map_or(0, |(ready, _)| ready)
    }

    async fn passive(&self, queue: &str) -> Result<(u32, u32), lapin::Error> {
        let channel = self.connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let counts = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .map(|q| (q.message_count(), q.consumer_count()));
        let _ = channel.close(200, "done".into()).await;
        counts
    }

    /// Waits until `queue` has no consumer and exactly `messages` ready ones. With no consumer
    /// left, every delivery that was never acked is back among the ready ones.
    pub async fn wait_for_ready(&self, queue: &str, messages: u32) {
        let what = format!("queue {queue} to have {messages} ready messages and no consumer");
        wait_until(&what, DEADLINE, || async {
            self.counts(queue).await == (messages, 0)
        })
        .await;
    }

    /// Takes the next message from `queue`, waiting for one up to the deadline.
    pub async fn take(&self, queue: &str) -> Got {
        let what = format!("a message in {queue}");
        wait_until(&what, DEADLINE, || self.get(queue)).await
    }

    /// Takes every ready message out of the queue.
    pub async fn drain(&self, queue: &str) -> Vec<Got> {
        let mut out = Vec::new();
        while let Some(got) = self.get(queue).await {
            out.push(got);
        }
        out
    }

    /// Every ready message of the queue, in order, left in the queue as it was: read without
    /// acking on a channel of its own, whose close hands them all back. None when the queue
    /// does not exist.
    pub async fn peek(&self, queue: &str) -> Vec<Got> {
        if self.passive(queue).await.is_err() {
            return Vec::new();
        }
        let channel = self.connection.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(got) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap_or_else(|e| panic!("reading {queue}: {e}"))
        {
            out.push(got_from(got.delivery));
        }
        channel.close(200, "done".into()).await.unwrap();
        out
    }

    async fn get(&self, queue: &str) -> Option<Got> {
        let got = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|e| panic!("reading {queue}: {e}"))?;
        Some(got_from(got.delivery))
    }
}

fn got_from(delivery: lapin::message::Delivery) -> Got {
    Got {
        routing_key: delivery.routing_key.to_string(),
        delivery_tag: delivery.delivery_tag,
        body: delivery.data,
        properties: delivery.properties,
    }
}

/// A test's own source queue and dead-letter queue, declared, and the broker connection that
/// looks into them.
pub struct Queues {
    rabbit: Rabbit,
    /// The source queue, named after the test.
    pub queue: String,
    /// `<queue>.dlq`.
    pub dead_letter_queue: String,
}

impl Queues {
    /// Declares `outrigger-test.<test>-<unique>` and its `.dlq`.
    pub async fn new(test: &str) -> Self {
        let rabbit = Rabbit::connect().await;
        let queue = unique(&format!("outrigger-test.{test}"));
        let dead_letter_queue = format!("{queue}.dlq");
        rabbit.declare(&queue).await;
        rabbit.declare(&dead_letter_queue).await;
        Self {
            rabbit,
            queue,
            dead_letter_queue,
        }
    }

    /// What a source of these queues runs with: prefetch 10, dead letters to the declared
    /// `.dlq`, which the source must find (it declares nothing).
    pub fn settings(&self) -> AmqpSettings {
        AmqpSettings {
            prefetch: 10,
            dead_letter_queue: self.dead_letter_queue.clone(),
            declare_dead_letter_queue: false,
            ..AmqpSettings::new(url(), &self.queue)
        }
    }

    /// Publishes to the source queue.
    pub async fn publish_to_source(&self, body: &[u8], properties: BasicProperties) {
        self.rabbit.publish(&self.queue, body, properties).await;
    }

    /// Deletes both queues.
    pub async fn clean_up(self) {
        self.rabbit.delete(&self.queue).await;
        self.rabbit.delete(&self.dead_letter_queue).await;
    }
}

impl Deref for Queues {
    type Target = Rabbit;

    fn deref(&self) -> &Rabbit {
        &self.rabbit
    }
}

/// The next delivery, which must come within [`DEADLINE`].
pub async fn recv(source: &mut AmqpSource) -> Delivery<AmqpAcker> {
    crate::source::recv(source, DEADLINE).await
}
