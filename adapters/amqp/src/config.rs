//! `[source.amqp]`: what to connect to and consume, checked before anything connects; and the
//! settings a source runs with, derived from it and the policy's shared sections.

use std::fmt;
use std::time::Duration;

use lapin::types::ShortString;
use lapin::uri::AMQPUri;
use outrigger_core::config::checks;
use outrigger_core::{KeyPath, Limits, Problem, Problems, SourceContext};
use serde::Deserialize;

/// `[source.amqp]`: consume one RabbitMQ queue with per-message acks.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// The broker URL, `amqp://user:password@host:port/vhost` (`amqps://` for TLS).
    #[serde(default = "default_url")]
    pub url: String,
    /// The queue to consume. Required: the sidecar serves one service's queue.
    pub queue: String,
    /// The consumer tag shown in the RabbitMQ management UI.
    #[serde(default = "default_consumer_tag")]
    pub consumer_tag: String,
    /// Retry mode `queue`: the type of the delay queues `<queue>.retry.<n>` the sidecar
    /// declares, `quorum` or `classic`.
    #[serde(default)]
    pub retry_queue_type: RetryQueueType,
}

/// The queue type of the delay queues (retry mode `queue`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryQueueType {
    /// Replicated, and the only type whose dead-lettering is confirmed (`at-least-once`): a
    /// copy whose delay is over moves back to the source queue even across a node failure.
    #[default]
    Quorum,
    /// A classic queue: what every RabbitMQ has (quorum queues need 3.10 for the message TTL
    /// and confirmed dead-lettering used here); its dead-lettering is unconfirmed
    /// (`at-most-once`), safe on one node, not across a cluster where the source queue lives
    /// on a node that is down.
    Classic,
}

impl RetryQueueType {
    /// RabbitMQ's `x-queue-type`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryQueueType::Quorum => "quorum",
            RetryQueueType::Classic => "classic",
        }
    }
}

/// Longest tier a delay queue can hold: RabbitMQ takes `x-message-ttl` as milliseconds up to
/// 2^32 - 1; a signed 32-bit value is what every client sends without surprise.
const MAX_TIER: Duration = Duration::from_millis(i32::MAX as u64);

/// RabbitMQ's out-of-the-box local broker (guest may only log in from localhost), so a
/// developer's first run needs no URL.
fn default_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()
}

/// Says who holds the channel when an operator looks at the queue's consumers.
fn default_consumer_tag() -> String {
    DEFAULT_CONSUMER_TAG.to_owned()
}

/// Consumer tag shown in the RabbitMQ management UI when the user says nothing.
pub const DEFAULT_CONSUMER_TAG: &str = "outrigger";

impl AmqpConfig {
    /// A config for `queue` on the broker at `url`, every other key at its default.
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            queue: queue.into(),
            consumer_tag: default_consumer_tag(),
            retry_queue_type: RetryQueueType::default(),
        }
    }

    /// Every problem of this table in `context`; see [`Amqp`](crate::Amqp).
    pub fn validate(&self, context: &SourceContext) -> Vec<Problem> {
        let mut p = Problems::default();
        let url = "source.amqp.url";
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            p.at(&[url], "expected an amqp:// or amqps:// URL");
        } else if let Err(e) = self.url.parse::<AMQPUri>() {
            p.at(&[url], format!("not a valid AMQP URL: {e}"));
        }
        let queue = KeyPath::parse("source.amqp.queue");
        if self.queue.trim().is_empty() {
            p.at_paths(vec![queue.clone()], "must not be empty");
        }
        // lapin panics on an AMQP short string over 255 bytes; say so before it is used.
        short(&mut p, vec![queue.clone()], "queue names", &self.queue);
        short(
            &mut p,
            vec![KeyPath::parse("source.amqp.consumer_tag")],
            "consumer tags",
            &self.consumer_tag,
        );
        let dead_letters = context.dead_letter_for(&self.queue);
        short(
            &mut p,
            vec![KeyPath::parse("dead_letter.destination"), queue.clone()],
            "queue names (the dead-letter queue's too)",
            &dead_letters,
        );
        for route in &context.route_dead_letters {
            short(
                &mut p,
                vec![route.path.clone()],
                "queue names (a route's dead-letter queue's too)",
                &route.destination,
            );
        }
        let names = [outrigger_core::SourceName {
            name: self.queue.clone(),
            path: queue,
        }];
        p.extend(checks::dead_letters_not_consumed(
            &names, context, "queue", false,
        ));
        self.check_retry_queues(&mut p, context, &dead_letters);
        p.into_vec()
    }

    /// Retry mode `queue`: every delay queue has a name AMQP can carry, a TTL RabbitMQ takes,
    /// and is neither the dead-letter queue nor consumed.
    fn check_retry_queues(&self, p: &mut Problems, context: &SourceContext, dead_letters: &str) {
        let tiers = KeyPath::parse("retry.tiers");
        let queue = KeyPath::parse("source.amqp.queue");
        for (tier, delay) in context.retry_tiers.iter().enumerate() {
            let name = AmqpSettings::retry_queue_for(&self.queue, tier);
            if ShortString::try_new(name.as_str()).is_err() {
                p.at_paths(
                    vec![queue.clone(), tiers.clone()],
                    format!(
                        "too long for retry mode \"queue\": its delay queue {name:?} has more \
                         than the 255 bytes of an AMQP queue name"
                    ),
                );
                break;
            }
            let delay_queue = |path: KeyPath| {
                (
                    vec![path, tiers.clone()],
                    format!(
                        "{name:?} is the delay queue of retry tier {}: dead letters there would \
                         come back to the source queue once its delay is over",
                        tier + 1
                    ),
                )
            };
            if name == dead_letters {
                let (paths, message) = delay_queue(KeyPath::parse("dead_letter.destination"));
                p.at_paths(paths, message);
            }
            for route in &context.route_dead_letters {
                if route.destination == name {
                    let (paths, message) = delay_queue(route.path.clone());
                    p.at_paths(paths, message);
                }
            }
            if *delay < Duration::from_millis(1) || *delay > MAX_TIER {
                p.at_paths(
                    vec![tiers.index(tier)],
                    format!(
                        "a RabbitMQ delay queue holds a copy from 1ms up to {} (its \
                         x-message-ttl, in milliseconds)",
                        humantime::format_duration(MAX_TIER)
                    ),
                );
            }
        }
        if !context.retry_tiers.is_empty() && is_retry_queue_name(&self.queue) {
            p.at_paths(
                vec![queue, KeyPath::parse("retry.mode")],
                format!(
                    "{:?} is named like a delay queue (<queue>.retry.<n>) in retry mode \
                     \"queue\": consume the source queue itself, whose copies come back to it",
                    self.queue
                ),
            );
        }
    }
}

