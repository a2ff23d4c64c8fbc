//! How a stream entry becomes a core [`Message`], and back into fields.
//!
//! An entry is an ordered list of fields (names and values are bytes, a name may repeat):
//! - the first field named `payload_field` is the payload, byte for byte; none: an empty
//!   payload;
//! - the first field named `key_field` is the key;
//! - every other field is a header, in entry order, its value byte for byte (a name that is
//!   not UTF-8 is shown with replacement characters; the dead letter keeps the raw bytes);
//! - `content_type` is the first `content-type` field that is UTF-8 (it stays a header too);
//! - `message_id` is `<stream>@<id>`: stable across redeliveries and claims, so the default
//!   `{message_id}` dedup key works, and unique across streams, whose ids repeat (two streams
//!   written in the same millisecond both get `<ms>-0`);
//! - `timestamp` is the time in the entry id, when Redis added it (an id the producer chose
//!   says what the producer chose).
//!
//! A dead letter and a resubmitted copy are the entry's own fields, untouched and in order,
//! with fields added after them; [`fields_of`] reads a copy back the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use outrigger_core::{Coordinates, Header, Message};

use crate::config::RedisStreamsSettings;

/// The field a message's content type is read from.
pub const CONTENT_TYPE_FIELD: &str = "content-type";

/// The names of the payload and key fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    payload: Bytes,
    key: Bytes,
}

impl Mapping {
    /// The fields `settings` name.
    pub fn new(settings: &RedisStreamsSettings) -> Self {
        Self::of(&settings.payload_field, &settings.key_field)
    }

    /// Payload in `payload`, key in `key`.
    pub fn of(payload: &str, key: &str) -> Self {
        Self {
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    /// The message of entry `id` of `stream` with these fields. `deliveries` and
    /// `redelivered` are the caller's to set.
    pub fn message(&self, stream: &str, id: &str, fields: &[(Bytes, Bytes)]) -> Message {
        let mut payload = None;
        let mut key = None;
        let mut headers = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            if payload.is_none() && *name == self.payload {
                payload = Some(value.clone());
            } else if key.is_none() && *name == self.key {
                key = Some(value.clone());
            } else {
                headers.push(Header::new(
                    String::from_utf8_lossy(name).into_owned(),
                    value.clone(),
                ));
            }
        }
        let content_type = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(CONTENT_TYPE_FIELD))
            .and_then(|h| std::str::from_utf8(&h.value).ok())
            .map(str::to_owned);
        Message {
            payload: payload.unwrap_or_default(),
            headers,
            key,
            message_id: Some(message_id(stream, id)),
            content_type,
            timestamp: timestamp(id),
            coordinates: Coordinates::RedisStream {
                stream: stream.to_owned(),
                id: id.to_owned(),
            },
            redelivered: false,
            deliveries: None,
            trail: None,
        }
    }
}

/// The message id of entry `id` of `stream`: `<stream>@<id>`.
pub fn message_id(stream: &str, id: &str) -> String {
    format!("{stream}@{id}")
}

/// The time in an entry id (`<ms>-<seq>`).
fn timestamp(id: &str) -> Option<SystemTime> {
    let ms: u64 = id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Payload bytes of an entry, what the byte limit counts: every field value.
pub(crate) fn size(fields: &[(Bytes, Bytes)]) -> u64 {
    fields
        .iter()
        .map(|(name, value)| (name.len() + value.len()) as u64)
        .sum()
}

/// `fields` without those `drop` matches: the original fields of a dead letter or a copy, the
/// context or mark fields taken off.
pub(crate) fn fields_of(
    fields: &[(Bytes, Bytes)],
    drop: impl Fn(&str) -> bool,
) -> Vec<(Bytes, Bytes)> {
    fields
        .iter()
        .filter(|(name, _)| !std::str::from_utf8(name).is_ok_and(&drop))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, value: &[u8]) -> (Bytes, Bytes) {
        (
            Bytes::copy_from_slice(name.as_bytes()),
            Bytes::copy_from_slice(value),
        )
    }

    #[test]
    fn payload_key_and_headers_come_from_the_fields_in_order() {
        let mapping = Mapping::of("payload", "key");
        let fields = [
            f("trace", b"t-1"),
            f("payload", &[0xff, 0x00]),
            f("content-type", b"application/json"),
            f("key", b"order-7"),
            f("payload", b"second"),
        ];
        let m = mapping.message("orders", "1700000000123-4", &fields);
        assert_eq!(m.payload, Bytes::from_static(&[0xff, 0x00]));
        assert_eq!(m.key.as_deref(), Some(&b"order-7"[..]));
        let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["trace", "content-type", "payload"],
            "a repeat stays a header"
        );
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.message_id.as_deref(), Some("orders@1700000000123-4"));
        assert_eq!(
            m.timestamp,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(m.coordinates.to_string(), "redis:orders@1700000000123-4");
    }

    #[test]
    fn an_entry_without_payload_or_key_has_neither() {
        let m = Mapping::of("payload", "key").message("s", "5-0", &[f("a", b"1")]);
        assert!(m.payload.is_empty());
        assert_eq!(m.key, None);
        assert_eq!(m.headers, [Header::new("a", "1")]);
        assert_eq!(size(&[f("a", b"1"), f("bb", b"")]), 4);
    }

    #[test]
    fn fields_of_drops_what_it_is_told_and_keeps_the_order() {
        let fields = [f("b", b"1"), f("outrigger-dlq-reason", b"x"), f("a", b"2")];
        let kept = fields_of(&fields, outrigger_core::dead_letter::headers::is_context);
        assert_eq!(kept, [f("b", b"1"), f("a", b"2")]);
    }
}
