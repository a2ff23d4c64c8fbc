//! `[source.kafka]`: what to consume and how, checked before anything connects; and the
//! settings a source runs with, derived from it and the policy's shared sections.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use outrigger_core::config::{checks, de};
use outrigger_core::{KeyPath, Limits, Problem, Problems, SourceContext, SourceName};
use rdkafka::ClientConfig;
use serde::Deserialize;

/// `[source.kafka]`: consume Kafka topics as a member of a consumer group. An offset is
/// committed only once its message and every earlier one of its partition are settled
/// (delivered, dropped or dead-lettered), so a crash or a rebalance redelivers, never skips.
#[derive(Clone, PartialEq, Eq, Deserialize)]
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
    /// redelivered to the new owner. Shorter than librdkafka's `max.poll.interval.ms`.
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
    DEFAULT_COMMIT_INTERVAL
}

/// The default `delivery.timeout`: an attempt under way when its partition is revoked can
/// finish and be committed; longer would hold up the rebalance of the whole group.
fn default_revoke_timeout() -> Duration {
    DEFAULT_REVOKE_TIMEOUT
}

/// How often settled offsets are committed when the policy says nothing.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a rebalance waits for in-flight records when the policy says nothing.
pub const DEFAULT_REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka's `max.poll.interval.ms` default: a revoke must finish well within it.
const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);

/// Kafka's limit on the length of a topic name.
const MAX_TOPIC_CHARS: usize = 249;

/// Where a group with no committed offset starts reading.
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

