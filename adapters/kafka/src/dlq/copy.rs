//! The record a resubmission publishes: the original again, plus the resubmission mark.
//!
//! Key and value are the original's, byte for byte, a null kept null. Headers are the
//! original's in their order, less the `outrigger-dlq-*` failure context and the mark of an
//! earlier resubmission, then the new mark. Nothing carries the attempt count (the dedup store
//! keeps it), so the copy starts over at attempt 1.

use bytes::Bytes;
use outrigger_core::dead_letter::headers::is_context;
use outrigger_core::dlq::resubmit_headers;
use outrigger_core::DeadLetterRecord;

use crate::record::Original;

/// Which parts of a dead letter were null rather than empty, which the core's view of a record
/// does not tell. Kept by the pass only for records that have any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Nulls {
    /// The value was null (a tombstone).
    value: bool,
    /// Which of the headers left once the context is off had a null value, by position.
    headers: Vec<usize>,
}

impl Nulls {
    /// The nulls of a dead letter as fetched; `None` when it has none.
    pub(crate) fn of(original: &Original) -> Option<Self> {
        let nulls = Self {
            value: original.value.is_none(),
            headers: original
                .headers
                .iter()
                .filter(|(name, _)| !is_context(name))
                .enumerate()
                .filter(|(_, (_, value))| value.is_none())
                .map(|(i, _)| i)
                .collect(),
        };
        (nulls != Self::default()).then_some(nulls)
    }
}

/// The copy of `record` with `mark` on: what a resubmission publishes.
pub(crate) fn copy(
    record: &DeadLetterRecord,
    nulls: Option<&Nulls>,
    mark: impl IntoIterator<Item = (&'static str, String)>,
) -> Original {
    let nulls = nulls.cloned().unwrap_or_default();
    let message = &record.message;
    let mut headers: Vec<(String, Option<Bytes>)> = message
        .headers
        .iter()
        .enumerate()
        .filter(|(_, h)| !resubmit_headers::is_mark(&h.name))
        .map(|(i, h)| {
            let value = (!nulls.headers.contains(&i)).then(|| h.value.clone());
            (h.name.clone(), value)
        })
        .collect();
    headers.extend(
        mark.into_iter()
            .map(|(name, value)| (name.to_owned(), Some(Bytes::from(value)))),
    );
    Original {
        key: message.key.clone(),
        value: (!nulls.value).then(|| message.payload.clone()),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use outrigger_core::{Coordinates, DeadLetter};

    use super::*;
    use crate::record;

    fn dead_letter(original_headers: Vec<(&str, Option<&'static [u8]>)>) -> Original {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let context = DeadLetter {
            reason: "app answered HTTP 400".into(),
            class: "4xx".into(),
            last_status: Some(400),
            attempts: 2,
            first_failure: at,
            last_failure: at,
            key: Some("order-1".into()),
            response_excerpt: Bytes::new(),
        };
        let origin = Coordinates::Kafka {
            topic: "orders".into(),
            partition: 1,
            offset: 9,
        };
        let mut headers: Vec<(String, Option<Bytes>)> = original_headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.map(Bytes::from_static)))
            .collect();
        headers.extend(
            context
                .context_headers(&origin)
                .into_iter()
                .map(|(n, v)| (n.to_owned(), Some(Bytes::from(v)))),
        );
        Original {
            key: Some(Bytes::from_static(b"order-1")),
            value: Some(Bytes::from_static(b"{\"id\":1}")),
            headers,
        }
    }

    fn record_of(original: &Original) -> DeadLetterRecord {
        let message = record::message("orders.dlq", 0, 5, Some(1), original);
        DeadLetterRecord::from_message("orders.dlq/0@5".into(), message)
    }

    fn mark() -> Vec<(&'static str, String)> {
        vec![
            (resubmit_headers::BY, "ops".to_owned()),
            (resubmit_headers::COUNT, "2".to_owned()),
        ]
    }

    #[test]
    fn the_copy_is_the_original_with_the_context_off_and_the_mark_on() {
        let original = dead_letter(vec![
            ("trace", Some(b"abc")),
            (resubmit_headers::COUNT, Some(b"1")),
            ("bin", Some(&[0xff, 0x00])),
        ]);
        let record = record_of(&original);
        assert_eq!(record.resubmissions, 1);
        let copy = copy(&record, Nulls::of(&original).as_ref(), mark());
        assert_eq!(copy.key, original.key);
        assert_eq!(copy.value, original.value);
        let headers: Vec<(&str, Option<&[u8]>)> = copy
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            headers,
            [
                ("trace", Some(&b"abc"[..])),
                ("bin", Some(&[0xff, 0x00][..])),
                (resubmit_headers::BY, Some(&b"ops"[..])),
                (resubmit_headers::COUNT, Some(&b"2"[..])),
            ]
        );
    }

    #[test]
    fn nulls_stay_null() {
        let mut original = dead_letter(vec![("a", Some(b"1")), ("empty", None), ("b", Some(b""))]);
        original.value = None;
        let nulls = Nulls::of(&original).expect("it has nulls");
        let copy = copy(&record_of(&original), Some(&nulls), []);
        assert_eq!(copy.value, None);
        assert_eq!(
            copy.headers,
            [
                ("a".to_owned(), Some(Bytes::from_static(b"1"))),
                ("empty".to_owned(), None),
                ("b".to_owned(), Some(Bytes::new())),
            ]
        );
        assert_eq!(Nulls::of(&dead_letter(vec![("a", Some(b"1"))])), None);
    }
}
