//! Checks that need more than one value's type: ranges, relations between settings, and
//! combinations this build does not support. Pure: it reads the config and lists problems.
//!
//! The `[source]` table is checked by its adapter ([`SourceConfig::validate`]), in the context
//! of the policy's shared sections, with the same function `outrigger run` calls before it
//! connects; what depends only on what a broker can do ([`Capabilities`]) is checked here.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use outrigger_core::{Capabilities, KeyPath, OrderingMode, Problem, Problems};

use super::{BatchConfig, Config, RetryMode, SourceConfig, StoreKind};

/// The largest response excerpt: it travels in every dead letter, and brokers cap message size.
const MAX_EXCERPT_BYTES: u64 = 1024 * 1024;

/// The levels `tracing` knows, for telling a level from a typo.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Retry tiers, one retry queue each per source name: more would mostly be queues to manage.
const MAX_TIERS: usize = 10;

/// Every semantic problem in `config`.
pub(crate) fn validate(config: &Config) -> Vec<Problem> {
    let mut issues = Problems::default();
    let capabilities = config.source.capabilities();
    issues.extend(config.source.validate(&config.source_context()));
    ordering(config, &capabilities, &mut issues);
    delivery(config, &mut issues);
    dedup(config, &mut issues);
    retry(config, &capabilities, &mut issues);
    classify(config, &mut issues);
    operations(config, &mut issues);
    backpressure(config, &capabilities, &mut issues);
    breaker(config, &mut issues);
    super::routes::validate(config, per_message, &mut issues);
    issues.into_vec()
}

/// The problems of what a route may set: what decides one message's delivery.
fn per_message(config: &Config) -> Vec<Problem> {
    let mut issues = Problems::default();
    let capabilities = config.source.capabilities();
    ordering(config, &capabilities, &mut issues);
    delivery(config, &mut issues);
    dedup(config, &mut issues);
    retry(config, &capabilities, &mut issues);
    classify(config, &mut issues);
    issues.into_vec()
}

/// The ordering mode asked for must be one the broker can keep; a sequence needs what keeps it.
fn ordering(c: &Config, capabilities: &Capabilities, v: &mut Problems) {
    sequence(c, v);
    if let Some(mode) = c.ordering.mode {
        if !capabilities.ordering.contains(&mode) {
            let kept: Vec<&str> = capabilities.ordering.iter().map(|m| m.as_str()).collect();
            v.at(
                &["ordering.mode"],
                format!(
                    "a {} source cannot keep {mode:?} order; it keeps {}",
                    c.source.kind(),
                    kept.join(", ")
                ),
            );
        }
    }
}

/// `ordering.sequence`: kept per key, in the dedup store, by messages retried in place.
fn sequence(c: &Config, v: &mut Problems) {
    let o = &c.ordering;
    if o.sequence.is_none() {
        let settings = o.written().into_iter();
        for (path, written) in
            settings.filter(|(p, _)| !matches!(*p, "ordering.mode" | "ordering.sequence"))
        {
            if written {
                v.at(
                    &[path],
                    "applies with ordering.sequence only, which is not set",
                );
            }
        }
        return;
    }
    let mode = o.mode(&c.source);
    if mode != OrderingMode::Key {
        v.at(
            &["ordering.sequence", "ordering.mode"],
            format!(
                "a sequence is kept per key: set ordering.mode = \"key\" (it is {:?})",
                mode.as_str()
            ),
        );
    }
    if !c.dedup.enabled {
        v.at(
            &["ordering.sequence", "dedup.enabled"],
            "each key's next sequence is kept in the dedup store, which is off: set dedup.enabled = true",
        );
    }
    if c.retry.mode != RetryMode::InPlace {
        v.at(
            &["ordering.sequence", "retry.mode"],
            "a message waiting in a retry queue would leave a gap its successors give up on: \
             sequences need retry.mode = \"in_place\"",
        );
    }
    if c.delivery.batch.is_some() {
        v.at(
            &["ordering.sequence", "delivery.batch"],
            "sequences are not kept with batch delivery yet: remove one of them",
        );
    }
    if let Some(timeout) = o.gap_timeout {
        v.positive("ordering.gap_timeout", timeout);
    }
    if o.max_waiting_per_key == Some(0) {
        v.at(&["ordering.max_waiting_per_key"], "must be at least 1");
    }
    if o.first_sequence
        .is_some_and(|n| n > outrigger_policies::sequence::MAX_SEQUENCE)
    {
        v.at(&["ordering.first_sequence"], "must be at most 2^53");
    }
}

