//! Dead letters read back, and the contract of a dead-letter queue an operator works on.
//!
//! `outrigger dlq` and the admin API list, resubmit and purge dead letters through
//! [`DeadLetterQueue`], which each adapter implements over its broker's own storage. Work
//! happens in a pass ([`DeadLetterPass`]): it reads the records that are in the queue when it
//! starts, lets the caller resubmit or purge any record it handed out, and on
//! [`finish`](DeadLetterPass::finish) leaves every other record where it was.
//!
//! # One contract, two kinds of broker
//! - Destructive reads (RabbitMQ): the pass takes each record without acking it, so no other
//!   reader sees it meanwhile and a crash hands it back to the queue. Resubmit publishes the
//!   copy, waits for the broker's confirm, then acks the record, which leaves the queue; purge
//!   acks it; finishing returns the rest, in their order.
//! - Append-only logs (Kafka): the pass reads the dead-letter topic from the start up to its
//!   end as the pass finds it. A record cannot be deleted, so resubmit and purge record
//!   that it was handled (a marker keyed by the record id, written once the copy is
//!   confirmed), and a pass hides handled records unless [`Scope::include_handled`] asks for
//!   them, with [`DeadLetterRecord::handled`] saying how, when and by whom.
//!
//! Either way a record is settled only after its copy is confirmed. A crash in between leaves
//! it in the queue (or unmarked), and running again publishes it again: the copy keeps the
//! original payload and headers, hence its idempotency key, so dedup delivers it once.
//!
//! # Ids
//! A record's id is stable across passes and unique within one. Adapters use an immutable
//! position where the broker has one (Kafka's topic, partition and offset) and otherwise
//! [`content_id`], a hash of the record's bytes, context headers included.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::dead_letter::{self, headers, DeadLetter};
use crate::message::{Coordinates, Message};
use crate::source::SourceError;

/// Header names of the resubmission mark a resubmitted copy carries.
pub mod resubmit_headers {
    /// Who resubmitted it (`user@host`, or what the admin API caller said).
    pub const BY: &str = "outrigger-resubmitted-by";
    /// When, RFC 3339.
    pub const AT: &str = "outrigger-resubmitted-at";
    /// How many times this message was resubmitted, this time included.
    pub const COUNT: &str = "outrigger-resubmit-count";
    /// The idempotency key the original was deduplicated under. The copy is deduplicated under
    /// it again, whatever the key template makes of the copy: a template on the broker's
    /// message id or position would otherwise give the copy a key of its own.
    pub const KEY: &str = "outrigger-resubmitted-key";

    /// Whether a header is part of a mark, which a new mark replaces.
    pub fn is_mark(name: &str) -> bool {
        [BY, AT, COUNT, KEY]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(name))
    }
}

/// One record of a dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRecord {
    /// Stable, unique within the queue; see the module docs.
    pub id: String,
    /// The original message: payload, key, properties and headers as they were, the
    /// failure-context headers taken off. `coordinates` is where the record sits in the
    /// dead-letter queue.
    pub message: Message,
    /// Why and how it failed, read back from the context headers.
    pub context: DeadLetter,
    /// Where it was consumed from when it failed, when the record says.
    pub origin: Option<Coordinates>,
    /// How many times the message was resubmitted before it landed here this time.
    pub resubmissions: u32,
    /// Set on append-only queues for a record already resubmitted or purged.
    pub handled: Option<Handled>,
}

impl DeadLetterRecord {
    /// A record from a message read from a dead-letter queue, context headers and all.
    ///
    /// A message without a readable context (put there by hand, or by the broker's own
    /// dead-lettering) is kept, with class `unknown` and a reason saying what is missing.
    pub fn from_message(id: String, mut message: Message) -> Self {
        let context = DeadLetter::from_headers(&message.headers).unwrap_or_else(|e| {
            let at = message.timestamp.unwrap_or(UNIX_EPOCH);
            DeadLetter {
                reason: format!("no outrigger failure context: {e}"),
                class: "unknown".to_owned(),
                last_status: None,
                attempts: 0,
                first_failure: at,
                last_failure: at,
                key: None,
                response_excerpt: Default::default(),
            }
        });
        let origin = dead_letter::source_from_headers(&message.headers);
        let resubmissions = message
            .header_str(resubmit_headers::COUNT)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        message.headers.retain(|h| !headers::is_context(&h.name));
        Self {
            id,
            message,
            context,
            origin,
            resubmissions,
            handled: None,
        }
    }

