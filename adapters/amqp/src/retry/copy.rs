//! A retry copy's properties, and the original read back from them.
//!
//! The copy is the original body and properties (typed headers included) plus the
//! `outrigger-retry-*` headers of its trail. What the trip through a delay queue would change
//! or refuse is kept in more `outrigger-retry-amqp-*` headers and put back when the copy is
//! read, so the app, a dead letter and the next copy see the original:
//! - the routing key: the copy is published to its delay queue and dead-lettered back with the
//!   source queue's name as routing key, but the key a message is ordered and chained by is its
//!   original routing key;
//! - `expiration` (a per-message TTL would expire the copy in the delay queue, ahead of the
//!   tier), a foreign `user-id` (RabbitMQ refuses one that is not the connection's user), the
//!   delivery mode (the copy is persistent: the original is acked on the strength of its
//!   confirm);
//! - the dead-lettering headers RabbitMQ owns (`x-death`, `x-first-death-*`, `x-last-death-*`):
//!   the original's travel aside, RabbitMQ adds its own for the delay queue, which are taken
//!   off; a copy without the original's also never looks to RabbitMQ like a dead-letter cycle.
//!
//! `x-delivery-count` (a quorum queue's count of the original's redeliveries) is dropped: the
//! copy is a new message, and its trail carries the attempts.
//!
//! In retry mode `queue` a message is named by a digest of its content ([`origin`]): the
//! parked-key chains need a name that is the same each time RabbitMQ hands the message out
//! and differs between messages, which a delivery tag (new at every redelivery, from 1 again
//! on every channel) is not.

use std::time::SystemTime;

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use outrigger_core::retry::headers::is_retry;
use outrigger_core::{Coordinates, Trail, TrailError};
use sha2::{Digest, Sha256};

use crate::dead_letter::carry_over;
use crate::headers::{self, insert_text};

/// Prefix of the headers that keep what the copy changed; taken off with the trail's.
const KEPT: &str = "outrigger-retry-amqp-";
const ROUTING_KEY: &str = "outrigger-retry-amqp-routing-key";
const EXPIRATION: &str = "outrigger-retry-amqp-expiration";
const USER_ID: &str = "outrigger-retry-amqp-user-id";
const DELIVERY_MODE: &str = "outrigger-retry-amqp-delivery-mode";
/// Prefix of a broker-owned header of the original, kept with its AMQP type.
const HEADER: &str = "outrigger-retry-amqp-header-";

/// A quorum queue's count of earlier deliveries.
const DELIVERY_COUNT: &str = "x-delivery-count";

/// AMQP delivery mode of a message written to disk by durable queues.
const PERSISTENT: u8 = 2;

/// Whether RabbitMQ writes this header when it dead-letters a message.
fn is_dead_lettering(name: &str) -> bool {
    name == "x-death" || name.starts_with("x-first-death-") || name.starts_with("x-last-death-")
}

/// The properties of the copy of a message with `original` properties and `routing_key`,
/// carrying `trail` (its `due` set); `publisher_user` is the user the sidecar is connected as.
pub(crate) fn properties(
    original: &BasicProperties,
    routing_key: &str,
    trail: &Trail,
    publisher_user: &str,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(table) = original.headers() {
        for (name, value) in table {
            let name = name.as_str();
            if is_retry(name) || name == DELIVERY_COUNT {
                continue;
            }
            if is_dead_lettering(name) {
                headers.insert(short(&format!("{HEADER}{name}")), value.clone());
            } else {
                headers.insert(short(name), value.clone());
            }
        }
    }
    for (name, value) in trail.to_headers() {
        insert_text(&mut headers, name, value);
    }
    insert_text(&mut headers, ROUTING_KEY, routing_key.to_owned());
    if let Some(v) = original.expiration() {
        insert_text(&mut headers, EXPIRATION, v.to_string());
    }
    if let Some(mode) = original.delivery_mode() {
        insert_text(&mut headers, DELIVERY_MODE, mode.to_string());
    }
    let mut copy = carry_over(
        original,
        BasicProperties::default().with_delivery_mode(PERSISTENT),
    );
    match original.user_id() {
        Some(v) if v.as_str() == publisher_user => copy = copy.with_user_id(v.clone()),
        Some(v) => insert_text(&mut headers, USER_ID, v.to_string()),
        None => {}
    }
    copy.with_headers(headers)
}

/// A retry copy read back: its trail, and the original's properties and routing key.
#[derive(Debug)]
pub(crate) struct Original {
    pub(crate) trail: Trail,
    pub(crate) properties: BasicProperties,
    pub(crate) routing_key: ShortString,
}