fn delivery(c: &Config, v: &mut Problems) {
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
    v.positive("delivery.connect_timeout", d.connect_timeout);
    if d.max_connections == 0 {
        v.at(&["delivery.max_connections"], "must be at least 1");
    }
    for (i, name) in d.forward_headers.iter().enumerate() {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            let path = KeyPath::parse("delivery.forward_headers").index(i);
            v.at_paths(vec![path], "not a valid HTTP header name");
        }
    }
    let hint = "leave it out for the default";
    v.not_empty("delivery.ce_source", d.ce_source.as_deref(), hint);
    v.not_empty("delivery.ce_type", Some(&d.ce_type), "name the event type");
    if d.max_message_size.as_u64() == 0 {
        v.at(
            &["delivery.max_message_size"],
            "must be larger than 0B, or nothing could be delivered",
        );
    }
    if d.response_excerpt.as_u64() > MAX_EXCERPT_BYTES {
        v.at(
            &["delivery.response_excerpt"],
            "must be at most 1MiB: the excerpt travels in every dead letter",
        );
    }
    if let Some(b) = &d.batch {
        batch(c, b, v);
    }
}

fn batch(c: &Config, b: &BatchConfig, v: &mut Problems) {
    let in_flight = c.backpressure.max_in_flight;
    if b.max_events == 0 {
        v.at(&["delivery.batch.max_events"], "must be at least 1");
    } else if b.max_events > in_flight {
        v.at(
            &["delivery.batch.max_events", "backpressure.max_in_flight"],
            format!(
                "delivery.batch.max_events ({}) exceeds backpressure.max_in_flight ({in_flight}): \
                 a batch could never fill",
                b.max_events
            ),
        );
    }
    if b.max_bytes.as_u64() == 0 {
        v.at(
            &["delivery.batch.max_bytes"],
            "must be larger than 0B, or no event would fit",
        );
    }
    if b.max_wait >= c.delivery.timeout {
        v.at(
            &["delivery.batch.max_wait", "delivery.timeout"],
            format!(
                "delivery.batch.max_wait ({}) must be shorter than delivery.timeout ({})",
                humantime::format_duration(b.max_wait),
                humantime::format_duration(c.delivery.timeout)
            ),
        );
    }
}

fn dedup(c: &Config, v: &mut Problems) {
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
            let hint = "leave it out to use the source's queue name";
            v.not_empty("dedup.redis.namespace", d.redis.namespace.as_deref(), hint);
            if !d.redis.cluster.is_empty() && !d.redis.url_is_default() {
                v.at(
                    &["dedup.redis.url", "dedup.redis.cluster"],
                    "dedup.redis.url and dedup.redis.cluster both say where Redis is: keep \
                     url for a standalone server, cluster for a Redis Cluster",
                );
            }
            // URL, login, TLS files and timeout: the store's own checks, which its connect
            // makes too.
            for mut problem in d.redis_store(&c.source).problems() {
                let namespace = KeyPath::parse("dedup.redis.namespace");
                if d.redis.namespace.is_none() && problem.paths.contains(&namespace) {
                    // Not written: the namespace is the source's name, which the user wrote.
                    problem.paths.push(KeyPath::parse("source"));
                    problem.message = format!(
                        "the dedup namespace defaults to the source's name, and {}: set \
                         dedup.redis.namespace",
                        problem.message
                    );
                }
                v.extend([problem]);
            }
        }
        StoreKind::Embedded => {
            if d.embedded.path.as_os_str().is_empty() {
                v.at(&["dedup.embedded.path"], "must not be empty");
            }
        }
    }
}