/// Whether `queue` is named like a delay queue, `<queue>.retry.<n>`.
fn is_retry_queue_name(queue: &str) -> bool {
    queue.rsplit_once(".retry.").is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// A name AMQP carries as a short string: at most 255 bytes.
fn short(p: &mut Problems, paths: Vec<KeyPath>, what: &str, value: &str) {
    if ShortString::try_new(value).is_err() {
        p.at_paths(
            paths,
            format!(
                "too long: AMQP {what} have at most 255 bytes, this one has {}",
                value.len()
            ),
        );
    }
}

// By hand so that the password in the URL never reaches a log line.
impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &redact_password(&self.url))
            .field("queue", &self.queue)
            .field("consumer_tag", &self.consumer_tag)
            .field("retry_queue_type", &self.retry_queue_type)
            .finish()
    }
}

/// What a source runs with: the `[source.amqp]` table and what the policy's shared sections
/// say about prefetch and dead letters.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpSettings {
    /// AMQP URI, e.g. `amqp://user:pass@127.0.0.1:5672/%2f` (the vhost is URL-encoded).
    pub url: String,
    /// The queue to consume; it must already exist.
    pub queue: String,
    /// Unacked deliveries the broker may push ahead (`basic.qos`); at least 1.
    pub prefetch: u16,
    /// Consumer tag; empty lets the broker pick one.
    pub consumer_tag: String,
    /// Queue that receives dead letters, published through the default exchange.
    pub dead_letter_queue: String,
    /// Other queues dead letters may go to: those `[[routes]]` entries name. Declared and
    /// checked at connect like `dead_letter_queue`.
    pub route_dead_letter_queues: Vec<String>,
    /// Declare the dead-letter queues (durable) when they are missing; otherwise they must
    /// exist.
    pub declare_dead_letter_queue: bool,
    /// Retry mode `queue`: the delay of each tier. Tier `n` (from 0) is the queue
    /// `<queue>.retry.<n + 1>`, declared when missing with this delay as its message TTL,
    /// dead-lettering back to the source queue. Empty: no delay queues.
    pub retry_tiers: Vec<Duration>,
    /// The type of the delay queues.
    pub retry_queue_type: RetryQueueType,
}

impl AmqpSettings {
    /// The settings of `config` in `context`. The prefetch is `backpressure.prefetch`, or
    /// else `max_in_flight`: RabbitMQ counts a delivery as unacked until it is settled, so a
    /// larger prefetch would only park messages in the client.
    pub fn from_config(config: &AmqpConfig, context: &SourceContext) -> Self {
        let limits = context.limits;
        let prefetch = limits.prefetch.unwrap_or(limits.max_in_flight);
        Self {
            url: config.url.clone(),
            queue: config.queue.clone(),
            prefetch: u16::try_from(prefetch).unwrap_or(u16::MAX),
            consumer_tag: config.consumer_tag.clone(),
            dead_letter_queue: context.dead_letter_for(&config.queue),
            route_dead_letter_queues: context
                .route_destinations()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            declare_dead_letter_queue: context.declare_dead_letters,
            retry_tiers: context.retry_tiers.clone(),
            retry_queue_type: config.retry_queue_type,
        }
    }

    /// The delay queue of `tier` (from 0) for messages from `queue`: `<queue>.retry.<tier + 1>`.
    pub fn retry_queue_for(queue: &str, tier: usize) -> String {
        format!("{queue}.retry.{}", tier + 1)
    }

