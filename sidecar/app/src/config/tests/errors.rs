//! What an invalid policy reports: every error, with its position, key path and value.

use super::{load, places, rejected, MINIMAL};
use crate::config::*;

#[test]
fn three_mistakes_are_reported_together_where_they_were_written() {
    let text = "\
[source.amqp]
queue = \"orders\"
prefetch = 10

[retry]
max_attempts = 5
initial = \"fast\"

[backpressure]
max_in_flight = 100000
";
    let errors = rejected(text);
    assert_eq!(
        places(&errors),
        vec![
            (3, 1, "source.amqp.prefetch", Some("10")),
            (7, 11, "retry.initial", Some("\"fast\"")),
            (10, 17, "backpressure.max_in_flight", Some("100000")),
        ],
        "{errors:#?}"
    );
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(lines[0].starts_with("policy.toml:3:1: source.amqp.prefetch: unknown key `prefetch`"));
    assert_eq!(
        lines[1],
        "policy.toml:7:11: retry.initial: invalid duration: expected a number with a unit like \
         250ms or 30s (value: \"fast\")"
    );
    assert_eq!(
        lines[2],
        "policy.toml:10:17: backpressure.max_in_flight: out of range: expected a whole number \
         from 0 to 65535 (value: 100000)"
    );
}

