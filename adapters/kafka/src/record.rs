//! A fetched Kafka record as the core's [`Message`], plus the original kept for dead-lettering.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use outrigger_core::retry::headers::is_retry;
use outrigger_core::{Coordinates, Header, Message, Trail};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use tracing::warn;

use crate::partition::TopicPartition;

/// The header whose value becomes [`Message::content_type`].
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// The record exactly as fetched, for a byte-identical dead-letter copy: unlike the core's
/// view, it tells a null key, value or header value from an empty one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Original {
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<(String, Option<Bytes>)>,
}

/// One fetched record, converted on the poll thread.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) tp: TopicPartition,
    pub(crate) offset: i64,
    pub(crate) message: Message,
    pub(crate) original: Original,
    /// When a retry copy is due; `None` for any other record.
    pub(crate) due: Option<SystemTime>,
}

/// Copies a record out of librdkafka's buffers. Payload, key and header bytes are shared
/// between the message and the original, not copied twice.
pub(crate) fn fetched(record: &BorrowedMessage<'_>) -> Fetched {
    let mut original = Original {
        key: record.key().map(Bytes::copy_from_slice),
        value: record.payload().map(Bytes::copy_from_slice),
        headers: record
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice)))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let (topic, partition, offset) = (record.topic(), record.partition(), record.offset());
    let mut message = message(
        topic,
        partition,
        offset,
        record.timestamp().to_millis(),
        &original,
    );
    let due = if is_retry_topic(topic) {
        read_trail(&mut message, &mut original)
    } else {
        None
    };
    Fetched {
        tp: TopicPartition {
            topic: topic.to_owned(),
            partition,
        },
        offset,
        message,
        original,
        due,
    }
}

/// Whether a topic is a retry topic (`<topic>.retry.<n>`).
fn is_retry_topic(topic: &str) -> bool {
    topic
        .rsplit_once(".retry.")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A retry copy becomes its origin again: the trail goes into [`Message::trail`], the
/// coordinates and `message_id` are the origin's (so dedup keys, ordering and dead letters
/// are the original's), and the retry headers come off both views. Returns when it is due.
/// A copy whose trail cannot be read is handed out as a record of its own, with a warning.
fn read_trail(message: &mut Message, original: &mut Original) -> Option<SystemTime> {
    let trail = match Trail::from_headers(&message.headers)? {
        Ok(trail) => trail,
        Err(error) => {
            warn!(%error, coordinates = %message.coordinates, "Unreadable retry trail; delivering the record as it is.");
            return None;
        }
    };
    original.headers.retain(|(name, _)| !is_retry(name));
    message.headers.retain(|h| !is_retry(&h.name));
    if let Coordinates::Kafka {
        topic,
        partition,
        offset,
    } = &trail.origin
    {
        message.message_id = Some(format!("{topic}/{partition}@{offset}"));
    }
    message.coordinates = trail.origin.clone();
    let due = trail.due;
    message.trail = Some(trail);
    due
}

/// The core's view of a record.
///
/// - A null value is an empty payload, a null header value an empty header value.
/// - `message_id` is `<topic>/<partition>@<offset>`: Kafka has no message id, and this one is
///   the same every time the record is read again, which is what dedup needs.
/// - `content_type` is the first `content-type` header that is UTF-8.
/// - `timestamp` is the record's create or log-append time.
/// - `redelivered` is always false: Kafka does not say whether a group member read a record
///   before.
pub(crate) fn message(
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    original: &Original,
) -> Message {
    let headers: Vec<Header> = original
        .headers
        .iter()
        .map(|(name, value)| Header::new(name.clone(), value.clone().unwrap_or_default()))
        .collect();
    let content_type = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(CONTENT_TYPE_HEADER))
        .and_then(|h| std::str::from_utf8(&h.value).ok())
        .map(str::to_owned);
    Message {
        payload: original.value.clone().unwrap_or_default(),
        headers,
        key: original.key.clone(),
        message_id: Some(format!("{topic}/{partition}@{offset}")),
        content_type,
        timestamp: timestamp_ms
            .filter(|ms| *ms >= 0)
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms as u64)),
        coordinates: Coordinates::Kafka {
            topic: topic.to_owned(),
            partition,
            offset,
        },
        redelivered: false,
        deliveries: None,
        trail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_become_empty_and_the_content_type_comes_from_its_header() {
        let original = Original {
            key: Some(Bytes::from_static(b"order-1")),
            value: None,
            headers: vec![
                ("trace".into(), None),
                (
                    "Content-Type".into(),
                    Some(Bytes::from_static(b"application/json")),
                ),
                ("bin".into(), Some(Bytes::from_static(&[0xff, 0x00]))),
            ],
        };
        let m = message("orders", 3, 42, Some(1_700_000_000_000), &original);
        assert!(m.payload.is_empty());
        assert_eq!(m.header("trace"), Some(&Bytes::new()));
        assert_eq!(m.header("bin"), Some(&Bytes::from_static(&[0xff, 0x00])));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.key.as_deref(), Some(&b"order-1"[..]));
        assert_eq!(m.message_id.as_deref(), Some("orders/3@42"));
        assert_eq!(m.coordinates.to_string(), "kafka:orders/3@42");
        assert_eq!(
            m.timestamp,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert!(!m.redelivered);
    }

    #[test]
    fn a_missing_timestamp_stays_missing() {
        let m = message("t", 0, 0, Some(-1), &Original::default());
        assert_eq!(m.timestamp, None);
        assert_eq!(m.content_type, None);
        assert_eq!(m.key, None);
    }
}
