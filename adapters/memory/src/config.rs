//! `[source.memory]`: the in-process broker's one setting, and what the broker can do.

use outrigger_core::{
    Broker, Capabilities, KeyPath, NoDeadLetters, Noun, OrderingMode, Problem, Problems,
    SourceContext, SourceError, SourceName,
};
use serde::Deserialize;

use crate::source::MemorySource;

/// `[source.memory]`: the in-process broker; it exists only inside `outrigger demo` and tests.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// The in-process queue to consume.
    #[serde(default = "default_queue")]
    pub queue: String,
}

/// Any name works in process; this one reads well in the demo's output.
fn default_queue() -> String {
    "events".to_owned()
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            queue: default_queue(),
        }
    }
}

/// The in-process broker as the app sees it. There is nothing to connect to from a policy:
/// `outrigger demo` (and the tests) create a [`MemoryBroker`](crate::MemoryBroker) and take
/// sources from it.
#[derive(Debug)]
pub struct Memory;

/// A queue is a single stream that keeps or drops order as a whole; it has no partitions.
const ORDERING: &[OrderingMode] = &[
    OrderingMode::Partition,
    OrderingMode::Key,
    OrderingMode::None,
];

impl Broker for Memory {
    const KIND: &'static str = "memory";
    type Config = MemoryConfig;
    type Source = MemorySource;
    type DeadLetters = NoDeadLetters;

    fn capabilities() -> Capabilities {
        Capabilities {
            noun: Noun {
                one: "queue",
                many: "queues",
            },
            retry_queues: false,
            delayed_redelivery: false,
            ordering: ORDERING,
            // Like a RabbitMQ queue: messages of a queue carry no entity key by default.
            default_ordering: OrderingMode::None,
            partitioned: false,
            dead_letter_operations: false,
            in_process_only: true,
            broker_message_ids: false,
        }
    }

    fn names(config: &MemoryConfig) -> Vec<SourceName> {
        vec![SourceName {
            name: config.queue.clone(),
            path: KeyPath::parse("source.memory.queue"),
        }]
    }

    fn validate(config: &MemoryConfig, _context: &SourceContext) -> Vec<Problem> {
        let mut problems = Problems::default();
        if config.queue.trim().is_empty() {
            problems.at(&["source.memory.queue"], "must not be empty");
        }
        problems.into_vec()
    }

    async fn connect(
        config: &MemoryConfig,
        context: &SourceContext,
    ) -> Result<MemorySource, SourceError> {
        let problems = Self::validate(config, context);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems));
        }
        Err(SourceError::Rejected(IN_PROCESS_ONLY.to_owned()))
    }

    fn dead_letters(
        _config: &MemoryConfig,
        _context: &SourceContext,
    ) -> Result<NoDeadLetters, SourceError> {
        Err(SourceError::Rejected(
            "the memory source only exists inside `outrigger demo`; it keeps no dead letters to \
             work on"
                .to_owned(),
        ))
    }
}

/// Why a policy cannot connect a memory source.
pub const IN_PROCESS_ONLY: &str =
    "the memory source only exists inside `outrigger demo`; configure a broker's [source.<kind>] \
     table to run the sidecar";
