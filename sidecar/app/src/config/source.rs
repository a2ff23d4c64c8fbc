//! `[source]`: the broker the sidecar consumes from.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::de;

/// Where messages come from: exactly one of `[source.amqp]`, `[source.kafka]` or
/// `[source.memory]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A RabbitMQ (AMQP 0-9-1) queue.
    Amqp(AmqpConfig),
    /// Kafka topics, consumed as a member of a consumer group.
    Kafka(KafkaConfig),
    /// The in-process broker of `outrigger demo` and the tests.
    Memory(MemoryConfig),
}

impl SourceConfig {
    /// The queue consumed, or the first Kafka topic: names the dead-letter destination, the
    /// dedup namespace and the metric labels by default.
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Amqp(amqp) => &amqp.queue,
            SourceConfig::Kafka(kafka) => kafka.topics.first().map_or("", String::as_str),
            SourceConfig::Memory(memory) => &memory.queue,
        }
    }

    /// Everything consumed: every Kafka topic, or the one queue.
    pub fn names(&self) -> Vec<&str> {
        match self {
            SourceConfig::Kafka(kafka) => kafka.topics.iter().map(String::as_str).collect(),
            SourceConfig::Amqp(_) | SourceConfig::Memory(_) => vec![self.name()],
        }
    }

    /// The broker kind as written in TOML (`amqp`, `kafka`, `memory`), for logs and metric
    /// labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Amqp(_) => "amqp",
            SourceConfig::Kafka(_) => "kafka",
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

/// `[source.kafka]`: consume Kafka topics as a member of a consumer group. An offset is
/// committed only once its message and every earlier one of its partition are settled
/// (delivered, dropped or dead-lettered), so a crash or a rebalance redelivers, never skips.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// The brokers to bootstrap from, `host:port` pairs separated by commas.
    #[serde(default = "default_bootstrap_servers")]
    pub bootstrap_servers: String,
    /// The topics to consume. Required, at least one. The first names the dead-letter topic,
    /// the dedup namespace and the metric labels by default.
    pub topics: Vec<String>,
    /// The consumer group. Required: replicas of one service share it, and with it the
    /// topics' partitions and committed offsets.
    pub group_id: String,
    /// Where a group without a committed offset for a partition starts: `earliest` (every
    /// message still retained) or `latest` (only messages produced from now on). Once the
    /// group has committed, it resumes there either way.
    #[serde(default)]
    pub start_from: StartFrom,
    /// librdkafka settings, passed as they are: `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanism" = "PLAIN"`, `"session.timeout.ms" = "45000"` (values are strings).
    /// Settings the sidecar owns are errors here, with the key to use instead. From the
    /// environment, override one with `OUTRIGGER__SOURCE__KAFKA__PROPERTIES__SASL.PASSWORD`
    /// where variable names may hold dots (Kubernetes, `env`), or all of them at once with
    /// `OUTRIGGER__SOURCE__KAFKA__PROPERTIES='{ "security.protocol" = "SSL" }'`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// How often the offsets of settled messages are committed to the group. A crash
    /// redelivers at most this much settled work (dedup catches it).
    #[serde(default = "default_commit_interval", deserialize_with = "de::duration")]
    pub commit_interval: Duration,
    /// When a rebalance takes partitions away, how long in-flight messages of those
    /// partitions may finish before the partitions are released; unfinished ones are
    /// redelivered to the new owner.
    #[serde(default = "default_revoke_timeout", deserialize_with = "de::duration")]
    pub revoke_timeout: Duration,
}

/// A broker on loopback at Kafka's default port, so a developer's first run needs no address.
fn default_bootstrap_servers() -> String {
    "127.0.0.1:9092".to_owned()
}

/// Often enough that a restart redelivers at most a second of settled messages, rarely enough
/// not to load the group coordinator with a commit per message.
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}

/// The default `delivery.timeout`: an attempt under way when its partition is revoked can
/// finish and be committed; longer would hold up the rebalance of the whole group.
fn default_revoke_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where a consumer group without a committed offset starts reading a partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest message still retained. The default, because a new group should not
    /// silently skip what is already there.
    #[default]
    Earliest,
    /// Only messages produced after the group first joins.
    Latest,
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
