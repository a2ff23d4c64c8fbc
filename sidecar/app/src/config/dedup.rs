//! `[dedup]`: which messages count as the same business event, and where that is remembered.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use outrigger_policies::KeyTemplate;
use outrigger_redis::{RedisStoreConfig, RedisTls};
use serde::Deserialize;

use super::de;
use super::SourceConfig;

/// `[dedup]`: deliver each business event once, however often the broker redelivers it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Turn dedup off to deliver every copy (at-least-once, no store needed).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The idempotency key: literal text with placeholders `{header:NAME}`, `{json:/pointer}`,
    /// `{ce:id}`, `{message_id}` and `{key}`; for example `{header:tenant}:{json:/order/id}`.
    #[serde(default = "default_key")]
    pub key: KeyTemplate,
    /// A second template, tried when `key` cannot be made from a message (a header or JSON
    /// field it names is missing, the payload is not JSON, the broker gave no message id).
    #[serde(default)]
    pub fallback_key: Option<KeyTemplate>,
    /// What happens to a message from which no key can be made: `dead_letter` (with class
    /// `decode` and the reason; the safe default, nothing reaches the app undeduplicated) or
    /// `deliver` (without dedup, counted in `outrigger_delivered_without_key_total`).
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    /// Where claims and done-records live: `redis` (shared by every replica) or `embedded`
    /// (on local disk; a single replica only).
    #[serde(default)]
    pub store: StoreKind,
    /// `[dedup.redis]`: used when `store = "redis"`.
    #[serde(default)]
    pub redis: RedisConfig,
    /// `[dedup.embedded]`: used when `store = "embedded"`.
    #[serde(default)]
    pub embedded: EmbeddedConfig,
    /// How long a claim protects a key in progress. Must exceed `delivery.timeout`: when it
    /// runs out, another replica may claim the key and deliver it again.
    #[serde(default = "default_lease", deserialize_with = "de::duration")]
    pub lease: Duration,
    /// How long a completed key is remembered; duplicates arriving later are delivered again.
    #[serde(default = "default_ttl", deserialize_with = "de::duration")]
    pub ttl: Duration,
    /// What to do while the store is unreachable: `pause` consumption (nothing is delivered
    /// twice) or `deliver` without dedup (nothing waits).
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

impl DedupConfig {
    /// The key prefix in the store: `redis.namespace`, or else the source's queue name (the
    /// first topic for kafka).
    pub fn namespace(&self, source: &SourceConfig) -> String {
        self.redis
            .namespace
            .clone()
            .unwrap_or_else(|| source.name())
    }

    /// What the Redis store is opened with: `check` validates exactly this, `run` connects
    /// with it.
    pub fn redis_store(&self, source: &SourceConfig) -> RedisStoreConfig {
        let r = &self.redis;
        RedisStoreConfig {
            url: r.url.clone(),
            cluster: r.cluster.clone(),
            username: r.username.clone(),
            password: r.password.clone(),
            tls: r.tls.clone(),
            namespace: self.namespace(source),
            lease: self.lease,
            ttl: self.ttl,
            timeout: r.timeout,
        }
    }
}

/// Dedup is the point of the sidecar; turning it off is the exception.
const fn default_enabled() -> bool {
    true
}

/// Every broker gives a message id without any cooperation from the producer.
fn default_key() -> KeyTemplate {
    "{message_id}"
        .parse()
        .expect("the default key template parses")
}

/// Six times the default delivery timeout: a slow attempt keeps its claim, a crashed replica's
/// keys are free again within a minute.
fn default_lease() -> Duration {
    Duration::from_secs(60)
}

/// Producers and brokers redeliver within minutes or hours; a day covers a redelivery after
/// an overnight outage.
fn default_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            key: default_key(),
            fallback_key: None,
            on_missing_key: OnMissingKey::default(),
            store: StoreKind::default(),
            redis: RedisConfig::default(),
            embedded: EmbeddedConfig::default(),
            lease: default_lease(),
            ttl: default_ttl(),
            on_store_error: OnStoreError::default(),
        }
    }
}

/// Where dedup records live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Redis, shared by every replica of the service. The default, because services scale out.
    #[default]
    Redis,
    /// A file on local disk; correct only while one replica consumes.
    Embedded,
}

/// What a message gets when no idempotency key can be made from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingKey {
    /// Park it in the dead-letter queue, saying which part of the key was missing.
    #[default]
    DeadLetter,
    /// Deliver it without dedup, and count it.
    Deliver,
}

/// What to do while the dedup store is unreachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Stop consuming until the store is back: nothing is delivered twice. The safe default.
    #[default]
    Pause,
    /// Keep delivering without dedup: duplicates may reach the app, nothing waits.
    Deliver,
}

/// `[dedup.redis]`: the Redis server holding claims and done-records.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS (see `tls`).
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// A Redis Cluster instead of `url`: some of its primaries, `["redis://10.0.0.1:7000",
    /// ...]` (`rediss://` for TLS, all alike); the others and the slot map are learned from
    /// them, and MOVED/ASK redirections are followed.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// The ACL user to log in as, in place of the URL's; needs a password.
    #[serde(default)]
    pub username: Option<String>,
    /// The password to log in with (`AUTH`), in place of the URL's; better from
    /// `OUTRIGGER__DEDUP__REDIS__PASSWORD` than the file. Never printed.
    #[serde(default)]
    pub password: Option<String>,
    /// `[dedup.redis.tls]`: the CA file and client certificate of a `rediss://` URL; without
    /// it, the server's certificate must chain to a public root.
    #[serde(default)]
    pub tls: Option<RedisTls>,
    /// Prefix of every key this sidecar writes; default: the source's queue name (the first
    /// topic for kafka), so services sharing one Redis do not see each other's keys.
    #[serde(default)]
    pub namespace: Option<String>,
    /// How long one store call may take before it counts as a store error.
    #[serde(default = "default_redis_timeout", deserialize_with = "de::duration")]
    pub timeout: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Configs get logged; the password, in the URL or on its own, must not be.
        f.debug_struct("RedisConfig")
            .field("url", &outrigger_redis::redacted(&self.url))
            .field(
                "cluster",
                &self
                    .cluster
                    .iter()
                    .map(|n| outrigger_redis::redacted(n))
                    .collect::<Vec<_>>(),
            )
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisConfig {
    /// Whether `url` was left at its default (or written as it).
    pub fn url_is_default(&self) -> bool {
        self.url == default_redis_url()
    }
}

/// A Redis on loopback (a local install, or a sidecar container in the pod).
fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".to_owned()
}

/// Redis answers in milliseconds; two seconds means it is unreachable, not busy.
fn default_redis_timeout() -> Duration {
    Duration::from_secs(2)
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: default_redis_url(),
            cluster: Vec::new(),
            username: None,
            password: None,
            tls: None,
            namespace: None,
            timeout: default_redis_timeout(),
        }
    }
}

/// `[dedup.embedded]`: the on-disk store of a single replica.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// The database file, created if missing; relative paths start at the working directory.
    /// Put it on a volume that survives restarts, or dedup forgets everything on each start.
    #[serde(default = "default_embedded_path")]
    pub path: PathBuf,
}

/// Next to the sidecar, where a first local run can write.
fn default_embedded_path() -> PathBuf {
    PathBuf::from("outrigger-dedup.redb")
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            path: default_embedded_path(),
        }
    }
}
