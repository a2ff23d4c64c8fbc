//! Idempotency-key templates: where in a message its dedup key comes from.
//!
//! A template is literal text with placeholders:
//! - `{header:NAME}`: a broker header (name case-insensitive, value UTF-8);
//! - `{json:/pointer}`: a field of the JSON payload (RFC 6901 pointer);
//! - `{ce:id}`: the CloudEvents id, from a binary-mode header (`ce-id`, `ce_id`,
//!   `cloudEvents:id`) or the `id` of a structured CloudEvent payload;
//! - `{message_id}`: the broker's message id;
//! - `{key}`: the broker key (Kafka key, routing key), as UTF-8.
//!
//! `{{` and `}}` stand for literal braces. Examples: `{header:idempotency-key}`, `{json:/order/id}`,
//! `{header:tenant}:{json:/id}`.

use std::fmt;
use std::str::FromStr;

use outrigger_core::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Header names that carry the CloudEvents id in binary mode: HTTP, Kafka, AMQP bindings.
const CE_ID_HEADERS: [&str; 3] = ["ce-id", "ce_id", "cloudEvents:id"];

/// The placeholders a template may use, for error messages.
const EXPECTED: &str = "expected {header:NAME}, {json:/pointer}, {ce:id}, {message_id} or {key}";

/// A parsed idempotency-key template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Header(String),
    Json(String),
    CloudEventId,
    MessageId,
    Key,
}

/// A template that does not parse; says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {at}: {why}")]
pub struct ParseKeyTemplateError {
    /// 1-based character position of the problem.
    pub at: usize,
    /// What is wrong.
    pub why: String,
}

/// Why a key could not be taken from a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The message lacks a header the template names.
    #[error("header {0:?} is missing")]
    HeaderMissing(String),
    /// The header is there but its value is not UTF-8 text.
    #[error("header {0:?} is not UTF-8 text")]
    HeaderNotText(String),
    /// The template reads the payload as JSON and it is not.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    /// The JSON pointer selects nothing.
    #[error("{0} is not in the payload")]
    PointerMissing(String),
    /// The JSON pointer selects `null`, which is no identity.
    #[error("{0} is null in the payload")]
    PointerNull(String),
    /// Neither a CloudEvents id header nor a structured CloudEvent id.
    #[error("no CloudEvents id: {0}")]
    NoCloudEventId(&'static str),
    /// The template uses `{message_id}` and the broker gave none.
    #[error("message has no broker message id")]
    NoMessageId,
    /// The template uses `{key}` and the message has no broker key.
    #[error("message has no broker key")]
    NoBrokerKey,
    /// The broker key is not UTF-8 text.
    #[error("broker key is not UTF-8 text")]
    BrokerKeyNotText,
    /// Every part was empty, and an empty key would merge unrelated messages.
    #[error("the key is empty")]
    Empty,
}

/// What makes a message's idempotency key, and what a message gets when nothing can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The template tried first.
    pub template: KeyTemplate,
    /// The template tried when the first one cannot be made.
    pub fallback: Option<KeyTemplate>,
    /// What happens when neither can.
    pub missing: MissingKey,
}

/// What a message from which no key can be made gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingKey {
    /// It cannot be delivered safely: the dead-letter queue, with the reason.
    #[default]
    DeadLetter,
    /// It is delivered without dedup.
    Deliver,
}

/// A message's key, or what to do without one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keyed {
    /// Deduplicate under this key.
    Key(String),
    /// Deliver without dedup (the policy says so); why there is no key.
    Unkeyed(KeyError),
    /// Do not deliver: why there is no key.
    Missing(KeyError),
}

impl KeyPolicy {
    /// A policy of one template, dead-lettering what it cannot key.
    pub fn of(template: KeyTemplate) -> Self {
        Self {
            template,
            fallback: None,
            missing: MissingKey::DeadLetter,
        }
    }

    /// The key of `msg`: the template's, else the fallback's, else what `missing` says.
    pub fn key(&self, msg: &Message) -> Keyed {
        let error = match self.template.extract(msg) {
            Ok(key) => return Keyed::Key(key),
            Err(e) => e,
        };
        if let Some(Ok(key)) = self.fallback.as_ref().map(|f| f.extract(msg)) {
            return Keyed::Key(key);
        }
        match self.missing {
            MissingKey::DeadLetter => Keyed::Missing(error),
            MissingKey::Deliver => Keyed::Unkeyed(error),
        }
    }
}

impl KeyTemplate {
    /// Whether the template reads the broker's message id (`{message_id}`).
    pub fn uses_message_id(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::MessageId))
    }

    /// Builds this message's key.
    pub fn extract(&self, msg: &Message) -> Result<String, KeyError> {
        // Parsed on first use and shared by every part, so a template that reads the payload
        // twice still parses it once.
        let mut json: Option<Result<Value, String>> = None;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Header(name) => out.push_str(header(msg, name)?),
                Part::Json(pointer) => {
                    let doc = payload_json(&mut json, msg)?;
                    let value = doc
                        .pointer(pointer)
                        .ok_or_else(|| KeyError::PointerMissing(pointer.clone()))?;
                    push_value(&mut out, value)
                        .ok_or_else(|| KeyError::PointerNull(pointer.clone()))?;
                }
                Part::CloudEventId => out.push_str(&cloud_event_id(&mut json, msg)?),
                Part::MessageId => {
                    out.push_str(msg.message_id.as_deref().ok_or(KeyError::NoMessageId)?)
                }
                Part::Key => {
                    let key = msg.key.as_ref().ok_or(KeyError::NoBrokerKey)?;
                    out.push_str(std::str::from_utf8(key).map_err(|_| KeyError::BrokerKeyNotText)?);
                }
            }
        }
        if out.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(out)
    }
}