impl StartFrom {
    /// librdkafka's `auto.offset.reset` value.
    pub(crate) fn as_reset(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// librdkafka settings the sidecar sets itself, and what to do instead. `properties` may not
/// set them: the manual offset store and the commit cadence keep a commit from passing an
/// unsettled record; acks and idempotence make a dead-letter write durable before the original
/// is settled; the rest have their own setting.
pub const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    (
        "bootstrap.servers",
        "set source.kafka.bootstrap_servers instead",
    ),
    (
        "metadata.broker.list",
        "set source.kafka.bootstrap_servers instead",
    ),
    ("group.id", "set source.kafka.group_id instead"),
    (
        "auto.offset.reset",
        "set source.kafka.start_from (\"earliest\" or \"latest\") instead",
    ),
    (
        "enable.auto.commit",
        "it commits settled offsets itself; set source.kafka.commit_interval instead",
    ),
    (
        "auto.commit.interval.ms",
        "set source.kafka.commit_interval instead",
    ),
    (
        "enable.auto.offset.store",
        "it stores an offset only once that message and every earlier one of its partition \
         are settled, so nothing is skipped; leave it out",
    ),
    (
        "enable.idempotence",
        "dead letters are written by an idempotent producer, so its retries add no \
         duplicates; leave it out",
    ),
    (
        "acks",
        "every in-sync replica confirms a dead letter before its message is settled; \
         leave it out",
    ),
    (
        "request.required.acks",
        "every in-sync replica confirms a dead letter before its message is settled; \
         leave it out",
    ),
];

impl KafkaConfig {
    /// A config for `topics` in `group_id`, every other key at its default.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        group_id: impl Into<String>,
    ) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            group_id: group_id.into(),
            start_from: StartFrom::default(),
            properties: BTreeMap::new(),
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            revoke_timeout: DEFAULT_REVOKE_TIMEOUT,
        }
    }

    /// The topics with the settings that name them.
    pub fn names(&self) -> Vec<SourceName> {
        let at = KeyPath::parse("source.kafka.topics");
        self.topics
            .iter()
            .enumerate()
            .map(|(i, name)| SourceName {
                name: name.clone(),
                path: at.index(i),
            })
            .collect()
    }

    /// Every problem of this table in `context`: what `outrigger check` reports and
    /// [`Kafka::connect`](crate::Kafka) refuses.
    pub fn validate(&self, context: &SourceContext) -> Vec<Problem> {
        let mut p = Problems::default();
        let hint = "list brokers as host:port, separated by commas";
        p.not_empty(
            "source.kafka.bootstrap_servers",
            Some(&self.bootstrap_servers),
            hint,
        );
        if self.topics.is_empty() {
            p.at(&["source.kafka.topics"], "must list at least one topic");
        }
        let topics = KeyPath::parse("source.kafka.topics");
        for (i, topic) in self.topics.iter().enumerate() {
            if let Err(why) = topic_name(topic) {
                p.at_paths(vec![topics.index(i)], why);
            } else if self.topics[..i].contains(topic) {
                p.at_paths(
                    vec![topics.index(i)],
                    "listed twice: each topic is consumed once",
                );
            }
        }
        let hint = "name the consumer group, usually after the service";
        p.not_empty("source.kafka.group_id", Some(&self.group_id), hint);
        self.check_properties(&mut p);
        p.positive("source.kafka.commit_interval", self.commit_interval);
        p.positive("source.kafka.revoke_timeout", self.revoke_timeout);
        let max_poll_interval = self
            .properties
            .get("max.poll.interval.ms")
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map_or(DEFAULT_MAX_POLL_INTERVAL, Duration::from_millis);
        if !self.revoke_timeout.is_zero() && self.revoke_timeout >= max_poll_interval {
            let mut paths = vec![KeyPath::parse("source.kafka.revoke_timeout")];
            if self.properties.contains_key("max.poll.interval.ms") {
                paths.push(KeyPath::parse("source.kafka.properties").key("max.poll.interval.ms"));
            }
            p.at_paths(
                paths,
                format!(
                    "source.kafka.revoke_timeout ({}) must be shorter than librdkafka's \
                     max.poll.interval.ms ({}): a longer revoke gets the member thrown out of \
                     its group",
                    humantime::format_duration(self.revoke_timeout),
                    humantime::format_duration(max_poll_interval)
                ),
            );
        }
        // A blank one is the app's to report, as it is on every broker.
        let named = context.route_dead_letters.iter();
        for route in named.filter(|r| !r.destination.trim().is_empty()) {
            if let Err(why) = topic_name(&route.destination) {
                p.at_paths(vec![route.path.clone()], why);
            }
        }
        let names = self.names();
        p.extend(checks::dead_letters_not_consumed(
            &names, context, "topic", true,
        ));
        if !context.retry_tiers.is_empty() {
            for (i, topic) in self.topics.iter().enumerate() {
                for tier in 0..context.retry_tiers.len() {
                    let retry = KafkaSettings::retry_topic_for(topic, tier);
                    for route in &context.route_dead_letters {
                        if route.destination == retry {
                            p.at_paths(
                                vec![route.path.clone(), KeyPath::parse("retry.tiers")],
                                format!(
                                    "{retry:?} is the retry topic of tier {} of topic {:?}: \
                                     dead letters there would be delivered again; name \
                                     another topic",
                                    tier + 1,
                                    self.topics[i]
                                ),
                            );
                        }
                    }
                    if let Some(j) = self.topics.iter().position(|t| *t == retry) {
                        p.at_paths(
                            vec![topics.index(j), KeyPath::parse("retry.mode")],
                            format!(
                                "{retry:?} is the retry topic of tier {} of topic {:?} in \
                                 retry mode \"queue\", so its copies would be consumed twice; \
                                 consume {:?} only",
                                tier + 1,
                                self.topics[i],
                                self.topics[i]
                            ),
                        );
                    }
                }
            }
        }
        p.into_vec()
    }

    /// Reserved properties, and what librdkafka itself refuses (an unknown name, a value out
    /// of range), each where it was written.
    fn check_properties(&self, p: &mut Problems) {
        let at = KeyPath::parse("source.kafka.properties");
        for (name, value) in &self.properties {
            let reserved = RESERVED_PROPERTIES
                .iter()
                .find(|(owned, _)| owned.eq_ignore_ascii_case(name.trim()));
            if let Some((owned, instead)) = reserved {
                p.at_paths(
                    vec![at.key(name)],
                    format!("`{owned}` is set by the sidecar: {instead}"),
                );
                continue;
            }
            // librdkafka checks a name and its value when the setting is applied; a client
            // config that is never turned into a client connects nowhere.
            let mut one = ClientConfig::new();
            one.set(name, value);
            if let Err(e) = one.create_native_config() {
                p.at_paths(
                    vec![at.key(name)],
                    format!("librdkafka refuses it: {}", librdkafka_reason(&e)),
                );
            }
        }
    }
}

/// The sentence librdkafka gave, without rdkafka's wrapping.
fn librdkafka_reason(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description.clone(),
        other => other.to_string(),
    }
}

/// Kafka's rules for a topic name: ASCII letters, digits, `.`, `_` and `-`, 1 to 249 of them,
/// and not `.` or `..`.
fn topic_name(name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if name.is_empty() {
        Err("must not be empty".to_owned())
    } else if name == "." || name == ".." {
        Err("`.` and `..` are not valid Kafka topic names".to_owned())
    } else if !name.bytes().all(allowed) {
        Err(
            "not a valid Kafka topic name: use only ASCII letters, digits, `.`, `_` and `-`"
                .to_owned(),
        )
    } else if name.len() > MAX_TOPIC_CHARS {
        Err(format!(
            "too long: Kafka topic names have at most {MAX_TOPIC_CHARS} characters, this one \
             has {}",
            name.len()
        ))
    } else {
        Ok(())
    }
}

// By hand so that SASL passwords and TLS keys in `properties` never reach a log line.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("start_from", &self.start_from)
            .field("properties", &redacted(&self.properties))
            .field("commit_interval", &self.commit_interval)
            .field("revoke_timeout", &self.revoke_timeout)
            .finish()
    }
}

