//! Handled markers: what was done to each dead letter, in a compacted topic beside the
//! dead-letter topic.
//!
//! A marker is a record keyed by the dead letter's id whose value is a small JSON object,
//! `{"action": "resubmitted", "at": "2024-05-01T12:00:00.000Z", "by": "ops@host", "to":
//! "orders"}`. The last marker of an id says where the dead letter stands:
//! - `resubmitting`: a copy is being published; it may or may not have been. The dead letter
//!   still counts as not handled, and resubmitting it again is safe (dedup absorbs the copy
//!   that may be out there).
//! - `resubmitted`: the broker confirmed the copy.
//! - `purged`: discarded by an operator.
//!
//! A tombstone (a null value) forgets an id's markers: producing one by hand puts a dead letter
//! back in the list. The topic is compacted, so it keeps one marker per id.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use outrigger_core::{Handled, HandledAction};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::record::Fetched;

/// The marker topic of a dead-letter topic is its name plus this.
pub const MARKER_TOPIC_SUFFIX: &str = ".handled";

/// The marker topic of `dead_letter_topic`.
pub(crate) fn marker_topic(dead_letter_topic: &str) -> String {
    format!("{dead_letter_topic}{MARKER_TOPIC_SUFFIX}")
}

/// What a marker says was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Handling {
    /// A copy is on its way: written before it is published.
    Resubmitting,
    /// The copy was confirmed.
    Resubmitted,
    /// Discarded.
    Purged,
}

impl Handling {
    /// As the marker spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Handling::Resubmitting => "resubmitting",
            Handling::Resubmitted => "resubmitted",
            Handling::Purged => "purged",
        }
    }
}

/// One marker's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub(crate) action: Handling,
    /// RFC 3339, milliseconds, UTC.
    pub(crate) at: String,
    pub(crate) by: String,
    /// Where the copy went, for resubmissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) to: Option<String>,
}

impl Marker {
    /// A marker of `action` by `by` at `at`.
    pub(crate) fn new(action: Handling, at: SystemTime, by: &str, to: Option<&str>) -> Self {
        Self {
            action,
            at: outrigger_core::dead_letter::rfc3339(at),
            by: by.to_owned(),
            to: to.map(str::to_owned),
        }
    }

    /// The record value.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a marker serializes")
    }

    /// How the dead letter was handled, when this marker says it was: a copy on its way
    /// (`resubmitting`) does not count.
    pub(crate) fn handled(&self) -> Option<Handled> {
        let action = match self.action {
            Handling::Resubmitting => return None,
            Handling::Resubmitted => HandledAction::Resubmitted,
            Handling::Purged => HandledAction::Purged,
        };
        Some(Handled {
            action,
            at: humantime::parse_rfc3339_weak(&self.at).unwrap_or(UNIX_EPOCH),
            by: self.by.clone(),
        })
    }
}

/// The last marker of every dead-letter id, as read from the marker topics.
#[derive(Debug, Default)]
pub(crate) struct Markers {
    last: HashMap<String, Marker>,
}

impl Markers {
    /// Takes in one marker record, read in offset order. Records that are not markers (no
    /// key, a value that does not parse) are skipped with a warning: only this tool writes
    /// there.
    pub(crate) fn read(&mut self, record: &Fetched) {
        let Some(id) = record
            .original
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
        else {
            warn!(at = %record.message.coordinates, "Skipped a handled marker without a text key.");
            return;
        };
        let Some(value) = &record.original.value else {
            self.last.remove(id);
            return;
        };
        match serde_json::from_slice::<Marker>(value) {
            Ok(marker) => {
                self.last.insert(id.to_owned(), marker);
            }
            Err(error) => {
                warn!(at = %record.message.coordinates, %error, "Skipped an unreadable handled marker.");
            }
        }
    }

    /// The last marker of `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Marker> {
        self.last.get(id)
    }

    /// Records that `id` now has `marker`.
    pub(crate) fn set(&mut self, id: &str, marker: Marker) {
        self.last.insert(id.to_owned(), marker);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::partition::TopicPartition;
    use crate::record::{self, Original};

    fn marker_record(offset: i64, key: &str, value: Option<&[u8]>) -> Fetched {
        let original = Original {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(Bytes::copy_from_slice),
            headers: Vec::new(),
        };
        Fetched {
            tp: TopicPartition {
                topic: "d.dlq.handled".into(),
                partition: 0,
            },
            offset,
            message: record::message("d.dlq.handled", 0, offset, None, &original),
            original,
            due: None,
        }
    }

    #[test]
    fn markers_round_trip_as_small_json() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let m = Marker::new(Handling::Resubmitted, at, "ops@host", Some("orders"));
        let json = String::from_utf8(m.to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"action":"resubmitted","at":"2023-11-14T22:13:20.123Z","by":"ops@host","to":"orders"}"#
        );
        let handled = m.handled().unwrap();
        assert_eq!(handled.action, HandledAction::Resubmitted);
        assert_eq!(handled.at, at);
        assert_eq!(handled.by, "ops@host");
        let purged = Marker::new(Handling::Purged, at, "ops", None);
        assert_eq!(
            String::from_utf8(purged.to_json()).unwrap(),
            r#"{"action":"purged","at":"2023-11-14T22:13:20.123Z","by":"ops"}"#
        );
        assert_eq!(
            Marker::new(Handling::Resubmitting, at, "ops", None).handled(),
            None
        );
    }

    #[test]
    fn the_last_marker_wins_and_a_tombstone_forgets() {
        let mut markers = Markers::default();
        let at = UNIX_EPOCH;
        let json = |a| Marker::new(a, at, "ops", None).to_json();
        markers.read(&marker_record(
            0,
            "d.dlq/0@1",
            Some(&json(Handling::Resubmitting)),
        ));
        assert_eq!(
            markers.get("d.dlq/0@1").unwrap().action,
            Handling::Resubmitting
        );
        markers.read(&marker_record(
            1,
            "d.dlq/0@1",
            Some(&json(Handling::Resubmitted)),
        ));
        markers.read(&marker_record(
            2,
            "d.dlq/0@2",
            Some(&json(Handling::Purged)),
        ));
        markers.read(&marker_record(3, "d.dlq/0@3", Some(b"not json")));
        assert_eq!(
            markers.get("d.dlq/0@1").unwrap().action,
            Handling::Resubmitted
        );
        assert_eq!(markers.get("d.dlq/0@2").unwrap().action, Handling::Purged);
        assert_eq!(markers.get("d.dlq/0@3"), None);
        markers.read(&marker_record(4, "d.dlq/0@2", None));
        assert_eq!(markers.get("d.dlq/0@2"), None);
    }
}
