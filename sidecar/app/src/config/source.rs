//! `[source]`: the broker the sidecar consumes from.

use serde::Deserialize;

/// Where messages come from: exactly one of `[source.amqp]` or `[source.memory]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A RabbitMQ (AMQP 0-9-1) queue.
    Amqp(AmqpConfig),
    /// The in-process broker of `outrigger demo` and the tests.
    Memory(MemoryConfig),
}

impl SourceConfig {
    /// The queue consumed: names the dead-letter destination and the dedup namespace by default.
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Amqp(amqp) => &amqp.queue,
            SourceConfig::Memory(memory) => &memory.queue,
        }
    }

    /// The broker kind as written in TOML (`amqp`, `memory`), for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Amqp(_) => "amqp",
            SourceConfig::Memory(_) => "memory",
        }
    }
}

/// `[source.amqp]`: consume one RabbitMQ queue with per-message acks.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// The broker URL, `amqp://user:password@host:port/vhost` (`amqps://` for TLS).
    #[serde(default = "default_amqp_url")]
    pub url: String,
    /// The queue to consume. Required: the sidecar serves one service's queue.
    pub queue: String,
    /// The consumer tag shown in the RabbitMQ management UI.
    #[serde(default = "default_consumer_tag")]
    pub consumer_tag: String,
}

/// RabbitMQ's out-of-the-box local broker (guest may only log in from localhost), so a
/// developer's first run needs no URL.
fn default_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()
}

/// Says who holds the channel when an operator looks at the queue's consumers.
fn default_consumer_tag() -> String {
    "outrigger".to_owned()
}

/// `[source.memory]`: the in-process broker; it exists only inside `outrigger demo` and tests.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// The in-process queue to consume.
    #[serde(default = "default_memory_queue")]
    pub queue: String,
}

/// Any name works in process; this one reads well in the demo's output.
fn default_memory_queue() -> String {
    "events".to_owned()
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            queue: default_memory_queue(),
        }
    }
}
