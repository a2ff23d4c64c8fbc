//! `[[routes]]`: a policy per kind of message. Routes are tried in order; the first whose
//! `match` holds decides what happens to the message, with its own delivery URL, dedup key,
//! classify rules, retry budget and ordering, and the top-level policy for what it leaves out.
//! A message no route matches takes the top-level policy, or `default_action`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::Uri;
use outrigger_core::{KeyPath, Problem, Problems};
use outrigger_policies::{BackoffKind, KeyTemplate, MessageMatch, Pattern};
use serde::{Deserialize, Deserializer};

use super::{de, ClassifyConfig, Config, OnMissingKey, OrderingConfig};

/// The name of the top-level policy's route, in metrics and logs.
pub const DEFAULT_ROUTE: &str = "default";

/// One `[[routes]]` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Its name: the `route` label of `outrigger_messages_settled_total`, so keep it short and
    /// fixed (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// `[routes.match]`: what a message must look like to take it; every condition set must
    /// hold. Without one, the route takes every message that reaches it.
    #[serde(default, rename = "match")]
    pub matching: MatchConfig,
    /// `deliver` (the default), `drop` (acked without delivery, counted as `dropped`) or
    /// `dead_letter` (straight to the dead-letter destination, class `route`).
    #[serde(default)]
    pub action: RouteAction,
    /// `[routes.delivery]`: where its messages go.
    #[serde(default)]
    pub delivery: RouteDelivery,
    /// `[routes.dedup]`: how its idempotency key is made (in the one dedup store).
    #[serde(default)]
    pub dedup: RouteDedup,
    /// `[routes.retry]`: its attempt budget and backoff (`mode` and `tiers` stay the policy's).
    #[serde(default)]
    pub retry: RouteRetry,
    /// `[[routes.classify.rules]]`: tried before the top-level rules, then the defaults.
    #[serde(default)]
    pub classify: ClassifyConfig,
    /// `[routes.ordering]`: what keeps its order.
    #[serde(default)]
    pub ordering: OrderingConfig,
    /// `[routes.dead_letter]`: where its dead letters go.
    #[serde(default)]
    pub dead_letter: RouteDeadLetter,
}

/// `[routes.dead_letter]`: the fields of `[dead_letter]` a route may set (`declare` stays the
/// policy's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDeadLetter {
    /// The queue (topic, stream, subject) the dead letters of its messages go to: exhausted
    /// retries, permanent failures, and `action = "dead_letter"`. Declared and checked at
    /// startup like `dead_letter.destination`; default: the top-level destination.
    #[serde(default)]
    pub destination: Option<String>,
}

/// `[routes.match]`: glob patterns (`orders`, `order.*`, `order.*.v?`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// The topic, queue or stream the message came from.
    #[serde(default)]
    pub source: Option<Pattern>,
    /// The CloudEvents type the producer set (`ce-type`, `ce_type`, ... header).
    #[serde(default, rename = "type")]
    pub event_type: Option<Pattern>,
    /// Headers that must be present, by name (any case), with a matching value.
    #[serde(default)]
    pub headers: BTreeMap<String, Pattern>,
}

impl MatchConfig {
    /// The matcher the pipeline runs.
    pub fn matcher(&self) -> MessageMatch {
        MessageMatch {
            source: self.source.clone(),
            event_type: self.event_type.clone(),
            headers: self
                .headers
                .iter()
                .map(|(name, p)| (name.clone(), p.clone()))
                .collect(),
        }
    }
}

/// What happens to the messages a route takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Deliver them under the route's policy.
    #[default]
    Deliver,
    /// Ack them without delivery (an event type nobody handles any more).
    Drop,
    /// Dead-letter them without delivery, for an operator to look at.
    #[serde(alias = "dead-letter")]
    DeadLetter,
}

impl RouteAction {
    /// As written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteAction::Deliver => "deliver",
            RouteAction::Drop => "drop",
            RouteAction::DeadLetter => "dead_letter",
        }
    }
}

