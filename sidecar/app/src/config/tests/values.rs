//! What a valid policy turns into: values, defaults, and the shipped examples.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use outrigger_core::Action;
use outrigger_policies::{BackoffKind, HeaderMatch, OrderingMode, StatusRange};

use super::{load, KAFKA_MINIMAL, MINIMAL};
use crate::config::*;
use outrigger_amqp::AmqpConfig;
use outrigger_kafka::{KafkaConfig, StartFrom};
use outrigger_memory::MemoryConfig;

#[test]
fn a_full_policy_parses_to_its_values() {
    let text = r#"
[source.amqp]
url = "amqp://u:p@rabbit:5672/%2f"
queue = "orders"
consumer_tag = "orders-sidecar"

[delivery]
url = "http://127.0.0.1:3000/events"
timeout = "5s"
forward_headers = ["Tenant", "x-request-id"]
ce_source = "/orders"
ce_type = "order.created"
response_excerpt = "8KiB"
http2 = true

[dedup]
enabled = true
key = "{header:tenant}:{json:/id}"
store = "embedded"
lease = "30s"
ttl = "2h"
on_store_error = "deliver"
redis = { url = "rediss://cache:6380", namespace = "ns", timeout = "500ms" }
embedded.path = "/var/lib/outrigger/dedup.redb"

[retry]
mode = "in_place"
max_attempts = 8
max_age = "2h"
backoff = "linear"
initial = "1s"
max = "1m"
multiplier = 1.5
jitter = 0

[[classify.rules]]
status = ["4xx", 503, "520-530"]
action = "retry"

[[classify.rules]]
header = "x-state=gone"
timeout = false
connection_error = false
body_contains = "gone"
decode_error = false
action = "dead-letter"

[dead_letter]
destination = "orders.parked"
declare = false

[ordering]
mode = "partition"

[backpressure]
max_in_flight = 16
max_in_flight_per_partition = 4
max_buffered_bytes = "8MiB"

[admin]
listen = "0.0.0.0:9191"
token = "secret"

[log]
format = "json"
level = "info,outrigger=debug"

[shutdown]
grace_period = "45s"
"#;
    let c = load(text).unwrap();
    assert_eq!(
        c.source,
        SourceConfig::Amqp(AmqpConfig {
            url: "amqp://u:p@rabbit:5672/%2f".into(),
            queue: "orders".into(),
            consumer_tag: "orders-sidecar".into(),
            retry_queue_type: Default::default(),
        })
    );
    assert_eq!(c.delivery.url, "http://127.0.0.1:3000/events");
    assert_eq!(c.delivery.timeout, Duration::from_secs(5));
    assert!(c.delivery.forwards("tenant") && c.delivery.forwards("X-Request-Id"));
    assert!(!c.delivery.forwards("authorization"));
    assert_eq!(c.delivery.ce_source.as_deref(), Some("/orders"));
    assert_eq!(c.delivery.ce_type, "order.created");
    assert_eq!(c.delivery.response_excerpt, ByteSize::kib(8));
    assert!(c.delivery.http2);
    assert_eq!(c.dedup.key.to_string(), "{header:tenant}:{json:/id}");
    assert_eq!(c.dedup.store, StoreKind::Embedded);
    assert_eq!(
        (c.dedup.lease, c.dedup.ttl),
        (Duration::from_secs(30), Duration::from_secs(7200))
    );
    assert_eq!(c.dedup.on_store_error, OnStoreError::Deliver);
    assert_eq!(c.dedup.redis.url, "rediss://cache:6380");
    assert_eq!(c.dedup.namespace(&c.source), "ns");
    assert_eq!(c.dedup.redis.timeout, Duration::from_millis(500));
    assert_eq!(
        c.dedup.embedded.path,
        PathBuf::from("/var/lib/outrigger/dedup.redb")
    );
    let b = c.retry.backoff();
    assert_eq!(
        (b.kind, b.initial, b.max),
        (
            BackoffKind::Linear,
            Duration::from_secs(1),
            Duration::from_secs(60)
        )
    );
    assert_eq!((b.multiplier, b.jitter), (1.5, 0.0));
    let policy = c.retry.policy();
    assert_eq!(
        (policy.max_attempts, policy.max_age),
        (8, Some(Duration::from_secs(7200)))
    );
    let rules: Vec<_> = c.classify.rules.iter().map(RuleConfig::to_rule).collect();
    assert_eq!(
        rules[0].status,
        vec![
            StatusRange::new(400, 499).unwrap(),
            StatusRange::single(503).unwrap(),
            StatusRange::new(520, 530).unwrap()
        ]
    );
    assert_eq!(rules[0].action, Action::Retry);
    assert_eq!(
        rules[1].header,
        Some(HeaderMatch {
            name: "x-state".into(),
            value: Some("gone".into())
        })
    );
    assert_eq!(
        (
            rules[1].timeout,
            rules[1].connection_error,
            rules[1].decode_error
        ),
        (Some(false), Some(false), Some(false))
    );
    assert_eq!(rules[1].body_contains.as_deref(), Some("gone"));
    assert_eq!(rules[1].action, Action::DeadLetter);
    assert_eq!(c.classify.classifier().rules().len(), 2);
    assert_eq!(c.dead_letter.destination(&c.source), "orders.parked");
    assert!(!c.dead_letter.declare);
    assert_eq!(c.ordering.mode(&c.source), OrderingMode::Partition);
    assert_eq!(
        c.backpressure,
        BackpressureConfig {
            max_in_flight: 16,
            max_in_flight_per_partition: 4,
            max_in_flight_per_key: None,
            max_buffered_bytes: ByteSize::mib(8),
            max_concurrency: None,
            adaptive: false,
            min_concurrency: 1,
            prefetch: None,
        }
    );
    assert_eq!(
        c.admin.listen,
        "0.0.0.0:9191".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.admin.token.as_deref(), Some("secret"));
    assert_eq!(
        (c.log.format, c.log.level.as_str()),
        (LogFormat::Json, "info,outrigger=debug")
    );
    assert_eq!(c.shutdown.grace_period, Duration::from_secs(45));
}

