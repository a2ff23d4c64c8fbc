use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use outrigger_core::{Action, Reply, Response, TransportError, TransportErrorKind};

use super::*;

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    Reply::Response(Response {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body_excerpt: Bytes::copy_from_slice(body.as_bytes()),
    })
}

fn status(s: u16) -> Reply {
    resp(s, &[], "")
}

fn failed(kind: TransportErrorKind) -> Reply {
    Reply::Failed(TransportError {
        kind,
        detail: "boom".into(),
        elapsed: Duration::from_secs(1),
    })
}

fn default_verdict(reply: &Reply) -> Action {
    let v = Classifier::default().classify(reply);
    assert_eq!(v.matched, Matched::Default);
    v.action
}

#[test]
fn defaults_ack_2xx() {
    for s in [200, 201, 204, 299] {
        assert_eq!(default_verdict(&status(s)), Action::Ack, "{s}");
    }
}

#[test]
fn defaults_throttle_429_and_503() {
    assert_eq!(default_verdict(&status(429)), Action::Throttle);
    assert_eq!(default_verdict(&status(503)), Action::Throttle);
}

#[test]
fn defaults_retry_transient_statuses() {
    for s in [408, 409, 500, 502, 504, 599] {
        assert_eq!(default_verdict(&status(s)), Action::Retry, "{s}");
    }
}

#[test]
fn defaults_retry_timeouts_and_connection_errors() {
    assert_eq!(
        default_verdict(&failed(TransportErrorKind::Timeout)),
        Action::Retry
    );
    assert_eq!(
        default_verdict(&failed(TransportErrorKind::Connection)),
        Action::Retry
    );
}

#[test]
fn defaults_dead_letter_permanent_failures() {
    for s in [100, 301, 304, 400, 401, 404, 410, 422, 499, 600] {
        assert_eq!(default_verdict(&status(s)), Action::DeadLetter, "{s}");
    }
    assert_eq!(
        default_verdict(&Reply::Undeliverable("no key".into())),
        Action::DeadLetter
    );
}

#[test]
fn action_header_wins_over_rules_and_defaults() {
    let c = Classifier::new(vec![Rule {
        status: vec!["5xx".parse().unwrap()],
        ..Rule::new(Action::Retry)
    }]);
    let v = c.classify(&resp(500, &[("Outrigger-Action", " Drop ")], ""));
    assert_eq!(v.action, Action::Drop);
    assert_eq!(v.matched, Matched::ActionHeader);
    let v = c.classify(&resp(200, &[("outrigger-action", "dead-letter")], ""));
    assert_eq!(v.action, Action::DeadLetter);
}

#[test]
fn invalid_action_header_is_ignored() {
    let v = Classifier::default().classify(&resp(200, &[("outrigger-action", "later")], ""));
    assert_eq!(v.action, Action::Ack);
    assert_eq!(v.matched, Matched::Default);
}

#[test]
fn first_matching_rule_wins_over_later_rules_and_defaults() {
    let c = Classifier::new(vec![
        Rule {
            status: vec!["404".parse().unwrap()],
            ..Rule::new(Action::Drop)
        },
        Rule {
            status: vec!["4xx".parse().unwrap()],
            ..Rule::new(Action::Retry)
        },
    ]);
    let v = c.classify(&status(404));
    assert_eq!((v.action, v.matched), (Action::Drop, Matched::Rule(0)));
    let v = c.classify(&status(400));
    assert_eq!((v.action, v.matched), (Action::Retry, Matched::Rule(1)));
    let v = c.classify(&status(500));
    assert_eq!((v.action, v.matched), (Action::Retry, Matched::Default));
}

#[test]
fn all_matchers_of_a_rule_must_match() {
    let rule = Rule {
        status: vec!["500".parse().unwrap()],
        header: Some(HeaderMatch {
            name: "X-Error".into(),
            value: Some("fatal".into()),
        }),
        body_contains: Some("poison".into()),
        ..Rule::new(Action::DeadLetter)
    };
    assert!(rule.matches(&resp(500, &[("x-error", "fatal")], "a poison pill")));
    assert!(!rule.matches(&resp(500, &[("x-error", "fatal")], "fine")));
    assert!(!rule.matches(&resp(500, &[("x-error", "transient")], "poison")));
    assert!(!rule.matches(&resp(502, &[("x-error", "fatal")], "poison")));
    assert!(!rule.matches(&failed(TransportErrorKind::Timeout)));
}

