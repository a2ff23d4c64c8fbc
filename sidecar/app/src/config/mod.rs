//! The policy file: one TOML file configures one sidecar.
//!
//! [`load_file`] reads it, applies `OUTRIGGER__SECTION__KEY` environment overrides, and
//! checks it, reporting every problem at once with its line and column, key path and value
//! ([`ConfigErrors`]). Unknown keys are errors. Durations are human (`250ms`, `30s`, `24h`),
//! sizes too (`4KiB`, `64MiB`). Loading reads the file and nothing else.
//!
//! # Layout
//! - one module per section ([`SourceConfig`] in `source`, [`DeliveryConfig`] in `delivery`,
//!   ...): the schema, its defaults and why they are what they are;
//! - `de`: deserializers for values written as strings (durations, sizes, URLs, statuses);
//! - `load`: text → document → overrides (`env`) → typed config → checks (`validate`),
//!   with `doc` mapping every error back to its key and position;
//! - `errors`: [`ConfigError`] and [`ConfigErrors`]; `messages`: serde's words made TOML's.

mod classify;
mod de;
mod dead_letter;
mod dedup;
mod delivery;
mod doc;
mod env;
mod errors;
mod load;
mod messages;
mod operate;
mod retry;
mod source;
mod validate;

#[cfg(test)]
mod tests;

use serde::Deserialize;

pub use classify::{ClassifyConfig, RuleConfig, StatusSpec};
pub use dead_letter::DeadLetterConfig;
pub use dedup::{DedupConfig, EmbeddedConfig, OnStoreError, RedisConfig, StoreKind};
pub use delivery::{BackpressureConfig, DeliveryConfig};
pub use env::PREFIX as ENV_PREFIX;
pub use errors::{ConfigError, ConfigErrors};
pub use load::{load_file, load_str};
pub use operate::{AdminConfig, LogConfig, LogFormat, ShutdownConfig};
pub use retry::{RetryConfig, RetryMode};
pub use source::{AmqpConfig, MemoryConfig, SourceConfig};

/// One sidecar's whole policy. Every section but `[source]` may be left out.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where messages come from: exactly one of `[source.amqp]` or `[source.memory]`.
    pub source: SourceConfig,
    /// `[delivery]`: the app's URL and the HTTP request it receives.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// `[dedup]`: deliver each business event once.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// `[retry]`: attempts, age limit and backoff for retryable failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[[classify.rules]]`: what the app's replies mean, before the defaults.
    #[serde(default)]
    pub classify: ClassifyConfig,
    /// `[dead_letter]`: where permanent failures go.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// `[backpressure]`: how much is in flight at once.
    #[serde(default)]
    pub backpressure: BackpressureConfig,
    /// `[admin]`: the metrics, probes and DLQ listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[log]`: log format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// `[shutdown]`: the grace period on SIGTERM.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
}

impl Config {
    /// One line on what this policy does, for `outrigger check`.
    pub fn summary(&self) -> String {
        let dedup = if self.dedup.enabled {
            let store = match self.dedup.store {
                StoreKind::Redis => "redis",
                StoreKind::Embedded => "embedded",
            };
            format!("dedup on {} via {store}", self.dedup.key)
        } else {
            "dedup off".to_owned()
        };
        let rules = match self.classify.rules.len() {
            1 => "1 classify rule".to_owned(),
            n => format!("{n} classify rules"),
        };
        format!(
            "{} queue {:?} → {}; {dedup}; up to {} attempts; {rules}; dead letters to {:?}",
            self.source.kind(),
            self.source.name(),
            self.delivery.url,
            self.retry.max_attempts,
            self.dead_letter.destination(&self.source),
        )
    }
}
