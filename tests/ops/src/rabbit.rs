//! RabbitMQ on 127.0.0.1:5672 (guest/guest): declare, publish with confirms, count, delete.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The local broker.
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A connection with one confirming channel, and a runtime to drive it from plain tests.
pub struct Rabbit {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    ch: Channel,
}

impl Rabbit {
    /// Connects to the local broker; panics with where it was expected.
    pub fn connect() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (conn, ch) = rt.block_on(async {
            let conn = Connection::connect(URL, ConnectionProperties::default())
                .await
                .expect("RabbitMQ on 127.0.0.1:5672 (guest/guest); .ci/run starts it");
            let ch = conn.create_channel().await.expect("a channel");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("publisher confirms");
            (conn, ch)
        });
        Self { rt, conn, ch }
    }

    /// Declares a durable queue.
    pub fn declare(&self, queue: &str) {
        self.rt
            .block_on(self.ch.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ))
            .expect("declare the queue");
    }

    /// Publishes a persistent message and waits for the broker's confirm.
    pub fn publish(&self, queue: &str, body: &[u8]) {
        let confirm = self.rt.block_on(async {
            self.ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await
                .expect("publish")
                .await
                .expect("the confirm")
        });
        assert!(confirm.is_ack(), "the broker confirmed the publish");
    }

    /// Messages in the queue, ready and unacked (a passive declare counts ready ones only,
    /// so this is ready ones; 0 when the queue does not exist).
    pub fn ready(&self, queue: &str) -> u32 {
        self.rt.block_on(async {
            // A passive declare of a missing queue closes its channel: use a throwaway one.
            let ch = self.conn.create_channel().await.expect("a channel");
            let n = ch
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
            n
        })
    }

    /// Deletes queues that may exist.
    pub fn delete(&self, queues: &[&str]) {
        for q in queues {
            let _ = self.rt.block_on(
                self.ch
                    .queue_delete((*q).into(), QueueDeleteOptions::default()),
            );
        }
    }
}
