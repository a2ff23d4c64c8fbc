//! The failure context a dead letter carries, and its header encoding shared by every adapter.
//!
//! Adapters publish the original payload and headers untouched and add these headers, so an
//! operator (and `outrigger dlq`) can tell why each record is there without any side table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::message::{Coordinates, Header};

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
    /// The prefix every context header starts with.
    pub const PREFIX: &str = "outrigger-dlq-";

    /// Whether `name` is a failure-context header (ASCII case-insensitive).
    pub fn is_context(name: &str) -> bool {
        name.get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
    }
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

    /// Reads the context back from a dead letter's headers: the inverse of
    /// [`context_headers`](Self::context_headers), the source coordinates aside (see
    /// [`source_from_headers`]). Reason, attempts and both failure times must be there; the
    /// rest is optional, as it is when written.
    pub fn from_headers(headers: &[Header]) -> Result<Self, ContextError> {
        let text = |name: &'static str| -> Result<Option<&str>, ContextError> {
            match find(headers, name) {
                None => Ok(None),
                Some(v) => std::str::from_utf8(v)
                    .map(Some)
                    .map_err(|_| ContextError::new(name, "is not UTF-8 text")),
            }
        };
        let required =
            |name: &'static str| text(name)?.ok_or_else(|| ContextError::new(name, "is missing"));
        let time = |name: &'static str| {
            let value = required(name)?;
            humantime::parse_rfc3339_weak(value).map_err(|e| {
                ContextError::new(name, format!("{value:?} is not an RFC 3339 time: {e}"))
            })
        };
        Ok(Self {
            reason: required(headers::REASON)?.to_owned(),
            class: text(headers::CLASS)?.unwrap_or("unknown").to_owned(),
            last_status: text(headers::STATUS)?
                .map(|v| number(headers::STATUS, v))
                .transpose()?,
            attempts: number(headers::ATTEMPTS, required(headers::ATTEMPTS)?)?,
            first_failure: time(headers::FIRST_FAILURE)?,
            last_failure: time(headers::LAST_FAILURE)?,
            key: text(headers::KEY)?.map(str::to_owned),
            response_excerpt: find(headers, headers::RESPONSE)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// The source coordinates a dead letter's headers name: where the message was consumed from
/// when it failed. `None` when the header is missing or unreadable.
pub fn source_from_headers(headers: &[Header]) -> Option<Coordinates> {
    std::str::from_utf8(find(headers, headers::SOURCE)?)
        .ok()?
        .parse()
        .ok()
}

fn number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ContextError> {
    value
        .trim()
        .parse()
        .map_err(|_| ContextError::new(name, format!("{value:?} is not a number")))
}

fn find<'a>(headers: &'a [Header], name: &str) -> Option<&'a Bytes> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| &h.value)
}

/// A dead letter's headers do not carry a readable failure context.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("header {header} {problem}")]
pub struct ContextError {
    /// The header at fault.
    pub header: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ContextError {
    fn new(header: &'static str, problem: impl Into<String>) -> Self {
        Self {
            header,
            problem: problem.into(),
        }
    }
}

/// The last millisecond RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const LAST_RFC3339_MS: u128 = 253_402_300_799_999;

/// RFC 3339 with millisecond precision, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    // Times before the epoch do not occur for failures, nor do times past year 9999, which
    // RFC 3339 cannot write, but a producer's timestamp can be either: clamp rather than panic.
    let t = if t < UNIX_EPOCH {
        UNIX_EPOCH
    } else {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        UNIX_EPOCH + Duration::from_millis(ms.min(LAST_RFC3339_MS) as u64)
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

    #[test]
    fn from_headers_reads_back_what_context_headers_wrote() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let dl = DeadLetter {
            reason: "gave up after 3 attempts: app answered HTTP 500".into(),
            class: "5xx".into(),
            last_status: Some(500),
            attempts: 3,
            first_failure: t,
            last_failure: t + Duration::from_secs(2),
            key: Some("order-1".into()),
            response_excerpt: Bytes::from_static(b"busy"),
        };
        let source = Coordinates::Kafka {
            topic: "orders".into(),
            partition: 2,
            offset: 40,
        };
        let mut headers: Vec<Header> = dl
            .context_headers(&source)
            .into_iter()
            .map(|(n, v)| Header::new(n, v))
            .collect();
        headers.push(Header::new("idempotency-key", "order-1"));
        assert_eq!(DeadLetter::from_headers(&headers), Ok(dl));
        assert_eq!(source_from_headers(&headers), Some(source));
        assert!(headers::is_context("Outrigger-DLQ-Reason"));
        assert!(!headers::is_context("idempotency-key"));
    }

    #[test]
    fn times_rfc3339_cannot_write_are_clamped() {
        let far = UNIX_EPOCH + Duration::from_secs(1_700_000_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999Z");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn from_headers_names_the_missing_or_bad_header() {
        let err = DeadLetter::from_headers(&[Header::new(headers::REASON, "x")]).unwrap_err();
        assert_eq!(err.header, headers::ATTEMPTS);
        let bad = [
            Header::new(headers::REASON, "x"),
            Header::new(headers::ATTEMPTS, "1"),
            Header::new(headers::FIRST_FAILURE, "yesterday"),
        ];
        let err = DeadLetter::from_headers(&bad).unwrap_err();
        assert_eq!(err.header, headers::FIRST_FAILURE);
        assert!(err.to_string().contains("yesterday"), "{err}");
    }
}
