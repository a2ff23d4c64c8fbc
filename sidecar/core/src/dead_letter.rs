//! The failure context a dead letter carries, and its header encoding shared by every adapter.
//!
//! Adapters publish the original payload and headers untouched and add these headers, so an
//! operator (and `outrigger dlq`) can tell why each record is there without any side table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::message::Coordinates;

/// Header names of the failure context, all prefixed `outrigger-dlq-`.
pub mod headers {
    /// Human sentence: why the message was dead-lettered.
    pub const REASON: &str = "outrigger-dlq-reason";
    /// Bounded failure class: `4xx`, `5xx`, `timeout`, `connection`, `decode`, `exhausted`.
    pub const CLASS: &str = "outrigger-dlq-class";
    /// Last HTTP status from the app, when it answered.
    pub const STATUS: &str = "outrigger-dlq-status";
    /// Delivery attempts spent.
    pub const ATTEMPTS: &str = "outrigger-dlq-attempts";
    /// First failure time, RFC 3339.
    pub const FIRST_FAILURE: &str = "outrigger-dlq-first-failure";
    /// Last failure time, RFC 3339.
    pub const LAST_FAILURE: &str = "outrigger-dlq-last-failure";
    /// Source coordinates (`amqp:orders#17`, `kafka:orders/3@42`).
    pub const SOURCE: &str = "outrigger-dlq-source";
    /// The idempotency key the message was deduplicated under.
    pub const KEY: &str = "outrigger-dlq-key";
    /// Start of the app's response body (capped, lossy UTF-8).
    pub const RESPONSE: &str = "outrigger-dlq-response";
}

/// Why and how a message failed, attached to its dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Human sentence: why it was dead-lettered.
    pub reason: String,
    /// Bounded failure class, see [`headers::CLASS`].
    pub class: String,
    /// Last HTTP status, when the app answered.
    pub last_status: Option<u16>,
    /// Attempts spent.
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failure: SystemTime,
    /// When the last attempt failed.
    pub last_failure: SystemTime,
    /// The idempotency key, when one was extracted.
    pub key: Option<String>,
    /// Start of the app's last response body.
    pub response_excerpt: Bytes,
}

impl DeadLetter {
    /// The context as text headers, in a stable order.
    pub fn context_headers(&self, source: &Coordinates) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (headers::REASON, self.reason.clone()),
            (headers::CLASS, self.class.clone()),
            (headers::ATTEMPTS, self.attempts.to_string()),
            (headers::FIRST_FAILURE, rfc3339(self.first_failure)),
            (headers::LAST_FAILURE, rfc3339(self.last_failure)),
            (headers::SOURCE, source.to_string()),
        ];
        if let Some(status) = self.last_status {
            out.push((headers::STATUS, status.to_string()));
        }
        if let Some(key) = &self.key {
            out.push((headers::KEY, key.clone()));
        }
        if !self.response_excerpt.is_empty() {
            out.push((
                headers::RESPONSE,
                String::from_utf8_lossy(&self.response_excerpt).into_owned(),
            ));
        }
        out
    }
}

/// RFC 3339 with millisecond precision, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    // Times before the epoch do not occur for failures; clamp rather than panic.
    let t = if t < UNIX_EPOCH {
        UNIX_EPOCH
    } else {
        UNIX_EPOCH
            + Duration::from_millis(
                t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
            )
    };
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_headers_carry_every_field() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let dl = DeadLetter {
            reason: "app answered HTTP 400".into(),
            class: "4xx".into(),
            last_status: Some(400),
            attempts: 1,
            first_failure: t,
            last_failure: t,
            key: Some("order-1".into()),
            response_excerpt: Bytes::from_static(b"bad order"),
        };
        let source = Coordinates::Amqp {
            queue: "orders".into(),
            delivery_tag: 7,
        };
        let h = dl.context_headers(&source);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get(headers::STATUS), Some("400"));
        assert_eq!(get(headers::SOURCE), Some("amqp:orders#7"));
        assert_eq!(
            get(headers::FIRST_FAILURE),
            Some("2023-11-14T22:13:20.000Z")
        );
        assert_eq!(get(headers::RESPONSE), Some("bad order"));
        assert_eq!(get(headers::KEY), Some("order-1"));
    }
}
