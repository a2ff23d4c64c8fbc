//! What an invalid policy reports: every error, with its position, key path and value.

use std::time::Duration;

use super::{load, places, rejected, KAFKA_MINIMAL, MINIMAL};
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
mode = \"redeliver\"
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
            (10, 1, "retry.mode", Some("\"redeliver\"")),
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
    assert!(message("retry.mode").contains("built for nats sources only"));
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

    let errors = rejected("[source.sqs]\nqueue = \"q\"\n[retry]\nmax_attempts = 0\n");
    assert_eq!(
        places(&errors),
        vec![
            (1, 9, "source.sqs", None),
            (4, 1, "retry.max_attempts", Some("0"))
        ],
        "{errors:#?}"
    );
    // Every broker this build knows, in the order of the brokers! list.
    let kinds: Vec<String> = SourceConfig::KINDS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect();
    assert_eq!(
        errors[0].message,
        format!("unknown source `sqs`, expected one of {}", kinds.join(", "))
    );
    assert!(errors[0].message.contains("`amqp`, `kafka`"));

    let errors = rejected("[source.amqp]\nqueue = \"a\"\n[source.memory]\n");
    assert_eq!(places(&errors), vec![(1, 2, "source", None)]);
    assert!(errors[0]
        .message
        .contains(&format!("exactly one of {}", SourceConfig::tables())));
    assert!(errors[0].message.contains("[source.amqp], [source.kafka]"));

    let errors = rejected("[source.amqp]\nurl = \"amqp://x\"\n");
    assert_eq!(places(&errors), vec![(1, 1, "source.amqp.queue", None)]);
    assert_eq!(errors[0].message, "missing required key `queue`");
}

#[test]
fn unknown_sections_and_enum_values_are_errors() {
    let text = format!(
        "{MINIMAL}[tracing]\nmode = \"key\"\n[dedup]\nstore = \"mongo\"\n\
         [ordering]\nmode = \"strict\"\nlanes = 4\n"
    );
    let errors = rejected(&text);
    assert_eq!(
        places(&errors),
        vec![
            (3, 2, "tracing", None),
            (6, 9, "dedup.store", Some("\"mongo\"")),
            (8, 8, "ordering.mode", Some("\"strict\"")),
            (9, 1, "ordering.lanes", Some("4")),
        ],
        "{errors:#?}"
    );
    assert!(errors[0]
        .message
        .starts_with("unknown key `tracing`, expected one of"));
    assert_eq!(
        errors[1].message,
        "unknown value `mongo`, expected `redis` or `embedded`"
    );
    assert_eq!(
        errors[2].message,
        "unknown value `strict`, expected one of `partition`, `key`, `none`"
    );
    assert_eq!(
        errors[3].message,
        "unknown key `lanes`, expected one of `mode`, `sequence`, `first_sequence`, \
         `gap_timeout`, `on_gap`, `max_waiting_per_key`, `max_waiting`"
    );
}

