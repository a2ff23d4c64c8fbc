//! `[source.redis_streams]`: what to connect to and consume, checked before anything connects;
//! and the settings a source runs with, derived from it and the policy's shared sections.

use std::fmt;
use std::time::Duration;

use outrigger_core::config::{checks, de};
use outrigger_core::dead_letter::headers::is_context;
use outrigger_core::dlq::resubmit_headers::is_mark;
use outrigger_core::{KeyPath, Problem, Problems, SourceContext, SourceName};
use serde::Deserialize;

/// `[source.redis_streams]`: consume Redis streams as a member of a consumer group. An entry
/// is acknowledged (`XACK`) only once its outcome is durable; entries a crashed member left
/// pending are taken over after `claim_idle`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamsConfig {
    /// The server, `redis://[user:password@]host:port[/db]`. Redis 7.0 or later (6.2 works
    /// without lag figures); a standalone server or a primary, not a cluster.
    #[serde(default = "default_url")]
    pub url: String,
    /// The streams to consume. Required, at least one. The first names the dead-letter
    /// stream, the dedup namespace and the metric labels by default.
    pub streams: Vec<String>,
    /// The consumer group. Required: replicas of one service share it, and with it the
    /// entries of the streams.
    pub group: String,
    /// This replica's consumer name in the group. Default: the `HOSTNAME` environment
    /// variable (a Kubernetes pod's name), else the machine's hostname. Two running replicas
    /// must not share one: they would share one pending list.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Create the consumer group, and the stream with it (`MKSTREAM`), when missing.
    /// `false`: both must exist, or the sidecar refuses to start.
    #[serde(default = "default_create")]
    pub create: bool,
    /// Where a group the sidecar creates starts reading: `earliest` (every entry the stream
    /// holds) or `latest` (only entries added from now on). An existing group resumes where it
    /// is either way.
    #[serde(default)]
    pub start_from: StartFrom,
    /// The entry field whose value is the message payload, the HTTP body. An entry without
    /// it has an empty payload; its fields still travel as headers.
    #[serde(default = "default_payload_field")]
    pub payload_field: String,
    /// The entry field whose value is the message key (ordering mode `key`, CloudEvents
    /// `partitionkey`). An entry without it has no key.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// How long one `XREADGROUP` waits for new entries before the sidecar looks at its pending
    /// work again. Shorter than `claim_idle`.
    #[serde(default = "default_block", deserialize_with = "de::duration")]
    pub block: Duration,
    /// An entry pending this long on another consumer (one that crashed, or was scaled away)
    /// is taken over (`XAUTOCLAIM`). The sidecar keeps its own entries fresh every quarter of
    /// it (`XCLAIM ... JUSTID`), however long their delivery takes, so a slow delivery is not
    /// taken away. At least 1s.
    #[serde(default = "default_claim_idle", deserialize_with = "de::duration")]
    pub claim_idle: Duration,
    /// How long any other call to Redis may take before it counts as failed.
    #[serde(default = "default_timeout", deserialize_with = "de::duration")]
    pub timeout: Duration,
}

/// Redis on loopback at its default port, so a developer's first run needs no URL.
fn default_url() -> String {
    "redis://127.0.0.1:6379".to_owned()
}

/// Creating the group is what every Redis Streams consumer does first; refusing to start over
/// a group nobody created yet would only move that step into a script.
fn default_create() -> bool {
    true
}

fn default_payload_field() -> String {
    DEFAULT_PAYLOAD_FIELD.to_owned()
}

fn default_key_field() -> String {
    DEFAULT_KEY_FIELD.to_owned()
}

fn default_block() -> Duration {
    DEFAULT_BLOCK
}

