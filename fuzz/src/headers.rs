//! Arbitrary broker headers read as what the sidecar looks for in them: a retry trail, a
//! dead-letter context, the source a dead letter names, and a whole dead-letter record.
//!
//! Input: NUL-separated fields. The first is the message's timestamp in milliseconds since
//! the epoch (a producer sets it; not a number, none), every other one a header `name=value`
//! whose value keeps its bytes.
//!
//! Properties: no panic; what was read, written again, reads back to what it wrote (the
//! header encoding is stable after one round, however odd the first one was); a source read
//! back prints and parses to itself; a record keeps none of the context headers and its time
//! can be printed, as `outrigger dlq` does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use outrigger_core::dead_letter::{self, rfc3339, source_from_headers};
use outrigger_core::dlq::Resubmission;
use outrigger_core::{Coordinates, DeadLetter, DeadLetterRecord, Header, Message, Trail};

use super::input::{fields, header, text};

/// Runs one input.
pub fn run(data: &[u8]) {
    let parts = fields(data);
    let timestamp = text(parts[0])
        .trim()
        .parse::<u64>()
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let headers: Vec<Header> = parts[1..].iter().map(|f| header(f)).collect();

    trail(&headers);
    context(&headers);
    if let Some(source) = source_from_headers(&headers) {
        assert_eq!(source.to_string().parse(), Ok(source));
    }
    record(timestamp, headers);
}

fn trail(headers: &[Header]) {
    let Some(Ok(read)) = Trail::from_headers(headers) else {
        return;
    };
    let written = as_headers(read.to_headers());
    let again = Trail::from_headers(&written)
        .expect("a written trail has an origin")
        .expect("a written trail reads back");
    assert_eq!(as_headers(again.to_headers()), written, "{read:?}");
}

fn context(headers: &[Header]) {
    let Ok(read) = DeadLetter::from_headers(headers) else {
        return;
    };
    let source = source_from_headers(headers).unwrap_or(Coordinates::Memory {
        queue: "q".into(),
        sequence: 1,
    });
    let written = as_headers(read.context_headers(&source));
    let again = DeadLetter::from_headers(&written).expect("a written context reads back");
    assert_eq!(source_from_headers(&written).as_ref(), Some(&source));
    assert_eq!(
        as_headers(again.context_headers(&source)),
        written,
        "{read:?}"
    );
}

fn record(timestamp: Option<SystemTime>, headers: Vec<Header>) {
    let mut message = Message::new(
        Bytes::from_static(b"{}"),
        Coordinates::Memory {
            queue: "orders.dlq".into(),
            sequence: 1,
        },
    );
    message.timestamp = timestamp;
    message.headers = headers;
    let record = DeadLetterRecord::from_message("id".into(), message);
    assert!(
        !record
            .message
            .headers
            .iter()
            .any(|h| dead_letter::headers::is_context(&h.name)),
        "a context header stayed on the record"
    );
    // What `outrigger dlq` and the admin API print for every record.
    let _ = rfc3339(record.time());
    let how = Resubmission {
        to: None,
        by: "fuzz".into(),
        at: UNIX_EPOCH,
    };
    let _ = how.target(&record, "orders");
    let _ = how.mark(&record);
}

/// Header pairs as a broker would carry them.
pub fn as_headers(pairs: Vec<(&'static str, String)>) -> Vec<Header> {
    pairs
        .into_iter()
        .map(|(name, value)| Header::new(name, value))
        .collect()
}
