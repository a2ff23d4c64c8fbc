//! `OUTRIGGER__SECTION__KEY` overrides: what they change, and how their errors read.

use crate::config::SourceConfig;

use super::{load_env, KAFKA_MINIMAL, MINIMAL};

#[test]
fn environment_overrides_win_over_the_file() {
    let text = format!("{MINIMAL}[retry]\nmax_attempts = 5\n");
    let c = load_env(
        &text,
        &[
            ("OUTRIGGER__RETRY__MAX_ATTEMPTS", "9"),
            ("OUTRIGGER__SOURCE__AMQP__QUEUE", "payments"),
            ("OUTRIGGER__DEDUP__REDIS__URL", "redis://cache:6379"),
            ("OUTRIGGER__DELIVERY__FORWARD_HEADERS", "[\"tenant\"]"),
            ("OUTRIGGER__ADMIN__TOKEN", "12345"),
            ("OUTRIGGER__LOG__LEVEL", "\"debug\""),
            ("OTHER__RETRY__MAX_ATTEMPTS", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.retry.max_attempts, 9);
    assert_eq!(c.source.name(), "payments");
    assert_eq!(c.dedup.redis.url, "redis://cache:6379");
    assert_eq!(c.delivery.forward_headers, vec!["tenant".to_owned()]);
    assert_eq!(
        c.admin.token.as_deref(),
        Some("12345"),
        "a number where a string is wanted"
    );
    assert_eq!(c.log.level, "debug");
}

#[test]
fn an_environment_override_can_supply_the_whole_source() {
    let c = load_env("", &[("OUTRIGGER__SOURCE__AMQP__QUEUE", "orders")]).unwrap();
    assert_eq!(
        (c.source.kind(), c.source.name().as_str()),
        ("amqp", "orders")
    );
}

#[test]
fn bad_environment_values_name_their_variable() {
    let errors = load_env(
        MINIMAL,
        &[
            ("OUTRIGGER__RETRY__MAX_ATTEMPTS", "x"),
            ("OUTRIGGER__RETRY__JITTER", "2"),
            ("OUTRIGGER__RETRY__BOGUS", "1"),
            ("OUTRIGGER__SOURCE__AMQP__QUEUE__NAME", "q"),
            ("OUTRIGGER____X", "1"),
        ],
    )
    .unwrap_err()
    .errors;
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        errors
            .iter()
            .all(|e| e.location.is_none() && e.env_var.is_some()),
        "{lines:#?}"
    );
    assert!(lines.contains(
        &"OUTRIGGER__RETRY__MAX_ATTEMPTS: retry.max_attempts: expected a whole number from 0 to \
          4294967295, found a string (value: \"x\")"
            .to_owned()
    ), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("OUTRIGGER__RETRY__JITTER: retry.jitter: must be between 0 and 1")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("OUTRIGGER__RETRY__BOGUS: retry.bogus: unknown key `bogus`")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "OUTRIGGER__SOURCE__AMQP__QUEUE__NAME: source.amqp.queue.name: cannot override"
        )),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("OUTRIGGER____X: not a valid override name")),
        "{lines:#?}"
    );
    assert_eq!(errors.len(), 5, "{lines:#?}");
}

#[test]
fn a_table_an_override_creates_blames_that_override() {
    let errors = load_env("", &[("OUTRIGGER__SOURCE__AMQP__URL", "amqp://rabbit")])
        .unwrap_err()
        .errors;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].to_string(),
        "OUTRIGGER__SOURCE__AMQP__URL: source.amqp.queue: missing required key `queue`"
    );
}

#[test]
fn an_override_can_replace_a_whole_section() {
    let c = load_env(
        MINIMAL,
        &[
            ("OUTRIGGER__RETRY", "{ max_attempts = 2 }"),
            ("OUTRIGGER__RETRY__JITTER", "0.5"),
        ],
    )
    .unwrap();
    assert_eq!((c.retry.max_attempts, c.retry.jitter), (2, 0.5));
}

const KAFKA_PROPERTIES: &str = "\
[source.kafka.properties]
\"security.protocol\" = \"SASL_SSL\"
\"sasl.mechanism\" = \"PLAIN\"
";

