//! RabbitMQ side of the bench: declare and delete queues, publish backlogs and paced streams.

use std::time::Duration;

use anyhow::{bail, Context};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};

use crate::payload::{Body, Clock};

/// Publishes in flight before waiting for their confirms.
const CONFIRM_BATCH: usize = 1000;

/// One connection with a confirming channel, used for setup and publishing.
pub struct Broker {
    connection: Connection,
    channel: Channel,
}

/// What to publish: `messages` bodies of `size` bytes, ids `<prefix>-<seq>`.
pub struct Batch<'a> {
    /// The queue, through the default exchange.
    pub queue: &'a str,
    /// The AMQP `message_id` prefix, unique per phase (it is the dedup key).
    pub id_prefix: String,
    /// How many.
    pub messages: usize,
    /// Body size in bytes.
    pub size: usize,
}

impl Broker {
    /// Connects and opens a channel with publisher confirms.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {url}"))?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            channel,
        })
    }

    /// Declares a durable queue, as a service would own it.
    pub async fn declare(&self, queue: &str) -> anyhow::Result<()> {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .with_context(|| format!("declaring queue {queue}"))?;
        Ok(())
    }

    /// Deletes a queue; a missing one is fine.
    pub async fn delete(&self, queue: &str) {
        // A failed delete would close this channel; use a throwaway one.
        if let Ok(channel) = self.connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
            let _ = channel.close(200, "OK".into()).await;
        }
    }

    /// Publishes the whole batch as fast as confirms allow (pipelined, confirmed per thousand).
    pub async fn publish_backlog(&self, batch: &Batch<'_>, clock: Clock) -> anyhow::Result<()> {
        let mut body = Body::new(batch.size);
        let mut pending = Vec::with_capacity(CONFIRM_BATCH);
        for seq in 0..batch.messages {
            let confirm = self.publish(batch, &mut body, seq, clock).await?;
            pending.push(confirm);
            if pending.len() == CONFIRM_BATCH {
                settle(&mut pending).await?;
            }
        }
        settle(&mut pending).await
    }

    /// Publishes the batch at `rate` messages per second, each stamped when it is sent.
    pub async fn publish_paced(
        &self,
        batch: &Batch<'_>,
        rate: f64,
        clock: Clock,
    ) -> anyhow::Result<()> {
        let mut body = Body::new(batch.size);
        let mut pending = Vec::with_capacity(batch.messages);
        let start = tokio::time::Instant::now();
        for seq in 0..batch.messages {
            tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / rate)).await;
            pending.push(self.publish(batch, &mut body, seq, clock).await?);
        }
        settle(&mut pending).await
    }

    async fn publish(
        &self,
        batch: &Batch<'_>,
        body: &mut Body,
        seq: usize,
        clock: Clock,
    ) -> anyhow::Result<PublisherConfirm> {
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(format!("{}-{seq}", batch.id_prefix)))
            .with_content_type("application/octet-stream".into())
            .with_delivery_mode(2);
        let bytes = body.stamp(seq as u64, clock.now_ns());
        let confirm = self
            .channel
            .basic_publish(
                ShortString::default(),
                batch.queue.into(),
                BasicPublishOptions::default(),
                bytes,
                properties,
            )
            .await
            .with_context(|| format!("publishing to {}", batch.queue))?;
        Ok(confirm)
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "OK".into()).await;
    }
}

/// Waits for every pending confirm; a nack is an error.
async fn settle(pending: &mut Vec<PublisherConfirm>) -> anyhow::Result<()> {
    for confirm in pending.drain(..) {
        if !confirm.await?.is_ack() {
            bail!("RabbitMQ refused a published message");
        }
    }
    Ok(())
}
