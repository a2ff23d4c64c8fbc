//! What the adapter needs to know to consume one queue.

use std::fmt;

/// How many unacked deliveries the broker pushes ahead of settlement when the user says nothing.
/// Enough to keep a local HTTP app busy, small enough that a crash hands few messages back.
pub const DEFAULT_PREFETCH: u16 = 32;

/// Consumer tag shown in the RabbitMQ management UI when the user says nothing.
pub const DEFAULT_CONSUMER_TAG: &str = "outrigger";

/// Connection and queue settings of one RabbitMQ source.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
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

impl AmqpConfig {
    /// Settings for `queue` with the defaults: prefetch [`DEFAULT_PREFETCH`], consumer tag
    /// [`DEFAULT_CONSUMER_TAG`], dead letters to `<queue>.dlq`, declared when missing.
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> Self {
        let queue = queue.into();
        Self {
            url: url.into(),
            dead_letter_queue: format!("{queue}.dlq"),
            queue,
            prefetch: DEFAULT_PREFETCH,
            consumer_tag: DEFAULT_CONSUMER_TAG.to_owned(),
            declare_dead_letter_queue: true,
        }
    }
}

// By hand so that the password in the URL never reaches a log line.
impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
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
        let config = AmqpConfig::new("amqp://app:s3cret@rabbit:5672/%2f", "orders");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("amqp://app:***@rabbit:5672/%2f"), "{shown}");
    }

    #[test]
    fn redaction_leaves_urls_without_password_alone() {
        assert_eq!(redact_password("amqp://rabbit/%2f"), "amqp://rabbit/%2f");
        assert_eq!(redact_password("amqp://app@rabbit"), "amqp://app@rabbit");
    }

    #[test]
    fn defaults_name_the_dead_letter_queue_after_the_source() {
        let config = AmqpConfig::new("amqp://rabbit", "orders");
        assert_eq!(config.dead_letter_queue, "orders.dlq");
        assert_eq!(config.prefetch, DEFAULT_PREFETCH);
        assert!(config.declare_dead_letter_queue);
    }
}