#[test]
fn every_section_but_source_has_defaults() {
    let c = load(MINIMAL).unwrap();
    let SourceConfig::Amqp(amqp) = &c.source else {
        panic!("amqp source expected")
    };
    assert_eq!(amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(amqp.consumer_tag, "outrigger");
    assert_eq!(
        (c.source.kind(), c.source.name().as_str()),
        ("amqp", "orders")
    );
    assert_eq!(c.delivery, DeliveryConfig::default());
    assert_eq!(c.delivery.url, "http://127.0.0.1:8080/");
    assert_eq!(c.delivery.timeout, Duration::from_secs(10));
    assert_eq!(c.delivery.response_excerpt, ByteSize::kib(4));
    assert_eq!(c.delivery.ce_type, "outrigger.event");
    assert_eq!(c.dedup, DedupConfig::default());
    assert!(c.dedup.enabled);
    assert_eq!(c.dedup.key.to_string(), "{message_id}");
    assert_eq!(c.dedup.store, StoreKind::Redis);
    assert_eq!(c.dedup.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.dedup.namespace(&c.source), "orders");
    assert_eq!(
        (c.dedup.lease, c.dedup.ttl),
        (Duration::from_secs(60), Duration::from_secs(86400))
    );
    assert_eq!(c.dedup.on_store_error, OnStoreError::Pause);
    assert_eq!(c.retry, RetryConfig::default());
    assert_eq!(
        (c.retry.mode, c.retry.max_attempts),
        (RetryMode::InPlace, 5)
    );
    assert_eq!(c.retry.backoff().kind, BackoffKind::Exponential);
    assert_eq!(
        (c.retry.initial, c.retry.max),
        (Duration::from_millis(200), Duration::from_secs(30))
    );
    assert!(c.classify.rules.is_empty());
    assert_eq!(c.dead_letter.destination(&c.source), "orders.dlq");
    assert!(c.dead_letter.declare);
    assert_eq!(c.ordering, OrderingConfig::default());
    assert_eq!(c.ordering.mode(&c.source), OrderingMode::None);
    assert_eq!(c.backpressure, BackpressureConfig::default());
    assert_eq!(c.backpressure.max_in_flight, 64);
    assert_eq!(c.backpressure.max_in_flight_per_partition, 16);
    assert_eq!(c.backpressure.max_buffered_bytes, ByteSize::mib(64));
    assert_eq!(
        c.admin.listen,
        "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.admin.token, None);
    assert_eq!(
        (c.log.format, c.log.level.as_str()),
        (LogFormat::Text, "info")
    );
    assert_eq!(c.shutdown.grace_period, Duration::from_secs(30));
}

#[test]
fn a_full_kafka_policy_parses_to_its_values() {
    let text = r#"
[source.kafka]
bootstrap_servers = "kafka-1:9092,kafka-2:9092"
topics = ["orders", "refunds"]
group_id = "billing"
start_from = "latest"
commit_interval = "500ms"
revoke_timeout = "20s"

[source.kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "PLAIN"
"session.timeout.ms" = "45000"

[dead_letter]
declare = false

[ordering]
mode = "none"

[backpressure]
max_in_flight = 128
max_in_flight_per_partition = 128
max_in_flight_per_key = 8
max_buffered_bytes = "16MiB"
"#;
    let c = load(text).unwrap();
    let properties = [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "PLAIN"),
        ("session.timeout.ms", "45000"),
    ];
    assert_eq!(
        c.source,
        SourceConfig::Kafka(KafkaConfig {
            bootstrap_servers: "kafka-1:9092,kafka-2:9092".into(),
            topics: vec!["orders".into(), "refunds".into()],
            group_id: "billing".into(),
            start_from: StartFrom::Latest,
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            commit_interval: Duration::from_millis(500),
            revoke_timeout: Duration::from_secs(20),
        })
    );
    assert_eq!(
        (c.source.kind(), c.source.name().as_str()),
        ("kafka", "orders")
    );
    assert_eq!(c.source.names(), vec!["orders", "refunds"]);
    assert_eq!(c.dedup.namespace(&c.source), "orders");
    assert_eq!(c.dead_letter.destination(&c.source), "orders.dlq");
    assert_eq!(c.dead_letter.destination_for("refunds"), "refunds.dlq");
    assert_eq!(c.ordering.mode(&c.source), OrderingMode::None);
    assert_eq!(
        c.backpressure,
        BackpressureConfig {
            max_in_flight: 128,
            max_in_flight_per_partition: 128,
            max_in_flight_per_key: Some(8),
            max_buffered_bytes: ByteSize::mib(16),
            max_concurrency: None,
            adaptive: false,
            min_concurrency: 1,
            prefetch: None,
        }
    );
}

#[test]
fn a_kafka_source_needs_only_topics_and_a_group() {
    let c = load(KAFKA_MINIMAL).unwrap();
    let SourceConfig::Kafka(kafka) = &c.source else {
        panic!("kafka source expected")
    };
    assert_eq!(kafka.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(kafka.topics, vec!["orders".to_owned()]);
    assert_eq!(kafka.group_id, "orders-service");
    assert_eq!(kafka.start_from, StartFrom::Earliest);
    assert!(kafka.properties.is_empty());
    assert_eq!(kafka.commit_interval, Duration::from_secs(1));
    assert_eq!(kafka.revoke_timeout, Duration::from_secs(10));
    assert_eq!(
        (c.source.kind(), c.source.name().as_str()),
        ("kafka", "orders")
    );
    assert_eq!(c.source.names(), vec!["orders"]);
    assert_eq!(c.dead_letter.destination(&c.source), "orders.dlq");
    assert_eq!(c.ordering.mode(&c.source), OrderingMode::Key);
    assert_eq!(c.backpressure, BackpressureConfig::default());
}

#[test]
fn dead_letters_go_to_each_topics_own_destination_unless_one_is_set() {
    let text = "[source.kafka]\ntopics = [\"a\", \"b\"]\ngroup_id = \"g\"\n";
    let c = load(text).unwrap();
    let per_topic: Vec<_> = c
        .source
        .names()
        .into_iter()
        .map(|t| c.dead_letter.destination_for(&t))
        .collect();
    assert_eq!(per_topic, vec!["a.dlq", "b.dlq"]);
    assert_eq!(c.dead_letter.destination(&c.source), "a.dlq");

    let c = load(&format!("{text}[dead_letter]\ndestination = \"parked\"\n")).unwrap();
    assert_eq!(c.dead_letter.destination_for("a"), "parked");
    assert_eq!(c.dead_letter.destination_for("b"), "parked");
    assert_eq!(c.dead_letter.destination(&c.source), "parked");
}

#[test]
fn ordering_defaults_to_key_for_kafka_and_none_for_queues() {
    let default = |text: &str| {
        let c = load(text).unwrap();
        (c.source.kind(), c.ordering.mode, c.ordering.mode(&c.source))
    };
    assert_eq!(default(KAFKA_MINIMAL), ("kafka", None, OrderingMode::Key));
    assert_eq!(default(MINIMAL), ("amqp", None, OrderingMode::None));
    assert_eq!(
        default("[source.memory]\n"),
        ("memory", None, OrderingMode::None)
    );
    for (mode, expected) in [
        ("partition", OrderingMode::Partition),
        ("key", OrderingMode::Key),
        ("none", OrderingMode::None),
    ] {
        for source in [KAFKA_MINIMAL, MINIMAL] {
            let c = load(&format!("{source}[ordering]\nmode = \"{mode}\"\n")).unwrap();
            assert_eq!(c.ordering.mode, Some(expected));
            assert_eq!(c.ordering.mode(&c.source), expected, "{source}");
        }
    }
}

#[test]
fn the_per_partition_limit_does_not_bind_an_amqp_policy() {
    // A queue has no partitions: lowering max_in_flight below the per-partition default is fine.
    let c = load(&format!("{MINIMAL}[backpressure]\nmax_in_flight = 8\n")).unwrap();
    assert_eq!(
        (
            c.backpressure.max_in_flight,
            c.backpressure.max_in_flight_per_partition
        ),
        (8, 16)
    );
}

#[test]
fn the_summary_names_queues_or_topics() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(
        c.summary(),
        "amqp queue \"orders\" → http://127.0.0.1:8080/; dedup on {message_id} via redis; \
         up to 5 attempts; 0 classify rules; dead letters to \"orders.dlq\""
    );
    let c = load(KAFKA_MINIMAL).unwrap();
    assert!(
        c.summary().starts_with("kafka topic \"orders\" → "),
        "{}",
        c.summary()
    );
    assert!(c.summary().ends_with("dead letters to \"orders.dlq\""));
    let two = "[source.kafka]\ntopics = [\"a\", \"b\"]\ngroup_id = \"g\"\n";
    let c = load(two).unwrap();
    assert!(
        c.summary().starts_with("kafka topics \"a\", \"b\" → "),
        "{}",
        c.summary()
    );
    assert!(c
        .summary()
        .ends_with("dead letters to \"a.dlq\", \"b.dlq\""));
    let c = load(&format!("{two}[dead_letter]\ndestination = \"parked\"\n")).unwrap();
    assert!(c.summary().ends_with("dead letters to \"parked\""));
}

#[test]
fn an_empty_memory_source_takes_its_default_queue() {
    let c = load("[source.memory]\n").unwrap();
    assert_eq!(c.source, SourceConfig::Memory(MemoryConfig::default()));
    assert_eq!(
        (c.source.kind(), c.source.name().as_str()),
        ("memory", "events")
    );
}

#[test]
fn every_example_policy_loads() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the examples directory exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = load_file(&path, std::iter::empty()) {
                panic!("{} does not load:\n{e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "expected amqp-redis.toml, demo.toml and kafka-redis.toml in {}",
        dir.display()
    );
}

#[test]
fn the_kafka_example_is_a_kafka_policy() {
    let text = include_str!("../../../../../examples/kafka-redis.toml");
    let c = load_str(text, "examples/kafka-redis.toml", std::iter::empty()).unwrap();
    assert_eq!(c.source.kind(), "kafka");
    assert_eq!(c.dedup.store, StoreKind::Redis);
    assert_eq!(c.ordering.mode(&c.source), OrderingMode::Key);
}

#[test]
fn the_demo_policy_is_fast_and_self_contained() {
    let text = include_str!("../../../../../examples/demo.toml");
    let c = load_str(text, "examples/demo.toml", std::iter::empty()).unwrap();
    assert_eq!(c.source.kind(), "memory");
    assert_eq!(c.dedup.store, StoreKind::Embedded);
    assert_eq!(
        (c.retry.initial, c.retry.max),
        (Duration::from_millis(5), Duration::from_millis(50))
    );
    assert_eq!(c.retry.max_attempts, 4);
    assert_eq!(
        (c.delivery.timeout, c.dedup.lease),
        (Duration::from_secs(2), Duration::from_secs(5))
    );
}
