//! Checks that need more than one value's type: ranges, relations between settings, and
//! combinations this build does not support. Pure: it reads the config and lists problems.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::doc::KeyPath;
use super::{Config, KafkaConfig, RetryMode, SourceConfig, StoreKind};

/// The largest response excerpt: it travels in every dead letter, and brokers cap message size.
const MAX_EXCERPT_BYTES: u64 = 1024 * 1024;

/// The levels `tracing` knows, for telling a level from a typo.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Kafka's limit on the length of a topic name.
const MAX_TOPIC_CHARS: usize = 249;
/// Retry tiers, one topic each per source topic: more would mostly be topics to manage.
const MAX_TIERS: usize = 10;

/// librdkafka settings the sidecar sets itself, and what to do instead. The Kafka adapter
/// refuses the same ones when it connects; refused here, they are found by `outrigger check`.
const OWNED_PROPERTIES: [(&str, &str); 10] = [
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

/// One semantic problem: the settings involved (the first is the one to blame when the user
/// wrote it) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issue {
    pub(crate) paths: Vec<KeyPath>,
    pub(crate) message: String,
}

#[derive(Default)]
struct Issues(Vec<Issue>);

impl Issues {
    fn at(&mut self, paths: &[&str], message: impl Into<String>) {
        let paths = paths.iter().map(|p| KeyPath::parse(p)).collect();
        self.at_paths(paths, message);
    }

    fn at_paths(&mut self, paths: Vec<KeyPath>, message: impl Into<String>) {
        self.0.push(Issue {
            paths,
            message: message.into(),
        });
    }

    fn positive(&mut self, path: &str, d: Duration) {
        if d.is_zero() {
            self.at(&[path], "must be longer than 0s");
        }
    }

    fn not_empty(&mut self, path: &str, s: Option<&str>, hint: &str) {
        if s.is_some_and(|s| s.trim().is_empty()) {
            self.at(&[path], format!("must not be empty; {hint}"));
        }
    }
}

/// Every semantic problem in `config`.
pub(crate) fn validate(config: &Config) -> Vec<Issue> {
    let mut issues = Issues::default();
    source(config, &mut issues);
    delivery(config, &mut issues);
    dedup(config, &mut issues);
    retry(config, &mut issues);
    classify(config, &mut issues);
    operations(config, &mut issues);
    backpressure(config, &mut issues);
    issues.0
}

fn source_queue_path(source: &SourceConfig) -> String {
    format!("source.{}.queue", source.kind())
}

fn source(c: &Config, v: &mut Issues) {
    if let SourceConfig::Kafka(kafka) = &c.source {
        kafka_source(kafka, v);
        return;
    }
    if c.source.name().trim().is_empty() {
        v.at(&[&source_queue_path(&c.source)], "must not be empty");
    }
    if let SourceConfig::Amqp(amqp) = &c.source {
        if !(amqp.url.starts_with("amqp://") || amqp.url.starts_with("amqps://")) {
            v.at(&["source.amqp.url"], "expected an amqp:// or amqps:// URL");
        }
    }
}

fn kafka_source(k: &KafkaConfig, v: &mut Issues) {
    let hint = "list brokers as host:port, separated by commas";
    v.not_empty(
        "source.kafka.bootstrap_servers",
        Some(&k.bootstrap_servers),
        hint,
    );
    if k.topics.is_empty() {
        v.at(&["source.kafka.topics"], "must list at least one topic");
    }
    for (i, topic) in k.topics.iter().enumerate() {
        let at = KeyPath::parse("source.kafka.topics").index(i);
        if let Err(why) = topic_name(topic) {
            v.at_paths(vec![at], why);
        } else if k.topics[..i].contains(topic) {
            v.at_paths(vec![at], "listed twice: each topic is consumed once");
        }
    }
    let hint = "name the consumer group, usually after the service";
    v.not_empty("source.kafka.group_id", Some(&k.group_id), hint);
    for name in k.properties.keys() {
        let owned = OWNED_PROPERTIES
            .iter()
            .find(|(owned, _)| owned.eq_ignore_ascii_case(name.trim()));
        if let Some((owned, instead)) = owned {
            let at = KeyPath::parse("source.kafka.properties").key(name);
            v.at_paths(
                vec![at],
                format!("`{owned}` is set by the sidecar: {instead}"),
            );
        }
    }
    v.positive("source.kafka.commit_interval", k.commit_interval);
    v.positive("source.kafka.revoke_timeout", k.revoke_timeout);
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

fn delivery(c: &Config, v: &mut Issues) {
    let d = &c.delivery;
    match (d.url.scheme_str(), d.url.host()) {
        (Some("http"), Some(host)) if !host.is_empty() => {}
        (Some("https"), _) => v.at(
            &["delivery.url"],
            "https is not supported: the app runs beside the sidecar, so use http:// \
             (set http2 = true for h2c)",
        ),
        _ => v.at(
            &["delivery.url"],
            "expected an http:// URL with a host, like http://127.0.0.1:8080/",
        ),
    }
    v.positive("delivery.timeout", d.timeout);
    for (i, name) in d.forward_headers.iter().enumerate() {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            let path = KeyPath::parse("delivery.forward_headers").index(i);
            v.at_paths(vec![path], "not a valid HTTP header name");
        }
    }
    let hint = "leave it out for the default";
    v.not_empty("delivery.ce_source", d.ce_source.as_deref(), hint);
    v.not_empty("delivery.ce_type", Some(&d.ce_type), "name the event type");
    if d.response_excerpt.as_u64() > MAX_EXCERPT_BYTES {
        v.at(
            &["delivery.response_excerpt"],
            "must be at most 1MiB: the excerpt travels in every dead letter",
        );
    }
}

