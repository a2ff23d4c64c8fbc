//! `[source.amqp]`: what to connect to and consume, checked before anything connects; and the
//! settings a source runs with, derived from it and the policy's shared sections.

use std::fmt;

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
}

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
        let names = [outrigger_core::SourceName {
            name: self.queue.clone(),
            path: queue,
        }];
        p.extend(checks::dead_letters_not_consumed(
            &names, context, "queue", false,
        ));
        p.into_vec()
    }
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
    /// Declare the dead-letter queue (durable) when it is missing; otherwise it must exist.
    pub declare_dead_letter_queue: bool,
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
            declare_dead_letter_queue: context.declare_dead_letters,
        }
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
            .field("declare_dead_letter_queue", &self.declare_dead_letter_queue)
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
}