#[test]
fn errors_in_inline_tables_and_arrays_point_inside_them() {
    let text = "\
source.amqp = { queue = \"q\", nope = 1 }
delivery = { timeout = 30, forward_headers = [\"ok\", 7] }
classify.rules = [{ status = 404, action = \"drop\" }, { status = \"6xx\", action = \"later\" }]
";
    let errors = rejected(text);
    assert_eq!(
        places(&errors),
        vec![
            (1, 30, "source.amqp.nope", Some("1")),
            (2, 24, "delivery.timeout", Some("30")),
            (2, 53, "delivery.forward_headers[1]", Some("7")),
            (3, 65, "classify.rules[1].status", Some("\"6xx\"")),
            (3, 81, "classify.rules[1].action", Some("\"later\"")),
        ],
        "{errors:#?}"
    );
    assert_eq!(
        errors[1].message,
        "expected a duration like \"250ms\" or \"30s\", found an integer"
    );
    assert!(
        errors[3]
            .message
            .contains("status classes run from 1xx to 5xx"),
        "{}",
        errors[3]
    );
    assert!(
        errors[4].message.contains("unknown action"),
        "{}",
        errors[4]
    );
}

#[test]
fn later_array_elements_keep_their_index_after_an_earlier_one_is_dropped() {
    let text = "\
[source.memory]

[[classify.rules]]
status = 404

[[classify.rules]]
status = 500
action = \"sometimes\"

[[classify.rules]]
action = \"ack\"
";
    let errors = rejected(text);
    assert_eq!(
        places(&errors),
        vec![
            (3, 1, "classify.rules[0].action", None),
            (8, 10, "classify.rules[1].action", Some("\"sometimes\"")),
            (10, 1, "classify.rules[2]", None),
        ],
        "{errors:#?}"
    );
    assert_eq!(errors[0].message, "missing required key `action`");
    assert!(errors[2].message.contains("sets no matcher"));
}

#[test]
fn a_syntax_error_stops_at_its_position() {
    let errors = rejected("[source.amqp]\nqueue = \"orders\n[retry]\nmax_attempts = 0\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].location, Some((2, 16)));
    assert!(
        errors[0].message.starts_with("invalid TOML: "),
        "{}",
        errors[0]
    );
    let errors = rejected("[source.amqp]\nqueue = \"a\"\nqueue = \"b\"\n");
    assert_eq!(errors[0].location, Some((3, 1)));
    assert!(
        errors[0].to_string().contains("duplicate key"),
        "{}",
        errors[0]
    );
}

#[test]
fn semantic_errors_point_at_the_offending_key() {
    let text = "\
[source.amqp]
queue = \"orders\"
url = \"http://rabbit\"

[delivery]
url = \"https://app.internal/\"
timeout = \"90s\"

[retry]
mode = \"queue\"
max_attempts = 0
initial = \"1m\"
max = \"10s\"
multiplier = 0.5
jitter = 1.5

[[classify.rules]]
action = \"retry\"

[admin]
listen = \"0.0.0.0:9090\"

[log]
level = \"verbose\"
";
    let errors = rejected(text);
    assert_eq!(
        places(&errors),
        vec![
            (3, 1, "source.amqp.url", Some("\"http://rabbit\"")),
            (6, 1, "delivery.url", Some("\"https://app.internal/\"")),
            (7, 1, "delivery.timeout", Some("\"90s\"")),
            (10, 1, "retry.mode", Some("\"queue\"")),
            (11, 1, "retry.max_attempts", Some("0")),
            (12, 1, "retry.initial", Some("\"1m\"")),
            (14, 1, "retry.multiplier", Some("0.5")),
            (15, 1, "retry.jitter", Some("1.5")),
            (17, 1, "classify.rules[0]", None),
            (21, 1, "admin.listen", Some("\"0.0.0.0:9090\"")),
            (24, 1, "log.level", Some("\"verbose\"")),
        ],
        "{errors:#?}"
    );
    let message = |path: &str| &errors.iter().find(|e| e.path == path).unwrap().message;
    assert!(message("delivery.timeout").contains("a lease shorter than the delivery timeout"));
    assert!(message("retry.mode").contains("queue mode is not available for the amqp source"));
    assert!(message("retry.initial").contains("retry.initial (1m) must not exceed retry.max (10s)"));
    assert!(message("admin.listen").contains("token"));
}

#[test]
fn a_lease_left_at_its_default_is_blamed_on_the_timeout_the_user_wrote() {
    let errors = rejected(&format!("{MINIMAL}[delivery]\ntimeout = \"2m\"\n"));
    assert_eq!(
        places(&errors),
        vec![(4, 1, "delivery.timeout", Some("\"2m\""))]
    );
    let c = load(&format!(
        "{MINIMAL}[dedup]\nenabled = false\n[delivery]\ntimeout = \"2m\"\n"
    ));
    assert!(c.is_ok(), "no lease matters without dedup");
}

#[test]
fn a_removed_value_does_not_cause_follow_up_errors() {
    // `initial` is dropped after its own error; the default (200ms) must not then be compared
    // with `max`, and a bad required key must not also be reported as missing.
    let text = "[source.amqp]\nqueue = 5\n[retry]\ninitial = \"soon\"\nmax = \"100ms\"\n";
    let errors = rejected(text);
    assert_eq!(
        places(&errors),
        vec![
            (2, 9, "source.amqp.queue", Some("5")),
            (4, 11, "retry.initial", Some("\"soon\""))
        ],
        "{errors:#?}"
    );
}

#[test]
fn sources_must_be_exactly_one_known_kind() {
    let errors = rejected("[retry]\nmax_attempts = 3\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].path.as_str(), errors[0].location),
        ("source", None)
    );
    assert!(errors[0]
        .to_string()
        .starts_with("policy.toml: source: missing [source]"));

    let errors = rejected("[source.kafka]\ntopic = \"t\"\n[retry]\nmax_attempts = 0\n");
    assert_eq!(
        places(&errors),
        vec![
            (1, 9, "source.kafka", None),
            (4, 1, "retry.max_attempts", Some("0"))
        ],
        "{errors:#?}"
    );
    assert_eq!(
        errors[0].message,
        "unknown source `kafka`, expected `amqp` or `memory`"
    );

    let errors = rejected("[source.amqp]\nqueue = \"a\"\n[source.memory]\n");
    assert_eq!(places(&errors), vec![(1, 2, "source", None)]);
    assert!(errors[0]
        .message
        .contains("exactly one of [source.amqp] or [source.memory]"));

    let errors = rejected("[source.amqp]\nurl = \"amqp://x\"\n");
    assert_eq!(places(&errors), vec![(1, 1, "source.amqp.queue", None)]);
    assert_eq!(errors[0].message, "missing required key `queue`");
}

#[test]
fn unknown_sections_and_enum_values_are_errors() {
    let text = format!("{MINIMAL}[ordering]\nmode = \"key\"\n[dedup]\nstore = \"mongo\"\n");
    let errors = rejected(&text);
    assert_eq!(
        places(&errors),
        vec![
            (3, 2, "ordering", None),
            (6, 9, "dedup.store", Some("\"mongo\""))
        ],
        "{errors:#?}"
    );
    assert!(errors[0]
        .message
        .starts_with("unknown key `ordering`, expected one of"));
    assert_eq!(
        errors[1].message,
        "unknown value `mongo`, expected `redis` or `embedded`"
    );
}

#[test]
fn a_file_that_cannot_be_read_is_one_error() {
    let errors = load_file(
        std::path::Path::new("/nonexistent/policy.toml"),
        std::iter::empty(),
    )
    .unwrap_err()
    .errors;
    assert_eq!(errors.len(), 1);
    assert!(errors[0]
        .to_string()
        .starts_with("/nonexistent/policy.toml: cannot read the policy"));
}