    /// Settings for `queue` with every default: prefetch `max_in_flight`'s default, consumer
    /// tag [`DEFAULT_CONSUMER_TAG`], dead letters to `<queue>.dlq`, declared when missing.
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> Self {
        Self::from_config(&AmqpConfig::new(url, queue), &SourceContext::default())
    }
}

/// The prefetch of [`AmqpSettings::new`].
pub const DEFAULT_PREFETCH: u16 = Limits::DEFAULT_MAX_IN_FLIGHT;

// By hand so that the password in the URL never reaches a log line.
impl fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("url", &redact_password(&self.url))
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .field("consumer_tag", &self.consumer_tag)
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("route_dead_letter_queues", &self.route_dead_letter_queues)
            .field("declare_dead_letter_queue", &self.declare_dead_letter_queue)
            .field("retry_tiers", &self.retry_tiers)
            .field("retry_queue_type", &self.retry_queue_type)
            .finish()
    }
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

    #[test]
    fn debug_hides_the_password() {
        let config = AmqpSettings::new("amqp://app:s3cret@rabbit:5672/%2f", "orders");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("amqp://app:***@rabbit:5672/%2f"), "{shown}");
        let shown = format!(
            "{:?}",
            AmqpConfig::new("amqp://app:s3cret@rabbit", "orders")
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn redaction_leaves_urls_without_password_alone() {
        assert_eq!(redact_password("amqp://rabbit/%2f"), "amqp://rabbit/%2f");
        assert_eq!(redact_password("amqp://app@rabbit"), "amqp://app@rabbit");
    }

    #[test]
    fn defaults_name_the_dead_letter_queue_after_the_source() {
        let config = AmqpSettings::new("amqp://rabbit", "orders");
        assert_eq!(config.dead_letter_queue, "orders.dlq");
        assert_eq!(config.prefetch, DEFAULT_PREFETCH);
        assert!(config.declare_dead_letter_queue);
    }

    #[test]
    fn validation_names_each_setting_it_refuses() {
        let context = SourceContext::default();
        let problems = |c: &AmqpConfig| -> Vec<String> {
            c.validate(&context).iter().map(|p| p.to_string()).collect()
        };
        assert!(problems(&AmqpConfig::new("amqp://rabbit:5672/%2f", "orders")).is_empty());
        let bad = AmqpConfig {
            url: "amqp://rabbit:port/".into(),
            queue: "q".repeat(256),
            consumer_tag: "t".repeat(300),
            retry_queue_type: RetryQueueType::Classic,
        };
        let found = problems(&bad);
        assert!(
            found[0].starts_with("source.amqp.url: not a valid AMQP URL"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("source.amqp.queue: too long"),
            "{found:?}"
        );
        assert!(
            found[2].starts_with("source.amqp.consumer_tag: too long"),
            "{found:?}"
        );
        assert!(
            found[3].starts_with("dead_letter.destination: too long"),
            "{found:?}"
        );
    }

    #[test]
    fn retry_queues_are_named_per_tier_and_checked() {
        let tiers = vec![Duration::from_secs(1), Duration::from_secs(10)];
        let context = SourceContext {
            retry_tiers: tiers.clone(),
            ..SourceContext::default()
        };
        let settings = AmqpSettings::from_config(&AmqpConfig::new("amqp://r", "orders"), &context);
        assert_eq!(settings.retry_tiers, tiers);
        assert_eq!(AmqpSettings::retry_queue_for("orders", 1), "orders.retry.2");
        let problems = |c: &AmqpConfig, context: &SourceContext| -> Vec<String> {
            c.validate(context).iter().map(|p| p.to_string()).collect()
        };
        assert!(problems(&AmqpConfig::new("amqp://r", "orders"), &context).is_empty());

        let into_a_tier = SourceContext {
            dead_letter_destination: Some("orders.retry.2".into()),
            ..context.clone()
        };
        let found = problems(&AmqpConfig::new("amqp://r", "orders"), &into_a_tier);
        assert!(
            found[0].starts_with(
                "dead_letter.destination: \"orders.retry.2\" is the delay queue of retry tier 2"
            ),
            "{found:?}"
        );
        let found = problems(&AmqpConfig::new("amqp://r", "orders.retry.1"), &context);
        assert!(
            found[0].contains("is named like a delay queue"),
            "{found:?}"
        );
        let long = AmqpConfig::new("amqp://r", "q".repeat(250));
        assert!(problems(&long, &context)[0].contains("its delay queue"));
        let odd = SourceContext {
            retry_tiers: vec![
                Duration::from_micros(10),
                Duration::from_secs(30 * 24 * 3600),
            ],
            ..SourceContext::default()
        };
        let found = problems(&AmqpConfig::new("amqp://r", "orders"), &odd);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("retry.tiers[0]: a RabbitMQ delay queue"));
        assert!(found[1].starts_with("retry.tiers[1]"));
        // Out of queue mode, a queue may have any name.
        let plain = SourceContext::default();
        assert!(problems(&AmqpConfig::new("amqp://r", "orders.retry.1"), &plain).is_empty());
    }
}
