//! Redis Streams behind the broker seam: what it can do, and how a policy connects it.

use outrigger_core::{
    Broker, Capabilities, Noun, OrderingMode, Problem, SourceContext, SourceError, SourceName,
};

use crate::config::{RedisStreamsConfig, RedisStreamsSettings};
use crate::{RedisStreamsDeadLetters, RedisStreamsSource};

/// Redis Streams consumer groups, as the app sees them.
#[derive(Debug)]
pub struct RedisStreams;

impl Broker for RedisStreams {
    const KIND: &'static str = "redis_streams";
    type Config = RedisStreamsConfig;
    type Source = RedisStreamsSource;
    type DeadLetters = RedisStreamsDeadLetters;

    fn capabilities() -> Capabilities {
        Capabilities {
            noun: Noun {
                one: "stream",
                many: "streams",
            },
            // `<stream>.retry.<n>`, read by the same group; see the crate docs.
            retry_queues: true,
            delayed_redelivery: false,
            // `partition` keeps a stream in order (as this consumer reads it), `key` orders by
            // the key field, `none` runs everything in parallel.
            ordering: &OrderingMode::ALL,
            // Producers that set the key field get each key's entries in order, the rest run
            // in parallel; a stream is often one service's whole feed, which `partition` would
            // serialise.
            default_ordering: OrderingMode::Key,
            partitioned: false,
            dead_letter_operations: true,
            in_process_only: false,
            // Every entry has an id Redis gave it, the same on every redelivery and claim.
            broker_message_ids: true,
        }
    }

    fn names(config: &RedisStreamsConfig) -> Vec<SourceName> {
        config.names()
    }

    fn validate(config: &RedisStreamsConfig, context: &SourceContext) -> Vec<Problem> {
        config.validate(context)
    }

    async fn connect(
        config: &RedisStreamsConfig,
        context: &SourceContext,
    ) -> Result<RedisStreamsSource, SourceError> {
        let problems = config.validate(context);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems));
        }
        RedisStreamsSource::connect(RedisStreamsSettings::from_config(config, context)).await
    }

    fn dead_letters(
        config: &RedisStreamsConfig,
        context: &SourceContext,
    ) -> Result<RedisStreamsDeadLetters, SourceError> {
        RedisStreamsDeadLetters::new(RedisStreamsSettings::from_config(config, context))
    }
}