fn kafka_properties(c: &crate::config::Config) -> Vec<(&str, &str)> {
    let SourceConfig::Kafka(kafka) = &c.source else {
        panic!("kafka source expected")
    };
    kafka
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn kafka_settings_are_overridden_like_any_other() {
    let c = load_env(
        KAFKA_MINIMAL,
        &[
            ("OUTRIGGER__SOURCE__KAFKA__GROUP_ID", "payments"),
            (
                "OUTRIGGER__SOURCE__KAFKA__TOPICS",
                "[\"payments\", \"refunds\"]",
            ),
            ("OUTRIGGER__SOURCE__KAFKA__START_FROM", "latest"),
            ("OUTRIGGER__ORDERING__MODE", "partition"),
            ("OUTRIGGER__BACKPRESSURE__MAX_BUFFERED_BYTES", "1MiB"),
        ],
    )
    .unwrap();
    let SourceConfig::Kafka(kafka) = &c.source else {
        panic!("kafka source expected")
    };
    assert_eq!(kafka.group_id, "payments");
    assert_eq!(c.source.names(), vec!["payments", "refunds"]);
    assert_eq!(kafka.start_from, outrigger_kafka::StartFrom::Latest);
    assert_eq!(
        c.ordering.mode,
        Some(outrigger_policies::OrderingMode::Partition)
    );
    assert_eq!(
        c.backpressure.max_buffered_bytes,
        bytesize::ByteSize::mib(1)
    );
}

#[test]
fn one_kafka_property_is_overridden_by_its_dotted_name() {
    // Variable names with dots are fine for Kubernetes, Docker and `env`, not for a shell's
    // `export`; the name is lower-cased like every override's, as librdkafka's names are.
    let text = format!("{KAFKA_MINIMAL}{KAFKA_PROPERTIES}");
    let c = load_env(
        &text,
        &[
            (
                "OUTRIGGER__SOURCE__KAFKA__PROPERTIES__SASL.MECHANISM",
                "SCRAM-SHA-512",
            ),
            (
                "OUTRIGGER__SOURCE__KAFKA__PROPERTIES__SASL.PASSWORD",
                "s3cret",
            ),
            (
                "OUTRIGGER__SOURCE__KAFKA__PROPERTIES__SESSION.TIMEOUT.MS",
                "45000",
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        kafka_properties(&c),
        vec![
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.password", "s3cret"),
            ("security.protocol", "SASL_SSL"),
            ("session.timeout.ms", "45000"),
        ]
    );
}

#[test]
fn kafka_properties_are_replaced_as_a_whole_by_an_inline_table() {
    let text = format!("{KAFKA_MINIMAL}{KAFKA_PROPERTIES}");
    let c = load_env(
        &text,
        &[(
            "OUTRIGGER__SOURCE__KAFKA__PROPERTIES",
            "{ \"security.protocol\" = \"SSL\" }",
        )],
    )
    .unwrap();
    assert_eq!(kafka_properties(&c), vec![("security.protocol", "SSL")]);
}

#[test]
fn an_owned_kafka_property_from_the_environment_names_its_variable() {
    let errors = load_env(
        KAFKA_MINIMAL,
        &[
            ("OUTRIGGER__SOURCE__KAFKA__PROPERTIES__GROUP.ID", "other"),
            (
                "OUTRIGGER__SOURCE__KAFKA__PROPERTIES",
                "{ \"auto.offset.reset\" = \"latest\" }",
            ),
        ],
    )
    .unwrap_err()
    .errors;
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "OUTRIGGER__SOURCE__KAFKA__PROPERTIES: source.kafka.properties.\"auto.offset.reset\": \
             `auto.offset.reset` is set by the sidecar: set source.kafka.start_from (\"earliest\" \
             or \"latest\") instead (value: \"latest\")",
            "OUTRIGGER__SOURCE__KAFKA__PROPERTIES__GROUP.ID: source.kafka.properties.\"group.id\": \
             `group.id` is set by the sidecar: set source.kafka.group_id instead \
             (value: \"other\")",
        ]
    );
}
