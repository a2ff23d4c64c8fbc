use bytes::Bytes;
use outrigger_core::{Coordinates, Header, Message};
use proptest::prelude::*;

use super::*;

fn msg(payload: &str) -> Message {
    Message::new(
        Bytes::copy_from_slice(payload.as_bytes()),
        Coordinates::Memory {
            queue: "orders".into(),
            sequence: 1,
        },
    )
}

fn with_header(mut m: Message, name: &str, value: &str) -> Message {
    m.headers
        .push(Header::new(name, Bytes::copy_from_slice(value.as_bytes())));
    m
}

fn t(s: &str) -> KeyTemplate {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    s.parse::<KeyTemplate>().unwrap_err().to_string()
}

#[test]
fn header_placeholder() {
    let m = with_header(msg("{}"), "Idempotency-Key", "abc-1");
    assert_eq!(
        t("{header:idempotency-key}").extract(&m),
        Ok("abc-1".into())
    );
    assert_eq!(
        t("{header:x-other}").extract(&m).unwrap_err().to_string(),
        r#"header "x-other" is missing"#
    );
    let mut bin = msg("{}");
    bin.headers
        .push(Header::new("k", Bytes::from_static(&[0xff, 0xfe])));
    assert_eq!(
        t("{header:k}").extract(&bin),
        Err(KeyError::HeaderNotText("k".into()))
    );
}

