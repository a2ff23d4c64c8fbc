//! What the adapter needs to know to consume a set of topics in a consumer group.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use outrigger_core::SourceError;

/// Records handed out and not settled, over all partitions, when the user says nothing.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// The same per partition: one slow partition cannot take every slot.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PARTITION: usize = 64;
/// Payload bytes outstanding when the user says nothing: enough for hundreds of typical events,
/// small next to a pod's memory limit.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 64 * 1024 * 1024;
/// How often settled offsets are committed: a crash redelivers at most about this much work.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a rebalance waits for in-flight records of revoked partitions: long enough for a
/// typical HTTP delivery to finish, far below librdkafka's 300s `max.poll.interval.ms`.
pub const DEFAULT_REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka's `max.poll.interval.ms` default: a revoke must finish well within it.
const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);

/// Where a group with no committed offset starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// From the oldest record still in the topic: nothing produced before the group existed is
    /// skipped. The default for a sidecar that must not lose events.
    #[default]
    Earliest,
    /// From the next record produced after the group joined.
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

/// Connection, group and flow-control settings of one Kafka source.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of one or more brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Topics to consume; each must exist ([`SourceError::Rejected`] otherwise).
    pub topics: Vec<String>,
    /// Consumer group: replicas of one service share it and split the partitions.
    pub group_id: String,
    /// Where a group with no committed offset starts.
    pub start_from: StartFrom,
    /// Extra librdkafka properties (security settings and the like), applied last to the
    /// consumer, the dead-letter producer and the admin client alike (a property one of them
    /// does not know makes it log a warning). Keys the adapter's guarantees rest on are
    /// refused, see [`RESERVED_PROPERTIES`].
    pub properties: BTreeMap<String, String>,
    /// The dead-letter topic for every source topic; `None` means `<topic>.dlq` per topic.
    /// Created when missing, see [`KafkaSource::connect`](crate::KafkaSource::connect).
    pub dead_letter_topic: Option<String>,
    /// Records handed out and not settled, over all partitions; at least 1.
    pub max_in_flight: usize,
    /// Records handed out and not settled, per partition; at least 1.
    pub max_in_flight_per_partition: usize,
    /// Payload bytes of records handed out and not settled; at least 1.
    pub max_buffered_bytes: u64,
    /// How often the settled watermark of each partition is committed.
    pub commit_interval: Duration,
    /// How long a revoked partition (rebalance or stop) waits for its in-flight records; less
    /// than librdkafka's `max.poll.interval.ms` (300s unless set in `properties`).
    pub revoke_timeout: Duration,
    /// Retry mode `queue`: the delay of each retry tier. Tier `n` (from 0) of a source topic
    /// is the topic `<topic>.retry.<n + 1>`, created when missing and consumed with the source
    /// topics; a record there is handed out once its `outrigger-retry-due` time has come.
    /// Empty: no retry topics.
    pub retry_tiers: Vec<Duration>,
}

/// librdkafka properties that [`KafkaConfig::properties`] may not set, with why.
///
/// The manual offset store and the commit cadence are what keep a commit from passing an
/// unsettled record; acks and idempotence are what make a dead-letter write durable before the
/// original is settled; the rest have their own [`KafkaConfig`] field.
pub const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "offsets are stored only up to the settled watermark",
    ),
    (
        "enable.auto.commit",
        "commits are driven by commit_interval",
    ),
    ("auto.commit.interval.ms", "use commit_interval"),
    ("group.id", "use group_id"),
    ("bootstrap.servers", "use bootstrap_servers"),
    ("metadata.broker.list", "use bootstrap_servers"),
    ("auto.offset.reset", "use start_from"),
    (
        "enable.idempotence",
        "dead letters are written with an idempotent producer",
    ),
    ("acks", "dead letters are confirmed by all in-sync replicas"),
    (
        "request.required.acks",
        "dead letters are confirmed by all in-sync replicas",
    ),
];