/// `[routes.delivery]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDelivery {
    /// Another URL for its messages.
    #[serde(default, deserialize_with = "some_uri")]
    pub url: Option<Uri>,
    /// Another path on `delivery.url`'s host (`/refunds`): the usual way to reach another
    /// handler of the same app.
    #[serde(default)]
    pub path: Option<String>,
    /// Another attempt timeout; shorter than `dedup.lease`.
    #[serde(default, deserialize_with = "de::some_duration")]
    pub timeout: Option<Duration>,
}

/// `[routes.dedup]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDedup {
    /// Its idempotency key template.
    #[serde(default)]
    pub key: Option<KeyTemplate>,
    /// A second template, tried when `key` cannot be made.
    #[serde(default)]
    pub fallback_key: Option<KeyTemplate>,
    /// What a message without a key gets.
    #[serde(default)]
    pub on_missing_key: Option<OnMissingKey>,
}

/// `[routes.retry]`: the fields of `[retry]` a route may set.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRetry {
    /// Attempts in total, the first included.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// No retry starts once the message is this old.
    #[serde(default, deserialize_with = "de::some_duration")]
    pub max_age: Option<Duration>,
    /// `constant`, `linear` or `exponential`.
    #[serde(default)]
    pub backoff: Option<BackoffKind>,
    /// The delay before the second attempt.
    #[serde(default, deserialize_with = "de::some_duration")]
    pub initial: Option<Duration>,
    /// The longest delay.
    #[serde(default, deserialize_with = "de::some_duration")]
    pub max: Option<Duration>,
    /// Growth factor for `exponential`.
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// Fraction of each delay that is randomised.
    #[serde(default)]
    pub jitter: Option<f64>,
}

fn some_uri<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uri>, D::Error> {
    de::uri(d).map(Some)
}

impl RouteConfig {
    /// The whole policy as this route's messages see it: the top-level policy with what the
    /// route sets put in.
    pub fn effective(&self, top: &Config) -> Config {
        let mut c = top.clone();
        let d = &self.delivery;
        if let Some(url) = &d.url {
            c.delivery.url = url.clone();
        } else if let Some(url) = d
            .path
            .as_deref()
            .and_then(|p| with_path(&top.delivery.url, p))
        {
            c.delivery.url = url;
        }
        if let Some(timeout) = d.timeout {
            c.delivery.timeout = timeout;
        }
        let k = &self.dedup;
        if let Some(key) = &k.key {
            c.dedup.key = key.clone();
            // A route's own key does not inherit the top-level fallback of another key.
            c.dedup.fallback_key = None;
        }
        if let Some(fallback) = &k.fallback_key {
            c.dedup.fallback_key = Some(fallback.clone());
        }
        if let Some(missing) = k.on_missing_key {
            c.dedup.on_missing_key = missing;
        }
        let r = &self.retry;
        let retry = &mut c.retry;
        retry.max_attempts = r.max_attempts.unwrap_or(retry.max_attempts);
        retry.max_age = r.max_age.unwrap_or(retry.max_age);
        retry.backoff = r.backoff.unwrap_or(retry.backoff);
        retry.initial = r.initial.unwrap_or(retry.initial);
        retry.max = r.max.unwrap_or(retry.max);
        retry.multiplier = r.multiplier.unwrap_or(retry.multiplier);
        retry.jitter = r.jitter.unwrap_or(retry.jitter);
        c.classify.rules = self
            .classify
            .rules
            .iter()
            .chain(&top.classify.rules)
            .cloned()
            .collect();
        c.ordering = self.ordering.over(&top.ordering);
        if let Some(destination) = &self.dead_letter.destination {
            c.dead_letter.destination = Some(destination.clone());
        }
        c
    }

    /// The settings the route writes itself, as paths of the top-level policy: a problem of
    /// the effective policy at one of them is the route's.
    fn overrides(&self) -> Vec<KeyPath> {
        let mut set = Vec::new();
        let mut on = |written: bool, path: &str| {
            if written {
                set.push(KeyPath::parse(path));
            }
        };
        let (d, k, r) = (&self.delivery, &self.dedup, &self.retry);
        on(d.url.is_some(), "delivery.url");
        on(d.timeout.is_some(), "delivery.timeout");
        on(k.key.is_some(), "dedup.key");
        on(k.fallback_key.is_some(), "dedup.fallback_key");
        on(k.on_missing_key.is_some(), "dedup.on_missing_key");
        on(r.max_attempts.is_some(), "retry.max_attempts");
        on(r.max_age.is_some(), "retry.max_age");
        on(r.backoff.is_some(), "retry.backoff");
        on(r.initial.is_some(), "retry.initial");
        on(r.max.is_some(), "retry.max");
        on(r.multiplier.is_some(), "retry.multiplier");
        on(r.jitter.is_some(), "retry.jitter");
        for (path, written) in self.ordering.written() {
            on(written, path);
        }
        for i in 0..self.classify.rules.len() {
            set.push(KeyPath::parse("classify.rules").index(i));
        }
        set
    }

