//! Which dead letters an operator means: time range, reason, HTTP status (or handling
//! status), key and source.
//!
//! The same filters serve `outrigger dlq` (as flags) and the admin API (as query parameters
//! and JSON fields), parsed by the same functions so both say the same thing about a bad
//! value.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use outrigger_core::{DeadLetterRecord, HandledAction};

/// What a dead letter must match; every field set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Dead-lettered at or after.
    pub since: Option<SystemTime>,
    /// Dead-lettered at or before.
    pub until: Option<SystemTime>,
    /// Case-insensitive text of the reason, or the failure class (`4xx`, `timeout`, ...).
    pub reason: Option<String>,
    /// The app's last HTTP status, or whether the record was handled.
    pub status: Option<StatusFilter>,
    /// The idempotency key.
    pub key: Option<KeyPattern>,
    /// The queue or topic the message failed on.
    pub source: Option<String>,
}

impl Filter {
    /// Whether `record` matches every filter set.
    pub fn matches(&self, record: &DeadLetterRecord) -> bool {
        let at = record.time();
        self.since.is_none_or(|since| at >= since)
            && self.until.is_none_or(|until| at <= until)
            && self.reason.as_deref().is_none_or(|text| {
                let text = text.to_lowercase();
                record.context.class.to_lowercase() == text
                    || record.context.reason.to_lowercase().contains(&text)
            })
            && self.status.is_none_or(|s| s.matches(record))
            && self
                .key
                .as_ref()
                .is_none_or(|k| record.key().is_some_and(|key| k.matches(key)))
            && self.source.as_deref().is_none_or(|source| {
                record
                    .origin
                    .as_ref()
                    .is_some_and(|o| o.source_name() == source)
            })
    }

    /// Whether the filter asks for records already handled, which a pass over an append-only
    /// queue (Kafka) hides unless told to include them.
    pub fn wants_handled(&self) -> bool {
        matches!(self.status, Some(StatusFilter::Handled(_)))
    }

    /// True when no filter is set: everything matches.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Parses `--since`/`--until`: a UTC time (`2024-05-01T12:00:00Z`, the `Z` optional), a date
/// (`2024-05-01`, midnight UTC), or a duration before now (`90s`, `2h`, `7d`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{text:?} reaches back before 1970"));
    }
    let full;
    let stamp = if text.len() == 10 {
        // A bare date: midnight UTC.
        full = format!("{text}T00:00:00Z");
        full.as_str()
    } else {
        text
    };
    humantime::parse_rfc3339_weak(stamp).map_err(|_| {
        format!(
            "{text:?} is neither a UTC time (2024-05-01T12:00:00Z, 2024-05-01) \
             nor a duration before now (30m, 2h, 7d)"
        )
    })
}

/// Parses `--rate`: messages per second, above 0.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| format!("{text:?} is not a number"))
        .and_then(check_rate)
        .map_err(|e| format!("{e}: give messages per second, above 0 (20, 0.5)"))
}

/// A rate of messages per second that [`rate_period`] can pace: above 0, at most a million.
pub fn check_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && rate > 0.0 && rate <= 1e6 {
        Ok(rate)
    } else {
        Err(format!("{rate} is out of range"))
    }
}

/// The interval between two messages at `rate` per second.
pub fn rate_period(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate)
}

/// What `--status` takes: the app's last HTTP status, or where the record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    /// Exactly this status (`400`).
    Exact(u16),
    /// Any status of this hundred (`4xx`).
    Class(u16),
    /// No status: the app never answered (timeouts, connection failures, decode errors).
    None,
    /// Not resubmitted or purged yet (`pending`).
    Pending,
    /// Already resubmitted or purged (`handled`), or one of the two (`resubmitted`,
    /// `purged`). Only append-only queues (Kafka) keep such records.
    Handled(Option<HandledAction>),
}

