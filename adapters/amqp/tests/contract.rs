//! The source contract against a real RabbitMQ on 127.0.0.1:5672 (guest/guest), or the broker
//! at `OUTRIGGER_TEST_AMQP_URL`. Sources connect through a proxy of the test's own, which cuts
//! their connections on cue; the fixture itself talks to the broker directly.

use std::time::Duration;

use bytes::Bytes;
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use lapin::BasicProperties;
use outrigger_amqp::{Amqp, AmqpConfig};
use outrigger_core::{Coordinates, Header, Limits, Message, SourceContext};
use outrigger_testkit::rabbit::{self, Got, Queues};
use outrigger_testkit::{AfterCut, Faults, Outgoing, Proxy, Redelivery, SourceFixture};

/// A test's own queue and dead-letter queue, and a proxy in front of the broker.
struct AmqpContract {
    queues: Queues,
    proxy: Proxy,
}

impl SourceFixture for AmqpContract {
    type Broker = Amqp;
    const DEADLINE: Duration = rabbit::DEADLINE;
    const REDELIVERY: Redelivery = Redelivery::SameSource;
    const MARKS_REDELIVERED: bool = true;

    async fn new(_faults: Faults) -> Self {
        Self {
            queues: Queues::new("contract").await,
            proxy: Proxy::start(rabbit::address().await).await,
        }
    }

    fn config(&self) -> AmqpConfig {
        AmqpConfig::new(rabbit::url_through(&self.proxy), &self.queues.queue)
    }

    fn context(&self) -> SourceContext {
        SourceContext {
            declare_dead_letters: false,
            limits: Limits {
                prefetch: Some(10),
                ..Limits::default()
            },
            ..SourceContext::default()
        }
    }

    async fn publish(&self, message: Outgoing) {
        let mut headers = FieldTable::default();
        for h in &message.headers {
            // Text as a long string, other bytes as a byte array: what producers send.
            let value = match std::str::from_utf8(&h.value) {
                Ok(_) => AMQPValue::LongString(LongString::from(h.value.to_vec())),
                Err(_) => AMQPValue::ByteArray(ByteArray::from(h.value.to_vec())),
            };
            headers.insert(h.name.as_str().into(), value);
        }
        let mut properties = BasicProperties::default().with_headers(headers);
        if let Some(id) = &message.message_id {
            properties = properties.with_message_id(id.as_str().into());
        }
        if let Some(content_type) = &message.content_type {
            properties = properties.with_content_type(content_type.as_str().into());
        }
        self.queues
            .publish_to_source(&message.payload, properties)
            .await;
    }

    async fn dead_letters(&self) -> Vec<Message> {
        let queue = &self.queues.dead_letter_queue;
        self.queues
            .peek(queue)
            .await
            .into_iter()
            .map(|got| to_message(queue, got))
            .collect()
    }

    /// The default exchange routes by queue name: a message's key is its queue's name.
    fn delivered_key(&self, _published: &Outgoing) -> Option<Bytes> {
        Some(Bytes::from(self.queues.queue.clone()))
    }

    fn dead_letter_key(&self, _published: &Outgoing) -> Option<Bytes> {
        Some(Bytes::from(self.queues.dead_letter_queue.clone()))
    }

    fn cut_connections(&self) -> AfterCut {
        self.proxy.cut();
        AfterCut::Redelivered
    }

    /// The dead-letter queue goes away after the source checked it (the source declares none):
    /// a dead letter has nowhere to be routed.
    async fn break_dead_letter_writes(&self) {
        self.queues.delete(&self.queues.dead_letter_queue).await;
    }

    async fn heal_dead_letter_writes(&self) {
        self.queues.declare(&self.queues.dead_letter_queue).await;
    }

    async fn clean_up(self) {
        self.queues.clean_up().await;
    }
}

/// A message read from `queue` as a core message: body and headers byte for byte (long
/// strings and byte arrays as they are, which is all the contract publishes).
fn to_message(queue: &str, got: Got) -> Message {
    let mut message = Message::new(
        got.body,
        Coordinates::Amqp {
            queue: queue.to_owned(),
            delivery_tag: got.delivery_tag,
        },
    );
    message.key = Some(Bytes::from(got.routing_key));
    if let Some(table) = got.properties.headers() {
        for (name, value) in table.inner() {
            let value = match value {
                AMQPValue::LongString(s) => s.as_bytes().to_vec(),
                AMQPValue::ByteArray(b) => b.as_slice().to_vec(),
                other => format!("{other:?}").into_bytes(),
            };
            message.headers.push(Header::new(name.as_str(), value));
        }
    }
    message
}

outrigger_testkit::source_contract!(AmqpContract);
