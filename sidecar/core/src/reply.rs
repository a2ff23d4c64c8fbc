//! What the application answered to one delivery attempt, or why it did not answer.

use std::time::Duration;

use bytes::Bytes;

/// An HTTP response from the app, reduced to what classification and dead letters need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, names lower-case, values that are not text dropped.
    pub headers: Vec<(String, String)>,
    /// The start of the body, capped by the policy's excerpt size.
    pub body_excerpt: Bytes,
}

impl Response {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a delivery attempt got no HTTP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportErrorKind {
    /// The app did not answer within the delivery timeout.
    Timeout,
    /// No connection could be made (refused, connect timeout, unresolvable host): the request
    /// never reached the app.
    Connect,
    /// The connection broke after the request was sent, before a complete response.
    Connection,
}

impl TransportErrorKind {
    /// Whether the request never reached the app.
    pub fn never_reached(self) -> bool {
        self == TransportErrorKind::Connect
    }
}

/// A delivery attempt that ended without a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} after {elapsed:?}: {detail}")]
pub struct TransportError {
    /// Timeout or connection failure.
    pub kind: TransportErrorKind,
    /// Human detail from the HTTP client.
    pub detail: String,
    /// How long the attempt ran.
    pub elapsed: Duration,
}

/// The result of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The app answered.
    Response(Response),
    /// The app did not answer.
    Failed(TransportError),
    /// The message could not be prepared for delivery (no idempotency key, bad payload).
    Undeliverable(String),
}

impl Reply {
    /// A bounded label for metrics and dead letters: `2xx`..`5xx`, `timeout`, `connection`, `decode`.
    pub fn class(&self) -> &'static str {
        match self {
            Reply::Response(r) => match r.status {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Reply::Failed(e) => match e.kind {
                TransportErrorKind::Timeout => "timeout",
                TransportErrorKind::Connect | TransportErrorKind::Connection => "connection",
            },
            Reply::Undeliverable(_) => "decode",
        }
    }

    /// Whether the app could not be reached at all: the attempt never got to it.
    pub fn unreachable(&self) -> bool {
        matches!(self, Reply::Failed(e) if e.kind.never_reached())
    }

    /// The HTTP status, when the app answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Response(r) => Some(r.status),
            _ => None,
        }
    }

    /// A one-line human description, used as a dead letter's reason.
    pub fn describe(&self) -> String {
        match self {
            Reply::Response(r) => format!("app answered HTTP {}", r.status),
            Reply::Failed(e) => match e.kind {
                TransportErrorKind::Timeout => {
                    format!("app did not answer within {:?}", e.elapsed)
                }
                TransportErrorKind::Connect => {
                    format!("could not connect to the app: {}", e.detail)
                }
                TransportErrorKind::Connection => format!("connection to app failed: {}", e.detail),
            },
            Reply::Undeliverable(why) => format!("message cannot be delivered: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_bounded_labels() {
        let r = |status| {
            Reply::Response(Response {
                status,
                headers: vec![],
                body_excerpt: Bytes::new(),
            })
        };
        assert_eq!(r(204).class(), "2xx");
        assert_eq!(r(429).class(), "4xx");
        assert_eq!(r(503).class(), "5xx");
        assert_eq!(Reply::Undeliverable("x".into()).class(), "decode");
    }
}
