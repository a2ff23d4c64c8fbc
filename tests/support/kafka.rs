//! Kafka for the end-to-end tests: the adapter's own test support (a tansu broker per test,
//! topics, producers, readers), plus producing keyed records and a policy over a topic.

#[path = "../../adapters/kafka/tests/support/mod.rs"]
mod adapter;

pub use adapter::*;

use rdkafka::producer::FutureRecord;

use super::{Policy, TestApp};

/// Produces `(key, payload)` records, 500 at a time, each confirmed, letting the partitioner
/// place them by key.
pub async fn produce_keyed(
    broker: &Kafka,
    topic: &str,
    records: &[(impl AsRef<[u8]>, impl AsRef<[u8]>)],
) {
    let producer = broker.producer();
    for chunk in records.chunks(500) {
        let sends = chunk.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(key.as_ref())
                    .payload(payload.as_ref()),
                DEADLINE,
            )
        });
        for result in futures_util::future::join_all(sends).await {
            result.unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    }
}

/// `topic` on `broker` into `app`, with a consumer group and a Redis namespace of its own.
pub fn policy(broker: &Kafka, topic: &str, app: &TestApp) -> Policy {
    Policy::kafka(
        &broker.bootstrap,
        topic,
        &super::unique("g"),
        &app.url(),
        &super::unique("ns"),
    )
}