fn default_claim_idle() -> Duration {
    DEFAULT_CLAIM_IDLE
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// The payload field when the policy names none.
pub const DEFAULT_PAYLOAD_FIELD: &str = "payload";
/// The key field when the policy names none.
pub const DEFAULT_KEY_FIELD: &str = "key";
/// Long enough that an idle stream costs a read every few seconds, short enough that entries
/// handed back or left by a crashed peer wait little for the next look.
pub const DEFAULT_BLOCK: Duration = Duration::from_secs(2);
/// A crashed replica's entries wait half a minute for a peer: far above a network blip or a
/// pause of the keeper, which refreshes every 7.5s, yet short beside a pod's restart.
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(30);
/// Redis answers in microseconds; five seconds means it is not answering.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest `claim_idle`: its quarter is how often the sidecar refreshes what it holds.
pub const MIN_CLAIM_IDLE: Duration = Duration::from_secs(1);

/// Where a group the sidecar creates starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// Every entry the stream holds. The default: a new group should not silently skip what
    /// is already there.
    #[default]
    Earliest,
    /// Only entries added after the group is created.
    Latest,
}

impl StartFrom {
    /// The id `XGROUP CREATE` starts the group at.
    pub(crate) fn group_start(self) -> &'static str {
        match self {
            StartFrom::Earliest => "0",
            StartFrom::Latest => "$",
        }
    }
}

