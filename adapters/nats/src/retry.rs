//! Retry mode `queue`: the copy a failing (or parked) message becomes in its tier's retry
//! subject, and the way back from a copy to its origin.
//!
//! A copy is the original payload byte for byte and the original headers without old
//! `outrigger-retry-*` ones, the [`Trail`] (due after the tier's delay), the subject the
//! original was published on (`outrigger-retry-subject`, so its key and dead letter stay the
//! original's) and a `Nats-Msg-Id` of its own, `outrigger-retry:<settled message>`: a second
//! publish of the same message after a lost ack is dropped by JetStream. JetStream control
//! headers of the original move aside as in a dead letter and come back when the copy is
//! read.

use std::time::SystemTime;

use async_nats::header::HeaderMap;
use outrigger_core::retry::headers::is_retry;
use outrigger_core::{Coordinates, Header, Trail};

use crate::dead_letter;
use crate::headers::{self, Position, MSG_ID};

/// The subject the original was published on.
pub(crate) const SUBJECT: &str = "outrigger-retry-subject";

/// The headers of the copy of a message on `subject` with `original` headers, stored at
/// `own` (`<stream>@<sequence>`), carrying `trail`.
pub(crate) fn copy_headers(
    original: Option<&HeaderMap>,
    subject: &str,
    trail: &Trail,
    own: &str,
) -> Result<HeaderMap, String> {
    let mut map = dead_letter::originals(original, |name| !is_retry(name))?;
    for (name, value) in trail.to_headers() {
        headers::append(&mut map, name, &value)?;
    }
    headers::append(&mut map, SUBJECT, subject)?;
    headers::append(&mut map, MSG_ID, &format!("outrigger-retry:{own}"))?;
    Ok(map)
}

/// A copy read back, as its origin.
pub(crate) struct Origin {
    pub(crate) trail: Trail,
    /// The original's subject, headers (core and NATS) and position.
    pub(crate) subject: String,
    pub(crate) headers: Vec<Header>,
    pub(crate) map: Option<HeaderMap>,
    pub(crate) position: Position,
}

/// What a message of the retry stream is.
pub(crate) enum Copy {
    /// Not due yet: to be naked with this delay.
    Early(std::time::Duration),
    /// Due: hand it out as this origin.
    Due(Box<Origin>),
    /// No readable trail: handed out as it is.
    Unreadable(String),
}

/// Reads a copy of the retry stream at `position` on `subject`, with these headers.
pub(crate) fn read(subject: &str, all: &[Header], position: &Position, now: SystemTime) -> Copy {
    let trail = match Trail::from_headers(all) {
        Some(Ok(trail)) => trail,
        Some(Err(error)) => return Copy::Unreadable(error.to_string()),
        None => return Copy::Unreadable("no retry trail".to_owned()),
    };
    if let Some(wait) = trail.due.and_then(|due| due.duration_since(now).ok()) {
        if !wait.is_zero() {
            return Copy::Early(wait);
        }
    }
    let original_subject = all
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(SUBJECT))
        .and_then(|h| std::str::from_utf8(&h.value).ok())
        .unwrap_or(subject)
        .to_owned();
    let kept: Vec<Header> = all.iter().filter(|h| !is_retry(&h.name)).cloned().collect();
    let restored = dead_letter::restore(kept);
    let map = headers::to_map(&restored).ok();
    let (stream, sequence) = match &trail.origin {
        Coordinates::Nats { stream, sequence } => (stream.clone(), *sequence),
        _ => (position.stream.clone(), position.sequence),
    };
    Copy::Due(Box::new(Origin {
        subject: original_subject,
        headers: restored,
        map,
        position: Position {
            stream,
            sequence,
            delivered: 1,
            published: position.published,
        },
        trail,
    }))
}
