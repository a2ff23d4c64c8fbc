//! The headers a dead letter is published with, and the way back to the original's.
//!
//! A dead letter is the original payload and headers plus the `outrigger-dlq-*` failure
//! context. nats-server 2.9 ignores a reason after `+TERM`, so the reason travels here, in
//! the dead letter. Two kinds of original header would make the copy vanish or fail, so they
//! move aside into a context header of their own, `outrigger-dlq-original-<name>` with the
//! name in lower case, and come back (in NATS's case, `Nats-Msg-Id`) when the dead letter is
//! read. Lower case, because nats-server 2.9 finds a control header by searching the header
//! block for `Nats-Msg-Id:` anywhere, also inside `outrigger-dlq-original-Nats-Msg-Id:`:
//! - `Nats-Msg-Id`: the dead-letter stream would drop a second dead letter with the same id
//!   inside its duplicate window (the same producer message failing again after a
//!   resubmission), and the original would then be terminated with no dead letter kept.
//! - `Nats-Expected-*`: conditions on the original publish (expected stream, last sequence)
//!   that the dead-letter stream would refuse, failing every dead letter of the message.
//!
//! The subject the message was published on travels in `outrigger-dlq-subject`: it is where a
//! resubmission goes.
//!
//! The dead letter's own `Nats-Msg-Id` is `outrigger-dead-letter:<source>` (the original's
//! stream and sequence): a sidecar killed after JetStream stored the dead letter and before
//! the original's `+TERM` and the dedup record makes the next one write it again, and the
//! dead-letter stream drops that second copy inside its duplicate window (2 minutes by
//! default). A resubmitted copy has a sequence of its own, so its dead letter is a new one.

use async_nats::header::HeaderMap;
use outrigger_core::{Coordinates, DeadLetter, Header};

use crate::headers::{self, EXPECTED_PREFIX, MSG_ID};

/// The subject the original was published on.
pub const SUBJECT: &str = "outrigger-dlq-subject";
/// The prefix of an original header moved aside.
pub const ORIGINAL_PREFIX: &str = "outrigger-dlq-original-";

/// Whether JetStream acts on this header when it is published (see the module docs).
pub(crate) fn is_control(name: &str) -> bool {
    name.eq_ignore_ascii_case(MSG_ID)
        || name
            .get(..EXPECTED_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(EXPECTED_PREFIX))
}

/// The headers of the dead letter of a message on `subject` with `original` headers, failed
/// at `source` with `context`.
pub(crate) fn headers(
    original: Option<&HeaderMap>,
    subject: &str,
    context: &DeadLetter,
    source: &Coordinates,
) -> Result<HeaderMap, String> {
    let mut map = originals(original, |_| true)?;
    for (name, value) in context.context_headers(source) {
        headers::append(&mut map, name, &headers::one_line(&value))?;
    }
    headers::append(&mut map, SUBJECT, subject)?;
    headers::append(&mut map, MSG_ID, &dead_letter_id(source))?;
    Ok(map)
}

/// The `original` headers that `keep` keeps, for a message written again (a dead letter, a
/// retry copy): JetStream's control headers (`Nats-Msg-Id`, `Nats-Expected-*`) moved aside
/// under [`ORIGINAL_PREFIX`], so the new message is not taken for a duplicate or refused.
pub(crate) fn originals(
    original: Option<&HeaderMap>,
    keep: impl Fn(&str) -> bool,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for h in headers::from_map(original) {
        if !keep(&h.name) {
            continue;
        }
        let value = std::str::from_utf8(&h.value).unwrap_or_default();
        if is_control(&h.name) {
            let aside = format!("{ORIGINAL_PREFIX}{}", h.name.to_ascii_lowercase());
            headers::append(&mut map, &aside, value)?;
        } else {
            headers::append(&mut map, &h.name, value)?;
        }
    }
    Ok(map)
}

/// The id JetStream deduplicates a dead letter of `source` on.
pub(crate) fn dead_letter_id(source: &Coordinates) -> String {
    format!("outrigger-dead-letter:{source}")
}

/// A dead letter's headers with the moved originals back under their names (the rest of the
/// context stays, for [`DeadLetterRecord::from_message`](outrigger_core::DeadLetterRecord)).
pub(crate) fn restore(headers: Vec<Header>) -> Vec<Header> {
    let mut out: Vec<Header> = headers
        .into_iter()
        // The dead letter's own id (the original's is moved aside, never kept as it is).
        .filter(|h| !h.name.eq_ignore_ascii_case(MSG_ID))
        .map(|h| match strip_prefix(&h.name, ORIGINAL_PREFIX) {
            Some(name) => Header::new(nats_case(name), h.value),
            None => h,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `nats-expected-last-sequence` as NATS writes it: `Nats-Expected-Last-Sequence`.
fn nats_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn strip_prefix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
        .filter(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use bytes::Bytes;
    use outrigger_core::dead_letter::headers as context_headers;

    use super::*;

    fn context() -> DeadLetter {
        DeadLetter {
            reason: "app answered HTTP 400".into(),
            class: "4xx".into(),
            last_status: Some(400),
            attempts: 1,
            first_failure: UNIX_EPOCH,
            last_failure: UNIX_EPOCH,
            key: Some("order-1".into()),
            response_excerpt: Bytes::from_static(b"line one\nline two\n"),
        }
    }

    #[test]
    fn control_headers_move_aside_and_come_back() {
        let mut original = HeaderMap::new();
        headers::append(&mut original, "Nats-Msg-Id", "m-1").unwrap();
        headers::append(&mut original, "Nats-Expected-Stream", "ORDERS").unwrap();
        headers::append(&mut original, "trace", "t-1").unwrap();
        let source = Coordinates::Nats {
            stream: "ORDERS".into(),
            sequence: 3,
        };
        let map = headers(Some(&original), "orders.eu", &context(), &source).unwrap();
        assert_eq!(
            map.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("outrigger-dead-letter:nats:ORDERS@3"),
            "the dead letter's own id, not the original's"
        );
        assert!(map.get("Nats-Expected-Stream").is_none());
        assert_eq!(
            map.get("outrigger-dlq-original-nats-msg-id")
                .map(|v| v.as_str()),
            Some("m-1")
        );
        assert_eq!(map.get(SUBJECT).map(|v| v.as_str()), Some("orders.eu"));
        assert_eq!(
            map.get(context_headers::RESPONSE).map(|v| v.as_str()),
            Some("line one line two"),
            "one line"
        );
        assert!(
            map.get("outrigger-dlq-original-nats-expected-stream")
                .is_some(),
            "no header nats-server 2.9 would take for a Nats-Expected-Stream: {map:?}"
        );
        let back = restore(headers::from_map(Some(&map)));
        assert!(back.iter().any(|h| h.name == "Nats-Expected-Stream"));
        let ids: Vec<_> = back.iter().filter(|h| h.name == "Nats-Msg-Id").collect();
        assert_eq!(ids.len(), 1, "the original's id alone");
        assert_eq!(&ids[0].value[..], b"m-1");
        assert!(back.iter().any(|h| h.name == "trace"));
        assert!(back.iter().any(|h| h.name == SUBJECT), "context stays");
    }
}