fn dedup(c: &Config, v: &mut Issues) {
    let d = &c.dedup;
    if !d.enabled {
        return;
    }
    if d.lease <= c.delivery.timeout {
        v.at(
            &["dedup.lease", "delivery.timeout"],
            format!(
                "dedup.lease ({}) must be longer than delivery.timeout ({}): a lease shorter \
                 than the delivery timeout lets a second claimant run while the first is still \
                 delivering",
                humantime::format_duration(d.lease),
                humantime::format_duration(c.delivery.timeout)
            ),
        );
    }
    v.positive("dedup.ttl", d.ttl);
    match d.store {
        StoreKind::Redis => {
            let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
            if !schemes.iter().any(|s| d.redis.url.starts_with(s)) {
                v.at(&["dedup.redis.url"], "expected a redis:// or rediss:// URL");
            }
            let hint = "leave it out to use the source's queue name";
            v.not_empty("dedup.redis.namespace", d.redis.namespace.as_deref(), hint);
            v.positive("dedup.redis.timeout", d.redis.timeout);
        }
        StoreKind::Embedded => {
            if d.embedded.path.as_os_str().is_empty() {
                v.at(&["dedup.embedded.path"], "must not be empty");
            }
        }
    }
}

fn retry(c: &Config, v: &mut Issues) {
    let r = &c.retry;
    if r.mode == RetryMode::Queue {
        if !matches!(c.source, SourceConfig::Kafka(_)) {
            v.at(
                &["retry.mode"],
                format!(
                    "queue mode needs retry topics, built for kafka sources only; use \"in_place\" with a {} source",
                    c.source.kind()
                ),
            );
        }
        if !c.dedup.enabled {
            v.at(
                &["retry.mode", "dedup.enabled"],
                "queue mode keeps the keys parked behind a retry in the dedup store: enable [dedup]",
            );
        }
        if r.tiers.is_empty() {
            v.at(&["retry.tiers"], "queue mode needs at least one delay tier");
        } else if r.tiers.len() > MAX_TIERS {
            v.at(
                &["retry.tiers"],
                format!("at most {MAX_TIERS} tiers (one retry topic each)"),
            );
        }
        if r.tiers.iter().any(Duration::is_zero) {
            v.at(
                &["retry.tiers"],
                "every tier's delay must be longer than 0s",
            );
        }
    }
    if r.max_attempts == 0 {
        v.at(
            &["retry.max_attempts"],
            "must be at least 1 (the first delivery counts)",
        );
    }
    v.positive("retry.max_age", r.max_age);
    if r.initial.is_zero() {
        v.at(
            &["retry.initial"],
            "must be longer than 0s: without a delay, retries hammer a failing app",
        );
    } else if r.initial > r.max {
        v.at(
            &["retry.initial", "retry.max"],
            format!(
                "retry.initial ({}) must not exceed retry.max ({})",
                humantime::format_duration(r.initial),
                humantime::format_duration(r.max)
            ),
        );
    }
    if !(r.multiplier >= 1.0 && r.multiplier.is_finite()) {
        v.at(
            &["retry.multiplier"],
            "must be at least 1.0: a smaller multiplier would shrink the delays",
        );
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        v.at(
            &["retry.jitter"],
            "must be between 0 and 1 (a fraction of each delay)",
        );
    }
}

