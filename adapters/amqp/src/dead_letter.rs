//! The properties a dead-letter copy is published with.
//!
//! The copy keeps the original's properties and its header table with every original AMQP
//! type, and adds the failure context as long-string headers. Three properties would make the
//! copy fail or vanish, so they change, and the original value moves into a header:
//! - `expiration`: a per-message TTL would expire the dead letter in the DLQ. RabbitMQ's own
//!   dead-lettering drops it for the same reason. Kept in `outrigger-dlq-original-expiration`.
//! - `user-id`: RabbitMQ refuses a publish whose user-id is not the connection's user (and
//!   closes the channel). Kept as is when it is our user, else in `outrigger-dlq-original-user-id`.
//! - `delivery-mode`: always 2 (persistent), so a confirmed dead letter survives a broker
//!   restart; the sidecar acks the original on the strength of that confirm.

use lapin::BasicProperties;

use crate::headers::insert_text;

/// Header that keeps the original `expiration` property of a dead letter.
pub const ORIGINAL_EXPIRATION: &str = "outrigger-dlq-original-expiration";
/// Header that keeps the original `user-id` property when it is not the sidecar's user.
pub const ORIGINAL_USER_ID: &str = "outrigger-dlq-original-user-id";

/// AMQP delivery mode of a message written to disk by durable queues.
const PERSISTENT: u8 = 2;

/// Properties of the dead-letter copy of a message with `original` properties.
///
/// `context` are the failure-context headers; `publisher_user` is the user the sidecar is
/// connected as.
pub(crate) fn properties(
    original: &BasicProperties,
    context: Vec<(&'static str, String)>,
    publisher_user: &str,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    for (name, value) in context {
        insert_text(&mut headers, name, value);
    }

    let mut copy = carry_over(
        original,
        BasicProperties::default().with_delivery_mode(PERSISTENT),
    );
    if let Some(v) = original.expiration() {
        insert_text(&mut headers, ORIGINAL_EXPIRATION, v.to_string());
    }
    match original.user_id() {
        Some(v) if v.as_str() == publisher_user => copy = copy.with_user_id(v.clone()),
        Some(v) => insert_text(&mut headers, ORIGINAL_USER_ID, v.to_string()),
        None => {}
    }
    copy.with_headers(headers)
}

/// `into` with every property of `from` that a copy keeps as it is: all of them but the
/// delivery mode, expiration, user id and headers, which each kind of copy decides on.
///
/// BasicProperties has setters but no way to clear a field, so a copy is built anew, field
/// by field.
pub(crate) fn carry_over(from: &BasicProperties, mut into: BasicProperties) -> BasicProperties {
    if let Some(v) = from.content_type() {
        into = into.with_content_type(v.clone());
    }
    if let Some(v) = from.content_encoding() {
        into = into.with_content_encoding(v.clone());
    }
    if let Some(v) = from.priority() {
        into = into.with_priority(*v);
    }
    if let Some(v) = from.correlation_id() {
        into = into.with_correlation_id(v.clone());
    }
    if let Some(v) = from.reply_to() {
        into = into.with_reply_to(v.clone());
    }
    if let Some(v) = from.message_id() {
        into = into.with_message_id(v.clone());
    }
    if let Some(v) = from.timestamp() {
        into = into.with_timestamp(*v);
    }
    if let Some(v) = from.kind() {
        into = into.with_type(v.clone());
    }
    if let Some(v) = from.app_id() {
        into = into.with_app_id(v.clone());
    }
    if let Some(v) = from.cluster_id() {
        into = into.with_cluster_id(v.clone());
    }
    into
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, ByteArray, FieldTable};

    use super::*;

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
            .with_priority(5)
            .with_delivery_mode(1)
            .with_headers(headers)
    }

    #[test]
    fn keeps_properties_and_typed_headers_and_adds_context() {
        let p = properties(
            &original(),
            vec![("outrigger-dlq-reason", "bad".into())],
            "sidecar",
        );
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        assert_eq!(*p.priority(), Some(5));
        assert_eq!(*p.delivery_mode(), Some(PERSISTENT));
        let h = p.headers().as_ref().unwrap().inner();
        assert_eq!(h.get("retries"), Some(&AMQPValue::LongInt(3)));
        assert_eq!(
            h.get("sig"),
            Some(&AMQPValue::ByteArray(ByteArray::from(vec![0xde, 0xad])))
        );
        assert_eq!(
            h.get("outrigger-dlq-reason"),
            Some(&AMQPValue::LongString("bad".into()))
        );
    }

    #[test]
    fn moves_expiration_and_a_foreign_user_id_into_headers() {
        let p = properties(
            &original()
                .with_expiration("60000".into())
                .with_user_id("alice".into()),
            Vec::new(),
            "sidecar",
        );
        assert_eq!(*p.expiration(), None);
        assert_eq!(*p.user_id(), None);
        let h = p.headers().as_ref().unwrap().inner();
        assert_eq!(
            h.get(ORIGINAL_EXPIRATION),
            Some(&AMQPValue::LongString("60000".into()))
        );
        assert_eq!(
            h.get(ORIGINAL_USER_ID),
            Some(&AMQPValue::LongString("alice".into()))
        );
    }

    #[test]
    fn keeps_our_own_user_id() {
        let p = properties(
            &original().with_user_id("sidecar".into()),
            Vec::new(),
            "sidecar",
        );
        assert_eq!(p.user_id().as_ref().map(|s| s.as_str()), Some("sidecar"));
    }
}