    /// When it was dead-lettered: the last failure.
    pub fn time(&self) -> SystemTime {
        self.context.last_failure
    }

    /// The idempotency key it was deduplicated under, when one was extracted.
    pub fn key(&self) -> Option<&str> {
        self.context.key.as_deref()
    }
}

/// How a record of an append-only queue was handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// Resubmitted or purged.
    pub action: HandledAction,
    /// When.
    pub at: SystemTime,
    /// By whom.
    pub by: String,
}

/// What was done to a handled record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandledAction {
    /// Published again to its source (or elsewhere).
    Resubmitted,
    /// Discarded.
    Purged,
}

/// Which records a pass reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Also hand out records already handled (append-only queues keep them).
    pub include_handled: bool,
}

/// How records are resubmitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resubmission {
    /// Publish to this queue or topic instead of each record's origin.
    pub to: Option<String>,
    /// Who resubmits, for the mark.
    pub by: String,
    /// When, for the mark.
    pub at: SystemTime,
}

impl Resubmission {
    /// Where the copy of `record` goes: `to`, else the queue or topic it failed on, else
    /// `fallback` (the configured source).
    pub fn target<'a>(&'a self, record: &'a DeadLetterRecord, fallback: &'a str) -> &'a str {
        self.to
            .as_deref()
            .or(record.origin.as_ref().map(Coordinates::source_name))
            .unwrap_or(fallback)
    }

    /// The mark the copy of `record` carries, as text headers: who, when, how many times, and
    /// the idempotency key of the original when it had one.
    pub fn mark(&self, record: &DeadLetterRecord) -> Vec<(&'static str, String)> {
        let mut mark = vec![
            (resubmit_headers::BY, self.by.clone()),
            (resubmit_headers::AT, dead_letter::rfc3339(self.at)),
            (
                resubmit_headers::COUNT,
                record.resubmissions.saturating_add(1).to_string(),
            ),
        ];
        if let Some(key) = record.key() {
            mark.push((resubmit_headers::KEY, key.to_owned()));
        }
        mark
    }
}

/// A dead-letter queue, topic or stream an operator works on.
pub trait DeadLetterQueue: Send + Sync {
    /// A pass over the queue.
    type Pass: DeadLetterPass;

    /// The queue or topic name, for messages to the operator.
    fn name(&self) -> &str;

    /// The source it serves (the queue, or the first topic): where records go back to when
    /// they do not name their origin, and the `source` label of the DLQ metrics.
    fn source(&self) -> &str;

    /// Starts a pass over the records in the queue now.
    fn open(&self, scope: Scope) -> impl Future<Output = Result<Self::Pass, SourceError>> + Send;
}

/// One pass over a dead-letter queue; see the module docs for what each broker does.
pub trait DeadLetterPass: Send {
    /// The next record, or `None` once every record that was there at the start was handed
    /// out (later ones may or may not be).
    fn next(
        &mut self,
    ) -> impl Future<Output = Result<Option<DeadLetterRecord>, SourceError>> + Send;