impl RedisStreamsConfig {
    /// A config for `streams` in `group`, every other key at its default.
    pub fn new(
        url: impl Into<String>,
        streams: impl IntoIterator<Item = impl Into<String>>,
        group: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            streams: streams.into_iter().map(Into::into).collect(),
            group: group.into(),
            consumer: None,
            create: default_create(),
            start_from: StartFrom::default(),
            payload_field: default_payload_field(),
            key_field: default_key_field(),
            block: DEFAULT_BLOCK,
            claim_idle: DEFAULT_CLAIM_IDLE,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The streams with the settings that name them.
    pub fn names(&self) -> Vec<SourceName> {
        let at = KeyPath::parse("source.redis_streams.streams");
        self.streams
            .iter()
            .enumerate()
            .map(|(i, name)| SourceName {
                name: name.clone(),
                path: at.index(i),
            })
            .collect()
    }

    /// Every problem of this table in `context`: what `outrigger check` reports and
    /// [`RedisStreams::connect`](crate::RedisStreams) refuses.
    pub fn validate(&self, context: &SourceContext) -> Vec<Problem> {
        let mut p = Problems::default();
        self.check_url(&mut p);
        if self.streams.is_empty() {
            p.at(
                &["source.redis_streams.streams"],
                "must list at least one stream",
            );
        }
        let streams = KeyPath::parse("source.redis_streams.streams");
        for (i, stream) in self.streams.iter().enumerate() {
            if stream.trim().is_empty() {
                p.at_paths(vec![streams.index(i)], "must not be empty");
            } else if self.streams[..i].contains(stream) {
                p.at_paths(
                    vec![streams.index(i)],
                    "listed twice: each stream is consumed once",
                );
            }
        }
        let hint = "name the consumer group, usually after the service";
        p.not_empty("source.redis_streams.group", Some(&self.group), hint);
        let hint = "leave it out to use the hostname (the pod's name)";
        p.not_empty(
            "source.redis_streams.consumer",
            self.consumer.as_deref(),
            hint,
        );
        self.check_fields(&mut p);
        self.check_durations(&mut p);
        p.extend(checks::dead_letters_not_consumed(
            &self.names(),
            context,
            "stream",
            true,
        ));
        self.check_retry_streams(&mut p, context);
        p.into_vec()
    }

    /// Retry mode `queue`: no retry stream may be a source stream or a dead-letter stream.
    fn check_retry_streams(&self, p: &mut Problems, context: &SourceContext) {
        let streams = KeyPath::parse("source.redis_streams.streams");
        for (i, stream) in self.streams.iter().enumerate() {
            for tier in 0..context.retry_tiers.len() {
                let retry = RedisStreamsSettings::retry_stream_for(stream, tier);
                if let Some(j) = self.streams.iter().position(|s| *s == retry) {
                    p.at_paths(
                        vec![streams.index(i), streams.index(j)],
                        format!(
                            "the retry stream of retry.tiers[{tier}] for stream {stream:?} is {retry:?}, which \
                             is consumed as a source stream; rename one"
                        ),
                    );
                }
                for route in &context.route_dead_letters {
                    if route.destination == retry {
                        p.at_paths(
                            vec![route.path.clone(), streams.index(i)],
                            format!(
                                "{retry:?} is the retry stream of retry.tiers[{tier}] for stream \
                                 {stream:?}: dead letters of route {:?} there would be delivered \
                                 again; name another stream",
                                route.route
                            ),
                        );
                    }
                }
                if let Some(dlq) = self
                    .streams
                    .iter()
                    .map(|s| context.dead_letter_for(s))
                    .find(|d| *d == retry)
                {
                    let mut paths = vec![streams.index(i)];
                    if context.dead_letter_destination.is_some() {
                        paths.push(KeyPath::parse("dead_letter.destination"));
                    }
                    p.at_paths(
                        paths,
                        format!(
                            "the retry stream of retry.tiers[{tier}] for stream {stream:?} is {retry:?}, which \
                             is the dead-letter stream {dlq:?}; rename one"
                        ),
                    );
                }
            }
        }
    }

    fn check_url(&self, p: &mut Problems) {
        let url = "source.redis_streams.url";
        let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !schemes.iter().any(|s| self.url.starts_with(s)) {
            p.at(
                &[url],
                "expected a redis:// URL (rediss:// for TLS, redis+unix:// for a socket)",
            );
        } else if self.url.starts_with("rediss://") {
            // The redis client can speak TLS (the dedup store's does), but this source has no
            // CA or client certificate settings and no test over TLS yet.
            p.at(
                &[url],
                "rediss:// (TLS) is not supported by the Redis Streams source yet; use \
                 redis:// or redis+unix://",
            );
        } else if let Err(e) = redis::Client::open(self.url.as_str()) {
            // The client parses without connecting; its words name the part at fault, never
            // the password.
            p.at(&[url], format!("not a valid Redis URL: {e}"));
        }
    }

    fn check_fields(&self, p: &mut Problems) {
        for (path, field) in [
            ("source.redis_streams.payload_field", &self.payload_field),
            ("source.redis_streams.key_field", &self.key_field),
        ] {
            if field.is_empty() {
                p.at(&[path], "must not be empty: name an entry field");
            } else if is_context(field) || is_mark(field) {
                p.at(
                    &[path],
                    format!(
                        "{field:?} is a field the sidecar writes on dead letters and \
                         resubmitted copies; name another"
                    ),
                );
            }
        }
        if !self.payload_field.is_empty() && self.payload_field == self.key_field {
            p.at(
                &[
                    "source.redis_streams.key_field",
                    "source.redis_streams.payload_field",
                ],
                "must differ from payload_field: one field cannot be both the payload and the key",
            );
        }
    }

    fn check_durations(&self, p: &mut Problems) {
        let claim_idle = "source.redis_streams.claim_idle";
        if self.claim_idle < MIN_CLAIM_IDLE {
            p.at(
                &[claim_idle],
                "must be at least 1s: the sidecar refreshes the entries it holds every quarter \
                 of it",
            );
        }
        let block = "source.redis_streams.block";
        if self.block < Duration::from_millis(1) {
            // Redis reads BLOCK in milliseconds, and BLOCK 0 waits forever.
            p.at(&[block], "must be at least 1ms");
        } else if self.block >= self.claim_idle && self.claim_idle >= MIN_CLAIM_IDLE {
            p.at(
                &[block, claim_idle],
                format!(
                    "source.redis_streams.block ({}) must be shorter than \
                     source.redis_streams.claim_idle ({}): entries of a crashed peer are looked \
                     for between reads",
                    humantime::format_duration(self.block),
                    humantime::format_duration(self.claim_idle)
                ),
            );
        }
        p.positive("source.redis_streams.timeout", self.timeout);
    }
}

// By hand so that the password in the URL never reaches a log line.
impl fmt::Debug for RedisStreamsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamsConfig")
            .field("url", &redact_password(&self.url))
            .field("streams", &self.streams)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("create", &self.create)
            .field("start_from", &self.start_from)
            .field("payload_field", &self.payload_field)
            .field("key_field", &self.key_field)
            .field("block", &self.block)
            .field("claim_idle", &self.claim_idle)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a source runs with: the `[source.redis_streams]` table, the consumer name resolved,
/// and what the policy's shared sections say about limits and dead letters.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStreamsSettings {
    /// `redis://...`.
    pub url: String,
    /// The streams consumed, at least one.
    pub streams: Vec<String>,
    /// The consumer group.
    pub group: String,
    /// This replica's consumer name.
    pub consumer: String,
    /// Create the group (and stream) when missing.
    pub create: bool,
    /// Where a created group starts.
    pub start_from: StartFrom,
    /// The payload field.
    pub payload_field: String,
    /// The key field.
    pub key_field: String,
    /// `XREADGROUP ... BLOCK`.
    pub block: Duration,
    /// Idle time after which a peer's pending entry is taken over.
    pub claim_idle: Duration,
    /// Bound on every other call.
    pub timeout: Duration,
    /// The dead-letter stream of every source stream; `None`: `<stream>.dlq` each.
    pub dead_letter_stream: Option<String>,
    /// Other streams dead letters may go to: those `[[routes]]` entries name. Created when
    /// missing with `declare_dead_letters`, like the dead-letter streams.
    pub route_dead_letter_streams: Vec<String>,
    /// Create a missing dead-letter stream; otherwise it must exist.
    pub declare_dead_letters: bool,
    /// Entries read and not settled, over every stream; at least 1.
    pub max_in_flight: usize,
    /// Payload bytes of entries read and not settled; reading waits while they are past it.
    pub max_buffered_bytes: u64,
    /// Most entries one `XREADGROUP` or `XAUTOCLAIM` asks for, never more than
    /// `max_in_flight` leaves room for.
    pub count: usize,
    /// Retry mode `queue`: the delay of each tier, shortest first; empty: retries in place.
    pub retry_tiers: Vec<Duration>,
}

