//! The headers of a delivery request: CloudEvents binary mode, Outrigger's own, trace context
//! and the allow-listed broker headers.

use std::time::SystemTime;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use outrigger_core::Message;

use super::Attempt;

/// Names of the headers Outrigger adds to every delivery.
pub mod names {
    /// Attempt number, from 1, counting across restarts.
    pub const ATTEMPT: &str = "outrigger-attempt";
    /// The dedup key.
    pub const IDEMPOTENCY_KEY: &str = "outrigger-idempotency-key";
    /// The fence token of the claim this attempt runs under.
    pub const FENCE: &str = "outrigger-fence";
}

const STRUCTURED_CE: &str = "application/cloudevents";

/// Which headers a delivery carries; built once from the policy.
#[derive(Clone, Debug)]
pub struct HeaderPlan {
    /// Broker headers forwarded to the app, lower-case.
    pub forward: Vec<String>,
    /// `ce-source` when the message has none.
    pub ce_source: String,
    /// `ce-type` when the message has none.
    pub ce_type: String,
}

impl HeaderPlan {
    /// Sets every header for one attempt of `message`.
    pub fn apply(&self, headers: &mut HeaderMap, message: &Message, attempt: Attempt<'_>) {
        let content_type = message
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        put(headers, CONTENT_TYPE.as_str(), content_type);

        // A structured CloudEvent already carries its attributes in the body: pass it through.
        if !is_structured_cloudevent(message) {
            put(
                headers,
                "ce-specversion",
                ce_attr(message, "specversion").unwrap_or("1.0"),
            );
            let id = cloudevents_id(message)
                .map(str::to_owned)
                .or_else(|| message.message_id.clone())
                .unwrap_or_else(|| message.coordinates.to_string());
            put(headers, "ce-id", &id);
            put(
                headers,
                "ce-source",
                ce_attr(message, "source").unwrap_or(&self.ce_source),
            );
            put(
                headers,
                "ce-type",
                ce_attr(message, "type").unwrap_or(&self.ce_type),
            );
            // A malformed time from the producer would break the app's CloudEvents reader.
            let time = ce_attr(message, "time")
                .filter(|t| humantime::parse_rfc3339_weak(t.trim()).is_ok())
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    humantime::format_rfc3339_millis(
                        message.timestamp.unwrap_or_else(SystemTime::now),
                    )
                    .to_string()
                });
            put(headers, "ce-time", &time);
            if let Some(key) = message
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
            {
                if !key.is_empty() {
                    put(headers, "ce-partitionkey", key);
                }
            }
        }

        put(headers, names::ATTEMPT, &attempt.attempt.to_string());
        if let Some(key) = attempt.key {
            put(headers, names::IDEMPOTENCY_KEY, key);
        }
        if let Some(fence) = attempt.fence {
            put(headers, names::FENCE, &fence.to_string());
        }

        // Trace context is continued whatever the allow-list says.
        for name in ["traceparent", "tracestate"]
            .into_iter()
            .chain(self.forward.iter().map(String::as_str))
        {
            if headers.contains_key(name) {
                continue;
            }
            for value in message
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
            {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value.value),
                ) {
                    headers.append(n, v);
                }
            }
        }
    }
}

/// Whether the payload is a structured-mode CloudEvent, judged by its content type.
pub fn is_structured_cloudevent(message: &Message) -> bool {
    message.content_type.as_deref().is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with(STRUCTURED_CE)
    })
}

/// The CloudEvents id the message carries in binary mode, under any broker's spelling.
pub fn cloudevents_id(message: &Message) -> Option<&str> {
    ce_attr(message, "id")
}

/// A binary-mode CloudEvents attribute: `ce-x` (HTTP, Kafka), `ce_x` (AMQP), `cloudEvents:x`.
/// One that is empty or cannot travel as an HTTP header value (control characters, bytes that
/// are not UTF-8) counts as absent, so the default takes its place.
fn ce_attr<'m>(message: &'m Message, attr: &str) -> Option<&'m str> {
    message
        .ce_attribute(attr)
        .filter(|v| HeaderValue::from_str(v).is_ok())
}

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_core::{Coordinates, Header};

    fn plan() -> HeaderPlan {
        HeaderPlan {
            forward: vec!["x-tenant".into()],
            ce_source: "/amqp/orders".into(),
            ce_type: "outrigger.event".into(),
        }
    }

    fn message() -> Message {
        let mut m = Message::new(
            "{}",
            Coordinates::Amqp {
                queue: "orders".into(),
                delivery_tag: 3,
            },
        );
        m.message_id = Some("m-1".into());
        m.key = Some("customer-9".into());
        m.headers = vec![
            Header::new("x-tenant", "acme"),
            Header::new("x-secret", "no"),
            Header::new(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            Header::new("ce_type", "order.created"),
        ];
        m
    }

    #[test]
    fn malformed_cloudevents_attributes_give_way_to_the_defaults() {
        let mut m = message();
        m.headers = vec![
            Header::new("ce_id", "bad\nid"),
            Header::new("ce_type", ""),
            Header::new("ce_time", "yesterday"),
            Header::new("ce_source", &b"\xff\xfe"[..]),
        ];
        let mut h = HeaderMap::new();
        let attempt = Attempt {
            key: None,
            attempt: 1,
            fence: None,
        };
        plan().apply(&mut h, &m, attempt);
        assert_eq!(h["ce-id"], "m-1");
        assert_eq!(h["ce-type"], "outrigger.event");
        assert_eq!(h["ce-source"], "/amqp/orders");
        let time = h["ce-time"].to_str().unwrap();
        assert!(humantime::parse_rfc3339_weak(time).is_ok(), "{time}");
    }

    #[test]
    fn binary_mode_headers_and_allow_list() {
        let mut h = HeaderMap::new();
        let attempt = Attempt {
            key: Some("k1"),
            attempt: 2,
            fence: Some(7),
        };
        plan().apply(&mut h, &message(), attempt);
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], "m-1");
        assert_eq!(h["ce-type"], "order.created");
        assert_eq!(h["ce-source"], "/amqp/orders");
        assert_eq!(h["ce-partitionkey"], "customer-9");
        assert!(h.contains_key("ce-time"));
        assert_eq!(h["outrigger-attempt"], "2");
        assert_eq!(h["outrigger-idempotency-key"], "k1");
        assert_eq!(h["outrigger-fence"], "7");
        assert_eq!(h["x-tenant"], "acme");
        assert!(h.contains_key("traceparent"));
        assert!(!h.contains_key("x-secret"));
    }

    #[test]
    fn structured_cloudevents_pass_through() {
        let mut m = message();
        m.content_type = Some("application/cloudevents+json; charset=utf-8".into());
        let mut h = HeaderMap::new();
        plan().apply(
            &mut h,
            &m,
            Attempt {
                key: None,
                attempt: 1,
                fence: None,
            },
        );
        assert!(!h.contains_key("ce-id"));
        assert_eq!(
            h["content-type"],
            "application/cloudevents+json; charset=utf-8"
        );
        assert!(!h.contains_key("outrigger-fence"));
    }
}