    /// Publishes `record` again (to `how.target(...)`) with its original payload, key,
    /// properties and headers, the context headers off and the resubmission mark on; once the
    /// broker confirmed the copy, settles the record. On error the record stays.
    fn resubmit(
        &mut self,
        record: &DeadLetterRecord,
        how: &Resubmission,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Discards `record` (deletes it, or marks it purged by `by`).
    fn purge(
        &mut self,
        record: &DeadLetterRecord,
        by: &str,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Ends the pass; every record not resubmitted or purged stays, unchanged.
    fn finish(self) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// A 16-hex-digit id from a record's bytes: payload, key, message id and headers (in order,
/// those named in `skip` left out, e.g. counters the broker bumps on every read).
///
/// FNV-1a, 64 bits, every field length-prefixed: stable across runs, builds and machines,
/// unlike std's hasher. Not a security hash; two different records colliding among a DLQ's
/// records is as likely as a 64-bit collision.
pub fn content_id(message: &Message, skip: &[&str]) -> String {
    let mut h = Fnv::default();
    h.field(&message.payload);
    h.field(message.key.as_deref().unwrap_or_default());
    h.field(message.message_id.as_deref().unwrap_or_default().as_bytes());
    for header in &message.headers {
        if skip.iter().any(|s| s.eq_ignore_ascii_case(&header.name)) {
            continue;
        }
        h.field(header.name.as_bytes());
        h.field(&header.value);
    }
    format!("{:016x}", h.0)
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn field(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::message::Header;

    fn dead_letter_message() -> Message {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let dl = DeadLetter {
            reason: "app answered HTTP 400".into(),
            class: "4xx".into(),
            last_status: Some(400),
            attempts: 1,
            first_failure: t,
            last_failure: t,
            key: Some("order-1".into()),
            response_excerpt: Bytes::new(),
        };
        let origin = Coordinates::Amqp {
            queue: "orders".into(),
            delivery_tag: 3,
        };
        let mut m = Message::new(
            "{}",
            Coordinates::Amqp {
                queue: "orders.dlq".into(),
                delivery_tag: 1,
            },
        );
        m.headers.push(Header::new("idempotency-key", "order-1"));
        m.headers.push(Header::new(resubmit_headers::COUNT, "2"));
        for (n, v) in dl.context_headers(&origin) {
            m.headers.push(Header::new(n, v));
        }
        m
    }

    #[test]
    fn a_record_splits_the_context_off_the_original_headers() {
        let r = DeadLetterRecord::from_message("id".into(), dead_letter_message());
        assert_eq!(r.key(), Some("order-1"));
        assert_eq!(r.context.last_status, Some(400));
        assert_eq!(r.resubmissions, 2);
        assert_eq!(r.origin.as_ref().map(|o| o.source_name()), Some("orders"));
        let names: Vec<&str> = r.message.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["idempotency-key", resubmit_headers::COUNT]);
    }

    #[test]
    fn a_record_without_context_is_kept_as_unknown() {
        let m = Message::new(
            "x",
            Coordinates::Amqp {
                queue: "orders.dlq".into(),
                delivery_tag: 1,
            },
        );
        let r = DeadLetterRecord::from_message("id".into(), m);
        assert_eq!(r.context.class, "unknown");
        assert!(
            r.context.reason.contains(headers::REASON),
            "{}",
            r.context.reason
        );
        assert_eq!(r.origin, None);
    }

    #[test]
    fn the_mark_counts_resubmissions_and_the_target_falls_back() {
        let r = DeadLetterRecord::from_message("id".into(), dead_letter_message());
        let how = Resubmission {
            to: None,
            by: "ops@host".into(),
            at: UNIX_EPOCH,
        };
        let mark = how.mark(&r);
        assert_eq!(mark[2], (resubmit_headers::COUNT, "3".to_owned()));
        assert_eq!(mark[3], (resubmit_headers::KEY, "order-1".to_owned()));
        assert!(mark.iter().all(|(name, _)| resubmit_headers::is_mark(name)));
        assert_eq!(mark[1].1, "1970-01-01T00:00:00.000Z");
        assert_eq!(how.target(&r, "fallback"), "orders");
        let elsewhere = Resubmission {
            to: Some("replay".into()),
            ..how
        };
        assert_eq!(elsewhere.target(&r, "fallback"), "replay");
    }

    #[test]
    fn content_ids_are_stable_and_skip_volatile_headers() {
        let m = dead_letter_message();
        let id = content_id(&m, &[]);
        assert_eq!(id.len(), 16);
        assert_eq!(id, content_id(&m.clone(), &[]));
        let mut bumped = m.clone();
        bumped.headers.push(Header::new("x-delivery-count", "4"));
        assert_ne!(content_id(&bumped, &[]), id);
        assert_eq!(content_id(&bumped, &["x-delivery-count"]), id);
        let mut other = m;
        other.payload = Bytes::from_static(b"{ }");
        assert_ne!(content_id(&other, &[]), id);
    }
}