impl RedisStreamsSettings {
    /// The settings of `config` in `context`. The read count is `backpressure.prefetch`, or
    /// else `max_in_flight`: an entry read is pending until settled, so reading more than the
    /// in-flight limit leaves room for would only park entries in the sidecar.
    pub fn from_config(config: &RedisStreamsConfig, context: &SourceContext) -> Self {
        let limits = context.limits;
        let max_in_flight = limits.max_in_flight.max(1);
        Self {
            url: config.url.clone(),
            streams: config.streams.clone(),
            group: config.group.clone(),
            consumer: config.consumer.clone().unwrap_or_else(default_consumer),
            create: config.create,
            start_from: config.start_from,
            payload_field: config.payload_field.clone(),
            key_field: config.key_field.clone(),
            block: config.block,
            claim_idle: config.claim_idle,
            timeout: config.timeout,
            dead_letter_stream: context.dead_letter_destination.clone(),
            route_dead_letter_streams: context
                .route_destinations()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            declare_dead_letters: context.declare_dead_letters,
            max_in_flight,
            max_buffered_bytes: limits.max_buffered_bytes.max(1),
            count: limits
                .prefetch
                .unwrap_or(max_in_flight)
                .clamp(1, max_in_flight),
            retry_tiers: context.retry_tiers.clone(),
        }
    }

    /// Settings for `streams` in `group` with every default.
    pub fn new(
        url: impl Into<String>,
        streams: impl IntoIterator<Item = impl Into<String>>,
        group: impl Into<String>,
    ) -> Self {
        Self::from_config(
            &RedisStreamsConfig::new(url, streams, group),
            &SourceContext::default(),
        )
    }

