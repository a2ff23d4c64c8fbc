//! NATS JetStream behind the broker seam: what it can do, and how a policy connects it.

use outrigger_core::{
    Broker, Capabilities, Noun, OrderingMode, Problem, SourceContext, SourceError, SourceName,
};

use crate::config::{NatsConfig, NatsSettings};
use crate::{NatsDeadLetters, NatsSource};

/// NATS JetStream, as the app sees it.
#[derive(Debug)]
pub struct Nats;

impl Broker for Nats {
    const KIND: &'static str = "nats";
    type Config = NatsConfig;
    type Source = NatsSource;
    type DeadLetters = NatsDeadLetters;

    fn capabilities() -> Capabilities {
        Capabilities {
            noun: Noun {
                one: "stream",
                many: "streams",
            },
            retry_queues: true,
            // A nak with a delay: JetStream hands the message out again after it, and counts
            // the delivery (`num_delivered`).
            delayed_redelivery: true,
            ordering: &OrderingMode::ALL,
            // A message is keyed by its key header or else its subject, and subjects usually
            // name the entity (`orders.<id>`): `key` keeps each entity in order and runs the
            // others in parallel.
            default_ordering: OrderingMode::Key,
            partitioned: false,
            dead_letter_operations: true,
            in_process_only: false,
            // `<stream>@<sequence>`, the same on every redelivery.
            broker_message_ids: true,
        }
    }

    fn names(config: &NatsConfig) -> Vec<SourceName> {
        config.names()
    }

    fn validate(config: &NatsConfig, context: &SourceContext) -> Vec<Problem> {
        config.validate(context)
    }

    async fn connect(
        config: &NatsConfig,
        context: &SourceContext,
    ) -> Result<NatsSource, SourceError> {
        let problems = config.validate(context);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems));
        }
        NatsSource::connect(NatsSettings::from_config(config, context)).await
    }

    fn dead_letters(
        config: &NatsConfig,
        context: &SourceContext,
    ) -> Result<NatsDeadLetters, SourceError> {
        let problems = config.validate(context);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems));
        }
        Ok(NatsDeadLetters::new(NatsSettings::from_config(
            config, context,
        )))
    }
}
