//! The brokers in the retry contract so far: Kafka (a tansu of the test's own, a topic of one
//! partition) and RabbitMQ (the machine's, a queue of the test's own).

use outrigger_amqp::AmqpSettings;

use super::{RetryFixture, TIER};
use crate::rabbit::{url, Queues};
use crate::{unique, Policy, Tansu};

/// Kafka: a topic of one partition on a tansu of the test's own.
pub struct KafkaRetry {
    tansu: Tansu,
    topic: String,
    group: String,
}

impl RetryFixture for KafkaRetry {
    async fn new(test: &str) -> Self {
        let tansu = Tansu::start().await;
        let topic = unique(test);
        tansu.kafka.create_topic(&topic, 1).await;
        Self {
            tansu,
            topic,
            group: unique("retry-group"),
        }
    }

    async fn publish(&self, records: &[(String, String)]) {
        self.tansu.kafka.produce_keyed(&self.topic, records).await;
    }

    fn policy(&self, app_url: &str, namespace: &str) -> Policy {
        let bootstrap = &self.tansu.kafka.bootstrap;
        Policy::kafka(bootstrap, &self.topic, &self.group, app_url, namespace)
            .set("ordering.mode", "key")
            .set("retry.mode", "queue")
            .set("retry.tiers", toml_edit::Array::from_iter([TIER]))
            // The restarted member waits for the killed one's session to end before it gets
            // the partition: seconds, not the 45 s default.
            .kafka_property("session.timeout.ms", "6000")
            .kafka_property("heartbeat.interval.ms", "1000")
    }
}

/// RabbitMQ: a queue of the test's own, bound to `amq.topic` by `<queue>.#`, so that each
/// record keeps a routing key (its ordering key) of its own: `<queue>.<key>`.
pub struct AmqpRetry {
    queues: Queues,
}

impl RetryFixture for AmqpRetry {
    async fn new(test: &str) -> Self {
        let queues = Queues::new(test).await;
        queues
            .bind(&queues.queue, "amq.topic", &format!("{}.#", queues.queue))
            .await;
        Self { queues }
    }

    async fn publish(&self, records: &[(String, String)]) {
        for (key, body) in records {
            let routing_key = format!("{}.{key}", self.queues.queue);
            self.queues
                .publish_routed(
                    "amq.topic",
                    &routing_key,
                    body.as_bytes(),
                    lapin::BasicProperties::default(),
                )
                .await;
        }
    }

    fn policy(&self, app_url: &str, namespace: &str) -> Policy {
        Policy::amqp(&self.queues.queue, app_url, namespace)
            .set("source.amqp.url", url())
            .set("dedup.key", "{json:/id}")
            .set("ordering.mode", "key")
            .set("retry.mode", "queue")
            .set("retry.tiers", toml_edit::Array::from_iter([TIER]))
    }

    async fn clean_up(self) {
        self.queues
            .delete(&AmqpSettings::retry_queue_for(&self.queues.queue, 0))
            .await;
        self.queues.clean_up().await;
    }
}