    /// The dead-letter stream of entries from `stream`.
    pub fn dead_letter_stream_for(&self, stream: &str) -> String {
        self.dead_letter_stream
            .clone()
            .unwrap_or_else(|| format!("{stream}.dlq"))
    }

    /// The retry stream of delay tier `tier` (from 0) of source stream `stream`:
    /// `<stream>.retry.<tier>`, named like Kafka's retry topics.
    pub fn retry_stream_for(stream: &str, tier: usize) -> String {
        format!("{stream}.retry.{tier}")
    }

    /// The retry streams of every source stream (retry mode `queue`), tier by tier within
    /// each: with the index of the source stream and the tier.
    pub fn retry_streams(&self) -> Vec<(usize, usize, String)> {
        let mut out = Vec::new();
        for (index, stream) in self.streams.iter().enumerate() {
            for tier in 0..self.retry_tiers.len() {
                out.push((index, tier, Self::retry_stream_for(stream, tier)));
            }
        }
        out
    }

    /// Every dead-letter stream, each once, in the order of the source streams.
    pub fn dead_letter_streams(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for stream in &self.streams {
            let dlq = self.dead_letter_stream_for(stream);
            if !out.contains(&dlq) {
                out.push(dlq);
            }
        }
        out
    }

    /// How often the entries this consumer holds are refreshed: a quarter of `claim_idle`, so
    /// three refreshes can fail before a peer may take one.
    pub fn keep_interval(&self) -> Duration {
        self.claim_idle / 4
    }

    /// How often the pending entries of other consumers are looked at: half of `claim_idle`,
    /// so an entry of a crashed peer waits at most one and a half times `claim_idle`.
    pub fn claim_interval(&self) -> Duration {
        self.claim_idle / 2
    }
}

// By hand so that the password in the URL never reaches a log line.
impl fmt::Debug for RedisStreamsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamsSettings")
            .field("url", &redact_password(&self.url))
            .field("streams", &self.streams)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("create", &self.create)
            .field("start_from", &self.start_from)
            .field("payload_field", &self.payload_field)
            .field("key_field", &self.key_field)
            .field("block", &self.block)
            .field("claim_idle", &self.claim_idle)
            .field("timeout", &self.timeout)
            .field("dead_letter_stream", &self.dead_letter_stream)
            .field("route_dead_letter_streams", &self.route_dead_letter_streams)
            .field("declare_dead_letters", &self.declare_dead_letters)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("count", &self.count)
            .field("retry_tiers", &self.retry_tiers)
            .finish()
    }
}

/// The consumer name of a replica whose policy names none: its pod's name in Kubernetes
/// (`HOSTNAME`), else the machine's hostname, else `outrigger`.
pub fn default_consumer() -> String {
    let system = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok());
    std::env::var("HOSTNAME")
        .ok()
        .into_iter()
        .chain(system)
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "outrigger".to_owned())
}

