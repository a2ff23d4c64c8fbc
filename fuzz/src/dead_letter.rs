//! A dead letter's failure context written to headers and read back, as `outrigger dlq`
//! reads every record.
//!
//! Input: the context's fields and its source off the front, then NUL-separated
//! `name=value` headers the message carried.
//!
//! Properties: the message's own headers are told apart from the context's (`is_context`);
//! with them, the context and the source read back equal, and a record made of the message
//! keeps the message's headers and none of the context's.

use bytes::Bytes;
use outrigger_core::dead_letter::headers::is_context;
use outrigger_core::dead_letter::source_from_headers;
use outrigger_core::{DeadLetter, DeadLetterRecord, Header, Message};

use super::coordinates;
use super::headers::as_headers;
use super::input::{fields, header, Reader};

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let source = coordinates::build(&mut r);
    let context = DeadLetter {
        reason: r.string(),
        class: r.string(),
        last_status: r.option(|r| r.u32() as u16),
        attempts: r.u32(),
        first_failure: r.time(),
        last_failure: r.time(),
        key: r.option(Reader::string),
        // Written as text: an excerpt that is not UTF-8 comes back with replacements.
        response_excerpt: Bytes::from(r.string()),
    };
    let own: Vec<Header> = fields(r.rest())
        .into_iter()
        .map(header)
        .filter(|h| !is_context(&h.name))
        .collect();
    let written = as_headers(context.context_headers(&source));
    assert!(written.iter().all(|h| is_context(&h.name)));
    let mut all = own.clone();
    all.extend(written);

    assert_eq!(DeadLetter::from_headers(&all).as_ref(), Ok(&context));
    assert_eq!(source_from_headers(&all).as_ref(), Some(&source));

    let mut message = Message::new(Bytes::from_static(b"payload"), source.clone());
    message.headers = all;
    let record = DeadLetterRecord::from_message("id".into(), message);
    assert_eq!(record.context, context);
    assert_eq!(record.origin, Some(source));
    assert_eq!(record.message.headers, own);
}