fn classify(c: &Config, v: &mut Issues) {
    for (i, rule) in c.classify.rules.iter().enumerate() {
        let at = KeyPath::parse("classify.rules").index(i);
        if rule.status.as_ref().is_some_and(|s| s.ranges.is_empty()) {
            v.at_paths(
                vec![at.key("status")],
                "an empty list matches nothing; list statuses or leave `status` out",
            );
        } else if !rule.has_matcher() {
            v.at_paths(
                vec![at.clone()],
                "the rule sets no matcher (status, timeout, connection_error, header, \
                 body_contains or decode_error), so it would never match",
            );
        }
        if let Some(header) = rule.header_match() {
            if HeaderName::from_bytes(header.name.as_bytes()).is_err() {
                v.at_paths(
                    vec![at.key("header")],
                    "expected a header name, or name=value: the name is not a valid HTTP header",
                );
            } else if header
                .value
                .is_some_and(|h| HeaderValue::from_str(&h).is_err())
            {
                v.at_paths(
                    vec![at.key("header")],
                    "the value is not a valid HTTP header value",
                );
            }
        }
        if rule.body_contains.as_ref().is_some_and(String::is_empty) {
            v.at_paths(
                vec![at.key("body_contains")],
                "must not be empty: it would match every response",
            );
        }
    }
}

fn operations(c: &Config, v: &mut Issues) {
    let destination = c.dead_letter.destination.as_deref();
    v.not_empty(
        "dead_letter.destination",
        destination,
        "leave it out for <queue>.dlq (<topic>.dlq for each kafka topic)",
    );
    if let SourceConfig::Kafka(kafka) = &c.source {
        dead_letter_topics(c, kafka, v);
    } else if destination == Some(c.source.name()) {
        v.at(
            &["dead_letter.destination", &source_queue_path(&c.source)],
            "must differ from the source queue, or dead letters would be consumed again",
        );
    }
    let token = c.admin.token.as_deref();
    v.not_empty("admin.token", token, "leave it out on loopback");
    if !c.admin.listen.ip().is_loopback() && token.is_none() {
        v.at(
            &["admin.listen"],
            "listens beyond loopback without admin.token: set a token \
             (OUTRIGGER__ADMIN__TOKEN) or listen on 127.0.0.1",
        );
    }
    if let Err(why) = log_level(&c.log.level) {
        v.at(&["log.level"], why);
    }
}

/// No dead letter may land on a topic the sidecar consumes: it would be consumed again.
fn dead_letter_topics(c: &Config, k: &KafkaConfig, v: &mut Issues) {
    let topics = KeyPath::parse("source.kafka.topics");
    let destination = KeyPath::parse("dead_letter.destination");
    if let Some(set) = &c.dead_letter.destination {
        if let Some(i) = k.topics.iter().position(|t| t == set) {
            v.at_paths(
                vec![destination, topics.index(i)],
                "must differ from every source topic, or dead letters would be consumed again",
            );
        }
        return;
    }
    for (i, topic) in k.topics.iter().enumerate() {
        let by_default = |from: &&String| c.dead_letter.destination_for(from) == *topic;
        if let Some(from) = k.topics.iter().find(by_default) {
            v.at_paths(
                vec![destination.clone(), topics.index(i)],
                format!(
                    "dead letters of topic {from:?} go to {topic:?} by default, so they would be \
                     consumed again; set dead_letter.destination or consume one of the two"
                ),
            );
        }
    }
}

fn backpressure(c: &Config, v: &mut Issues) {
    let b = &c.backpressure;
    if b.max_in_flight == 0 {
        v.at(&["backpressure.max_in_flight"], "must be at least 1");
    }
    // The per-partition limit does not apply to amqp: a policy lowering max_in_flight there
    // must not fail over a setting it does not use.
    let partitioned = matches!(c.source, SourceConfig::Kafka(_));
    if b.max_in_flight_per_partition == 0 {
        v.at(
            &["backpressure.max_in_flight_per_partition"],
            "must be at least 1",
        );
    } else if partitioned && b.max_in_flight > 0 && b.max_in_flight_per_partition > b.max_in_flight
    {
        v.at(
            &[
                "backpressure.max_in_flight_per_partition",
                "backpressure.max_in_flight",
            ],
            format!(
                "backpressure.max_in_flight_per_partition ({}) must not exceed \
                 backpressure.max_in_flight ({}): one partition cannot have more in flight than \
                 all of them together",
                b.max_in_flight_per_partition, b.max_in_flight
            ),
        );
    }
    if b.max_buffered_bytes.as_u64() == 0 {
        v.at(
            &["backpressure.max_buffered_bytes"],
            "must be larger than 0B, or nothing could be fetched",
        );
    }
}

/// A bare level, or `tracing` filter directives (`info,outrigger=debug`).
fn log_level(level: &str) -> Result<(), String> {
    let expected = "expected trace, debug, info, warn or error, or directives like \
                    info,outrigger=debug";
    let is_level = |part: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(part.trim()));
    // A lone word that is not a level is a typo more often than a target name.
    if !level
        .split(',')
        .all(|part| is_level(part) || part.contains('='))
    {
        return Err(expected.to_owned());
    }
    tracing_subscriber::EnvFilter::try_new(level.trim())
        .map(drop)
        .map_err(|e| format!("{e}; {expected}"))
}
