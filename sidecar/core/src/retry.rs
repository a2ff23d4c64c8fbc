//! Retry queues: what a message carries through them (a [`Trail`]); the settlement that
//! writes a copy is [`Settlement::Retry`](crate::Settlement::Retry).
//!
//! In retry mode `queue` a failing message does not block its key or partition: it is written
//! to a retry queue of the source (on Kafka, `<topic>.retry.<n>`, one per delay tier), its
//! original counts as settled once the broker confirmed that write, and the sidecar consumes it
//! again after the tier's delay. The copy keeps payload, key and headers byte for byte and adds
//! the `outrigger-retry-*` headers of a [`Trail`]: where the message first came from and how far
//! it got, so attempts, age limits, dead-letter context and dedup keys stay those of the
//! original.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dead_letter::rfc3339;
use crate::message::{Coordinates, Header};

/// Header names of a retry copy.
pub mod headers {
    /// Prefix of every retry header: taken off before a copy is written again.
    pub const PREFIX: &str = "outrigger-retry-";
    /// Where the message was first consumed, as [`Coordinates`](crate::Coordinates) text.
    pub const ORIGIN: &str = "outrigger-retry-origin";
    /// Which copy this is: grows each time the message itself fails into a retry queue.
    pub const HOP: &str = "outrigger-retry-hop";
    /// Delivery attempts spent before this copy was written.
    pub const ATTEMPTS: &str = "outrigger-retry-attempts";
    /// When the sidecar first took the message, RFC 3339 (the age limit counts from it).
    pub const FIRST_SEEN: &str = "outrigger-retry-first-seen";
    /// When its first attempt failed, RFC 3339; absent for a message only parked so far.
    pub const FIRST_FAILURE: &str = "outrigger-retry-first-failure";
    /// Which delay tier the copy waits in, from 0.
    pub const TIER: &str = "outrigger-retry-tier";
    /// When the copy is due, in milliseconds since the Unix epoch.
    pub const DUE: &str = "outrigger-retry-due";

    /// Whether a header is one of the retry headers.
    pub fn is_retry(name: &str) -> bool {
        // `get`, not indexing: a name with a multi-byte character across the prefix's end
        // is no retry header, not a panic.
        name.get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
    }
}

/// Where a message has been: what a retry copy carries, and what the pipeline reads back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trail {
    /// Where the message was first consumed: its identity for dedup, ordering and dead
    /// letters, whichever retry queue it is read from.
    pub origin: Coordinates,
    /// Which copy: 0 for a message parked behind another without failing itself, then one
    /// more each time it fails into a retry queue. A copy older than the newest one its chain
    /// knows of is stale.
    pub hop: u32,
    /// Delivery attempts spent so far.
    pub attempts: u32,
    /// The delay tier the copy waits in (0 = the first, shortest).
    pub tier: usize,
    /// When the sidecar first took the message.
    pub first_seen: SystemTime,
    /// When its first attempt failed, if one did.
    pub first_failure: Option<SystemTime>,
    /// When the copy is due for delivery; `None` on a trail not written yet.
    pub due: Option<SystemTime>,
}

impl Trail {
    /// The headers a copy carries, `due` included when set.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (headers::ORIGIN, self.origin.to_string()),
            (headers::HOP, self.hop.to_string()),
            (headers::ATTEMPTS, self.attempts.to_string()),
            (headers::TIER, self.tier.to_string()),
            (headers::FIRST_SEEN, rfc3339(self.first_seen)),
        ];
        if let Some(at) = self.first_failure {
            out.push((headers::FIRST_FAILURE, rfc3339(at)));
        }
        if let Some(due) = self.due {
            let ms = due
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            out.push((headers::DUE, ms.to_string()));
        }
        out
    }

    /// Reads a trail back from a record's headers: `None` when the record carries no origin
    /// (it is no retry copy), an error naming the header that is there but unreadable.
    pub fn from_headers(all: &[Header]) -> Option<Result<Self, TrailError>> {
        let origin = find(all, headers::ORIGIN)?;
        Some(Self::read(all, origin))
    }

    fn read(all: &[Header], origin: &str) -> Result<Self, TrailError> {
        let bad = |name: &'static str| TrailError { header: name };
        let number = |name: &'static str| -> Result<u64, TrailError> {
            find(all, name)
                .ok_or(bad(name))?
                .trim()
                .parse()
                .map_err(|_| bad(name))
        };
        let time = |name: &'static str| -> Result<Option<SystemTime>, TrailError> {
            find(all, name)
                .map(|v| humantime::parse_rfc3339_weak(v.trim()).map_err(|_| bad(name)))
                .transpose()
        };
        let due = find(all, headers::DUE)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
                    .map_err(|_| bad(headers::DUE))
            })
            .transpose()?;
        Ok(Self {
            origin: origin.parse().map_err(|_| bad(headers::ORIGIN))?,
            hop: u32::try_from(number(headers::HOP)?).map_err(|_| bad(headers::HOP))?,
            attempts: u32::try_from(number(headers::ATTEMPTS)?)
                .map_err(|_| bad(headers::ATTEMPTS))?,
            tier: usize::try_from(number(headers::TIER)?).map_err(|_| bad(headers::TIER))?,
            first_seen: time(headers::FIRST_SEEN)?.ok_or(bad(headers::FIRST_SEEN))?,
            first_failure: time(headers::FIRST_FAILURE)?,
            due,
        })
    }
}

fn find<'a>(all: &'a [Header], name: &str) -> Option<&'a str> {
    all.iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(&h.value).ok())
}

/// A retry header that is there but cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("retry header {header} is missing or unreadable")]
pub struct TrailError {
    /// The header's name.
    pub header: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_list(trail: &Trail) -> Vec<Header> {
        trail
            .to_headers()
            .into_iter()
            .map(|(n, v)| Header::new(n, v))
            .collect()
    }

    #[test]
    fn a_trail_reads_back_from_its_headers() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let trail = Trail {
            origin: Coordinates::Kafka {
                topic: "orders".into(),
                partition: 2,
                offset: 41,
            },
            hop: 3,
            attempts: 4,
            tier: 2,
            first_seen: at,
            first_failure: Some(at + Duration::from_secs(1)),
            due: Some(at + Duration::from_secs(60)),
        };
        let mut all = vec![Header::new("traceparent", "x")];
        all.extend(header_list(&trail));
        assert_eq!(Trail::from_headers(&all), Some(Ok(trail.clone())));
        assert!(trail.to_headers().iter().all(|(n, _)| headers::is_retry(n)));
        assert!(!headers::is_retry("traceparent"));
        assert!(
            !headers::is_retry("x-trace-contexté"),
            "byte 16 inside a character"
        );
    }

    #[test]
    fn no_origin_is_no_trail_and_a_bad_header_is_named() {
        assert_eq!(Trail::from_headers(&[Header::new("a", "b")]), None);
        let all = vec![
            Header::new(headers::ORIGIN, "kafka:orders/0@1"),
            Header::new(headers::HOP, "x"),
        ];
        assert_eq!(
            Trail::from_headers(&all),
            Some(Err(TrailError {
                header: headers::HOP
            }))
        );
    }
}