impl KafkaConfig {
    /// Settings for `topics` in `group_id` with the defaults: start from the earliest record,
    /// dead letters to `<topic>.dlq`, and the `DEFAULT_*` limits and intervals.
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
            dead_letter_topic: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_partition: DEFAULT_MAX_IN_FLIGHT_PER_PARTITION,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            revoke_timeout: DEFAULT_REVOKE_TIMEOUT,
            retry_tiers: Vec::new(),
        }
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

    /// Checks everything that can be checked without a broker, reporting every problem at once
    /// as one [`SourceError::Rejected`].
    pub fn validate(&self) -> Result<(), SourceError> {
        let mut problems = Vec::new();
        if self.bootstrap_servers.trim().is_empty() {
            problems.push("bootstrap_servers is empty".to_owned());
        }
        if self.topics.is_empty() {
            problems.push("topics is empty".to_owned());
        }
        if self.topics.iter().any(|t| t.trim().is_empty()) {
            problems.push("topics holds an empty name".to_owned());
        }
        if self.group_id.trim().is_empty() {
            problems.push("group_id is empty".to_owned());
        }
        if self
            .dead_letter_topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            problems.push("dead_letter_topic is empty".to_owned());
        }
        if let Some(topic) = self
            .topics
            .iter()
            .find(|t| self.topics.contains(&self.dead_letter_topic_for(t)))
        {
            problems.push(format!(
                "topic {topic:?} would dead-letter into a source topic"
            ));
        }
        if let Some((source, retry)) = self
            .retry_topics()
            .into_iter()
            .find(|(_, retry)| self.topics.contains(retry))
        {
            problems.push(format!(
                "topic {source:?} would retry into a source topic ({retry:?})"
            ));
        }
        for (name, value) in [
            ("max_in_flight", self.max_in_flight as u64),
            (
                "max_in_flight_per_partition",
                self.max_in_flight_per_partition as u64,
            ),
            ("max_buffered_bytes", self.max_buffered_bytes),
            (
                "commit_interval (ms)",
                self.commit_interval.as_millis() as u64,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        let max_poll_interval = self
            .properties
            .get("max.poll.interval.ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(DEFAULT_MAX_POLL_INTERVAL, Duration::from_millis);
        if self.revoke_timeout >= max_poll_interval {
            problems.push(format!(
                "revoke_timeout ({:?}) must be shorter than max.poll.interval.ms ({:?}): a \
                 longer revoke gets the member thrown out of its group",
                self.revoke_timeout, max_poll_interval
            ));
        }
        for key in self.properties.keys() {
            if let Some((_, why)) = RESERVED_PROPERTIES.iter().find(|(k, _)| k == key) {
                problems.push(format!("property {key:?} cannot be set: {why}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Rejected(format!(
                "invalid Kafka source configuration: {}",
                problems.join("; ")
            )))
        }
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

// By hand so that SASL passwords and TLS keys in `properties` never reach a log line.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("start_from", &self.start_from)
            .field("properties", &properties)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("max_in_flight", &self.max_in_flight)
            .field(
                "max_in_flight_per_partition",
                &self.max_in_flight_per_partition,
            )
            .field("max_buffered_bytes", &self.max_buffered_bytes)
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

    #[test]
    fn defaults_are_valid_and_name_the_dead_letter_topic_after_the_source() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.dead_letter_topic_for("orders"), "orders.dlq");
        assert_eq!(c.start_from, StartFrom::Earliest);
        let shared = KafkaConfig {
            dead_letter_topic: Some("all.dlq".into()),
            ..config()
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
        let Err(SourceError::Rejected(text)) = c.validate() else {
            panic!("reserved properties accepted");
        };
        assert!(text.contains("enable.auto.offset.store"), "{text}");
        assert!(text.contains("\"acks\""), "{text}");
        assert!(!text.contains("security.protocol"), "{text}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = KafkaConfig {
            topics: vec![],
            group_id: " ".into(),
            max_in_flight: 0,
            max_buffered_bytes: 0,
            ..config()
        };
        let Err(SourceError::Rejected(text)) = c.validate() else {
            panic!("invalid config accepted");
        };
        for part in [
            "topics is empty",
            "group_id",
            "max_in_flight must",
            "max_buffered_bytes",
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
        assert!(c.validate().is_err());
        c.properties
            .insert("max.poll.interval.ms".into(), "600000".into());
        c.validate().unwrap();
    }

    #[test]
    fn a_topic_may_not_dead_letter_into_a_source_topic() {
        let c = KafkaConfig {
            topics: vec!["orders".into(), "orders.dlq".into()],
            ..config()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn retry_topics_are_named_per_tier_and_may_not_be_source_topics() {
        let c = KafkaConfig {
            topics: vec!["orders".into(), "orders.retry.2".into()],
            retry_tiers: vec![Duration::from_secs(1), Duration::from_secs(10)],
            ..config()
        };
        assert_eq!(
            c.retry_topics()[..2],
            [
                ("orders".to_owned(), "orders.retry.1".to_owned()),
                ("orders".to_owned(), "orders.retry.2".to_owned())
            ]
        );
        let Err(SourceError::Rejected(text)) = c.validate() else {
            panic!("a retry topic that is a source topic was accepted");
        };
        assert!(text.contains("would retry into a source topic"), "{text}");
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
    }
}
