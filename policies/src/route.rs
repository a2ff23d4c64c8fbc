//! Which route a message takes: glob patterns over where it came from, its CloudEvents type
//! and its headers. Routes are tried in order; the first whose every condition holds wins.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use outrigger_core::Message;
use serde::Deserialize;

/// A glob: `orders` matches exactly, `order.*` by prefix, `order.*.v?` anywhere; `*` also
/// crosses dots and slashes, and `\*` is a literal star.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    glob: GlobMatcher,
}

impl Pattern {
    /// The pattern `text`, or why it is not one.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing; write `*` to match anything".into());
        }
        let glob = GlobBuilder::new(text)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("not a valid glob: {}", e.kind()))?;
        Ok(Self {
            text: text.to_owned(),
            glob: glob.compile_matcher(),
        })
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        self.glob.is_match(value)
    }

    /// Whether the pattern has no wildcard: it matches only its own text.
    pub fn is_literal(&self) -> bool {
        !self.text.contains(['*', '?', '[', '{', '\\'])
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

/// Written as a string; a bad glob is refused where it was written.
impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::new(&text).map_err(serde::de::Error::custom)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// What a message must look like to take a route. Every condition set must hold; a match
/// with none holds for every message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageMatch {
    /// The topic, queue or stream it was consumed from (a retry copy's origin).
    pub source: Option<Pattern>,
    /// Its CloudEvents type (`ce-type`, `ce_type`, ... header); a message without one fails.
    pub event_type: Option<Pattern>,
    /// Headers by name (any case): each must be present with a matching UTF-8 value.
    pub headers: Vec<(String, Pattern)>,
}

impl MessageMatch {
    /// Whether `message` meets every condition.
    pub fn matches(&self, message: &Message) -> bool {
        let source_ok = self
            .source
            .as_ref()
            .is_none_or(|p| p.matches(message.coordinates.source_name()));
        let type_ok = self
            .event_type
            .as_ref()
            .is_none_or(|p| message.ce_attribute("type").is_some_and(|t| p.matches(t)));
        source_ok
            && type_ok
            && self
                .headers
                .iter()
                .all(|(name, p)| message.header_str(name).is_some_and(|v| p.matches(v)))
    }

    /// Whether it holds for every message: no condition at all.
    pub fn is_catch_all(&self) -> bool {
        self.source.is_none() && self.event_type.is_none() && self.headers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_core::{Coordinates, Header};
    use proptest::prelude::*;

    fn message(queue: &str, headers: &[(&str, &str)]) -> Message {
        let mut m = Message::new(
            "{}",
            Coordinates::Memory {
                queue: queue.into(),
                sequence: 1,
            },
        );
        m.headers = headers
            .iter()
            .map(|(n, v)| Header::new(*n, v.as_bytes().to_vec()))
            .collect();
        m
    }

    fn p(text: &str) -> Pattern {
        Pattern::new(text).unwrap()
    }

    #[test]
    fn patterns_match_exactly_by_prefix_or_anywhere() {
        assert!(p("orders").matches("orders"));
        assert!(!p("orders").matches("orders.retry.1"));
        assert!(p("order.*").matches("order.refunded"));
        assert!(
            p("order.*").matches("order.refund/v2"),
            "* crosses separators"
        );
        assert!(!p("order.*").matches("orders"));
        assert!(p("order.*.v?").matches("order.created.v2"));
        assert!(p(r"a\*").matches("a*"));
        assert!(!p(r"a\*").matches("ab"));
        assert!(p("orders").is_literal());
        assert!(!p("order.*").is_literal());
    }

    #[test]
    fn a_bad_pattern_says_what_is_wrong() {
        assert!(Pattern::new("").unwrap_err().contains("write `*`"));
        let err = Pattern::new("order.[a").unwrap_err();
        assert!(err.starts_with("not a valid glob"), "{err}");
    }

    #[test]
    fn every_condition_must_hold() {
        let refunds = MessageMatch {
            source: Some(p("orders")),
            event_type: Some(p("order.refund*")),
            headers: vec![("x-tenant".into(), p("acme"))],
        };
        let refund = [("ce_type", "order.refunded"), ("X-Tenant", "acme")];
        assert!(refunds.matches(&message("orders", &refund)));
        assert!(!refunds.matches(&message("payments", &refund)), "source");
        assert!(
            !refunds.matches(&message(
                "orders",
                &[("ce-type", "order.created"), ("x-tenant", "acme")]
            )),
            "type"
        );
        assert!(
            !refunds.matches(&message("orders", &[("ce-type", "order.refunded")])),
            "a missing header fails its condition"
        );
        assert!(
            !refunds.matches(&message("orders", &[("x-tenant", "acme")])),
            "no type fails a type condition"
        );
        assert!(MessageMatch::default().matches(&message("anything", &[])));
        assert!(MessageMatch::default().is_catch_all());
        assert!(!refunds.is_catch_all());
    }

    proptest! {
        /// A literal pattern matches its own text and nothing else, whatever the text holds.
        #[test]
        fn a_literal_matches_only_itself(text in "[a-z0-9._/-]{1,16}", other in "[a-z0-9._/-]{1,16}") {
            let pattern = p(&text);
            prop_assert!(pattern.is_literal());
            prop_assert!(pattern.matches(&text));
            prop_assert_eq!(pattern.matches(&other), other == text);
        }

        /// `prefix*` matches exactly the values that start with the prefix.
        #[test]
        fn a_trailing_star_is_a_prefix(prefix in "[a-z.]{0,8}", value in "[a-z.]{0,12}") {
            let pattern = p(&format!("{prefix}*"));
            prop_assert_eq!(pattern.matches(&value), value.starts_with(&prefix));
        }
    }
}