impl StatusFilter {
    fn matches(self, record: &DeadLetterRecord) -> bool {
        let handled = record.handled.as_ref().map(|h| h.action);
        match (self, record.context.last_status) {
            (StatusFilter::Exact(want), Some(s)) => s == want,
            (StatusFilter::Class(hundred), Some(s)) => s / 100 == hundred,
            (StatusFilter::None, None) => true,
            (StatusFilter::Pending, _) => handled.is_none(),
            (StatusFilter::Handled(None), _) => handled.is_some(),
            (StatusFilter::Handled(Some(want)), _) => handled == Some(want),
            _ => false,
        }
    }
}

impl FromStr for StatusFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let bad = || {
            format!(
                "{text:?} is not a status: give 400, 4xx or none (the app's answer), or \
                 pending, handled, resubmitted or purged"
            )
        };
        match lower.as_str() {
            "none" => return Ok(StatusFilter::None),
            "pending" => return Ok(StatusFilter::Pending),
            "handled" => return Ok(StatusFilter::Handled(None)),
            "resubmitted" => return Ok(StatusFilter::Handled(Some(HandledAction::Resubmitted))),
            "purged" => return Ok(StatusFilter::Handled(Some(HandledAction::Purged))),
            _ => {}
        }
        if let Some(hundred) = lower.strip_suffix("xx") {
            return match hundred.parse::<u16>() {
                Ok(h @ 1..=5) if hundred.len() == 1 => Ok(StatusFilter::Class(h)),
                _ => Err(bad()),
            };
        }
        match lower.parse::<u16>() {
            Ok(s @ 100..=599) => Ok(StatusFilter::Exact(s)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusFilter::Exact(s) => write!(f, "{s}"),
            StatusFilter::Class(h) => write!(f, "{h}xx"),
            StatusFilter::None => f.write_str("none"),
            StatusFilter::Pending => f.write_str("pending"),
            StatusFilter::Handled(None) => f.write_str("handled"),
            StatusFilter::Handled(Some(HandledAction::Resubmitted)) => f.write_str("resubmitted"),
            StatusFilter::Handled(Some(HandledAction::Purged)) => f.write_str("purged"),
        }
    }
}

/// An idempotency key as `--key` takes it: exact, or a prefix ending in `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPattern {
    /// This key.
    Exact(String),
    /// Keys starting with this.
    Prefix(String),
}