#[test]
fn json_placeholder_renders_values() {
    let m = msg(
        r#"{"order": {"id": "o-7", "n": 42, "ok": true, "tags": ["a", 1], "none": null, "e": ""}}"#,
    );
    assert_eq!(t("{json:/order/id}").extract(&m), Ok("o-7".into()));
    assert_eq!(t("{json:/order/n}").extract(&m), Ok("42".into()));
    assert_eq!(t("{json:/order/ok}").extract(&m), Ok("true".into()));
    assert_eq!(t("{json:/order/tags}").extract(&m), Ok(r#"["a",1]"#.into()));
    assert_eq!(t("{json:/order/tags/0}").extract(&m), Ok("a".into()));
    assert_eq!(
        t("{json:/order/none}").extract(&m).unwrap_err().to_string(),
        "/order/none is null in the payload"
    );
    assert_eq!(
        t("{json:/order/missing}")
            .extract(&m)
            .unwrap_err()
            .to_string(),
        "/order/missing is not in the payload"
    );
    assert_eq!(t("{json:/order/e}").extract(&m), Err(KeyError::Empty));
}

#[test]
fn json_pointer_escapes() {
    let m = msg(r#"{"a/b": {"c~d": 5}}"#);
    assert_eq!(t("{json:/a~1b/c~0d}").extract(&m), Ok("5".into()));
}

#[test]
fn non_json_payload_is_reported() {
    let e = t("{json:/id}").extract(&msg("not json")).unwrap_err();
    assert!(matches!(e, KeyError::NotJson(_)));
    assert!(e.to_string().starts_with("payload is not JSON: "), "{e}");
}

#[test]
fn combined_template() {
    let m = with_header(msg(r#"{"id": 9}"#), "tenant", "acme");
    assert_eq!(
        t("{header:tenant}:{json:/id}").extract(&m),
        Ok("acme:9".into())
    );
    assert_eq!(
        t("{{{header:tenant}}}-{json:/id}").extract(&m),
        Ok("{acme}-9".into())
    );
}

#[test]
fn cloud_event_id_from_headers() {
    for name in ["ce-id", "ce_id", "cloudEvents:id", "CE-ID"] {
        let m = with_header(msg("plain text"), name, "evt-1");
        assert_eq!(t("{ce:id}").extract(&m), Ok("evt-1".into()), "{name}");
    }
}

#[test]
fn cloud_event_id_from_structured_payload() {
    let m = msg(r#"{"specversion": "1.0", "id": "evt-2", "type": "t", "source": "s"}"#);
    assert_eq!(t("{ce:id}").extract(&m), Ok("evt-2".into()));

    let mut declared = msg(r#"{"id": "evt-3"}"#);
    declared.content_type = Some("application/cloudevents+json; charset=utf-8".into());
    assert_eq!(t("{ce:id}").extract(&declared), Ok("evt-3".into()));

    let plain = msg(r#"{"id": "not-an-event"}"#);
    assert_eq!(
        t("{ce:id}").extract(&plain).unwrap_err().to_string(),
        "no CloudEvents id: no ce-id header and the payload is not a structured CloudEvent"
    );
    let no_id = msg(r#"{"specversion": "1.0", "id": 5}"#);
    assert!(t("{ce:id}")
        .extract(&no_id)
        .unwrap_err()
        .to_string()
        .contains("no string \"id\""));
    assert!(matches!(
        t("{ce:id}").extract(&msg("binary")),
        Err(KeyError::NoCloudEventId(_))
    ));
}

#[test]
fn broker_message_id_and_key() {
    let mut m = msg("{}");
    assert_eq!(t("{message_id}").extract(&m), Err(KeyError::NoMessageId));
    assert_eq!(t("{key}").extract(&m), Err(KeyError::NoBrokerKey));
    m.message_id = Some("m-1".into());
    m.key = Some(Bytes::from_static(b"customer-4"));
    assert_eq!(
        t("{key}/{message_id}").extract(&m),
        Ok("customer-4/m-1".into())
    );
    m.key = Some(Bytes::from_static(&[0xc3]));
    assert_eq!(t("{key}").extract(&m), Err(KeyError::BrokerKeyNotText));
}

#[test]
fn empty_key_is_an_error() {
    let m = with_header(msg("{}"), "idempotency-key", "");
    assert_eq!(
        t("{header:idempotency-key}")
            .extract(&m)
            .unwrap_err()
            .to_string(),
        "the key is empty"
    );
}

#[test]
fn parse_errors_name_the_problem_and_position() {
    assert_eq!(
        err("ab{foo}"),
        "at character 3: unknown placeholder {foo}; expected {header:NAME}, {json:/pointer}, {ce:id}, {message_id} or {key}"
    );
    assert!(err("{json:order/id}")
        .starts_with("at character 1: JSON pointer \"order/id\" must start with '/'"));
    assert!(err("x{json:/a~2}").starts_with("at character 2: JSON pointer \"/a~2\" has a '~'"));
    assert!(err("{header:}").contains("needs a header name"));
    assert!(err("{ce:type}").contains("only the CloudEvents id"));
    assert!(err("{key").starts_with("at character 1: '{' is never closed"));
    assert!(err("{key}}").starts_with("at character 6: unmatched '}'"));
    assert!(err("{header:{key}}").starts_with("at character 9: '{' inside a placeholder"));
    assert!(err("order-1").contains("no placeholder"));
    assert!(err("").contains("no placeholder"));
    assert!(
        err("é{x}").starts_with("at character 2:"),
        "positions count characters"
    );
}

#[test]
fn display_gives_back_the_text() {
    for s in [
        "{header:idempotency-key}",
        "{json:/order/id}",
        "{header:tenant}:{json:/id}",
        "{{{key}}}",
    ] {
        assert_eq!(t(s).to_string(), s);
    }
}

#[test]
fn serde_goes_through_the_text() {
    let k: KeyTemplate = serde_json::from_str(r#""{json:/id}""#).unwrap();
    assert_eq!(k, t("{json:/id}"));
    assert_eq!(serde_json::to_string(&k).unwrap(), r#""{json:/id}""#);
    let e = serde_json::from_str::<KeyTemplate>(r#""{jsn:/id}""#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid key template \"{jsn:/id}\": at character 1: unknown placeholder"),
        "{e}"
    );
}

proptest! {
    #[test]
    fn parsing_never_panics(s in "[{}a-z:/~0-9_]{0,24}") {
        if let Ok(k) = s.parse::<KeyTemplate>() {
            prop_assert_eq!(k.to_string(), s.clone());
            prop_assert_eq!(k.to_string().parse::<KeyTemplate>(), Ok(k));
        }
    }

    #[test]
    fn header_values_come_back_verbatim(v in "[^\\x00]{1,40}") {
        let m = with_header(msg(""), "idempotency-key", &v);
        prop_assert_eq!(t("{header:idempotency-key}").extract(&m), Ok(v));
    }
}

#[test]
fn a_key_policy_falls_back_then_follows_what_it_says_for_a_missing_key() {
    let mut m = msg("{\"id\": 7}");
    m.message_id = None;
    let policy = KeyPolicy {
        template: "{message_id}".parse().unwrap(),
        fallback: Some("order-{json:/id}".parse().unwrap()),
        missing: MissingKey::DeadLetter,
    };
    assert_eq!(policy.key(&m), Keyed::Key("order-7".into()));
    let no_json = msg("not json");
    let mut bare = no_json.clone();
    bare.message_id = None;
    assert!(matches!(
        policy.key(&bare),
        Keyed::Missing(KeyError::NoMessageId)
    ));
    let deliver = KeyPolicy {
        missing: MissingKey::Deliver,
        ..policy
    };
    assert!(matches!(
        deliver.key(&bare),
        Keyed::Unkeyed(KeyError::NoMessageId)
    ));
}
