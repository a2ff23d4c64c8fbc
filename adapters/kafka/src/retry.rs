//! Retry-topic writes (retry mode `queue`): a copy of the record, confirmed, in the topic of
//! its delay tier, with the `outrigger-retry-*` headers of its trail.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use outrigger_core::{SourceError, Trail};
use rdkafka::producer::FutureProducer;

use crate::config::KafkaSettings;
use crate::logging::LogContext;
use crate::partition::TopicPartition;
use crate::publish::write_copy;
use crate::record::Original;

/// The retry topics of the source topics and their delays.
pub(crate) struct RetryTopics {
    pub(crate) producer: FutureProducer<LogContext>,
    pub(crate) tiers: Vec<Duration>,
    /// Partition count of each retry topic.
    pub(crate) partitions: HashMap<String, i32>,
}

impl RetryTopics {
    /// Writes the copy of a record from `origin` to the retry topic of `trail.tier`, due after
    /// that tier's delay, and waits until every in-sync replica has it. It goes to the origin's
    /// partition number, so a key's copies stay in one partition of each tier, in order.
    pub(crate) async fn write(
        &self,
        origin: &TopicPartition,
        original: &Original,
        trail: &Trail,
    ) -> Result<(), SourceError> {
        let Some(delay) = self.tiers.get(trail.tier) else {
            return Err(SourceError::Rejected(format!(
                "no retry tier {} (there are {})",
                trail.tier + 1,
                self.tiers.len()
            )));
        };
        let topic = KafkaSettings::retry_topic_for(&origin.topic, trail.tier);
        let partitions = self.partitions.get(&topic).copied().ok_or_else(|| {
            SourceError::Rejected(format!("retry topic {topic} is not one of this source's"))
        })?;
        let trail = Trail {
            due: Some(SystemTime::now() + *delay),
            ..trail.clone()
        };
        let headers: Vec<(&str, String)> = trail.to_headers();
        write_copy(
            &self.producer,
            &topic,
            partitions,
            origin.partition,
            original,
            &headers,
        )
        .await
        .map_err(|error| {
            SourceError::Publish(format!(
                "writing {} to retry topic {topic}: {error}",
                trail.origin
            ))
        })
    }
}
