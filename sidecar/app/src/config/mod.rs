//! The policy file: one TOML file configures one sidecar.
//!
//! [`load_file`] reads it, applies `OUTRIGGER__SECTION__KEY` environment overrides, and
//! checks it, reporting every problem at once with its line and column, key path and value
//! ([`ConfigErrors`]). Unknown keys are errors. Durations are human (`250ms`, `30s`, `24h`),
//! sizes too (`4KiB`, `64MiB`). Loading reads the file and nothing else.
//!
//! # Layout
//! - one module per section ([`DeliveryConfig`] in `delivery`, ...): the schema, its defaults
//!   and why they are what they are. `[source.<kind>]` tables belong to their adapter crates,
//!   gathered in [`SourceConfig`] (`crate::brokers`);
//! - `de`: deserializers for values written as strings (durations, sizes, URLs, statuses);
//! - `load`: text → document → overrides (`env`) → typed config → checks (`validate`),
//!   with `doc` mapping every error back to its key and position;
//! - `errors`: [`ConfigError`] and [`ConfigErrors`]; `messages`: serde's words made TOML's.

mod breaker;
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
mod ordering;
mod retry;
mod routes;
mod validate;

#[cfg(test)]
mod tests;

use serde::Deserialize;

pub use breaker::BreakerConfig;
pub use classify::{ClassifyConfig, RuleConfig, StatusSpec};
pub use dead_letter::DeadLetterConfig;
pub use dedup::{DedupConfig, EmbeddedConfig, OnMissingKey, OnStoreError, RedisConfig, StoreKind};
pub use delivery::{BackpressureConfig, BatchConfig, DeliveryConfig};
pub use env::PREFIX as ENV_PREFIX;
pub use errors::{ConfigError, ConfigErrors};
pub use load::{load_file, load_str};
pub use operate::{AdminConfig, LogConfig, LogFormat, ReloadConfig, ShutdownConfig};
pub use ordering::OrderingConfig;
pub use retry::{ParkedAfterDeadLetter, RetryConfig, RetryMode};
pub use routes::{explain, MatchConfig, RouteAction, RouteConfig, RouteDeadLetter, DEFAULT_ROUTE};

pub use crate::brokers::SourceConfig;
use outrigger_core::{KeyPath, Limits, SourceContext};