/// What a source runs with: the `[source.kafka]` table and what the policy's shared sections
/// say about limits, dead letters and retry tiers.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]` of one or more brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Topics to consume; each must exist ([`SourceError::Rejected`] otherwise).
    ///
    /// [`SourceError::Rejected`]: outrigger_core::SourceError::Rejected
    pub topics: Vec<String>,
    /// Consumer group: replicas of one service share it and split the partitions.
    pub group_id: String,
    /// Where a group with no committed offset starts.
    pub start_from: StartFrom,
    /// Extra librdkafka properties (security settings and the like), applied last to the
    /// consumer, the dead-letter producer and the admin client alike (a property one of them
    /// does not know makes it log a warning).
    pub properties: BTreeMap<String, String>,
    /// The dead-letter topic for every source topic; `None` means `<topic>.dlq` per topic.
    /// Created when missing, see [`KafkaSource::connect`](crate::KafkaSource::connect).
    pub dead_letter_topic: Option<String>,
    /// Other topics dead letters may go to: those `[[routes]]` entries name. Created when
    /// missing like the dead-letter topics, with as many partitions as the largest source
    /// topic.
    pub route_dead_letter_topics: Vec<String>,
    /// Records handed out and not settled, over all partitions; at least 1.
    pub max_in_flight: usize,
    /// Records handed out and not settled, per partition; at least 1.
    pub max_in_flight_per_partition: usize,
    /// Payload bytes of records handed out and not settled; at least 1.
    pub max_buffered_bytes: u64,
    /// Records librdkafka keeps fetched ahead per partition (`queued.min.messages`).
    pub prefetch_per_partition: usize,
    /// How often the settled watermark of each partition is committed.
    pub commit_interval: Duration,
    /// How long a revoked partition (rebalance or stop) waits for its in-flight records.
    pub revoke_timeout: Duration,
    /// Retry mode `queue`: the delay of each retry tier. Tier `n` (from 0) of a source topic
    /// is the topic `<topic>.retry.<n + 1>`, created when missing and consumed with the source
    /// topics; a record there is handed out once its `outrigger-retry-due` time has come.
    /// Empty: no retry topics.
    pub retry_tiers: Vec<Duration>,
}

/// Records librdkafka keeps prefetched per partition unless `backpressure.prefetch` says
/// otherwise (its own default is 100,000): a few fetches' worth, not a partition's backlog.
pub const DEFAULT_PREFETCH_PER_PARTITION: usize = 1000;

impl KafkaSettings {
    /// The settings of `config` in `context`.
    pub fn from_config(config: &KafkaConfig, context: &SourceContext) -> Self {
        let Limits {
            max_in_flight,
            max_in_flight_per_partition,
            max_buffered_bytes,
            prefetch,
        } = context.limits;
        Self {
            bootstrap_servers: config.bootstrap_servers.clone(),
            topics: config.topics.clone(),
            group_id: config.group_id.clone(),
            start_from: config.start_from,
            properties: config.properties.clone(),
            dead_letter_topic: context.dead_letter_destination.clone(),
            route_dead_letter_topics: context
                .route_destinations()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            max_in_flight,
            max_in_flight_per_partition,
            max_buffered_bytes,
            prefetch_per_partition: prefetch.unwrap_or(DEFAULT_PREFETCH_PER_PARTITION),
            commit_interval: config.commit_interval,
            revoke_timeout: config.revoke_timeout,
            retry_tiers: context.retry_tiers.clone(),
        }
    }

    /// Settings for `topics` in `group_id` with every default: start from the earliest
    /// record, dead letters to `<topic>.dlq`, the default limits and intervals, no retry tiers.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        group_id: impl Into<String>,
    ) -> Self {
        Self::from_config(
            &KafkaConfig::new(bootstrap_servers, topics, group_id),
            &SourceContext::default(),
        )
    }

    /// The retry topic of `tier` (from 0) for records from `topic`: `<topic>.retry.<tier + 1>`.
    pub fn retry_topic_for(topic: &str, tier: usize) -> String {
        format!("{topic}.retry.{}", tier + 1)
    }

    /// Every retry topic, with the source topic it serves.
    pub fn retry_topics(&self) -> Vec<(String, String)> {
        self.topics
            .iter()
            .flat_map(|topic| {
                (0..self.retry_tiers.len())
                    .map(move |tier| (topic.clone(), Self::retry_topic_for(topic, tier)))
            })
            .collect()
    }

    /// The dead-letter topic of records from `topic`.
    pub fn dead_letter_topic_for(&self, topic: &str) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{topic}.dlq"))
    }
}

