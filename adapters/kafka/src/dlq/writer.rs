//! What a pass writes: resubmitted copies and handled markers, each confirmed by the broker
//! before the call returns, and the marker topics they need.

use std::collections::HashSet;
use std::time::Duration;

use outrigger_core::SourceError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use tracing::{debug, info};

use super::markers::{marker_topic, Marker};
use crate::config::KafkaSettings;
use crate::logging::LogContext;
use crate::properties;
use crate::record::Original;

/// How long a publish may wait for room in the producer's local queue; it holds one record at
/// a time, so only a broker gone for a while fills it.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long creating a marker topic may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Replication factor of a created marker topic: the broker's `default.replication.factor`,
/// as for the dead-letter topics the source creates.
const MARKER_REPLICATION: i32 = -1;

/// How long flushing the producer may take when a pass finishes; every publish was awaited
/// already, so there is nothing left to flush but librdkafka's bookkeeping.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The producer of a pass (the dead-letter producer's settings: `acks=all`, idempotent),
/// made on the first write, so that a pass that only reads connects no producer.
pub(super) struct Writer {
    config: KafkaSettings,
    producer: Option<FutureProducer<LogContext>>,
    /// Marker topics known to exist.
    marker_topics: HashSet<String>,
}

impl Writer {
    /// A writer with `config`'s brokers and settings, knowing these marker topics exist.
    pub(super) fn new(config: KafkaSettings, marker_topics: HashSet<String>) -> Self {
        Self {
            config,
            producer: None,
            marker_topics,
        }
    }

    /// Writes a marker for the dead letter `id` of `dead_letter_topic`, keyed by `id`, and
    /// waits until the broker has it. Creates the marker topic first when it does not exist.
    pub(super) async fn mark(
        &mut self,
        dead_letter_topic: &str,
        id: &str,
        marker: &Marker,
    ) -> Result<(), SourceError> {
        let topic = marker_topic(dead_letter_topic);
        if !self.marker_topics.contains(&topic) {
            create_marker_topic(&self.config, &topic).await?;
            self.marker_topics.insert(topic.clone());
        }
        let value = marker.to_json();
        let record = FutureRecord::to(&topic).key(id).payload(&value);
        self.producer()?
            .send(record, Timeout::After(ENQUEUE_TIMEOUT))
            .await
            .map(drop)
            .map_err(|(e, _)| {
                SourceError::Publish(format!(
                    "writing the {} marker of {id} to {topic}: {e}",
                    marker.action.as_str()
                ))
            })
    }

    /// Publishes `record` (`what` it is, for errors) to `topic` (to `partition`, else where
    /// the partitioner puts its key) and waits for the broker's confirmation.
    pub(super) async fn publish(
        &mut self,
        what: &str,
        topic: &str,
        partition: Option<i32>,
        record: &Original,
    ) -> Result<(), SourceError> {
        let headers = record.headers.iter().fold(
            OwnedHeaders::new_with_capacity(record.headers.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: value.as_deref(),
                })
            },
        );
        let mut out = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(value) = &record.value {
            out = out.payload(value);
        }
        if let Some(partition) = partition {
            out = out.partition(partition);
        }
        self.producer()?
            .send(out, Timeout::After(ENQUEUE_TIMEOUT))
            .await
            .map(drop)
            .map_err(|(e, _)| SourceError::Publish(format!("publishing {what} to {topic}: {e}")))
    }

    /// Flushes and closes the producer, off the async runtime.
    pub(super) async fn close(self) {
        let Some(producer) = self.producer else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
        if let Ok(Err(error)) = flushed {
            debug!(%error, "Flushing the dead-letter tooling's producer failed; every publish was confirmed before.");
        }
    }

    fn producer(&mut self) -> Result<FutureProducer<LogContext>, SourceError> {
        if let Some(producer) = &self.producer {
            return Ok(producer.clone());
        }
        let producer = FutureProducer::from_config_and_context(
            &properties::producer(&self.config),
            LogContext,
        )
        .map_err(|e| SourceError::Rejected(format!("invalid Kafka producer settings: {e}")))?;
        self.producer = Some(producer.clone());
        Ok(producer)
    }
}

/// Creates a marker topic: one partition (markers are few and small), compacted (the last
/// marker of each dead letter is all that matters). One created meanwhile by another run is
/// fine.
async fn create_marker_topic(config: &KafkaSettings, topic: &str) -> Result<(), SourceError> {
    let refused = |why: String| {
        SourceError::Rejected(format!("could not create marker topic {topic}: {why}"))
    };
    let admin = AdminClient::from_config_and_context(&properties::admin(config), LogContext)
        .map_err(|e| refused(format!("invalid Kafka client settings: {e}")))?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(MARKER_REPLICATION))
        .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| refused(e.to_string()));
    let _ = tokio::task::spawn_blocking(move || drop(admin)).await;
    for result in results? {
        match result {
            Ok(_) => info!(topic, "Created the Kafka handled-marker topic."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(refused(code.to_string())),
        }
    }
    Ok(())
}