/// One sidecar's whole policy. Every section but `[source]` may be left out.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What happens to a message no `[[routes]]` entry takes: `deliver` under the top-level
    /// policy (the default), `drop` or `dead_letter`. A top-level key: write it before the
    /// first table.
    #[serde(default)]
    pub default_action: RouteAction,
    /// Where messages come from: exactly one `[source.<kind>]` table.
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
    /// `[ordering]`: what keeps its order while messages run in parallel.
    #[serde(default)]
    pub ordering: OrderingConfig,
    /// `[backpressure]`: how much is in flight at once.
    #[serde(default)]
    pub backpressure: BackpressureConfig,
    /// `[breaker]`: what happens while the app cannot be reached.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// `[admin]`: the metrics, probes and DLQ listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[log]`: log format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// `[shutdown]`: the grace period on SIGTERM.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// `[reload]`: picking up a changed policy file while running.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// `[[routes]]`: a policy per kind of message, tried in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// What every source shares, from the sections outside `[source]`.
    pub fn source_context(&self) -> SourceContext {
        let b = &self.backpressure;
        SourceContext {
            dead_letter_destination: self.dead_letter.destination.clone(),
            route_dead_letters: self
                .routes
                .iter()
                .enumerate()
                .filter_map(|(i, route)| {
                    let destination = route.dead_letter.destination.clone()?;
                    Some(outrigger_core::RouteDeadLetter {
                        route: route.name.clone(),
                        destination,
                        path: KeyPath::parse("routes")
                            .index(i)
                            .key("dead_letter")
                            .key("destination"),
                    })
                })
                .collect(),
            declare_dead_letters: self.dead_letter.declare,
            retry_tiers: match self.retry.mode {
                RetryMode::Queue => self.retry.tiers.clone(),
                RetryMode::InPlace | RetryMode::Redeliver => Vec::new(),
            },
            limits: Limits {
                max_in_flight: usize::from(b.max_in_flight),
                max_in_flight_per_partition: usize::from(b.max_in_flight_per_partition),
                max_buffered_bytes: b.max_buffered_bytes.as_u64(),
                prefetch: b.prefetch.map(usize::from),
            },
        }
    }

    /// The sections (`delivery`, `retry`, ...) in which `other` differs from this policy.
    pub fn changed_sections(&self, other: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut differs = |name, same: bool| {
            if !same {
                changed.push(name);
            }
        };
        differs("source", self.source == other.source);
        differs("delivery", self.delivery == other.delivery);
        differs("dedup", self.dedup == other.dedup);
        differs("retry", self.retry == other.retry);
        differs("classify", self.classify == other.classify);
        differs("dead_letter", self.dead_letter == other.dead_letter);
        differs("ordering", self.ordering == other.ordering);
        differs("backpressure", self.backpressure == other.backpressure);
        differs("breaker", self.breaker == other.breaker);
        differs("admin", self.admin == other.admin);
        differs("log", self.log == other.log);
        differs("shutdown", self.shutdown == other.shutdown);
        differs("reload", self.reload == other.reload);
        differs(
            "routes",
            self.routes == other.routes && self.default_action == other.default_action,
        );
        changed
    }

    /// The sections in which `other` differs from this policy in what only a restart can
    /// change: everything but a message's route (`[delivery]`, `[[classify.rules]]`, the
    /// retry budget and backoff, the dedup key, and `[[routes]]` but those that keep another
    /// order than the top-level policy or name a dead-letter destination not in force),
    /// which a reload swaps for the messages taken after it. The source, the store, the
    /// limits, the retry queues and what keeps its order stay.
    pub fn restart_only_changes(&self, other: &Config) -> Vec<&'static str> {
        let mut pinned = other.clone();
        // A destination a route names is declared and checked when the source connects.
        let destinations = |c: &Config| {
            let mut all: Vec<String> = c
                .source_context()
                .route_destinations()
                .into_iter()
                .map(str::to_owned)
                .collect();
            all.sort();
            all
        };
        if self.reordering_routes() == other.reordering_routes()
            && destinations(self) == destinations(other)
        {
            pinned.routes = self.routes.clone();
            pinned.default_action = self.default_action;
        }
        pinned.delivery = self.delivery.clone();
        pinned.classify = self.classify.clone();
        pinned.retry = RetryConfig {
            mode: other.retry.mode,
            tiers: other.retry.tiers.clone(),
            parked_after_dead_letter: other.retry.parked_after_dead_letter,
            ..self.retry.clone()
        };
        pinned.dedup.key = self.dedup.key.clone();
        pinned.dedup.fallback_key = self.dedup.fallback_key.clone();
        pinned.dedup.on_missing_key = self.dedup.on_missing_key;
        self.changed_sections(&pinned)
    }

    /// The routes that keep another order than the top-level policy (another mode or
    /// sequence): changing which messages they take would change the order of messages in
    /// flight, so only a restart can.
    fn reordering_routes(&self) -> Vec<&RouteConfig> {
        let top = (
            self.ordering.mode(&self.source),
            self.ordering.sequence_policy(),
        );
        self.routes
            .iter()
            .filter(|r| {
                let o = r.effective(self).ordering;
                (o.mode(&self.source), o.sequence_policy()) != top
            })
            .collect()
    }

    /// What is valid but likely not what the user wants, in sentences: `check` prints them,
    /// `run` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let d = &self.dedup;
        let capabilities = self.source.capabilities();
        if d.enabled
            && d.key.uses_message_id()
            && !capabilities.broker_message_ids
            && d.fallback_key.is_none()
            && d.on_missing_key == OnMissingKey::DeadLetter
        {
            warnings.push(format!(
                "dedup.key uses {{message_id}}, which {} messages carry only when their \
                 producer sets one (pika, for one, does not by default): messages without it \
                 are dead-lettered. Key on a business id ({{json:/order_id}}, \
                 {{header:idempotency-key}}), set dedup.fallback_key, or set \
                 dedup.on_missing_key = \"deliver\".",
                self.source.kind()
            ));
        }
        warnings
    }

    /// One line on what this policy does, for `outrigger check`.
    pub fn summary(&self) -> String {
        let dedup = if self.dedup.enabled {
            let redis = self.dedup.redis_store(&self.source);
            let store = match self.dedup.store {
                StoreKind::Redis => match (redis.is_cluster(), redis.is_tls()) {
                    (true, true) => "redis cluster over TLS",
                    (true, false) => "redis cluster",
                    (false, true) => "redis over TLS",
                    (false, false) => "redis",
                },
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
        let names = self.source.names();
        let noun = self.source.capabilities().noun.of(names.len());
        let source = format!("{} {noun} {}", self.source.kind(), quoted(&names));
        let mut dead_letters: Vec<String> = names
            .iter()
            .map(|name| self.dead_letter.destination_for(name))
            .collect();
        // One `destination` for every topic reads once.
        dead_letters.dedup();
        let mut routes = match self.routes.len() {
            0 => String::new(),
            1 => "; 1 route".to_owned(),
            n => format!("; {n} routes"),
        };
        let own: Vec<String> = self
            .routes
            .iter()
            .filter_map(|r| {
                Some(format!(
                    "{:?} to {:?}",
                    r.name,
                    r.dead_letter.destination.as_ref()?
                ))
            })
            .collect();
        if !own.is_empty() {
            routes.push_str(&format!(" (dead letters of {})", own.join(", ")));
        }
        format!(
            "{source} → {}; {dedup}; up to {} attempts; {rules}; dead letters to {}{routes}",
            self.delivery.url,
            self.retry.max_attempts,
            quoted(&dead_letters),
        )
    }
}

/// `"a", "b"`: names as the summary quotes them.
fn quoted<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{:?}", n.as_ref())).collect();
    quoted.join(", ")
}