#[test]
fn every_kafka_mistake_is_reported_where_it_was_written() {
    let long = "t".repeat(250);
    let text = format!(
        "\
[source.kafka]
bootstrap_servers = \"\"
topics = [
  \"orders\",
  \"bad topic\",
  \"..\",
  \"orders\",
  \"{long}\",
  \"\",
]
group_id = \" \"
start_from = \"newest\"
commit_interval = \"0s\"
revoke_timeout = \"0s\"

[source.kafka.properties]
\"group.id\" = \"other\"
\"enable.auto.commit\" = \"true\"
\"security.protocol\" = \"SSL\"
\"session.timeout.ms\" = 45000
"
    );
    let errors = rejected(&text);
    let cut = format!("\"{}…", "t".repeat(76));
    assert_eq!(
        places(&errors),
        vec![
            (2, 1, "source.kafka.bootstrap_servers", Some("\"\"")),
            (5, 3, "source.kafka.topics[1]", Some("\"bad topic\"")),
            (6, 3, "source.kafka.topics[2]", Some("\"..\"")),
            (7, 3, "source.kafka.topics[3]", Some("\"orders\"")),
            (8, 3, "source.kafka.topics[4]", Some(cut.as_str())),
            (9, 3, "source.kafka.topics[5]", Some("\"\"")),
            (11, 1, "source.kafka.group_id", Some("\" \"")),
            (12, 14, "source.kafka.start_from", Some("\"newest\"")),
            (13, 1, "source.kafka.commit_interval", Some("\"0s\"")),
            (14, 1, "source.kafka.revoke_timeout", Some("\"0s\"")),
            (
                17,
                1,
                "source.kafka.properties.\"group.id\"",
                Some("\"other\"")
            ),
            (
                18,
                1,
                "source.kafka.properties.\"enable.auto.commit\"",
                Some("\"true\"")
            ),
            (
                20,
                24,
                "source.kafka.properties.\"session.timeout.ms\"",
                Some("45000")
            ),
        ],
        "{errors:#?}"
    );
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "must not be empty; list brokers as host:port, separated by commas",
            "not a valid Kafka topic name: use only ASCII letters, digits, `.`, `_` and `-`",
            "`.` and `..` are not valid Kafka topic names",
            "listed twice: each topic is consumed once",
            "too long: Kafka topic names have at most 249 characters, this one has 250",
            "must not be empty",
            "must not be empty; name the consumer group, usually after the service",
            "unknown value `newest`, expected `earliest` or `latest`",
            "must be longer than 0s",
            "must be longer than 0s",
            "`group.id` is set by the sidecar: set source.kafka.group_id instead",
            "`enable.auto.commit` is set by the sidecar: it commits settled offsets itself; set \
             source.kafka.commit_interval instead",
            "expected a string, found an integer",
        ]
    );
    assert_eq!(
        errors[10].to_string(),
        "policy.toml:17:1: source.kafka.properties.\"group.id\": `group.id` is set by the \
         sidecar: set source.kafka.group_id instead (value: \"other\")"
    );
}

#[test]
fn each_property_the_sidecar_owns_names_the_setting_to_use() {
    let owned = [
        ("bootstrap.servers", "source.kafka.bootstrap_servers"),
        ("metadata.broker.list", "source.kafka.bootstrap_servers"),
        ("group.id", "source.kafka.group_id"),
        ("auto.offset.reset", "source.kafka.start_from"),
        ("enable.auto.commit", "source.kafka.commit_interval"),
        ("auto.commit.interval.ms", "source.kafka.commit_interval"),
        ("enable.auto.offset.store", "leave it out"),
        ("enable.idempotence", "leave it out"),
        ("acks", "leave it out"),
        ("request.required.acks", "leave it out"),
        ("Group.Id", "source.kafka.group_id"),
    ];
    for (property, instead) in owned {
        let text = format!("{KAFKA_MINIMAL}properties = {{ \"{property}\" = \"x\" }}\n");
        let errors = rejected(&text);
        let path = format!("source.kafka.properties.{}", toml_edit::Key::new(property));
        assert_eq!(
            places(&errors),
            vec![(4, 16, path.as_str(), Some("\"x\""))],
            "{errors:#?}"
        );
        assert!(errors[0].message.contains(instead), "{}", errors[0]);
    }
}

#[test]
fn every_property_the_kafka_adapter_refuses_is_refused_at_check_time() {
    // The adapter would refuse them only when connecting; `outrigger check` should say first.
    for (property, _) in outrigger_kafka::RESERVED_PROPERTIES {
        let text = format!("{KAFKA_MINIMAL}properties = {{ \"{property}\" = \"x\" }}\n");
        let errors = rejected(&text);
        assert_eq!(errors.len(), 1, "{property}: {errors:#?}");
        assert!(
            errors[0].message.contains("is set by the sidecar"),
            "{}",
            errors[0]
        );
    }
}