/// Reads a delivery's properties as a retry copy: `None` when it carries no trail (it is no
/// copy), an error naming the trail header that is there but unreadable.
pub(crate) fn read(properties: &BasicProperties) -> Option<Result<Original, TrailError>> {
    let table = properties.headers().as_ref()?;
    let trail = match outrigger_core::Trail::from_headers(&headers::from_table(table))? {
        Ok(trail) => trail,
        Err(error) => return Some(Err(error)),
    };
    let text = |name: &str| -> Option<String> {
        match table.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    };
    let mut restored = FieldTable::default();
    for (name, value) in table {
        let name = name.as_str();
        if let Some(original) = name.strip_prefix(HEADER) {
            restored.insert(short(original), value.clone());
        } else if !(is_retry(name) || is_dead_lettering(name) || name == DELIVERY_COUNT) {
            restored.insert(short(name), value.clone());
        }
    }
    let mut rebuilt = carry_over(properties, BasicProperties::default());
    if let Some(mode) = text(DELIVERY_MODE).and_then(|m| m.parse().ok()) {
        rebuilt = rebuilt.with_delivery_mode(mode);
    }
    if let Some(expiration) = text(EXPIRATION) {
        rebuilt = rebuilt.with_expiration(short(&expiration));
    }
    match (text(USER_ID), properties.user_id()) {
        (Some(user), _) => rebuilt = rebuilt.with_user_id(short(&user)),
        (None, Some(user)) => rebuilt = rebuilt.with_user_id(user.clone()),
        (None, None) => {}
    }
    let routing_key = short(&text(ROUTING_KEY).unwrap_or_default());
    debug_assert!(restored
        .inner()
        .keys()
        .all(|k| !k.as_str().starts_with(KEPT)));
    Some(Ok(Original {
        trail,
        properties: rebuilt.with_headers(restored),
        routing_key,
    }))
}