impl KeyPattern {
    fn matches(&self, key: &str) -> bool {
        match self {
            KeyPattern::Exact(k) => key == k,
            KeyPattern::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

impl FromStr for KeyPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.strip_suffix('*') {
            _ if text.is_empty() => Err("the key is empty".to_owned()),
            Some(prefix) if prefix.contains('*') => Err(format!(
                "{text:?}: `*` may only end a key pattern (order-*)"
            )),
            Some(prefix) => Ok(KeyPattern::Prefix(prefix.to_owned())),
            None if text.contains('*') => Err(format!(
                "{text:?}: `*` may only end a key pattern (order-*)"
            )),
            None => Ok(KeyPattern::Exact(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use outrigger_core::{Coordinates, DeadLetter, Message};

    use super::*;

    fn record(key: &str, status: Option<u16>, secs: u64) -> DeadLetterRecord {
        let t = UNIX_EPOCH + Duration::from_secs(secs);
        let mut m = Message::new(
            "{}",
            Coordinates::Amqp {
                queue: "orders.dlq".into(),
                delivery_tag: 1,
            },
        );
        let dl = DeadLetter {
            reason: format!("app answered HTTP {}", status.unwrap_or(0)),
            class: "4xx".into(),
            last_status: status,
            attempts: 1,
            first_failure: t,
            last_failure: t,
            key: Some(key.into()),
            response_excerpt: Default::default(),
        };
        let origin = Coordinates::Amqp {
            queue: "orders".into(),
            delivery_tag: 9,
        };
        for (n, v) in dl.context_headers(&origin) {
            m.headers.push(outrigger_core::Header::new(n, v));
        }
        DeadLetterRecord::from_message(key.into(), m)
    }

    #[test]
    fn every_set_filter_must_match() {
        let r = record("order-7", Some(422), 1_000);
        assert!(Filter::default().matches(&r));
        let at = |secs| Some(UNIX_EPOCH + Duration::from_secs(secs));
        let f = |f: Filter| f.matches(&r);
        assert!(f(Filter {
            since: at(1_000),
            until: at(1_000),
            ..Default::default()
        }));
        assert!(!f(Filter {
            since: at(1_001),
            ..Default::default()
        }));
        assert!(!f(Filter {
            until: at(999),
            ..Default::default()
        }));
        assert!(f(Filter {
            reason: Some("HTTP 422".into()),
            ..Default::default()
        }));
        assert!(f(Filter {
            reason: Some("4XX".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            reason: Some("timeout".into()),
            ..Default::default()
        }));
        let status = |s: &str| Filter {
            status: Some(s.parse().unwrap()),
            ..Default::default()
        };
        assert!(f(status("422")) && f(status("4xx")) && !f(status("5xx")) && !f(status("none")));
        assert!(f(status("pending")) && !f(status("handled")) && !f(status("purged")));
        let key = |k: &str| Filter {
            key: Some(k.parse().unwrap()),
            ..Default::default()
        };
        assert!(f(key("order-7")) && f(key("order-*")) && !f(key("order-")));
        let source = |s: &str| Filter {
            source: Some(s.into()),
            ..Default::default()
        };
        assert!(f(source("orders")) && !f(source("orders.dlq")));
    }

    #[test]
    fn handled_records_match_by_how_they_were_handled() {
        let mut r = record("order-7", Some(422), 1_000);
        r.handled = Some(outrigger_core::Handled {
            action: HandledAction::Resubmitted,
            at: UNIX_EPOCH,
            by: "ops".into(),
        });
        let status = |s: &str| Filter {
            status: Some(s.parse().unwrap()),
            ..Default::default()
        };
        // (status, matches this record, makes a pass include handled records)
        for (s, matches, wants_handled) in [
            ("handled", true, true),
            ("resubmitted", true, true),
            ("Purged", false, true),
            ("pending", false, false),
            ("422", true, false),
        ] {
            assert_eq!(status(s).matches(&r), matches, "{s}");
            assert_eq!(status(s).wants_handled(), wants_handled, "{s}");
        }
        assert_eq!(
            status("resubmitted").status.unwrap().to_string(),
            "resubmitted"
        );
    }

    #[test]
    fn times_are_utc_stamps_dates_or_durations_ago() {
        assert_eq!(
            parse_time("2024-05-01T12:00:00Z"),
            Ok(UNIX_EPOCH + Duration::from_secs(1_714_564_800))
        );
        assert_eq!(
            parse_time("2024-05-01"),
            Ok(UNIX_EPOCH + Duration::from_secs(1_714_521_600))
        );
        let two_hours_ago = parse_time("2h").unwrap();
        let elapsed = SystemTime::now().duration_since(two_hours_ago).unwrap();
        assert!(elapsed >= Duration::from_secs(7200) && elapsed < Duration::from_secs(7260));
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.contains("\"yesterday\"") && err.contains("2h"), "{err}");
    }

    #[test]
    fn bad_statuses_keys_and_rates_say_what_is_expected() {
        for bad in ["99x", "6xx", "42", "600", "abc", ""] {
            let err = bad.parse::<StatusFilter>().unwrap_err();
            assert!(err.contains("400, 4xx or none"), "{bad}: {err}");
        }
        assert!("a*b*".parse::<KeyPattern>().is_err());
        assert!("a*b".parse::<KeyPattern>().is_err());
        assert!("".parse::<KeyPattern>().is_err());
        assert_eq!(parse_rate("20"), Ok(20.0));
        assert_eq!(rate_period(20.0), Duration::from_millis(50));
        for bad in ["0", "-1", "fast", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