#[test]
fn kafka_sources_need_topics_and_a_group() {
    // A missing key takes its table out of the check, so the next one shows once it is added.
    let errors = rejected("[source.kafka]\nbootstrap_servers = \"k:9092\"\n");
    assert_eq!(
        places(&errors),
        vec![(1, 1, "source.kafka.topics", None)],
        "{errors:#?}"
    );
    assert_eq!(errors[0].message, "missing required key `topics`");
    let errors = rejected("[source.kafka]\ntopics = [\"t\"]\n");
    assert_eq!(
        places(&errors),
        vec![(1, 1, "source.kafka.group_id", None)],
        "{errors:#?}"
    );
    assert_eq!(errors[0].message, "missing required key `group_id`");

    let errors = rejected("[source.kafka]\ntopics = []\ngroup_id = \"g\"\n");
    assert_eq!(
        places(&errors),
        vec![(2, 1, "source.kafka.topics", Some("[]"))]
    );
    assert_eq!(errors[0].message, "must list at least one topic");
}

#[test]
fn dead_letters_must_not_land_on_a_consumed_topic() {
    let text = "[source.kafka]\ntopics = [\"orders\", \"orders.dlq\"]\ngroup_id = \"g\"\n";
    let errors = rejected(text);
    assert_eq!(
        places(&errors),
        vec![(2, 21, "source.kafka.topics[1]", Some("\"orders.dlq\""))],
        "{errors:#?}"
    );
    assert!(
        errors[0]
            .message
            .starts_with("dead letters of topic \"orders\" go to \"orders.dlq\" by default"),
        "{}",
        errors[0]
    );
    let parked = format!("{text}[dead_letter]\ndestination = \"parked\"\n");
    assert!(load(&parked).is_ok(), "an explicit destination avoids it");

    let text = format!("{KAFKA_MINIMAL}[dead_letter]\ndestination = \"orders\"\n");
    let errors = rejected(&text);
    assert_eq!(
        places(&errors),
        vec![(5, 1, "dead_letter.destination", Some("\"orders\""))]
    );
    assert!(errors[0]
        .message
        .starts_with("must differ from every source topic"));
}

#[test]
fn backpressure_limits_must_be_positive_and_consistent() {
    let text = format!(
        "{KAFKA_MINIMAL}[backpressure]\nmax_in_flight = 0\nmax_in_flight_per_partition = 0\n\
         max_buffered_bytes = \"0B\"\n"
    );
    let errors = rejected(&text);
    assert_eq!(
        places(&errors),
        vec![
            (5, 1, "backpressure.max_in_flight", Some("0")),
            (6, 1, "backpressure.max_in_flight_per_partition", Some("0")),
            (7, 1, "backpressure.max_buffered_bytes", Some("\"0B\"")),
        ],
        "{errors:#?}"
    );
    assert_eq!(errors[0].message, "must be at least 1");
    assert_eq!(errors[1].message, "must be at least 1");
    assert_eq!(
        errors[2].message,
        "must be larger than 0B, or nothing could be fetched"
    );

    let text = format!(
        "{KAFKA_MINIMAL}[backpressure]\nmax_in_flight = 8\nmax_in_flight_per_partition = 12\n"
    );
    let errors = rejected(&text);
    assert_eq!(
        places(&errors),
        vec![(6, 1, "backpressure.max_in_flight_per_partition", Some("12"))]
    );
    assert_eq!(
        errors[0].message,
        "backpressure.max_in_flight_per_partition (12) must not exceed \
         backpressure.max_in_flight (8): one partition cannot have more in flight than all of \
         them together"
    );

    // Left at its default (16), the per-partition limit is not the user's to blame.
    let errors = rejected(&format!(
        "{KAFKA_MINIMAL}[backpressure]\nmax_in_flight = 8\n"
    ));
    assert_eq!(
        places(&errors),
        vec![(5, 1, "backpressure.max_in_flight", Some("8"))]
    );
    assert!(errors[0]
        .message
        .contains("max_in_flight_per_partition (16)"));
}

