//! Checks that need more than one value's type: ranges, relations between settings, and
//! combinations this build does not support. Pure: it reads the config and lists problems.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::doc::KeyPath;
use super::{Config, RetryMode, SourceConfig, StoreKind};

/// The largest response excerpt: it travels in every dead letter, and brokers cap message size.
const MAX_EXCERPT_BYTES: u64 = 1024 * 1024;

/// The levels `tracing` knows, for telling a level from a typo.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// One semantic problem: the settings involved (the first is the one to blame when the user
/// wrote it) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issue {
    pub(crate) paths: Vec<KeyPath>,
    pub(crate) message: String,
}

#[derive(Default)]
struct Issues(Vec<Issue>);

impl Issues {
    fn at(&mut self, paths: &[&str], message: impl Into<String>) {
        let paths = paths.iter().map(|p| KeyPath::parse(p)).collect();
        self.at_paths(paths, message);
    }

    fn at_paths(&mut self, paths: Vec<KeyPath>, message: impl Into<String>) {
        self.0.push(Issue {
            paths,
            message: message.into(),
        });
    }

    fn positive(&mut self, path: &str, d: Duration) {
        if d.is_zero() {
            self.at(&[path], "must be longer than 0s");
        }
    }

    fn not_empty(&mut self, path: &str, s: Option<&str>, hint: &str) {
        if s.is_some_and(|s| s.trim().is_empty()) {
            self.at(&[path], format!("must not be empty; {hint}"));
        }
    }
}

/// Every semantic problem in `config`.
pub(crate) fn validate(config: &Config) -> Vec<Issue> {
    let mut issues = Issues::default();
    source(config, &mut issues);
    delivery(config, &mut issues);
    dedup(config, &mut issues);
    retry(config, &mut issues);
    classify(config, &mut issues);
    operations(config, &mut issues);
    issues.0
}

fn source_queue_path(source: &SourceConfig) -> String {
    format!("source.{}.queue", source.kind())
}

fn source(c: &Config, v: &mut Issues) {
    if c.source.name().trim().is_empty() {
        v.at(&[&source_queue_path(&c.source)], "must not be empty");
    }
    if let SourceConfig::Amqp(amqp) = &c.source {
        if !(amqp.url.starts_with("amqp://") || amqp.url.starts_with("amqps://")) {
            v.at(&["source.amqp.url"], "expected an amqp:// or amqps:// URL");
        }
    }
}

fn delivery(c: &Config, v: &mut Issues) {
    let d = &c.delivery;
    match (d.url.scheme_str(), d.url.host()) {
        (Some("http"), Some(host)) if !host.is_empty() => {}
        (Some("https"), _) => v.at(
            &["delivery.url"],
            "https is not supported: the app runs beside the sidecar, so use http:// \
             (set http2 = true for h2c)",
        ),
        _ => v.at(
            &["delivery.url"],
            "expected an http:// URL with a host, like http://127.0.0.1:8080/",
        ),
    }
    v.positive("delivery.timeout", d.timeout);
    for (i, name) in d.forward_headers.iter().enumerate() {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            let path = KeyPath::parse("delivery.forward_headers").index(i);
            v.at_paths(vec![path], "not a valid HTTP header name");
        }
    }
    let hint = "leave it out for the default";
    v.not_empty("delivery.ce_source", d.ce_source.as_deref(), hint);
    v.not_empty("delivery.ce_type", Some(&d.ce_type), "name the event type");
    if d.response_excerpt.as_u64() > MAX_EXCERPT_BYTES {
        v.at(
            &["delivery.response_excerpt"],
            "must be at most 1MiB: the excerpt travels in every dead letter",
        );
    }
}

fn dedup(c: &Config, v: &mut Issues) {
    let d = &c.dedup;
    if !d.enabled {
        return;
    }
    if d.lease <= c.delivery.timeout {
        v.at(
            &["dedup.lease", "delivery.timeout"],
            format!(
                "dedup.lease ({}) must be longer than delivery.timeout ({}): a lease shorter \
                 than the delivery timeout lets a second claimant run while the first is still \
                 delivering",
                humantime::format_duration(d.lease),
                humantime::format_duration(c.delivery.timeout)
            ),
        );
    }
    v.positive("dedup.ttl", d.ttl);
    match d.store {
        StoreKind::Redis => {
            let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
            if !schemes.iter().any(|s| d.redis.url.starts_with(s)) {
                v.at(&["dedup.redis.url"], "expected a redis:// or rediss:// URL");
            }
            let hint = "leave it out to use the source's queue name";
            v.not_empty("dedup.redis.namespace", d.redis.namespace.as_deref(), hint);
            v.positive("dedup.redis.timeout", d.redis.timeout);
        }
        StoreKind::Embedded => {
            if d.embedded.path.as_os_str().is_empty() {
                v.at(&["dedup.embedded.path"], "must not be empty");
            }
        }
    }
}