fn header<'m>(msg: &'m Message, name: &str) -> Result<&'m str, KeyError> {
    let value = msg
        .header(name)
        .ok_or_else(|| KeyError::HeaderMissing(name.to_owned()))?;
    std::str::from_utf8(value).map_err(|_| KeyError::HeaderNotText(name.to_owned()))
}

/// The payload as JSON, parsing it on the first call only.
fn payload_json<'c>(
    cache: &'c mut Option<Result<Value, String>>,
    msg: &Message,
) -> Result<&'c Value, KeyError> {
    cache
        .get_or_insert_with(|| serde_json::from_slice(&msg.payload).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| KeyError::NotJson(e.clone()))
}

/// Appends a JSON value as key text; `None` for `null`.
fn push_value(out: &mut String, value: &Value) -> Option<()> {
    match value {
        Value::Null => return None,
        Value::String(s) => out.push_str(s),
        // Numbers, booleans and compact JSON for objects and arrays.
        other => out.push_str(&other.to_string()),
    }
    Some(())
}

fn cloud_event_id(
    cache: &mut Option<Result<Value, String>>,
    msg: &Message,
) -> Result<String, KeyError> {
    for name in CE_ID_HEADERS {
        if msg.header(name).is_some() {
            return header(msg, name).map(str::to_owned);
        }
    }
    let declared = msg.content_type.as_deref().is_some_and(|ct| {
        ct.trim_start()
            .get(.."application/cloudevents+json".len())
            .is_some_and(|p| p.eq_ignore_ascii_case("application/cloudevents+json"))
    });
    let doc = match payload_json(cache, msg) {
        Ok(doc) => doc,
        // A payload declared as a structured CloudEvent that is not JSON is a broken event.
        Err(e) if declared => return Err(e),
        Err(_) => return Err(KeyError::NoCloudEventId(NOT_STRUCTURED)),
    };
    let structured = declared || doc.get("specversion").is_some();
    if !structured {
        return Err(KeyError::NoCloudEventId(NOT_STRUCTURED));
    }
    match doc.get("id") {
        Some(Value::String(id)) => Ok(id.clone()),
        _ => Err(KeyError::NoCloudEventId(
            "the structured CloudEvent has no string \"id\"",
        )),
    }
}

const NOT_STRUCTURED: &str = "no ce-id header and the payload is not a structured CloudEvent";

impl FromStr for KeyTemplate {
    type Err = ParseKeyTemplateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |at: usize, why: String| ParseKeyTemplateError { at: at + 1, why };
        let chars: Vec<char> = text.chars().collect();
        let mut parts: Vec<Part> = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '{' if chars.get(i + 1) == Some(&'{') => {
                    literal.push('{');
                    i += 2;
                }
                '}' if chars.get(i + 1) == Some(&'}') => {
                    literal.push('}');
                    i += 2;
                }
                '}' => {
                    return Err(fail(
                        i,
                        "unmatched '}' (write '}}' for a literal brace)".into(),
                    ))
                }
                '{' => {
                    let next_brace = chars[i + 1..]
                        .iter()
                        .position(|&c| c == '}' || c == '{')
                        .map(|p| i + 1 + p);
                    let close = match next_brace {
                        Some(p) if chars[p] == '}' => p,
                        Some(p) => {
                            return Err(fail(
                                p,
                                "'{' inside a placeholder; placeholders do not nest".into(),
                            ))
                        }
                        None => {
                            return Err(fail(
                                i,
                                "'{' is never closed (write '{{' for a literal brace)".into(),
                            ))
                        }
                    };
                    let inner: String = chars[i + 1..close].iter().collect();
                    let part = placeholder(&inner).map_err(|why| fail(i, why))?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                    i = close + 1;
                }
                c => {
                    literal.push(c);
                    i += 1;
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| !matches!(p, Part::Literal(_))) {
            return Err(fail(
                0,
                format!("the template has no placeholder, so every message would get the same key; {EXPECTED}"),
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }
}

/// Parses the inside of one `{...}`.
fn placeholder(inner: &str) -> Result<Part, String> {
    let (kind, arg) = match inner.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (inner, None),
    };
    match (kind, arg) {
        ("message_id", None) => Ok(Part::MessageId),
        ("key", None) => Ok(Part::Key),
        ("ce", Some("id")) => Ok(Part::CloudEventId),
        ("ce", Some(attr)) => Err(format!(
            "{{ce:{attr}}} is not supported; only the CloudEvents id can be a key: {{ce:id}}"
        )),
        ("header", Some(name)) => {
            let name = name.trim();
            if name.is_empty() {
                return Err("{header:NAME} needs a header name".into());
            }
            Ok(Part::Header(name.to_owned()))
        }
        ("json", Some(pointer)) => check_pointer(pointer).map(|()| Part::Json(pointer.to_owned())),
        _ => Err(format!("unknown placeholder {{{inner}}}; {EXPECTED}")),
    }
}

/// Checks RFC 6901 syntax: starts with `/`, `~` only as `~0` or `~1`.
fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.starts_with('/') {
        return Err(format!(
            "JSON pointer {pointer:?} must start with '/', as in {{json:/order/id}}"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "JSON pointer {pointer:?} has a '~' not followed by 0 or 1 (write ~0 for '~', ~1 for '/')"
            ));
        }
    }
    Ok(())
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for KeyTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for KeyTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("invalid key template {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests;
