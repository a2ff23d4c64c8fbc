//! Confirmed dead-letter writes: the original record byte for byte plus the failure context.

use std::collections::HashMap;

use outrigger_core::{Coordinates, SourceError};
use rdkafka::producer::FutureProducer;

use crate::logging::LogContext;
use crate::partition::TopicPartition;
use crate::publish::write_copy;
use crate::record::Original;

/// Where the dead letters of one source topic go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) topic: String,
    /// Partitions of the dead-letter topic.
    pub(crate) partitions: i32,
}

/// The dead-letter producer, the route of each source topic, and the topics routes name.
pub(crate) struct DeadLetters {
    pub(crate) producer: FutureProducer<LogContext>,
    pub(crate) routes: HashMap<String, Route>,
    /// The partition count of each dead-letter topic a route names, created at connect.
    pub(crate) named: HashMap<String, i32>,
}

impl DeadLetters {
    /// Writes the dead-letter copy of a record and waits until every in-sync replica has it.
    ///
    /// The copy has the original key, value (null stays null) and headers in their order, then
    /// the `context` headers. Its timestamp is the time of writing, so that the dead-letter
    /// topic's retention counts from when the record failed, not from when it was produced.
    /// It goes to the source partition's number when the dead-letter topic has that many
    /// partitions (dead letters of one partition stay in order), else wherever the producer's
    /// partitioner puts its key. It goes to `destination` when one is given (a topic a route
    /// names), else to the source topic's dead-letter topic.
    pub(crate) async fn write(
        &self,
        source: &TopicPartition,
        coordinates: &Coordinates,
        original: &Original,
        context: Vec<(&'static str, String)>,
        destination: Option<&str>,
    ) -> Result<(), SourceError> {
        let named;
        let route = match destination {
            Some(topic) => {
                let partitions = *self.named.get(topic).ok_or_else(|| {
                    SourceError::Rejected(format!(
                        "dead-letter topic {topic} was not prepared at connect: no route named it"
                    ))
                })?;
                named = Route {
                    topic: topic.to_owned(),
                    partitions,
                };
                &named
            }
            None => self.routes.get(&source.topic).ok_or_else(|| {
                SourceError::Rejected(format!("no dead-letter topic for {}", source.topic))
            })?,
        };
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
