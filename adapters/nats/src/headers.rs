//! NATS headers and core headers, and a JetStream message as a core [`Message`].
//!
//! NATS headers are text: a value is one line of UTF-8 without CR or LF (the client refuses
//! anything else, and trims spaces at both ends). The client keeps them in a map, so the
//! order a producer wrote them in is not kept: core headers come sorted by name, the values
//! of a repeated name in their order.

use std::time::SystemTime;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use outrigger_core::{Coordinates, Header, Message};

/// JetStream's header for a producer's message id (deduplication within the stream's window).
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The prefix of JetStream's publish conditions (`Nats-Expected-Stream`,
/// `Nats-Expected-Last-Sequence`, ...), which a copy published elsewhere would fail.
pub const EXPECTED_PREFIX: &str = "Nats-Expected-";

/// Core headers, sorted by name, from a NATS header map.
pub(crate) fn from_map(map: Option<&HeaderMap>) -> Vec<Header> {
    let Some(map) = map else {
        return Vec::new();
    };
    let mut names: Vec<&HeaderName> = map.iter().map(|(name, _)| name).collect();
    names.sort_by_key(|n| n.to_string());
    let mut out = Vec::new();
    for name in names {
        for value in map.get_all(name.clone()) {
            out.push(Header::new(
                name.to_string(),
                Bytes::copy_from_slice(value.as_str().as_bytes()),
            ));
        }
    }
    out
}

/// A NATS header map from core headers. A value NATS cannot carry (not UTF-8, or with CR or
/// LF) is an error naming the header.
pub(crate) fn to_map<'a>(
    headers: impl IntoIterator<Item = &'a Header>,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for h in headers {
        let value = std::str::from_utf8(&h.value).map_err(|_| {
            format!(
                "header {:?} is not text, which NATS headers must be",
                h.name
            )
        })?;
        append(&mut map, &h.name, value)?;
    }
    Ok(map)
}

/// Appends one header; a name or value NATS cannot carry is an error naming it.
pub(crate) fn append(map: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let name: HeaderName = name
        .parse()
        .map_err(|_| format!("{name:?} is not a valid NATS header name"))?;
    let value: HeaderValue = value.parse().map_err(|_| {
        format!("the value of header {name} has a line break, which NATS headers cannot carry")
    })?;
    map.append(name, value);
    Ok(())
}

/// A text NATS can carry in a header: line breaks become spaces, spaces at both ends go (the
/// client would trim them).
pub(crate) fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ").trim().to_owned()
}

/// What a JetStream message says about itself, from its ack subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) stream: String,
    pub(crate) sequence: u64,
    /// How many times the consumer handed it out, this time included.
    pub(crate) delivered: u64,
    pub(crate) published: Option<SystemTime>,
}

impl Position {
    pub(crate) fn of(message: &async_nats::jetstream::Message) -> Option<Self> {
        let info = message.info().ok()?;
        Some(Self {
            stream: info.stream.to_owned(),
            sequence: info.stream_sequence,
            delivered: u64::try_from(info.delivered).unwrap_or(0),
            published: Some(SystemTime::from(info.published)),
        })
    }
}

/// The core's view of a message on `subject` with these headers and payload, at `position`.
///
/// The key is the `key_header` value, or the subject; the message id is `<stream>@<sequence>`,
/// which every redelivery shares; the content type is the `Content-Type` header.
pub(crate) fn to_message(
    subject: &str,
    headers: Vec<Header>,
    payload: Bytes,
    position: &Position,
    key_header: &str,
) -> Message {
    let find = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
    };
    let key = find(key_header).unwrap_or_else(|| Bytes::copy_from_slice(subject.as_bytes()));
    let content_type = find("Content-Type").and_then(|v| String::from_utf8(v.to_vec()).ok());
    Message {
        payload,
        key: Some(key),
        message_id: Some(format!("{}@{}", position.stream, position.sequence)),
        content_type,
        timestamp: position.published,
        coordinates: Coordinates::Nats {
            stream: position.stream.clone(),
            sequence: position.sequence,
        },
        redelivered: position.delivered > 1,
        deliveries: Some(u32::try_from(position.delivered).unwrap_or(u32::MAX)),
        trail: None,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_come_sorted_with_repeated_values_in_order() {
        let mut map = HeaderMap::new();
        append(&mut map, "trace", "t-1").unwrap();
        append(&mut map, "a", "1").unwrap();
        append(&mut map, "a", "2").unwrap();
        append(&mut map, "empty", "").unwrap();
        let core = from_map(Some(&map));
        let shown: Vec<(&str, &[u8])> = core
            .iter()
            .map(|h| (h.name.as_str(), &h.value[..]))
            .collect();
        assert_eq!(
            shown,
            [
                ("a", &b"1"[..]),
                ("a", b"2"),
                ("empty", b""),
                ("trace", b"t-1")
            ]
        );
        let back = to_map(&core).unwrap();
        assert_eq!(from_map(Some(&back)), core);
    }

    #[test]
    fn what_nats_cannot_carry_is_refused_by_name() {
        let err = to_map(&[Header::new("bin", vec![0xff, 0x00])]).unwrap_err();
        assert!(err.contains("\"bin\" is not text"), "{err}");
        let mut map = HeaderMap::new();
        assert!(append(&mut map, "x", "a\r\nb").is_err());
        assert_eq!(one_line(" a\r\nb\n"), "a  b");
    }

    #[test]
    fn the_key_is_the_key_header_or_the_subject() {
        let position = Position {
            stream: "ORDERS".into(),
            sequence: 7,
            delivered: 2,
            published: None,
        };
        let m = to_message(
            "orders.eu",
            Vec::new(),
            Bytes::from_static(b"{}"),
            &position,
            "outrigger-key",
        );
        assert_eq!(m.key.as_deref(), Some(&b"orders.eu"[..]));
        assert_eq!(m.message_id.as_deref(), Some("ORDERS@7"));
        assert!(m.redelivered);
        assert_eq!(m.deliveries, Some(2));
        let mut map = HeaderMap::new();
        append(&mut map, "Outrigger-Key", "order-1").unwrap();
        append(&mut map, "Content-Type", "application/json").unwrap();
        let m = to_message(
            "orders.eu",
            from_map(Some(&map)),
            Bytes::new(),
            &position,
            "outrigger-key",
        );
        assert_eq!(m.key.as_deref(), Some(&b"order-1"[..]));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.headers.len(), 2, "the key header stays among the headers");
    }
}