fn retry(c: &Config, v: &mut Issues) {
    let r = &c.retry;
    if r.mode == RetryMode::Queue {
        v.at(
            &["retry.mode", "source"],
            format!(
                "queue mode is not available for the {} source yet; use \"in_place\"",
                c.source.kind()
            ),
        );
    }
    if r.max_attempts == 0 {
        v.at(
            &["retry.max_attempts"],
            "must be at least 1 (the first delivery counts)",
        );
    }
    v.positive("retry.max_age", r.max_age);
    if r.initial.is_zero() {
        v.at(
            &["retry.initial"],
            "must be longer than 0s: without a delay, retries hammer a failing app",
        );
    } else if r.initial > r.max {
        v.at(
            &["retry.initial", "retry.max"],
            format!(
                "retry.initial ({}) must not exceed retry.max ({})",
                humantime::format_duration(r.initial),
                humantime::format_duration(r.max)
            ),
        );
    }
    if !(r.multiplier >= 1.0 && r.multiplier.is_finite()) {
        v.at(
            &["retry.multiplier"],
            "must be at least 1.0: a smaller multiplier would shrink the delays",
        );
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        v.at(
            &["retry.jitter"],
            "must be between 0 and 1 (a fraction of each delay)",
        );
    }
}

fn classify(c: &Config, v: &mut Issues) {
    for (i, rule) in c.classify.rules.iter().enumerate() {
        let at = KeyPath::parse("classify.rules").index(i);
        if rule.status.as_ref().is_some_and(|s| s.ranges.is_empty()) {
            v.at_paths(
                vec![at.key("status")],
                "an empty list matches nothing; list statuses or leave `status` out",
            );
        } else if !rule.has_matcher() {
            v.at_paths(
                vec![at.clone()],
                "the rule sets no matcher (status, timeout, connection_error, header, \
                 body_contains or decode_error), so it would never match",
            );
        }
        if let Some(header) = rule.header_match() {
            if HeaderName::from_bytes(header.name.as_bytes()).is_err() {
                v.at_paths(
                    vec![at.key("header")],
                    "expected a header name, or name=value: the name is not a valid HTTP header",
                );
            } else if header
                .value
                .is_some_and(|h| HeaderValue::from_str(&h).is_err())
            {
                v.at_paths(
                    vec![at.key("header")],
                    "the value is not a valid HTTP header value",
                );
            }
        }
        if rule.body_contains.as_ref().is_some_and(String::is_empty) {
            v.at_paths(
                vec![at.key("body_contains")],
                "must not be empty: it would match every response",
            );
        }
    }
}

fn operations(c: &Config, v: &mut Issues) {
    let destination = c.dead_letter.destination.as_deref();
    v.not_empty(
        "dead_letter.destination",
        destination,
        "leave it out for <queue>.dlq",
    );
    if destination == Some(c.source.name()) {
        v.at(
            &["dead_letter.destination", &source_queue_path(&c.source)],
            "must differ from the source queue, or dead letters would be consumed again",
        );
    }
    if c.backpressure.max_in_flight == 0 {
        v.at(&["backpressure.max_in_flight"], "must be at least 1");
    }
    let token = c.admin.token.as_deref();
    v.not_empty("admin.token", token, "leave it out on loopback");
    if !c.admin.listen.ip().is_loopback() && token.is_none() {
        v.at(
            &["admin.listen"],
            "listens beyond loopback without admin.token: set a token \
             (OUTRIGGER__ADMIN__TOKEN) or listen on 127.0.0.1",
        );
    }
    if let Err(why) = log_level(&c.log.level) {
        v.at(&["log.level"], why);
    }
}

/// A bare level, or `tracing` filter directives (`info,outrigger=debug`).
fn log_level(level: &str) -> Result<(), String> {
    let expected = "expected trace, debug, info, warn or error, or directives like \
                    info,outrigger=debug";
    let is_level = |part: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(part.trim()));
    // A lone word that is not a level is a typo more often than a target name.
    if !level
        .split(',')
        .all(|part| is_level(part) || part.contains('='))
    {
        return Err(expected.to_owned());
    }
    tracing_subscriber::EnvFilter::try_new(level.trim())
        .map(drop)
        .map_err(|e| format!("{e}; {expected}"))
}
