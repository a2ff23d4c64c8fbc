//! The properties a resubmitted copy of a dead letter is published with.
//!
//! The copy is the dead letter's properties and typed header table with the failure context
//! taken off and the resubmission mark put on, so the message looks as it did when it was first
//! consumed, plus who sent it back, when, and how many times:
//! - every `outrigger-dlq-*` header goes, and `x-delivery-count`, which a quorum
//!   dead-letter queue adds each time a record is handed back and which would otherwise follow
//!   the message into its source queue;
//! - `expiration`, moved into a header on dead-lettering, comes back as the property;
//! - `user-id`, moved into a header because it was not the sidecar's user, comes back only if
//!   it is the user resubmitting (RabbitMQ refuses a foreign one); otherwise it stays in its
//!   header;
//! - delivery mode stays persistent: the dead letter was acked on the strength of the
//!   confirm, and so is the record now.

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use outrigger_core::dead_letter::headers::is_context;

use crate::dead_letter::{carry_over, ORIGINAL_EXPIRATION, ORIGINAL_USER_ID};
use crate::headers::insert_text;

/// The header a quorum queue counts redeliveries in; the broker's, not the message's.
pub(crate) const DELIVERY_COUNT: &str = "x-delivery-count";

/// Properties of the resubmitted copy of a dead letter with properties `dead`.
///
/// `mark` are the resubmission headers; `publisher_user` the user the tool is connected as.
pub(crate) fn properties(
    dead: &BasicProperties,
    mark: impl IntoIterator<Item = (&'static str, String)>,
    publisher_user: &str,
) -> BasicProperties {
    let mut table: BTreeMap<ShortString, AMQPValue> = dead
        .headers()
        .as_ref()
        .map(|t| t.inner().clone())
        .unwrap_or_default();
    let expiration = take_text(&mut table, ORIGINAL_EXPIRATION);
    let user_id = take_text(&mut table, ORIGINAL_USER_ID);
    table.retain(|name, _| {
        !is_context(name.as_str()) && !name.as_str().eq_ignore_ascii_case(DELIVERY_COUNT)
    });
    let mut headers = FieldTable::from(table);
    for (name, value) in mark {
        insert_text(&mut headers, name, value);
    }

    let mut copy = carry_over(dead, BasicProperties::default());
    if let Some(v) = dead.delivery_mode() {
        copy = copy.with_delivery_mode(*v);
    }
    if let Some(v) = expiration.or_else(|| dead.expiration().as_ref().map(|v| v.to_string())) {
        copy = copy.with_expiration(v.into());
    }
    // The sidecar that dead-lettered it may have kept a user-id of its own user, which need
    // not be the user resubmitting.
    match user_id.or_else(|| dead.user_id().as_ref().map(|v| v.to_string())) {
        Some(user) if user == publisher_user => copy = copy.with_user_id(user.into()),
        Some(user) => insert_text(&mut headers, ORIGINAL_USER_ID, user),
        None => {}
    }
    copy.with_headers(headers)
}

/// Removes a header and returns its text, when it is text.
fn take_text(table: &mut BTreeMap<ShortString, AMQPValue>, name: &str) -> Option<String> {
    match table.remove(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::ByteArray;

    use super::*;
    use crate::dead_letter;

    fn original() -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("retries".into(), AMQPValue::LongInt(3));
        headers.insert(
            "sig".into(),
            AMQPValue::ByteArray(ByteArray::from(vec![0xde, 0xad])),
        );
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_expiration("60000".into())
            .with_user_id("alice".into())
            .with_headers(headers)
    }

    fn dead(user: &str) -> BasicProperties {
        let context = vec![
            ("outrigger-dlq-reason", "app answered HTTP 400".to_owned()),
            ("outrigger-dlq-attempts", "1".to_owned()),
        ];
        let mut p = dead_letter::properties(&original(), context, user);
        let mut h = p.headers().clone().unwrap();
        h.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(2));
        p = p.with_headers(h);
        p
    }

    fn mark() -> Vec<(&'static str, String)> {
        vec![("outrigger-resubmit-count", "1".to_owned())]
    }

    #[test]
    fn restores_the_original_and_adds_the_mark() {
        let p = properties(&dead("sidecar"), mark(), "alice");
        assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), Some("60000"));
        assert_eq!(p.user_id().as_ref().map(|s| s.as_str()), Some("alice"));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        let h = p.headers().as_ref().unwrap().inner();
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["outrigger-resubmit-count", "retries", "sig"]);
        assert_eq!(h.get("retries"), Some(&AMQPValue::LongInt(3)));
        assert_eq!(
            h.get("sig"),
            Some(&AMQPValue::ByteArray(ByteArray::from(vec![0xde, 0xad])))
        );
    }

    #[test]
    fn a_user_id_of_the_sidecar_moves_aside_for_another_operator() {
        let p = properties(&dead("alice"), mark(), "operator");
        assert_eq!(*p.user_id(), None);
        let h = p.headers().as_ref().unwrap().inner();
        assert_eq!(
            h.get(ORIGINAL_USER_ID),
            Some(&AMQPValue::LongString("alice".into()))
        );
        assert_eq!(*p.delivery_mode(), Some(2));
    }

    #[test]
    fn a_foreign_user_id_stays_in_its_header() {
        let p = properties(&dead("sidecar"), mark(), "operator");
        assert_eq!(*p.user_id(), None);
        let h = p.headers().as_ref().unwrap().inner();
        assert_eq!(
            h.get(ORIGINAL_USER_ID),
            Some(&AMQPValue::LongString("alice".into()))
        );
    }
}