#[test]
fn a_per_key_limit_is_for_ordering_none_and_within_max_in_flight() {
    // Kafka orders by key by default: a key runs one at a time already.
    let errors = rejected(&format!(
        "{KAFKA_MINIMAL}[backpressure]\nmax_in_flight_per_key = 4\n"
    ));
    assert_eq!(
        places(&errors),
        vec![(5, 1, "backpressure.max_in_flight_per_key", Some("4"))],
        "{errors:#?}"
    );
    assert_eq!(
        errors[0].message,
        "backpressure.max_in_flight_per_key limits a key's deliveries in ordering mode \
         \"none\"; in mode \"key\" a key already runs one message at a time"
    );
    let none = format!("{KAFKA_MINIMAL}[ordering]\nmode = \"none\"\n[backpressure]\n");
    let errors = rejected(&format!(
        "{none}max_in_flight = 8\nmax_in_flight_per_partition = 8\nmax_in_flight_per_key = 9\n"
    ));
    assert_eq!(
        places(&errors),
        vec![(9, 1, "backpressure.max_in_flight_per_key", Some("9"))],
        "{errors:#?}"
    );
    assert!(errors[0]
        .message
        .contains("must not exceed backpressure.max_in_flight (8)"));
    let errors = rejected(&format!("{none}max_in_flight_per_key = 0\n"));
    assert_eq!(
        places(&errors),
        vec![(7, 1, "backpressure.max_in_flight_per_key", Some("0"))]
    );
    assert_eq!(errors[0].message, "must be at least 1");
    assert!(load(&format!("{none}max_in_flight_per_key = 4\n")).is_ok());
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

#[test]
fn queue_mode_takes_tiers_on_kafka_and_says_what_it_needs_elsewhere() {
    let text = format!(
        "{KAFKA_MINIMAL}[retry]\nmode = \"queue\"\ntiers = [\"500ms\", \"5s\"]\nparked_after_dead_letter = \"dead_letter\"\n"
    );
    let c = load(&text).unwrap();
    assert_eq!(
        c.retry.tiers,
        [Duration::from_millis(500), Duration::from_secs(5)]
    );
    assert_eq!(
        c.retry.parked_after_dead_letter,
        ParkedAfterDeadLetter::DeadLetter
    );

    let errors = rejected(&format!(
        "{KAFKA_MINIMAL}[retry]\nmode = \"queue\"\ntiers = []\n[dedup]\nenabled = false\n"
    ));
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("at least one delay tier")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("enable [dedup]")),
        "{messages:?}"
    );

    let errors = rejected(&format!(
        "{KAFKA_MINIMAL}[retry]\nmode = \"queue\"\ntiers = [\"1s\", \"soon\"]\n"
    ));
    assert_eq!(places(&errors)[0].2, "retry.tiers[1]", "{errors:#?}");

    let errors = rejected("[source.memory]\n[retry]\nmode = \"queue\"\n");
    assert!(
        errors[0]
            .message
            .contains("built for amqp, kafka, redis_streams and nats sources only"),
        "{errors:#?}"
    );
}

#[test]
fn a_batch_that_could_never_fill_or_wait_out_its_timeout_is_refused() {
    let text = format!(
        "{MINIMAL}[backpressure]\nmax_in_flight = 8\n\
         [delivery]\ntimeout = \"1s\"\n\
         [delivery.batch]\nmax_events = 16\nmax_bytes = \"0B\"\nmax_wait = \"2s\"\n"
    );
    let errors = rejected(&text);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "delivery.batch.max_events",
            "delivery.batch.max_bytes",
            "delivery.batch.max_wait"
        ],
        "{errors:#?}"
    );
    let message = |path: &str| &errors.iter().find(|e| e.path == path).unwrap().message;
    assert!(message("delivery.batch.max_events").contains("could never fill"));
    assert!(message("delivery.batch.max_wait").contains("shorter than delivery.timeout (1s)"));
    let zero = rejected(&format!("{MINIMAL}[delivery.batch]\nmax_events = 0\n"));
    assert_eq!(zero[0].path, "delivery.batch.max_events", "{zero:#?}");
}

#[test]
fn a_batch_table_with_its_defaults_is_valid() {
    let c = load(&format!("{MINIMAL}[delivery.batch]\n")).expect("valid");
    assert_eq!(c.delivery.batch, Some(BatchConfig::default()));
    assert_eq!(load(MINIMAL).expect("valid").delivery.batch, None);
}

