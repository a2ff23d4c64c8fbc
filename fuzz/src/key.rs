//! Idempotency-key templates (`{json:/order/id}`, `{header:tenant}:{message_id}`) parsed
//! from any text and extracted from any message.
//!
//! Input: NUL-separated fields: the template, the payload, the content type, the message id,
//! the broker key, then headers `name=value`. A field that is not there is not set.
//!
//! Properties: no panic; a template prints as text that parses to the same template; a key,
//! when one is made, is not empty and is the one a key policy of that template gives; a
//! message without a broker id is keyed without it unless the template says it uses it.

use bytes::Bytes;
use outrigger_core::{Coordinates, Message};
use outrigger_policies::{KeyError, KeyPolicy, KeyTemplate, Keyed};

use super::input::{fields, header, text};

/// Runs one input.
pub fn run(data: &[u8]) {
    let parts = fields(data);
    let Ok(template) = text(parts[0]).parse::<KeyTemplate>() else {
        return;
    };
    assert_eq!(template.to_string().parse().as_ref(), Ok(&template));

    let field = |i: usize| parts.get(i).copied();
    let mut message = Message::new(
        Bytes::copy_from_slice(field(1).unwrap_or_default()),
        Coordinates::Memory {
            queue: "orders".into(),
            sequence: 1,
        },
    );
    message.content_type = field(2).map(text);
    message.message_id = field(3).map(text);
    message.key = field(4).map(Bytes::copy_from_slice);
    message.headers = parts.iter().skip(5).map(|f| header(f)).collect();

    let extracted = template.extract(&message);
    match &extracted {
        Ok(key) => assert!(!key.is_empty(), "an empty key"),
        Err(KeyError::NoMessageId) => assert!(template.uses_message_id()),
        Err(_) => {}
    }
    let policy = KeyPolicy::of(template.clone());
    match (policy.key(&message), extracted) {
        (Keyed::Key(a), Ok(b)) => assert_eq!(a, b),
        (Keyed::Missing(a), Err(b)) => assert_eq!(a, b),
        (keyed, extracted) => panic!("the policy gave {keyed:?}, the template {extracted:?}"),
    }
    if !template.uses_message_id() {
        message.message_id = None;
        assert_ne!(template.extract(&message), Err(KeyError::NoMessageId));
    }
}