/// `a`, `a and b`, `a, b and c`.
fn in_words(all: &[&str]) -> String {
    match all {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn retry(c: &Config, capabilities: &Capabilities, v: &mut Problems) {
    let r = &c.retry;
    if r.mode == RetryMode::Queue {
        if !capabilities.retry_queues {
            let built = in_words(&SourceConfig::kinds_with_retry_queues());
            v.at(
                &["retry.mode"],
                format!(
                    "queue mode needs retry queues, built for {built} sources only; use \"in_place\" with a {} source",
                    c.source.kind()
                ),
            );
        }
        if !c.dedup.enabled {
            v.at(
                &["retry.mode", "dedup.enabled"],
                "queue mode keeps the keys parked behind a retry in the dedup store: enable [dedup]",
            );
        }
        if r.tiers.is_empty() {
            v.at(&["retry.tiers"], "queue mode needs at least one delay tier");
        } else if r.tiers.len() > MAX_TIERS {
            v.at(
                &["retry.tiers"],
                format!("at most {MAX_TIERS} tiers (one retry queue each)"),
            );
        }
        if r.tiers.iter().any(Duration::is_zero) {
            v.at(
                &["retry.tiers"],
                "every tier's delay must be longer than 0s",
            );
        }
    }
    if r.mode == RetryMode::Redeliver {
        if !capabilities.delayed_redelivery {
            let built = in_words(&SourceConfig::kinds_with_delayed_redelivery());
            v.at(
                &["retry.mode"],
                format!(
                    "redeliver mode needs a broker that redelivers after a delay, built for {built} sources only; use \"in_place\" with a {} source",
                    c.source.kind()
                ),
            );
        } else if c.ordering.mode(&c.source) != OrderingMode::None {
            v.at(
                &["retry.mode", "ordering.mode"],
                format!(
                    "redeliver mode lets later messages overtake a retried one, which ordering \"{}\" forbids: set ordering.mode = \"none\", or retry \"in_place\"",
                    c.ordering.mode(&c.source)
                ),
            );
        }
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

fn classify(c: &Config, v: &mut Problems) {
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

fn operations(c: &Config, v: &mut Problems) {
    let destination = c.dead_letter.destination.as_deref();
    let noun = c.source.capabilities().noun;
    v.not_empty(
        "dead_letter.destination",
        destination,
        &format!("leave it out for <{}>.dlq", noun.one),
    );
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

fn backpressure(c: &Config, capabilities: &Capabilities, v: &mut Problems) {
    let b = &c.backpressure;
    if b.max_in_flight == 0 {
        v.at(&["backpressure.max_in_flight"], "must be at least 1");
    }
    // The per-partition limit does not apply to a broker without partitions: a policy lowering
    // max_in_flight there must not fail over a setting it does not use.
    if b.max_in_flight_per_partition == 0 {
        v.at(
            &["backpressure.max_in_flight_per_partition"],
            "must be at least 1",
        );
    } else if capabilities.partitioned
        && b.max_in_flight > 0
        && b.max_in_flight_per_partition > b.max_in_flight
    {
        v.at(
            &[
                "backpressure.max_in_flight_per_partition",
                "backpressure.max_in_flight",
            ],
            format!(
                "backpressure.max_in_flight_per_partition ({}) must not exceed \
                 backpressure.max_in_flight ({}): one partition cannot have more in flight than \
                 all of them together",
                b.max_in_flight_per_partition, b.max_in_flight
            ),
        );
    }
    if let Some(n) = c.ordering.max_waiting {
        let prefetch = b.prefetch.filter(|_| c.source.kind() == "amqp");
        let cap = prefetch.map_or(b.max_in_flight, |p| p.min(b.max_in_flight));
        if n == 0 {
            v.at(&["ordering.max_waiting"], "must be at least 1");
        } else if n >= cap {
            v.at(
                &["ordering.max_waiting", "backpressure.max_in_flight"],
                format!(
                    "ordering.max_waiting ({n}) must stay below {} ({cap}): messages waiting for a \
                     predecessor hold their place there, and the predecessor needs one too",
                    if prefetch.is_some_and(|p| p < b.max_in_flight) {
                        "backpressure.prefetch"
                    } else {
                        "backpressure.max_in_flight"
                    }
                ),
            );
        }
    }
    match (b.max_in_flight_per_key, c.ordering.mode(&c.source)) {
        (None, _) => {}
        (Some(0), _) => v.at(
            &["backpressure.max_in_flight_per_key"],
            "must be at least 1",
        ),
        (Some(_), mode) if mode != OrderingMode::None => {
            v.at(
                &["backpressure.max_in_flight_per_key", "ordering.mode"],
                format!(
                "backpressure.max_in_flight_per_key limits a key's deliveries in ordering mode \
                 \"none\"; in mode {:?} a {} already runs one message at a time",
                mode.as_str(),
                if mode == OrderingMode::Key { "key" } else { "partition" },
            ),
            )
        }
        (Some(n), _) if b.max_in_flight > 0 && n > b.max_in_flight => v.at(
            &[
                "backpressure.max_in_flight_per_key",
                "backpressure.max_in_flight",
            ],
            format!(
                "backpressure.max_in_flight_per_key ({n}) must not exceed \
                 backpressure.max_in_flight ({}): one key cannot have more in flight than all \
                 of them together",
                b.max_in_flight
            ),
        ),
        (Some(_), _) => {}
    }
    match b.max_concurrency {
        Some(0) => v.at(&["backpressure.max_concurrency"], "must be at least 1"),
        Some(n) if b.max_in_flight > 0 && n > b.max_in_flight => v.at(
            &["backpressure.max_concurrency", "backpressure.max_in_flight"],
            format!(
                "backpressure.max_concurrency ({n}) must not exceed backpressure.max_in_flight \
                 ({}): only messages taken from the broker can be delivered",
                b.max_in_flight
            ),
        ),
        _ => {}
    }
    if b.min_concurrency == 0 {
        v.at(
            &["backpressure.min_concurrency"],
            "must be at least 1, or the adaptive limit could stop every delivery",
        );
    } else if b.adaptive && usize::from(b.min_concurrency) > b.concurrency() {
        v.at(
            &["backpressure.min_concurrency", "backpressure.max_concurrency"],
            format!(
                "backpressure.min_concurrency ({}) must not exceed the most deliveries at once                  ({}, backpressure.max_concurrency or else max_in_flight)",
                b.min_concurrency,
                b.concurrency()
            ),
        );
    }
    if b.adaptive && c.delivery.batch.is_some() {
        v.at(
            &["backpressure.adaptive", "delivery.batch"],
            "backpressure.adaptive does not apply to batch delivery, whose requests carry many \
             events each: set a fixed backpressure.max_concurrency instead",
        );
    }
    if b.prefetch == Some(0) {
        v.at(&["backpressure.prefetch"], "must be at least 1");
    }
    if b.max_buffered_bytes.as_u64() == 0 {
        v.at(
            &["backpressure.max_buffered_bytes"],
            "must be larger than 0B, or nothing could be fetched",
        );
    }
}

fn breaker(c: &Config, v: &mut Problems) {
    let b = &c.breaker;
    if !b.enabled {
        return;
    }
    for (path, n) in [
        ("breaker.failures", b.failures),
        ("breaker.unavailable", b.unavailable),
    ] {
        if n == 0 {
            v.at(&[path], "must be at least 1");
        }
    }
    v.positive("breaker.probe_interval", b.probe_interval);
    if b.probe_max < b.probe_interval {
        v.at(
            &["breaker.probe_max", "breaker.probe_interval"],
            format!(
                "breaker.probe_max ({}) must not be shorter than breaker.probe_interval ({})",
                humantime::format_duration(b.probe_max),
                humantime::format_duration(b.probe_interval)
            ),
        );
    }
    if let Some(url) = &b.probe_url {
        if url.scheme_str() != Some("http") || url.host().is_none() {
            v.at(
                &["breaker.probe_url"],
                "expected an http:// URL with a host, like http://127.0.0.1:8080/healthz",
            );
        }
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