    /// Whether it sets anything a delivery would use.
    fn sets_delivery_policy(&self) -> bool {
        !self.overrides().is_empty() || self.delivery.path.is_some()
    }
}

/// `base` with its path and query replaced by `path`, if `path` is one.
fn with_path(base: &Uri, path: &str) -> Option<Uri> {
    let path: PathAndQuery = path.parse().ok()?;
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).ok()
}

/// Every problem of the routes: their names, their matches, and what each route's own
/// settings make of the policy (checked as the top-level policy is, reported at the route).
pub(crate) fn validate(c: &Config, per_route: impl Fn(&Config) -> Vec<Problem>, v: &mut Problems) {
    let mut names = HashSet::new();
    let mut catch_all: Option<usize> = None;
    let sources = c.source.names();
    for (i, route) in c.routes.iter().enumerate() {
        let at = |key: &str| KeyPath::parse("routes").index(i).key(key);
        let name = &route.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
        {
            v.at_paths(
                vec![at("name")],
                "a route's name is a metric label: letters, digits, `_`, `-` and `.` only",
            );
        } else if name == DEFAULT_ROUTE {
            v.at_paths(
                vec![at("name")],
                "`default` names the top-level policy's route; choose another name",
            );
        } else if !names.insert(name.as_str()) {
            v.at_paths(
                vec![at("name")],
                format!("two routes are named {name:?}; each needs its own name"),
            );
        }
        if route.ordering.max_waiting.is_some() {
            v.at_paths(
                vec![at("ordering").key("max_waiting")],
                "bounds every key's waiting messages together: set it in [ordering], not in a route",
            );
        }
        if let Some(first) = catch_all {
            v.at_paths(
                vec![at("match"), KeyPath::parse("routes").index(i)],
                format!(
                    "never taken: routes[{first}] before it has no `match` and takes every message"
                ),
            );
        } else if route.matching.matcher().is_catch_all() {
            catch_all = Some(i);
        }
        if let Some(source) = &route.matching.source {
            if !sources.iter().any(|s| source.matches(s)) {
                let path = at("match").key("source");
                v.at_paths(
                    vec![path],
                    format!(
                        "matches none of the sources this sidecar consumes ({})",
                        sources.join(", ")
                    ),
                );
            }
        }
        for name in route.matching.headers.keys() {
            if name.trim().is_empty() {
                let path = at("match").key("headers");
                v.at_paths(vec![path], "a header name must not be empty");
            }
        }
        let d = &route.delivery;
        if let Some(path) = &d.path {
            if d.url.is_some() {
                v.at_paths(
                    vec![at("delivery").key("path")],
                    "set `url` or `path`, not both: `path` is a path on delivery.url",
                );
            } else if !path.starts_with('/') || path.parse::<PathAndQuery>().is_err() {
                v.at_paths(
                    vec![at("delivery").key("path")],
                    "expected a path like /refunds (it replaces delivery.url's path)",
                );
            }
        }
        if route.action != RouteAction::Deliver && route.sets_delivery_policy() {
            v.at_paths(
                vec![at("action")],
                format!(
                    "a route whose action is {} delivers nothing: its delivery, dedup, retry, \
                     classify and ordering settings would never apply",
                    route.action.as_str()
                ),
            );
        }
        if let Some(destination) = &route.dead_letter.destination {
            let path = at("dead_letter").key("destination");
            if destination.trim().is_empty() {
                v.at_paths(
                    vec![path],
                    "must not be empty; leave it out for the top-level dead-letter destination",
                );
            } else if route.action == RouteAction::Drop {
                v.at_paths(
                    vec![path, at("action")],
                    "a route whose action is drop dead-letters nothing: its dead-letter \
                     destination would never be used",
                );
            }
        }
        if route.action == RouteAction::Deliver {
            let overrides = route.overrides();
            for problem in per_route(&route.effective(c)) {
                let paths: Vec<KeyPath> = problem
                    .paths
                    .iter()
                    .filter(|p| overrides.iter().any(|o| o.contains(p)))
                    .map(|p| {
                        let mut inside = KeyPath::parse("routes").index(i);
                        inside.0.extend(p.0.iter().cloned());
                        inside
                    })
                    .collect();
                // A problem only of settings the route inherits is the top-level policy's,
                // reported there once.
                if !paths.is_empty() {
                    v.at_paths(paths, problem.message);
                }
            }
        }
    }
}

