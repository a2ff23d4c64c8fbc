//! `[[classify.rules]]`: what each reply of the app means for the message.

use outrigger_core::Action;
use outrigger_policies::{Classifier, HeaderMatch, Rule, StatusRange};
use serde::{Deserialize, Deserializer};

use super::de;

/// `[classify]`: rules tried in order before the built-in defaults (2xx ack; 429 and 503
/// throttle; 408, 409, other 5xx, timeouts and connection errors retry; other 4xx
/// dead-letter). An `outrigger-action` response header from the app wins over both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    /// `[[classify.rules]]`, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl ClassifyConfig {
    /// The classifier these rules describe.
    pub fn classifier(&self) -> Classifier {
        Classifier::new(self.rules.iter().map(RuleConfig::to_rule).collect())
    }
}

/// One `[[classify.rules]]` entry: every matcher it sets must match, then `action` applies.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// HTTP statuses: `404`, a class `"4xx"`, a range `"400-499"`, or a list of those.
    #[serde(default)]
    pub status: Option<StatusSpec>,
    /// `true` matches attempts that timed out (`false`: those that did not).
    #[serde(default)]
    pub timeout: Option<bool>,
    /// `true` matches attempts that could not connect to the app (`false`: those that did).
    #[serde(default)]
    pub connection_error: Option<bool>,
    /// A response header that must be present: `"name"`, or `"name=value"` for an exact value.
    #[serde(default)]
    pub header: Option<String>,
    /// Text the start of the response body (`delivery.response_excerpt`) must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// `true` matches messages that could not be prepared for delivery (`false`: the others).
    #[serde(default)]
    pub decode_error: Option<bool>,
    /// `ack`, `retry`, `throttle` (retry later without spending an attempt), `dead-letter`
    /// or `drop`.
    #[serde(deserialize_with = "de::action")]
    pub action: Action,
}

impl RuleConfig {
    /// Whether the rule sets at least one matcher; one without any would never match.
    pub fn has_matcher(&self) -> bool {
        self.to_rule().has_matcher()
    }

    /// The `header` matcher split into name and optional exact value.
    pub fn header_match(&self) -> Option<HeaderMatch> {
        self.header.as_ref().map(|h| match h.split_once('=') {
            Some((name, value)) => HeaderMatch {
                name: name.trim().to_owned(),
                value: Some(value.trim().to_owned()),
            },
            None => HeaderMatch {
                name: h.trim().to_owned(),
                value: None,
            },
        })
    }

    /// The rule as the classifier evaluates it.
    pub fn to_rule(&self) -> Rule {
        Rule {
            status: self
                .status
                .as_ref()
                .map(|s| s.ranges.clone())
                .unwrap_or_default(),
            timeout: self.timeout,
            connection_error: self.connection_error,
            header: self.header_match(),
            body_contains: self.body_contains.clone(),
            decode_error: self.decode_error,
            action: self.action,
        }
    }
}

/// The statuses a rule matches, written as one pattern or a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSpec {
    /// The ranges; a status matches if any contains it.
    pub ranges: Vec<StatusRange>,
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::status_ranges(d).map(|ranges| StatusSpec { ranges })
    }
}
