//! RabbitMQ behind the broker seam: what it can do, and how a policy connects it.

use outrigger_core::{
    Broker, Capabilities, KeyPath, Noun, OrderingMode, Problem, SourceContext, SourceError,
    SourceName,
};

use crate::config::{AmqpConfig, AmqpSettings};
use crate::{AmqpDeadLetters, AmqpSource};

/// RabbitMQ (AMQP 0-9-1), as the app sees it.
#[derive(Debug)]
pub struct Amqp;

/// A queue is one stream: `partition` keeps the whole queue in order, `key` orders by routing
/// key, `none` runs everything in parallel.
const ORDERING: &[OrderingMode] = &[
    OrderingMode::Partition,
    OrderingMode::Key,
    OrderingMode::None,
];

impl Broker for Amqp {
    const KIND: &'static str = "amqp";
    type Config = AmqpConfig;
    type Source = AmqpSource;
    type DeadLetters = AmqpDeadLetters;

    fn capabilities() -> Capabilities {
        Capabilities {
            noun: Noun {
                one: "queue",
                many: "queues",
            },
            retry_queues: true,
            delayed_redelivery: false,
            ordering: ORDERING,
            // A queue's routing key is usually the queue name, so `key` would serialise
            // everything: `none` keeps a queue parallel.
            default_ordering: OrderingMode::None,
            partitioned: false,
            dead_letter_operations: true,
            in_process_only: false,
            broker_message_ids: false,
        }
    }

    fn names(config: &AmqpConfig) -> Vec<SourceName> {
        vec![SourceName {
            name: config.queue.clone(),
            path: KeyPath::parse("source.amqp.queue"),
        }]
    }

    fn validate(config: &AmqpConfig, context: &SourceContext) -> Vec<Problem> {
        config.validate(context)
    }

    async fn connect(
        config: &AmqpConfig,
        context: &SourceContext,
    ) -> Result<AmqpSource, SourceError> {
        let problems = config.validate(context);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems));
        }
        AmqpSource::connect(AmqpSettings::from_config(config, context)).await
    }

    fn dead_letters(
        config: &AmqpConfig,
        context: &SourceContext,
    ) -> Result<AmqpDeadLetters, SourceError> {
        AmqpDeadLetters::new(AmqpSettings::from_config(config, context))
    }
}
