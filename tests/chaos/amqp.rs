//! RabbitMQ: the machine's broker, a source queue and `.dlq` of the run's own, the sidecar
//! connected through a proxy the harness cuts.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use outrigger_testkit::rabbit::{self, Queues};

use super::broker::{ChaosBroker, DeadRecord};
use super::workload::{copy_of, Event};
use crate::support::{Policy, Proxy};

/// The run's queues and the proxy in front of the broker.
pub struct Amqp {
    queues: Queues,
    proxy: Proxy,
}

impl ChaosBroker for Amqp {
    const NAME: &'static str = "rabbitmq";
    // A killed consumer's unacked messages are back in the queue at once; its claims are
    // free after the lease.
    const TAKEOVER: Duration = Duration::from_secs(1);

    async fn start() -> Self {
        Self {
            queues: Queues::new("chaos").await,
            proxy: Proxy::start(rabbit::address().await).await,
        }
    }

    fn policy(&self, app_url: &str, namespace: &str) -> Policy {
        Policy::amqp(&self.queues.queue, app_url, namespace)
            .set("source.amqp.url", rabbit::url_through(&self.proxy))
            // Declared here already, with the test queues' expiry the sidecar would not match.
            .set("dead_letter.declare", false)
    }

    async fn publish(&self, events: &[Event]) {
        join_all(events.iter().map(|e| {
            let mut headers = FieldTable::default();
            headers.insert(
                "idempotency-key".into(),
                AMQPValue::LongString(LongString::from(e.key.as_bytes().to_vec())),
            );
            let properties = BasicProperties::default()
                .with_headers(headers)
                .with_content_type("application/json".into());
            self.queues.publish_to_source(&e.payload, properties)
        }))
        .await;
    }

    fn cut(&self) {
        self.proxy.cut();
    }

    async fn dead_letters(&self) -> Vec<DeadRecord> {
        // Taken out of the queue as they are read: the run is their only reader, and a queue
        // read from does not expire.
        self.queues
            .drain(&self.queues.dead_letter_queue)
            .await
            .into_iter()
            .map(|got| DeadRecord {
                key: got.header("outrigger-dlq-key"),
                copy: copy_of(&got.body),
                class: got.header("outrigger-dlq-class").unwrap_or_default(),
                source: got.header("outrigger-dlq-source").unwrap_or_default(),
                attempts: got.header("outrigger-dlq-attempts").unwrap_or_default(),
            })
            .collect()
    }

    async fn backlog(&self) -> u64 {
        // Ready messages only: what the sidecar holds unacked is back among them once it is
        // gone (see left_over).
        u64::from(self.queues.depth(&self.queues.queue).await)
    }

    async fn left_over(&self) -> u64 {
        let started = Instant::now();
        while self.queues.counts(&self.queues.queue).await.1 > 0
            && started.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.backlog().await
    }

    async fn clean_up(self) {
        self.queues.clean_up().await;
    }
}