/// The coordinates of a message taken from `queue` in retry mode `queue`: the queue and a
/// digest of what the producer sent (routing key, properties, headers, body), which RabbitMQ
/// hands out unchanged each time (its `redelivered` flag and `x-delivery-count` left out).
/// Two messages alike in all of that are one message to a parked-key chain (and to dedup, whose
/// key is made of the same parts).
pub(crate) fn origin(
    queue: &str,
    routing_key: &str,
    properties: &BasicProperties,
    payload: &[u8],
) -> Coordinates {
    let mut hash = Sha256::new();
    let mut part = |tag: &str, bytes: &[u8]| {
        hash.update(tag.as_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    part("routing-key", routing_key.as_bytes());
    let p = properties;
    let fields: [(&str, Option<String>); 13] = [
        (
            "content-type",
            p.content_type().as_ref().map(|v| v.to_string()),
        ),
        (
            "content-encoding",
            p.content_encoding().as_ref().map(|v| v.to_string()),
        ),
        ("delivery-mode", p.delivery_mode().map(|v| v.to_string())),
        ("priority", p.priority().map(|v| v.to_string())),
        (
            "correlation-id",
            p.correlation_id().as_ref().map(|v| v.to_string()),
        ),
        ("reply-to", p.reply_to().as_ref().map(|v| v.to_string())),
        ("expiration", p.expiration().as_ref().map(|v| v.to_string())),
        ("message-id", p.message_id().as_ref().map(|v| v.to_string())),
        ("timestamp", p.timestamp().map(|v| v.to_string())),
        ("type", p.kind().as_ref().map(|v| v.to_string())),
        ("user-id", p.user_id().as_ref().map(|v| v.to_string())),
        ("app-id", p.app_id().as_ref().map(|v| v.to_string())),
        ("cluster-id", p.cluster_id().as_ref().map(|v| v.to_string())),
    ];
    for (tag, value) in &fields {
        if let Some(value) = value {
            part(tag, value.as_bytes());
        }
    }
    if let Some(table) = p.headers() {
        let all = headers::from_table(table);
        for h in all.iter().filter(|h| h.name != DELIVERY_COUNT) {
            part("header", h.name.as_bytes());
            part("value", &h.value);
        }
    }
    part("body", payload);
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Coordinates::Amqp {
        queue: queue.to_owned(),
        delivery_tag: u64::from_be_bytes(first),
    }
}

/// When a copy written now to a tier of `delay` is due.
pub(crate) fn due(delay: std::time::Duration) -> SystemTime {
    SystemTime::now() + delay
}

/// A short string from a name or value that came from a short string or a constant of ours.
fn short(s: &str) -> ShortString {
    ShortString::try_new(s).unwrap_or_else(|_| {
        // Only a header name of the original longer than 255 bytes minus our prefix can get
        // here; it keeps its tail, which is what a reader of the copy would look for least.
        let mut cut = 255;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        ShortString::from(&s[..cut])
    })
}

/// Sets a typed header (for tests of the reading side).
#[cfg(test)]
fn with(table: &mut FieldTable, name: &str, value: AMQPValue) {
    table.insert(short(name), value);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use lapin::types::FieldArray;

    use super::*;

    fn trail() -> Trail {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Trail {
            origin: Coordinates::Amqp {
                queue: "orders".into(),
                delivery_tag: 42,
            },
            hop: 2,
            attempts: 2,
            tier: 1,
            first_seen: at,
            first_failure: Some(at),
            due: Some(at + Duration::from_secs(10)),
        }
    }

    fn original() -> BasicProperties {
        let mut h = FieldTable::default();
        with(
            &mut h,
            "idempotency-key",
            AMQPValue::LongString("k-1".into()),
        );
        with(&mut h, "retries", AMQPValue::LongInt(3));
        with(&mut h, DELIVERY_COUNT, AMQPValue::LongLongInt(2));
        with(
            &mut h,
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                "upstream".into(),
            )])),
        );
        with(
            &mut h,
            "x-first-death-queue",
            AMQPValue::LongString("up".into()),
        );
        BasicProperties::default()
            .with_headers(h)
            .with_message_id("m-1".into())
            .with_expiration("60000".into())
            .with_user_id("alice".into())
            .with_delivery_mode(1)
    }

    #[test]
    fn a_copy_reads_back_as_its_original() {
        let copy = properties(&original(), "order.eu", &trail(), "sidecar");
        assert_eq!(
            *copy.expiration(),
            None,
            "no per-message TTL in a delay queue"
        );
        assert_eq!(*copy.user_id(), None, "a foreign user-id is refused");
        assert_eq!(*copy.delivery_mode(), Some(PERSISTENT));
        let h = copy.headers().as_ref().unwrap().inner();
        assert!(h.get("x-death").is_none() && h.get(DELIVERY_COUNT).is_none());
        assert_eq!(
            h.get("outrigger-retry-hop"),
            Some(&AMQPValue::LongString("2".into()))
        );

        // What RabbitMQ adds when the delay is over, which must not reach the app.
        let mut arrived = copy.headers().clone().unwrap();
        with(
            &mut arrived,
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                "orders.retry.2".into(),
            )])),
        );
        with(
            &mut arrived,
            "x-last-death-queue",
            AMQPValue::LongString("orders.retry.2".into()),
        );
        with(&mut arrived, DELIVERY_COUNT, AMQPValue::LongLongInt(1));
        let back = read(&copy.clone().with_headers(arrived)).unwrap().unwrap();
        assert_eq!(back.trail, trail());
        assert_eq!(back.routing_key.as_str(), "order.eu");
        let want = original();
        assert_eq!(back.properties.expiration(), want.expiration());
        assert_eq!(back.properties.user_id(), want.user_id());
        assert_eq!(back.properties.delivery_mode(), want.delivery_mode());
        assert_eq!(back.properties.message_id(), want.message_id());
        let mut expected = FieldTable::default();
        for (name, value) in want.headers().as_ref().unwrap() {
            if name.as_str() != DELIVERY_COUNT {
                expected.insert(name.clone(), value.clone());
            }
        }
        assert_eq!(back.properties.headers().as_ref(), Some(&expected));
    }

    #[test]
    fn a_message_without_a_trail_is_no_copy() {
        assert!(read(&original()).is_none());
        assert!(read(&BasicProperties::default()).is_none());
    }

    #[test]
    fn the_origin_is_the_same_for_every_redelivery_and_differs_between_messages() {
        let a = origin("orders", "k", &original(), b"{}");
        let mut h = original().headers().clone().unwrap();
        with(&mut h, DELIVERY_COUNT, AMQPValue::LongLongInt(7));
        let redelivered = original().with_headers(h);
        assert_eq!(a, origin("orders", "k", &redelivered, b"{}"));
        assert_ne!(a, origin("orders", "k", &original(), b"{ }"));
        assert_ne!(a, origin("orders", "k2", &original(), b"{}"));
        let other_id = original().with_message_id("m-2".into());
        assert_ne!(a, origin("orders", "k", &other_id, b"{}"));
        assert_eq!(a.source_name(), "orders");
    }
}
