//! Dead letters and tombstones: what is written to a dead-letter stream, and the write.
//!
//! A dead letter is the entry's own fields, byte for byte and in order, then the
//! `outrigger-dlq-*` context fields. Context fields the entry carried already (a dead letter
//! fed back by hand) are left out, so a record holds one context, its own. The write and the
//! `XACK` of the entry are one script: a dead letter is never written without its entry being
//! acknowledged, nor the entry acknowledged without its dead letter, and a retry after a lost
//! reply writes nothing twice.
//!
//! A tombstone stands for an entry that was deleted or trimmed from its stream while it was
//! pending (so its fields are gone): only context fields, class `deleted`, the reason saying
//! what happened. `outrigger dlq` lists it; it cannot be resubmitted, only purged.

use std::time::SystemTime;

use bytes::Bytes;
use outrigger_core::dead_letter::headers::is_context;
use outrigger_core::{Coordinates, DeadLetter, SourceError};
use redis::Value;

use crate::client::{flat, Redis};
use crate::error::publish_error;
use crate::mapping::fields_of;
use crate::reply;

/// The failure class of a tombstone.
pub const DELETED_CLASS: &str = "deleted";

/// Where a dead letter goes and what it settles.
pub(crate) struct Target<'a> {
    /// The dead-letter stream.
    pub dead_letters: &'a str,
    /// The source stream.
    pub stream: &'a str,
    /// The group.
    pub group: &'a str,
    /// The entry.
    pub id: &'a str,
    /// Create a missing dead-letter stream.
    pub create: bool,
}

/// What the write found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The dead letter's id.
    At(String),
    /// The entry was no longer pending: settled already, nothing written.
    Settled,
}

/// The fields of the dead letter of an entry with `fields`, failing with `context`.
pub(crate) fn fields(
    fields: &[(Bytes, Bytes)],
    context: &DeadLetter,
    origin: &Coordinates,
) -> Vec<(Bytes, Bytes)> {
    let mut out = fields_of(fields, is_context);
    out.extend(
        context
            .context_headers(origin)
            .into_iter()
            .map(|(name, value)| (Bytes::from_static(name.as_bytes()), Bytes::from(value))),
    );
    out
}

/// The fields of the tombstone of entry `origin`, deleted while pending after `deliveries`
/// hand-outs (0 when unknown).
pub(crate) fn tombstone(origin: &Coordinates, deliveries: u32) -> Vec<(Bytes, Bytes)> {
    let now = SystemTime::now();
    let context = DeadLetter {
        reason: format!(
            "entry {origin} was deleted or trimmed from its stream while it was pending, before \
             it was settled: its fields are gone"
        ),
        class: DELETED_CLASS.to_owned(),
        last_status: None,
        attempts: deliveries,
        first_failure: now,
        last_failure: now,
        key: None,
        response_excerpt: Bytes::new(),
    };
    fields(&[], &context, origin)
}

/// Writes `fields` to the dead-letter stream and, with `ack`, acknowledges the entry in the
/// same step (only while it is pending); without, only writes (the entry left the pending
/// list already).
pub(crate) async fn write(
    redis: &Redis,
    target: &Target<'_>,
    ack: bool,
    fields: &[(Bytes, Bytes)],
) -> Result<Written, SourceError> {
    let values = flat(fields);
    let written: Value = redis
        // Repeatable when acknowledging: the script writes only while the entry is pending.
        .invoke(ack, |s| {
            let mut call = s.dead_letter.key(target.dead_letters);
            call.key(target.stream)
                .arg(target.group)
                .arg(target.id)
                .arg(if ack { "ack" } else { "add" })
                .arg(if target.create { "1" } else { "0" })
                .arg(values.as_slice());
            call
        })
        .await
        .map_err(|e| {
            publish_error(
                &format!("writing to the dead-letter stream {}", target.dead_letters),
                &e,
            )
        })?;
    match written {
        Value::Nil => Ok(Written::Settled),
        other => reply::text(&other).map(Written::At).ok_or_else(|| {
            SourceError::Publish(format!("the dead-letter write answered {other:?}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use outrigger_core::dead_letter::{headers, source_from_headers};
    use outrigger_core::{DeadLetterRecord, Header, Message};

    use super::*;

    fn f(name: &str, value: &[u8]) -> (Bytes, Bytes) {
        (
            Bytes::copy_from_slice(name.as_bytes()),
            Bytes::copy_from_slice(value),
        )
    }

    fn origin() -> Coordinates {
        Coordinates::RedisStream {
            stream: "orders".into(),
            id: "1-0".into(),
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_fields_in_order_and_adds_one_context() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let context = DeadLetter {
            reason: "app answered HTTP 400".into(),
            class: "4xx".into(),
            last_status: Some(400),
            attempts: 1,
            first_failure: at,
            last_failure: at,
            key: None,
            response_excerpt: Bytes::new(),
        };
        let original = [
            f("payload", &[0xff, 0x00]),
            f(headers::REASON, b"stale"),
            f("trace", b"t-1"),
        ];
        let out = fields(&original, &context, &origin());
        assert_eq!(out[..2], [f("payload", &[0xff, 0x00]), f("trace", b"t-1")]);
        let reasons: Vec<_> = out
            .iter()
            .filter(|(n, _)| n.as_ref() == headers::REASON.as_bytes())
            .collect();
        assert_eq!(reasons.len(), 1, "one context, its own");
        assert_eq!(reasons[0].1, "app answered HTTP 400");
    }

    #[test]
    fn a_tombstone_reads_back_as_a_deleted_record_of_its_entry() {
        let mut m = Message::new(
            "",
            Coordinates::RedisStream {
                stream: "orders.dlq".into(),
                id: "9-0".into(),
            },
        );
        for (name, value) in tombstone(&origin(), 3) {
            m.headers.push(Header::new(
                String::from_utf8(name.to_vec()).unwrap(),
                value,
            ));
        }
        assert_eq!(source_from_headers(&m.headers), Some(origin()));
        let record = DeadLetterRecord::from_message("9-0".into(), m);
        assert_eq!(record.context.class, DELETED_CLASS);
        assert_eq!(record.context.attempts, 3);
        assert!(record.context.reason.contains("redis:orders@1-0"));
        assert!(
            record.message.headers.is_empty(),
            "nothing of the entry is left"
        );
    }
}