/// Which route a sample message would take, in a sentence, for `outrigger check --explain`.
/// `sample` is `source=orders,type=order.refunded,header.x-tenant=acme`: each part optional
/// (`source` defaults to the first source the sidecar consumes).
pub fn explain(c: &Config, sample: &str) -> Result<String, String> {
    let mut source = None;
    let mut headers = Vec::new();
    for part in sample.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected key=value, like type=order.created"))?;
        match key.trim() {
            "source" => source = Some(value.to_owned()),
            "type" => headers.push(outrigger_core::Header::new("ce-type", value.to_owned())),
            other => match other
                .strip_prefix("header.")
                .or_else(|| other.strip_prefix("header:"))
            {
                Some(name) if !name.is_empty() => {
                    headers.push(outrigger_core::Header::new(name, value.to_owned()))
                }
                _ => {
                    return Err(format!(
                        "{key:?}: expected source, type or header.NAME (like header.x-tenant)"
                    ))
                }
            },
        }
    }
    let source = source.unwrap_or_else(|| c.source.name());
    let mut message = outrigger_core::Message::new(
        bytes::Bytes::new(),
        outrigger_core::Coordinates::Memory {
            queue: source.clone(),
            sequence: 1,
        },
    );
    message.headers = headers;
    let taken = c
        .routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.matching.matcher().matches(&message));
    let (which, action, policy) = match taken {
        Some((i, r)) => (
            format!("route {:?} (routes[{i}])", r.name),
            r.action,
            r.effective(c),
        ),
        None => {
            let which = match (c.routes.is_empty(), c.default_action) {
                (true, _) => "the top-level policy".to_owned(),
                (false, RouteAction::Deliver) => "no route, so the top-level policy".to_owned(),
                (false, action) => {
                    format!("no route, so default_action {:?}", action.as_str())
                }
            };
            (which, c.default_action, c.clone())
        }
    };
    let fate = match action {
        RouteAction::Deliver => {
            let dedup = if policy.dedup.enabled {
                format!("dedup on {}", policy.dedup.key)
            } else {
                "dedup off".to_owned()
            };
            let rules = match policy.classify.rules.len() {
                1 => "1 classify rule".to_owned(),
                n => format!("{n} classify rules"),
            };
            let mut ordering = policy.ordering.mode(&policy.source).to_string();
            if let Some(seq) = policy.ordering.sequence_policy() {
                ordering = format!(
                    "{ordering} in {} order (a gap waits {}, then {})",
                    seq.field,
                    humantime::format_duration(seq.gap_timeout),
                    seq.on_gap.as_str()
                );
            }
            format!(
                "POST {} (timeout {}); {dedup}; up to {} attempts; ordering {ordering}; {rules}; \
                 dead letters to {:?}",
                policy.delivery.url,
                humantime::format_duration(policy.delivery.timeout),
                policy.retry.max_attempts,
                policy.dead_letter.destination_for(&source),
            )
        }
        RouteAction::Drop => "dropped without delivery (acked, counted as dropped)".to_owned(),
        RouteAction::DeadLetter => format!(
            "dead-lettered without delivery to {:?}",
            policy.dead_letter.destination_for(&source)
        ),
    };
    let of_type = message
        .ce_attribute("type")
        .map(|t| format!(" of type {t:?}"))
        .unwrap_or_default();
    Ok(format!(
        "a message from {source:?}{of_type} takes {which}: {fate}"
    ))
}