/// The URL with the password part of its userinfo replaced by `***`.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RedisStreamsConfig {
        RedisStreamsConfig::new("redis://127.0.0.1:6379", ["orders"], "billing")
    }

    fn problems(c: &RedisStreamsConfig, context: &SourceContext) -> Vec<String> {
        c.validate(context).iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn defaults_are_valid_and_name_the_dead_letter_stream_after_the_source() {
        assert!(problems(&config(), &SourceContext::default()).is_empty());
        let s = RedisStreamsSettings::from_config(&config(), &SourceContext::default());
        assert_eq!(s.dead_letter_stream_for("orders"), "orders.dlq");
        assert_eq!(s.count, 64, "the in-flight limit");
        assert!(!s.consumer.is_empty());
        assert_eq!(s.keep_interval(), Duration::from_millis(7500));
        let shared = RedisStreamsSettings {
            dead_letter_stream: Some("all.dlq".into()),
            streams: vec!["a".into(), "b".into()],
            ..s
        };
        assert_eq!(shared.dead_letter_streams(), ["all.dlq"]);
    }

    #[test]
    fn the_read_count_never_exceeds_the_in_flight_limit() {
        let mut context = SourceContext::default();
        context.limits.max_in_flight = 8;
        context.limits.prefetch = Some(100);
        assert_eq!(
            RedisStreamsSettings::from_config(&config(), &context).count,
            8
        );
        context.limits.prefetch = Some(3);
        assert_eq!(
            RedisStreamsSettings::from_config(&config(), &context).count,
            3
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let c = RedisStreamsConfig::new("redis://app:s3cret@redis:6379/2", ["o"], "g");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://app:***@redis:6379/2"), "{shown}");
        let shown = format!(
            "{:?}",
            RedisStreamsSettings::from_config(&c, &SourceContext::default())
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(redact_password("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact_password("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let bad = RedisStreamsConfig {
            url: "http://redis".into(),
            streams: vec!["o".into(), " ".into(), "o".into()],
            group: " ".into(),
            consumer: Some("".into()),
            payload_field: "outrigger-dlq-reason".into(),
            key_field: "".into(),
            block: Duration::ZERO,
            claim_idle: Duration::from_millis(500),
            timeout: Duration::ZERO,
            ..config()
        };
        let found = problems(&bad, &SourceContext::default());
        let expected = [
            "source.redis_streams.url: expected a redis:// URL",
            "source.redis_streams.streams[1]: must not be empty",
            "source.redis_streams.streams[2]: listed twice",
            "source.redis_streams.group: must not be empty",
            "source.redis_streams.consumer: must not be empty",
            "source.redis_streams.payload_field: \"outrigger-dlq-reason\" is a field the sidecar writes",
            "source.redis_streams.key_field: must not be empty",
            "source.redis_streams.claim_idle: must be at least 1s",
            "source.redis_streams.block: must be at least 1ms",
            "source.redis_streams.timeout: must be longer than 0s",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (got, want) in found.iter().zip(expected) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn fields_block_and_urls_are_checked_against_each_other() {
        let c = RedisStreamsConfig {
            key_field: "payload".into(),
            block: Duration::from_secs(30),
            ..config()
        };
        let found = problems(&c, &SourceContext::default());
        assert!(
            found[0].starts_with("source.redis_streams.key_field: must differ from payload_field")
        );
        assert!(found[1]
            .contains("block (30s) must be shorter than source.redis_streams.claim_idle (30s)"));
        let bad_db = RedisStreamsConfig {
            url: "redis://redis:6380/x".into(),
            ..config()
        };
        let found = problems(&bad_db, &SourceContext::default());
        assert!(
            found[0].starts_with("source.redis_streams.url: not a valid Redis URL"),
            "{found:?}"
        );
        let tls = RedisStreamsConfig {
            url: "rediss://redis:6380".into(),
            ..config()
        };
        let found = problems(&tls, &SourceContext::default());
        assert!(
            found[0].starts_with("source.redis_streams.url: rediss:// (TLS) is not supported"),
            "{found:?}"
        );
        let empty = RedisStreamsConfig {
            streams: vec![],
            ..config()
        };
        assert_eq!(
            problems(&empty, &SourceContext::default()),
            ["source.redis_streams.streams: must list at least one stream"]
        );
    }

    #[test]
    fn a_stream_may_not_dead_letter_into_a_source_stream() {
        let c = RedisStreamsConfig {
            streams: vec!["orders".into(), "orders.dlq".into()],
            ..config()
        };
        let found = problems(&c, &SourceContext::default());
        assert!(found[0].contains("dead letters of stream \"orders\" go to \"orders.dlq\""));
        let context = SourceContext {
            dead_letter_destination: Some("orders".into()),
            ..SourceContext::default()
        };
        let found = problems(&config(), &context);
        assert!(
            found[0].starts_with("dead_letter.destination: must differ from every source stream")
        );
    }
}
