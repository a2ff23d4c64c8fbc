//! A retry trail written to a copy's headers and read back, among the message's own headers.
//!
//! Input: the trail's fields off the front, then NUL-separated `name=value` headers the
//! message carried.
//!
//! Properties: the message's own headers are told apart from the trail's (`is_retry`), and
//! with them taken off, as an adapter does before writing a copy, the trail reads back equal.

use outrigger_core::retry::headers::is_retry;
use outrigger_core::{Header, Trail};

use super::coordinates;
use super::headers::as_headers;
use super::input::{fields, header, Reader};

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let trail = Trail {
        origin: coordinates::build(&mut r),
        hop: r.u32(),
        attempts: r.u32(),
        tier: r.u64() as usize,
        first_seen: r.time(),
        first_failure: r.option(Reader::time),
        due: r.option(Reader::time),
    };
    let mut all: Vec<Header> = fields(r.rest())
        .into_iter()
        .map(header)
        .filter(|h| !is_retry(&h.name))
        .collect();
    let written = as_headers(trail.to_headers());
    assert!(written.iter().all(|h| is_retry(&h.name)));
    all.extend(written);
    assert_eq!(Trail::from_headers(&all), Some(Ok(trail)));
}
