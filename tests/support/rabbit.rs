//! RabbitMQ helpers for tests: declare, publish with confirms, count, drain.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The local broker.
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A connection with one confirming channel.
pub struct Rabbit {
    conn: Connection,
    ch: Channel,
}

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct Got {
    /// Body bytes.
    pub body: Vec<u8>,
    /// Properties, headers included.
    pub properties: BasicProperties,
}

impl Got {
    /// A header's value as text (long strings and byte arrays).
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
    /// Connects to the local broker.
    pub async fn connect() -> Self {
        let conn = Connection::connect(URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ on 127.0.0.1:5672");
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self { conn, ch }
    }

    /// Declares a durable queue.
    pub async fn declare(&self, queue: &str) {
        self.ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Publishes with an `idempotency-key` header and waits for the confirm.
    pub async fn publish_keyed(&self, queue: &str, key: &str, body: &[u8]) {
        let mut headers = FieldTable::default();
        headers.insert(
            "idempotency-key".into(),
            AMQPValue::LongString(LongString::from(key.as_bytes().to_vec())),
        );
        self.publish(
            queue,
            body,
            BasicProperties::default().with_headers(headers),
        )
        .await;
    }

    /// Publishes with these properties and waits for the confirm.
    pub async fn publish(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "broker confirmed the publish");
    }

    /// Ready messages in the queue (unacked ones not counted); 0 when it does not exist.
    pub async fn depth(&self, queue: &str) -> u32 {
        // A passive declare of a missing queue closes its channel: use a throwaway one.
        let ch = self.conn.create_channel().await.unwrap();
        let depth = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        let _ = ch.close(200, "done".into()).await;
        depth
    }

    /// Takes every ready message out of the queue.
    pub async fn drain(&self, queue: &str) -> Vec<Got> {
        let mut out = Vec::new();
        while let Some(m) = self
            .ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            out.push(Got {
                body: m.delivery.data.clone(),
                properties: m.delivery.properties.clone(),
            });
        }
        out
    }

    /// Deletes a queue if it exists.
    pub async fn delete(&self, queue: &str) {
        let _ = self
            .ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }
}
