//! The baseline: a plain lapin consumer that POSTs each delivery to the app and acks on 2xx.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::task::JoinHandle;

use crate::app::AppClient;

/// A running raw consumer.
pub struct RawConsumer {
    connection: Connection,
    acked: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawConsumer {
    /// Consumes `queue` with `prefetch` unacked deliveries, each POSTed to `app` concurrently.
    pub async fn start(
        amqp_url: &str,
        queue: &str,
        prefetch: u16,
        app: &str,
    ) -> anyhow::Result<Self> {
        let client = AppClient::new(app)?;
        let connection = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to RabbitMQ at {amqp_url}"))?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "outrigger-bench-raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming {queue}"))?;
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = acked.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                tokio::spawn(handle(delivery, client.clone(), counter.clone()));
            }
        });
        Ok(Self {
            connection,
            acked,
            task,
        })
    }

    /// Messages acked so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Acquire)
    }

    /// Stops consuming and closes the connection (unacked deliveries go back to the queue).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.connection.close(200, "OK".into()).await;
    }
}

/// POST, then ack on 2xx or requeue otherwise.
async fn handle(delivery: Delivery, client: AppClient, acked: Arc<AtomicUsize>) {
    if client.post(Bytes::from(delivery.data)).await {
        if delivery.acker.ack(BasicAckOptions::default()).await.is_ok() {
            acked.fetch_add(1, Ordering::AcqRel);
        }
    } else {
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        let _ = delivery.acker.nack(requeue).await;
    }
}
