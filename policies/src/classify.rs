//! The classifier: turns the app's reply into an [`Action`].
//!
//! Precedence, first match wins:
//! 1. an `outrigger-action` response header naming a valid action (the app knows best);
//! 2. the user's rules, in the order written;
//! 3. the defaults: 2xx ack; 429 and 503 throttle; 408, 409, other 5xx, timeouts and
//!    connection errors retry; undeliverable messages, 1xx, 3xx and other 4xx dead-letter.
//!
//! A `Retry-After` response header (delta-seconds or HTTP-date) fills [`Verdict::retry_after`]
//! whichever step decided.

mod status;

use std::time::{Duration, SystemTime};

use outrigger_core::{Action, Reply, TransportErrorKind};
use serde::{Deserialize, Deserializer};

pub use status::{ParseStatusError, StatusRange};

/// The response header through which the app picks the action itself.
pub const ACTION_HEADER: &str = "outrigger-action";

/// The response header through which the app asks for a delay before the next attempt.
const RETRY_AFTER: &str = "retry-after";

/// Matches a response header by name (case-insensitive) and, optionally, exact value.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, compared case-insensitively.
    pub name: String,
    /// The exact value (surrounding whitespace ignored); `None` matches any value.
    #[serde(default)]
    pub value: Option<String>,
}

/// One classification rule: every matcher it sets must match, then `action` applies.
///
/// A rule that sets no matcher matches nothing; configuration validation rejects it (see
/// [`Rule::has_matcher`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// HTTP statuses that match (any range); empty means the status is not checked.
    #[serde(default, deserialize_with = "status::one_or_many")]
    pub status: Vec<StatusRange>,
    /// `true` matches attempts that timed out, `false` those that did not.
    #[serde(default)]
    pub timeout: Option<bool>,
    /// `true` matches attempts whose connection failed, `false` those whose did not.
    #[serde(default)]
    pub connection_error: Option<bool>,
    /// A response header that must be present (with this value, if given).
    #[serde(default)]
    pub header: Option<HeaderMatch>,
    /// Text the start of the response body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// `true` matches messages that could not be prepared for delivery, `false` the others.
    #[serde(default)]
    pub decode_error: Option<bool>,
    /// What to do with a matching reply.
    #[serde(deserialize_with = "action_from_str")]
    pub action: Action,
}

impl Rule {
    /// A rule that only sets `action`; set matchers with struct update syntax.
    pub fn new(action: Action) -> Self {
        Self {
            status: Vec::new(),
            timeout: None,
            connection_error: None,
            header: None,
            body_contains: None,
            decode_error: None,
            action,
        }
    }

    /// Whether the rule sets at least one matcher (one without any never matches).
    pub fn has_matcher(&self) -> bool {
        !self.status.is_empty()
            || self.timeout.is_some()
            || self.connection_error.is_some()
            || self.header.is_some()
            || self.body_contains.is_some()
            || self.decode_error.is_some()
    }

    /// Whether every matcher the rule sets matches `reply`.
    pub fn matches(&self, reply: &Reply) -> bool {
        if !self.has_matcher() {
            return false;
        }
        let response = match reply {
            Reply::Response(r) => Some(r),
            _ => None,
        };
        let transport = match reply {
            Reply::Failed(e) => Some(e.kind),
            _ => None,
        };
        let status_ok = self.status.is_empty()
            || reply
                .status()
                .is_some_and(|s| self.status.iter().any(|r| r.contains(s)));
        let flag_ok = |want: Option<bool>, is: bool| want.is_none_or(|w| w == is);
        let header_ok = self.header.as_ref().is_none_or(|h| {
            response.is_some_and(|r| {
                r.headers.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case(&h.name)
                        && h.value.as_ref().is_none_or(|want| v.trim() == want.trim())
                })
            })
        });
        let body_ok = self.body_contains.as_ref().is_none_or(|needle| {
            response.is_some_and(|r| contains(&r.body_excerpt, needle.as_bytes()))
        });
        status_ok
            && flag_ok(self.timeout, transport == Some(TransportErrorKind::Timeout))
            && flag_ok(
                self.connection_error,
                matches!(
                    transport,
                    Some(TransportErrorKind::Connection | TransportErrorKind::Connect)
                ),
            )
            && header_ok
            && body_ok
            && flag_ok(self.decode_error, matches!(reply, Reply::Undeliverable(_)))
    }
}

/// Which step of the classifier decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Matched {
    /// The app's `outrigger-action` header.
    ActionHeader,
    /// The user rule at this index.
    Rule(usize),
    /// The built-in defaults.
    Default,
}

/// The classifier's answer for one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What to do with the message.
    pub action: Action,
    /// The delay the app asked for with `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// Which step decided.
    pub matched: Matched,
}

/// User rules in order, then the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classifier {
    rules: Vec<Rule>,
}

impl Classifier {
    /// A classifier that tries `rules` in order before the defaults.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// The user rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Classifies one reply; an HTTP-date `Retry-After` is measured from now.
    pub fn classify(&self, reply: &Reply) -> Verdict {
        self.classify_at(reply, SystemTime::now())
    }

    /// Classifies one reply, measuring an HTTP-date `Retry-After` from `now`.
    pub fn classify_at(&self, reply: &Reply, now: SystemTime) -> Verdict {
        let response = match reply {
            Reply::Response(r) => Some(r),
            _ => None,
        };
        let retry_after = response
            .and_then(|r| r.header(RETRY_AFTER))
            .and_then(|v| parse_retry_after(v, now));
        // An unknown action from the app is ignored rather than trusted: the rules still give
        // a sound answer, and a typo in the app must not drop messages.
        let from_header = response
            .and_then(|r| r.header(ACTION_HEADER))
            .and_then(|v| v.parse::<Action>().ok());
        let (action, matched) = if let Some(action) = from_header {
            (action, Matched::ActionHeader)
        } else if let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(reply))
        {
            (rule.action, Matched::Rule(i))
        } else {
            (default_action(reply), Matched::Default)
        };
        Verdict {
            action,
            retry_after,
            matched,
        }
    }
}

/// The built-in classification, used when neither the app nor a rule decided.
pub fn default_action(reply: &Reply) -> Action {
    match reply {
        Reply::Response(r) => match r.status {
            200..=299 => Action::Ack,
            429 | 503 => Action::Throttle,
            408 | 409 | 500..=599 => Action::Retry,
            // 1xx, 3xx, other 4xx, and anything outside HTTP's range: the app will answer the
            // same way next time, so park the message where an operator can see it.
            _ => Action::DeadLetter,
        },
        Reply::Failed(_) => Action::Retry,
        Reply::Undeliverable(_) => Action::DeadLetter,
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date; a date in the past means no wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A delta too large for u64 is still a (very long) delay, not garbage.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn action_from_str<'de, D: Deserializer<'de>>(d: D) -> Result<Action, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests;