/// Whether a librdkafka property holds a secret that must not reach a log line.
fn is_secret(key: &str) -> bool {
    [
        "password",
        "secret",
        "key",
        "token",
        "jaas",
        "oauthbearer.config",
    ]
    .iter()
    .any(|word| key.contains(word))
}

fn redacted(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
        .collect()
}

// By hand so that SASL passwords and TLS keys in `properties` never reach a log line.
impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("start_from", &self.start_from)
            .field("properties", &redacted(&self.properties))
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("route_dead_letter_topics", &self.route_dead_letter_topics)
            .field("max_in_flight", &self.max_in_flight)
            .field(
                "max_in_flight_per_partition",
                &self.max_in_flight_per_partition,
            )
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("prefetch_per_partition", &self.prefetch_per_partition)
            .field("commit_interval", &self.commit_interval)
            .field("revoke_timeout", &self.revoke_timeout)
            .field("retry_tiers", &self.retry_tiers)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaConfig {
        KafkaConfig::new("127.0.0.1:9092", ["orders"], "billing")
    }

    fn problems(c: &KafkaConfig, context: &SourceContext) -> String {
        let all: Vec<String> = c.validate(context).iter().map(|p| p.to_string()).collect();
        all.join("\n")
    }

    #[test]
    fn defaults_are_valid_and_name_the_dead_letter_topic_after_the_source() {
        let c = config();
        assert!(c.validate(&SourceContext::default()).is_empty());
        let s = KafkaSettings::new("127.0.0.1:9092", ["orders"], "billing");
        assert_eq!(s.dead_letter_topic_for("orders"), "orders.dlq");
        assert_eq!(s.start_from, StartFrom::Earliest);
        let shared = KafkaSettings {
            dead_letter_topic: Some("all.dlq".into()),
            ..s
        };
        assert_eq!(shared.dead_letter_topic_for("orders"), "all.dlq");
    }

    #[test]
    fn reserved_properties_are_rejected_by_name() {
        let mut c = config();
        c.properties
            .insert("enable.auto.offset.store".into(), "true".into());
        c.properties.insert("acks".into(), "1".into());
        c.properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let text = problems(&c, &SourceContext::default());
        assert!(text.contains("enable.auto.offset.store"), "{text}");
        assert!(text.contains("`acks`"), "{text}");
        assert!(!text.contains("security.protocol"), "{text}");
    }

    #[test]
    fn librdkafka_refuses_unknown_properties_and_bad_values() {
        let mut c = config();
        c.properties
            .insert("session.timeout.msx".into(), "1".into());
        c.properties
            .insert("session.timeout.ms".into(), "soon".into());
        c.properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let found = c.validate(&SourceContext::default());
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found
            .iter()
            .all(|p| p.message.starts_with("librdkafka refuses it")));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = KafkaConfig {
            topics: vec![],
            group_id: " ".into(),
            commit_interval: Duration::ZERO,
            ..config()
        };
        let text = problems(&c, &SourceContext::default());
        for part in [
            "source.kafka.topics: must list at least one topic",
            "source.kafka.group_id",
            "source.kafka.commit_interval",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
    }

    #[test]
    fn the_revoke_must_end_before_the_group_gives_up_on_the_member() {
        let mut c = KafkaConfig {
            revoke_timeout: Duration::from_secs(300),
            ..config()
        };
        assert!(!c.validate(&SourceContext::default()).is_empty());
        c.properties
            .insert("max.poll.interval.ms".into(), "600000".into());
        assert!(c.validate(&SourceContext::default()).is_empty());
    }

    #[test]
    fn a_topic_may_not_dead_letter_into_a_source_topic() {
        let c = KafkaConfig {
            topics: vec!["orders".into(), "orders.dlq".into()],
            ..config()
        };
        assert!(!c.validate(&SourceContext::default()).is_empty());
    }

    #[test]
    fn retry_topics_are_named_per_tier_and_may_not_be_source_topics() {
        let c = KafkaConfig {
            topics: vec!["orders".into(), "orders.retry.2".into()],
            ..config()
        };
        let context = SourceContext {
            retry_tiers: vec![Duration::from_secs(1), Duration::from_secs(10)],
            ..SourceContext::default()
        };
        let s = KafkaSettings::from_config(&c, &context);
        assert_eq!(
            s.retry_topics()[..2],
            [
                ("orders".to_owned(), "orders.retry.1".to_owned()),
                ("orders".to_owned(), "orders.retry.2".to_owned())
            ]
        );
        let text = problems(&c, &context);
        assert!(
            text.contains("is the retry topic of tier 2 of topic \"orders\""),
            "{text}"
        );
        assert!(c.validate(&SourceContext::default()).is_empty());
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = config();
        c.properties.insert("sasl.password".into(), "s3cret".into());
        c.properties
            .insert("sasl.username".into(), "billing".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("billing"), "{shown}");
        let settings = KafkaSettings::from_config(&c, &SourceContext::default());
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
