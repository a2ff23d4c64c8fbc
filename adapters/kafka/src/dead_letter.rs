//! Confirmed dead-letter writes: the original record byte for byte plus the failure context.

use std::collections::HashMap;
use std::time::Duration;

use outrigger_core::{Coordinates, SourceError};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::context::LogContext;
use crate::record::Original;
use crate::state::TopicPartition;

/// How long a write may wait for room in the producer's local queue. The queue holds only
/// dead letters and retry copies, so it is full only when the broker has been unreachable for
/// a while.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the dead letters of one source topic go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) topic: String,
    /// Partitions of the dead-letter topic.
    pub(crate) partitions: i32,
}

/// The dead-letter producer and the route of each source topic.
pub(crate) struct DeadLetters {
    pub(crate) producer: FutureProducer<LogContext>,
    pub(crate) routes: HashMap<String, Route>,
}

impl DeadLetters {
    /// Writes the dead-letter copy of a record and waits until every in-sync replica has it.
    ///
    /// The copy has the original key, value (null stays null) and headers in their order, then
    /// the `context` headers. Its timestamp is the time of writing, so that the dead-letter
    /// topic's retention counts from when the record failed, not from when it was produced.
    /// It goes to the source partition's number when the dead-letter topic has that many
    /// partitions (dead letters of one partition stay in order), else wherever the producer's
    /// partitioner puts its key.
    pub(crate) async fn write(
        &self,
        source: &TopicPartition,
        coordinates: &Coordinates,
        original: &Original,
        context: Vec<(&'static str, String)>,
    ) -> Result<(), SourceError> {
        let route = self.routes.get(&source.topic).ok_or_else(|| {
            SourceError::Rejected(format!("no dead-letter topic for {}", source.topic))
        })?;
        let context: Vec<(&str, String)> = context.into_iter().collect();
        write_copy(
            &self.producer,
            &route.topic,
            route.partitions,
            source.partition,
            original,
            &context,
        )
        .await
        .map_err(|error| {
            SourceError::Publish(format!(
                "writing {coordinates} to dead-letter topic {}: {error}",
                route.topic
            ))
        })
    }
}

/// Writes a copy of `original` to `topic` and waits until every in-sync replica has it: the
/// original key, value (null stays null) and headers in their order, then `extra` headers.
/// The copy goes to `partition` when `topic` has that many partitions (copies of one
/// partition stay in order), else wherever the producer's partitioner puts its key.
pub(crate) async fn write_copy(
    producer: &FutureProducer<LogContext>,
    topic: &str,
    partitions: i32,
    partition: i32,
    original: &Original,
    extra: &[(&str, String)],
) -> Result<(), KafkaError> {
    let headers = original
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_deref()))
        .chain(
            extra
                .iter()
                .map(|(name, value)| (*name, Some(value.as_bytes()))),
        )
        .fold(
            OwnedHeaders::new_with_capacity(original.headers.len() + extra.len()),
            |headers, (key, value)| headers.insert(Header { key, value }),
        );
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(key) = &original.key {
        record = record.key(key);
    }
    if let Some(value) = &original.value {
        record = record.payload(value);
    }
    if partition < partitions {
        record = record.partition(partition);
    }
    producer
        .send(record, Timeout::After(ENQUEUE_TIMEOUT))
        .await
        .map(drop)
        .map_err(|(error, _)| error)
}