#[test]
fn header_without_value_matches_presence() {
    let rule = Rule {
        header: Some(HeaderMatch {
            name: "x-poison".into(),
            value: None,
        }),
        ..Rule::new(Action::Drop)
    };
    assert!(rule.matches(&resp(500, &[("X-Poison", "")], "")));
    assert!(!rule.matches(&resp(500, &[("x-other", "1")], "")));
}

#[test]
fn transport_and_decode_matchers() {
    let timeout = Rule {
        timeout: Some(true),
        ..Rule::new(Action::DeadLetter)
    };
    assert!(timeout.matches(&failed(TransportErrorKind::Timeout)));
    assert!(!timeout.matches(&failed(TransportErrorKind::Connection)));
    assert!(!timeout.matches(&status(500)));

    let conn = Rule {
        connection_error: Some(true),
        ..Rule::new(Action::Throttle)
    };
    assert!(conn.matches(&failed(TransportErrorKind::Connection)));
    assert!(!conn.matches(&failed(TransportErrorKind::Timeout)));

    let decode = Rule {
        decode_error: Some(true),
        ..Rule::new(Action::Drop)
    };
    assert!(decode.matches(&Reply::Undeliverable("bad".into())));
    assert!(!decode.matches(&status(400)));

    // `false` matches the opposite.
    let not_timeout = Rule {
        timeout: Some(false),
        status: vec!["5xx".parse().unwrap()],
        ..Rule::new(Action::DeadLetter)
    };
    assert!(not_timeout.matches(&status(500)));
    assert!(!not_timeout.matches(&failed(TransportErrorKind::Timeout)));
}

#[test]
fn a_rule_without_matchers_matches_nothing() {
    let empty = Rule::new(Action::Drop);
    assert!(!empty.has_matcher());
    let c = Classifier::new(vec![empty]);
    assert_eq!(c.classify(&status(500)).matched, Matched::Default);
}

#[test]
fn retry_after_seconds_and_dates() {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let c = Classifier::default();
    let v = c.classify_at(&resp(429, &[("Retry-After", "120")], ""), now);
    assert_eq!(v.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(v.action, Action::Throttle);

    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    let v = c.classify_at(&resp(503, &[("retry-after", &later)], ""), now);
    assert_eq!(v.retry_after, Some(Duration::from_secs(30)));

    let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
    let v = c.classify_at(&resp(503, &[("retry-after", &past)], ""), now);
    assert_eq!(v.retry_after, Some(Duration::ZERO));

    let v = c.classify_at(&resp(503, &[("retry-after", "soon")], ""), now);
    assert_eq!(v.retry_after, None);
    let v = c.classify_at(&resp(503, &[("retry-after", "-5")], ""), now);
    assert_eq!(v.retry_after, None);
}

#[test]
fn retry_after_is_reported_whichever_step_decided() {
    let c = Classifier::default();
    let v = c.classify(&resp(
        500,
        &[("outrigger-action", "retry"), ("retry-after", "7")],
        "",
    ));
    assert_eq!(v.matched, Matched::ActionHeader);
    assert_eq!(v.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("99999999999999999999999", SystemTime::now()),
        Some(Duration::from_secs(u64::MAX))
    );
}

#[test]
fn rules_deserialize_from_config() {
    let rules: Vec<Rule> = serde_json::from_str(
        r#"[
            {"status": ["4xx", 500], "body_contains": "poison", "action": "drop"},
            {"timeout": true, "action": "dead_letter"},
            {"header": {"name": "x-kind"}, "action": "throttle"}
        ]"#,
    )
    .unwrap();
    assert_eq!(rules[0].status.len(), 2);
    assert_eq!(rules[0].action, Action::Drop);
    assert_eq!(rules[1].action, Action::DeadLetter);
    assert_eq!(rules[2].header.as_ref().unwrap().value, None);

    let e = serde_json::from_str::<Rule>(r#"{"status": "4xx", "action": "later"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown action"), "{e}");
    let e = serde_json::from_str::<Rule>(r#"{"statuses": "4xx", "action": "ack"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field"), "{e}");
}