#[test]
fn adaptive_concurrency_needs_a_floor_under_its_ceiling_and_no_batches() {
    let c = load(&format!(
        "{MINIMAL}[backpressure]\nadaptive = true\nmax_concurrency = 32\nmin_concurrency = 4\n"
    ))
    .unwrap();
    let bounds = c.backpressure.adaptive_bounds().unwrap();
    assert_eq!((bounds.initial, bounds.min, bounds.max), (8, 4, 32));
    assert_eq!(load(MINIMAL).unwrap().backpressure.adaptive_bounds(), None);

    let errors = rejected(&format!(
        "{MINIMAL}[backpressure]\nadaptive = true\nmax_concurrency = 4\nmin_concurrency = 8\n\
         [delivery.batch]\nmax_events = 2\n"
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["backpressure.adaptive", "backpressure.min_concurrency"],
        "{errors:#?}"
    );
    assert!(errors[0]
        .message
        .contains("does not apply to batch delivery"));
    assert!(errors[1].message.contains("must not exceed"));
    let errors = rejected(&format!("{MINIMAL}[backpressure]\nmin_concurrency = 0\n"));
    assert_eq!(places(&errors)[0].2, "backpressure.min_concurrency");
}

#[test]
fn a_sequence_without_what_keeps_it_is_refused_at_each_key() {
    let text = "\
[source.amqp]
queue = \"orders\"

[dedup]
enabled = false

[retry]
mode = \"queue\"

[ordering]
sequence = \"{json:/seq}\"
gap_timeout = \"0s\"
max_waiting = 64
first_sequence = 9007199254740993

[backpressure]
max_in_flight = 64

[[routes]]
name = \"refunds\"
ordering = { max_waiting = 3, on_gap = \"dead_letter\" }
";
    let errors = rejected(text);
    // Each refusal points at the sequence, the first key of it written.
    let at_sequence: Vec<&str> = errors
        .iter()
        .filter(|e| e.path == "ordering.sequence")
        .map(|e| e.message.as_str())
        .collect();
    for expected in [
        "set ordering.mode = \"key\" (it is \"none\")",
        "set dedup.enabled = true",
        "sequences need retry.mode = \"in_place\"",
    ] {
        assert!(
            at_sequence.iter().any(|m| m.contains(expected)),
            "{expected}: {at_sequence:#?}"
        );
    }
    let message = |path: &str| {
        &errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}: {errors:#?}"))
            .message
    };
    assert_eq!(message("ordering.gap_timeout"), "must be longer than 0s");
    assert_eq!(message("ordering.first_sequence"), "must be at most 2^53");
    assert!(message("ordering.max_waiting")
        .contains("ordering.max_waiting (64) must stay below backpressure.max_in_flight (64)"));
    assert!(
        message("routes[0].ordering.max_waiting").contains("set it in [ordering], not in a route")
    );

    // The settings of a sequence, without one.
    let errors = rejected(&format!("{MINIMAL}[ordering]\non_gap = \"deliver\"\n"));
    assert_eq!(
        places(&errors),
        vec![(4, 1, "ordering.on_gap", Some("\"deliver\""))]
    );
    assert!(errors[0].message.contains("with ordering.sequence only"));
    let errors = rejected(&format!("{MINIMAL}[ordering]\non_gap = \"later\"\n"));
    assert!(
        errors[0]
            .message
            .contains("expected one of `deliver`, `dead-letter`, `dead_letter`"),
        "{errors:#?}"
    );
}

#[test]
fn a_sequence_in_key_order_with_its_store_is_valid_in_a_route_too() {
    let config = load(&format!(
        "{MINIMAL}[ordering]\nmode = \"key\"\nsequence = \"{{header:seq}}\"\n\
         [[routes]]\nname = \"orders\"\nmatch.type = \"order.*\"\n\
         ordering = {{ gap_timeout = \"5s\", on_gap = \"dead_letter\" }}\n"
    ))
    .unwrap();
    let top = config.ordering.sequence_policy().unwrap();
    assert_eq!(top.gap_timeout, Duration::from_secs(30));
    let route = config.routes[0].effective(&config);
    let policy = route.ordering.sequence_policy().unwrap();
    assert_eq!(policy.field.to_string(), "{header:seq}", "inherited");
    assert_eq!(policy.gap_timeout, Duration::from_secs(5));
    assert_eq!(policy.on_gap, outrigger_policies::OnGap::DeadLetter);
}
