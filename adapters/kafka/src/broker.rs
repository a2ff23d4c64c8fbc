//! Kafka behind the broker seam: what it can do, and how a policy connects it.

use outrigger_core::{
    Broker, Capabilities, Noun, OrderingMode, Problem, SourceContext, SourceError, SourceName,
};

use crate::config::{KafkaConfig, KafkaSettings};
use crate::{KafkaDeadLetters, KafkaSource};

/// Kafka, as the app sees it.
#[derive(Debug)]
pub struct Kafka;

impl Broker for Kafka {
    const KIND: &'static str = "kafka";
    type Config = KafkaConfig;
    type Source = KafkaSource;
    type DeadLetters = KafkaDeadLetters;

    fn capabilities() -> Capabilities {
        Capabilities {
            noun: Noun {
                one: "topic",
                many: "topics",
            },
            retry_queues: true,
            delayed_redelivery: false,
            ordering: &OrderingMode::ALL,
            // Producers key records by entity: `key` keeps each entity's events in order yet
            // runs different entities in parallel, past the partition count.
            default_ordering: OrderingMode::Key,
            partitioned: true,
            dead_letter_operations: true,
            in_process_only: false,
            broker_message_ids: true,
        }
    }

    fn names(config: &KafkaConfig) -> Vec<SourceName> {
        config.names()
    }

    fn validate(config: &KafkaConfig, context: &SourceContext) -> Vec<Problem> {
        config.validate(context)
    }

    async fn connect(
        config: &KafkaConfig,
        context: &SourceContext,
    ) -> Result<KafkaSource, SourceError> {
        let problems = config.validate(context);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems));
        }
        KafkaSource::connect(KafkaSettings::from_config(config, context)).await
    }

    fn dead_letters(
        config: &KafkaConfig,
        context: &SourceContext,
    ) -> Result<KafkaDeadLetters, SourceError> {
        KafkaDeadLetters::new(KafkaSettings::from_config(config, context))
    }
}
