//! Every check an adapter makes before it starts is one `outrigger check` reports: where the
//! setting was written (file:line:column), what is wrong, exit 64. `outrigger run` refuses the
//! same file with exit 64 before it connects anywhere (the brokers named here do not exist),
//! and the adapter's own `Broker::connect` refuses the same table with the same words.
//!
//! The cases walk each adapter's `validate` one check at a time; a check added there without
//! a case here is a check `run` could make that nobody showed `check` makes too.

use std::process::Command;
use std::time::Duration;

use outrigger_core::{Broker, SourceContext, SourceError};
use serde::de::DeserializeOwned;

/// One invalid policy: the file, and the first error `check` must print for it.
struct Case {
    policy: &'static str,
    /// `line:column: key path`, as the error line has them after the file name.
    at: &'static str,
    /// A part of the message.
    says: &'static str,
}

fn outrigger(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(args)
        .env_remove("OUTRIGGER_CONFIG")
        .env("RUST_LOG", "off")
        .output()
        .expect("outrigger runs");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code(), text)
}

/// `check` and `run` both refuse the case's policy with exit 64, at the case's place.
fn refused_by_check_and_run(case: &Case) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, case.policy).unwrap();
    let path = path.to_str().unwrap();
    let want = format!("{path}:{}: ", case.at);
    for command in ["check", "run"] {
        let started = std::time::Instant::now();
        let (code, text) = outrigger(&[command, "--config", path]);
        assert_eq!(
            code,
            Some(64),
            "{command} must exit 64 for:\n{}\n{text}",
            case.policy
        );
        let line = text
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("{command}: no error at {want} in:\n{text}"));
        assert!(
            line.contains(case.says),
            "{command}: {line:?} lacks {:?}",
            case.says
        );
        // Nothing was started: no broker was waited for.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{command} connected"
        );
    }
}

/// The `[source.<kind>]` table of a policy, deserialized as its adapter reads it.
fn table<C: DeserializeOwned>(policy: &str, kind: &str) -> C {
    let doc: toml_edit::DocumentMut = policy.parse().unwrap();
    let table = doc["source"][kind]
        .clone()
        .into_table()
        .unwrap_or_else(|item| {
            item.as_inline_table()
                .expect("the source table")
                .clone()
                .into_table()
        });
    toml_edit::de::from_document(toml_edit::DocumentMut::from(table)).unwrap()
}

/// The adapter's connect refuses `config` in `context` as invalid, saying `says`.
async fn connect_refuses<B: Broker>(config: &B::Config, context: &SourceContext, says: &str) {
    match B::connect(config, context).await {
        Err(SourceError::Config(problems)) => assert!(
            problems.iter().any(|p| p.message.contains(says)),
            "{problems:#?} lacks {says:?}"
        ),
        Err(other) => panic!(
            "{} refused with {other} instead of its config check",
            B::KIND
        ),
        Ok(_) => panic!("{} connected with an invalid config", B::KIND),
    }
}

const AMQP: &[Case] = &[
    Case {
        policy: "[source.amqp]\nqueue = \"orders\"\nurl = \"http://rabbit\"\n",
        at: "3:1: source.amqp.url",
        says: "expected an amqp:// or amqps:// URL",
    },
    Case {
        policy: "[source.amqp]\nqueue = \"orders\"\nurl = \"amqp://rabbit:port/\"\n",
        at: "3:1: source.amqp.url",
        says: "not a valid AMQP URL",
    },
    Case {
        policy: "[source.amqp]\nqueue = \" \"\n",
        at: "2:1: source.amqp.queue",
        says: "must not be empty",
    },
    Case {
        policy: concat!(
            "[source.amqp]\nqueue = \"",
            "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
            "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
            "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
            "qqqqqqq\"\n"
        ),
        at: "2:1: source.amqp.queue",
        says: "AMQP queue names (the dead-letter queue's too) have at most 255 bytes",
    },
    Case {
        policy: concat!(
            "[source.amqp]\nqueue = \"orders\"\nconsumer_tag = \"",
            "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt",
            "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt",
            "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt",
            "tttttttttttttt\"\n"
        ),
        at: "3:1: source.amqp.consumer_tag",
        says: "AMQP consumer tags have at most 255 bytes",
    },
    Case {
        policy: "[source.amqp]\nqueue = \"orders\"\n[dead_letter]\ndestination = \"orders\"\n",
        at: "4:1: dead_letter.destination",
        says: "must differ from the source queue",
    },
];

#[tokio::test]
async fn every_amqp_start_check_is_reported_by_check_and_refused_by_run() {
    for case in AMQP {
        refused_by_check_and_run(case);
        let config: outrigger_amqp::AmqpConfig = table(case.policy, "amqp");
        let context = SourceContext {
            dead_letter_destination: case.policy.contains("destination").then(|| "orders".into()),
            ..SourceContext::default()
        };
        connect_refuses::<outrigger_amqp::Amqp>(&config, &context, case.says).await;
    }
}

/// A Kafka source whose brokers do not exist: `run` must not get as far as looking for them.
macro_rules! kafka {
    ($rest:literal) => {
        concat!(
            "[source.kafka]\nbootstrap_servers = \"127.0.0.1:1\"\ngroup_id = \"g\"\n",
            $rest
        )
    };
}

const KAFKA: &[Case] = &[
    Case {
        policy: "[source.kafka]\nbootstrap_servers = \" \"\ntopics = [\"o\"]\ngroup_id = \"g\"\n",
        at: "2:1: source.kafka.bootstrap_servers",
        says: "must not be empty; list brokers as host:port",
    },
    Case {
        policy: kafka!("topics = []\n"),
        at: "4:1: source.kafka.topics",
        says: "must list at least one topic",
    },
    Case {
        policy: kafka!("topics = [\"bad topic\"]\n"),
        at: "4:11: source.kafka.topics[0]",
        says: "not a valid Kafka topic name",
    },
    Case {
        policy: kafka!("topics = [\"..\"]\n"),
        at: "4:11: source.kafka.topics[0]",
        says: "`.` and `..` are not valid Kafka topic names",
    },
    Case {
        policy: kafka!("topics = [\"o\", \"o\"]\n"),
        at: "4:16: source.kafka.topics[1]",
        says: "listed twice",
    },
    Case {
        policy: "[source.kafka]\ntopics = [\"o\"]\ngroup_id = \" \"\n",
        at: "3:1: source.kafka.group_id",
        says: "name the consumer group",
    },
    Case {
        policy: kafka!("topics = [\"o\"]\nproperties = { \"group.id\" = \"x\" }\n"),
        at: "5:16: source.kafka.properties.\"group.id\"",
        says: "`group.id` is set by the sidecar: set source.kafka.group_id instead",
    },
    Case {
        policy: kafka!("topics = [\"o\"]\nproperties = { \"session.timeout.msx\" = \"1\" }\n"),
        at: "5:16: source.kafka.properties.\"session.timeout.msx\"",
        says: "librdkafka refuses it: No such configuration property",
    },
    Case {
        policy: kafka!("topics = [\"o\"]\nproperties = { \"session.timeout.ms\" = \"soon\" }\n"),
        at: "5:16: source.kafka.properties.\"session.timeout.ms\"",
        says: "librdkafka refuses it: Invalid value",
    },
    Case {
        policy: kafka!("topics = [\"o\"]\ncommit_interval = \"0s\"\n"),
        at: "5:1: source.kafka.commit_interval",
        says: "must be longer than 0s",
    },
    Case {
        policy: kafka!("topics = [\"o\"]\nrevoke_timeout = \"0s\"\n"),
        at: "5:1: source.kafka.revoke_timeout",
        says: "must be longer than 0s",
    },
    Case {
        policy: kafka!("topics = [\"o\"]\nrevoke_timeout = \"5m\"\n"),
        at: "5:1: source.kafka.revoke_timeout",
        says: "must be shorter than librdkafka's max.poll.interval.ms (5m)",
    },
    Case {
        policy: kafka!("topics = [\"o\", \"o.dlq\"]\n"),
        at: "4:16: source.kafka.topics[1]",
        says: "dead letters of topic \"o\" go to \"o.dlq\" by default",
    },
    Case {
        policy: kafka!("topics = [\"o\"]\n[dead_letter]\ndestination = \"o\"\n"),
        at: "6:1: dead_letter.destination",
        says: "must differ from every source topic",
    },
    Case {
        policy: kafka!("topics = [\"o\", \"o.retry.2\"]\n[retry]\nmode = \"queue\"\n"),
        at: "4:16: source.kafka.topics[1]",
        says: "\"o.retry.2\" is the retry topic of tier 2 of topic \"o\"",
    },
];

#[tokio::test]
async fn every_kafka_start_check_is_reported_by_check_and_refused_by_run() {
    for case in KAFKA {
        refused_by_check_and_run(case);
        let config: outrigger_kafka::KafkaConfig = table(case.policy, "kafka");
        let context = SourceContext {
            dead_letter_destination: case.policy.contains("destination").then(|| "o".into()),
            retry_tiers: if case.policy.contains("queue") {
                vec![Duration::from_secs(1), Duration::from_secs(10)]
            } else {
                Vec::new()
            },
            ..SourceContext::default()
        };
        connect_refuses::<outrigger_kafka::Kafka>(&config, &context, case.says).await;
    }
}

/// A Redis Streams source on a Redis that does not exist: `run` must not get as far as
/// looking for it.
macro_rules! redis_streams {
    ($rest:literal) => {
        concat!(
            "[source.redis_streams]\nurl = \"redis://127.0.0.1:1\"\ngroup = \"g\"\n",
            $rest
        )
    };
}

const REDIS_STREAMS: &[Case] = &[
    Case {
        policy:
            "[source.redis_streams]\nstreams = [\"o\"]\ngroup = \"g\"\nurl = \"http://redis\"\n",
        at: "4:1: source.redis_streams.url",
        says: "expected a redis:// URL (rediss:// for TLS, redis+unix:// for a socket)",
    },
    Case {
        policy:
            "[source.redis_streams]\nstreams = [\"o\"]\ngroup = \"g\"\nurl = \"redis://redis/x\"\n",
        at: "4:1: source.redis_streams.url",
        says: "not a valid Redis URL: Invalid database number",
    },
    Case {
        policy:
            "[source.redis_streams]\nstreams = [\"o\"]\ngroup = \"g\"\nurl = \"rediss://redis\"\n",
        at: "4:1: source.redis_streams.url",
        says: "rediss:// (TLS) is not supported by the Redis Streams source yet",
    },
    Case {
        policy: redis_streams!("streams = []\n"),
        at: "4:1: source.redis_streams.streams",
        says: "must list at least one stream",
    },
    Case {
        policy: redis_streams!("streams = [\" \"]\n"),
        at: "4:12: source.redis_streams.streams[0]",
        says: "must not be empty",
    },
    Case {
        policy: redis_streams!("streams = [\"o\", \"o\"]\n"),
        at: "4:17: source.redis_streams.streams[1]",
        says: "listed twice: each stream is consumed once",
    },
    Case {
        policy: "[source.redis_streams]\nstreams = [\"o\"]\ngroup = \" \"\n",
        at: "3:1: source.redis_streams.group",
        says: "name the consumer group",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\nconsumer = \"\"\n"),
        at: "5:1: source.redis_streams.consumer",
        says: "leave it out to use the hostname",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\npayload_field = \"\"\n"),
        at: "5:1: source.redis_streams.payload_field",
        says: "must not be empty: name an entry field",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\nkey_field = \"outrigger-dlq-reason\"\n"),
        at: "5:1: source.redis_streams.key_field",
        says: "is a field the sidecar writes on dead letters",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\nkey_field = \"payload\"\n"),
        at: "5:1: source.redis_streams.key_field",
        says: "must differ from payload_field",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\nblock = \"0s\"\n"),
        at: "5:1: source.redis_streams.block",
        says: "must be at least 1ms",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\nclaim_idle = \"500ms\"\n"),
        at: "5:1: source.redis_streams.claim_idle",
        says: "must be at least 1s",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\nblock = \"30s\"\n"),
        at: "5:1: source.redis_streams.block",
        says: "block (30s) must be shorter than source.redis_streams.claim_idle (30s)",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\ntimeout = \"0s\"\n"),
        at: "5:1: source.redis_streams.timeout",
        says: "must be longer than 0s",
    },
    Case {
        policy: redis_streams!("streams = [\"o\", \"o.dlq\"]\n"),
        at: "4:17: source.redis_streams.streams[1]",
        says: "dead letters of stream \"o\" go to \"o.dlq\" by default",
    },
    Case {
        policy: redis_streams!("streams = [\"o\"]\n[dead_letter]\ndestination = \"o\"\n"),
        at: "6:1: dead_letter.destination",
        says: "must differ from every source stream",
    },
];

#[tokio::test]
async fn every_redis_streams_start_check_is_reported_by_check_and_refused_by_run() {
    for case in REDIS_STREAMS {
        refused_by_check_and_run(case);
        let config: outrigger_redis_streams::RedisStreamsConfig =
            table(case.policy, "redis_streams");
        let context = SourceContext {
            dead_letter_destination: case.policy.contains("destination").then(|| "o".into()),
            ..SourceContext::default()
        };
        connect_refuses::<outrigger_redis_streams::RedisStreams>(&config, &context, case.says)
            .await;
    }
}

/// An AMQP source on a broker that does not exist, and `[dedup.redis]` settings after it.
macro_rules! dedup_redis {
    ($rest:literal) => {
        concat!(
            "[source.amqp]\nqueue = \"orders\"\nurl = \"amqp://127.0.0.1:1\"\n[dedup.redis]\n",
            $rest
        )
    };
}

const PASSWORD: &str = "hunter2-Redis";

const DEDUP_REDIS: &[Case] = &[
    Case {
        policy: dedup_redis!("url = \"http://redis\"\n"),
        at: "5:1: dedup.redis.url",
        says: "expected a redis:// URL (rediss:// for TLS, redis+unix:// for a socket)",
    },
    Case {
        policy: dedup_redis!("url = \"redis://app:hunter2-Redis@redis:port\"\n"),
        at: "5:1: dedup.redis.url",
        says: "not a valid Redis URL",
    },
    Case {
        policy: dedup_redis!("url = \"rediss://redis/#insecure\"\n"),
        at: "5:1: dedup.redis.url",
        says: "#insecure (no certificate check) is not supported",
    },
    Case {
        policy: dedup_redis!(
            "url = \"rediss://redis\"\n[dedup.redis.tls]\nca_file = \"/nonexistent/outrigger/ca.pem\"\n"
        ),
        at: "7:1: dedup.redis.tls.ca_file",
        says: "cannot read /nonexistent/outrigger/ca.pem: No such file or directory",
    },
    Case {
        policy: dedup_redis!(
            "url = \"redis://redis\"\ntls = { ca_file = \"/nonexistent/outrigger/ca.pem\" }\n"
        ),
        at: "6:9: dedup.redis.tls.ca_file",
        says: "TLS settings need a rediss:// URL",
    },
    Case {
        policy: dedup_redis!("url = \"rediss://redis\"\ntls = { cert_file = \"c.pem\" }\n"),
        at: "6:9: dedup.redis.tls.cert_file",
        says: "needs dedup.redis.tls.key_file",
    },
    Case {
        policy: dedup_redis!("username = \"app\"\n"),
        at: "5:1: dedup.redis.username",
        says: "a user needs a password",
    },
    Case {
        policy: dedup_redis!("cluster = [\"redis://127.0.0.1:1\", \"unix:///tmp/r.sock\"]\n"),
        at: "5:35: dedup.redis.cluster[1]",
        says: "expected a redis:// URL (rediss:// for TLS) of a cluster node",
    },
    Case {
        policy: dedup_redis!("url = \"redis://cache\"\ncluster = [\"redis://127.0.0.1:1\"]\n"),
        at: "5:1: dedup.redis.url",
        says: "dedup.redis.url and dedup.redis.cluster both say where Redis is",
    },
    Case {
        policy: dedup_redis!(
            "cluster = [\"redis://127.0.0.1:1\"]\ntls = { ca_file = \"/nonexistent/ca.pem\" }\n"
        ),
        at: "6:9: dedup.redis.tls.ca_file",
        says: "TLS settings need a rediss:// URL: the nodes of dedup.redis.cluster are not rediss://",
    },
    Case {
        policy: dedup_redis!("username = \"app\"\npassword = \"\"\n"),
        at: "6:1: dedup.redis.password",
        says: "must not be empty",
    },
];

#[tokio::test]
async fn every_redis_store_check_is_reported_by_check_and_refused_by_run_and_connect() {
    for case in DEDUP_REDIS {
        refused_by_check_and_run(case);
        if case.says.contains("both say where Redis is") {
            // The policy's choice between two settings; the store gets one of them.
            continue;
        }
        // The store's own connect refuses the same settings in the same words.
        let config: outrigger::config::Config = toml_edit::de::from_str(case.policy).unwrap();
        match outrigger_redis::RedisStore::connect(config.dedup.redis_store(&config.source)).await {
            Err(outrigger_core::StoreError::Protocol(why)) => {
                assert!(why.contains(case.says), "{why} lacks {:?}", case.says)
            }
            other => panic!("the store took {}: {other:?}", case.policy),
        }
    }
}

/// A password, in the URL or on its own, from the file or the environment, is never printed
/// by `check` or `run`, however the policy fails.
#[test]
fn redis_passwords_never_show_in_check_or_run_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let path_text = path.to_str().unwrap();
    let run = |command: &str, env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
            .args([command, "--config", path_text])
            .env_remove("OUTRIGGER_CONFIG")
            .env("RUST_LOG", "off")
            .envs(env.iter().copied())
            .output()
            .expect("outrigger runs");
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        (out.status.code(), text)
    };
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:1");
    let valid = format!("[source.amqp]\nqueue = \"orders\"\n[dedup.redis]\nurl = \"{url}\"\n");
    std::fs::write(&path, &valid).unwrap();
    let (code, text) = run("check", &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    let (code, text) = run("check", &[("OUTRIGGER__DEDUP__REDIS__PASSWORD", PASSWORD)]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    // Invalid, with the password in every setting that can hold it.
    std::fs::write(
        &path,
        format!("{valid}password = \"\"\n[dedup.redis.tls]\nca_file = \"/nonexistent/ca.pem\"\n"),
    )
    .unwrap();
    let env = [(
        "OUTRIGGER__DEDUP__REDIS__URL",
        &*format!("rediss://app:{PASSWORD}@127.0.0.1:port"),
    )];
    for command in ["check", "run"] {
        let (code, text) = run(command, &env);
        assert_eq!(code, Some(64), "{text}");
        assert!(
            text.contains("dedup.redis.password: must not be empty"),
            "{text}"
        );
        assert!(
            text.contains("OUTRIGGER__DEDUP__REDIS__URL: dedup.redis.url"),
            "{text}"
        );
        assert!(!text.contains(PASSWORD), "{command}: {text}");
    }
}

/// The example of issue 8: `check` used to say OK and `run` stopped with exit 1.
#[test]
fn a_retry_topic_consumed_as_a_source_and_a_revoke_past_the_poll_interval_are_both_caught() {
    let case = Case {
        policy: "\
[source.kafka]
bootstrap_servers = \"127.0.0.1:1\"
topics = [\"orders\", \"orders.retry.1\"]
group_id = \"g\"
revoke_timeout = \"10m\"
properties = { \"max.poll.interval.ms\" = \"60000\" }
[dedup]
store = \"embedded\"
[retry]
mode = \"queue\"
",
        at: "3:21: source.kafka.topics[1]",
        says: "\"orders.retry.1\" is the retry topic of tier 1 of topic \"orders\"",
    };
    refused_by_check_and_run(&case);
    let revoke = Case {
        at: "5:1: source.kafka.revoke_timeout",
        says: "source.kafka.revoke_timeout (10m) must be shorter than librdkafka's \
               max.poll.interval.ms (1m)",
        ..case
    };
    refused_by_check_and_run(&revoke);
}

#[tokio::test]
async fn the_memory_source_is_checked_and_run_refuses_it_saying_why() {
    let case = Case {
        policy: "[source.memory]\nqueue = \"\"\n",
        at: "2:1: source.memory.queue",
        says: "must not be empty",
    };
    refused_by_check_and_run(&case);
    let config: outrigger_memory::MemoryConfig = table(case.policy, "memory");
    connect_refuses::<outrigger_memory::Memory>(&config, &SourceContext::default(), case.says)
        .await;

    // A valid memory policy is `outrigger demo`'s: check says so, run refuses it with 64.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, "[source.memory]\n[dedup]\nstore = \"embedded\"\n").unwrap();
    let path = path.to_str().unwrap();
    let (code, text) = outrigger(&["check", "--config", path]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("note: [source.memory] only exists inside `outrigger demo`"),
        "{text}"
    );
    let (code, text) = outrigger(&["run", "--config", path]);
    assert_eq!(code, Some(64), "{text}");
    assert!(
        text.contains("`outrigger run` consumes from a broker: configure one of [source.amqp]"),
        "{text}"
    );
}

/// A NATS source on the default server: `run` must be refused before it looks for it.
macro_rules! nats {
    ($rest:literal) => {
        concat!("[source.nats]\nstream = \"S\"\nconsumer = \"c\"\n", $rest)
    };
}

const NATS: &[Case] = &[
    Case {
        policy: nats!("servers = []\n"),
        at: "4:1: source.nats.servers",
        says: "must list at least one server",
    },
    Case {
        policy: nats!("servers = [\"http://n:4222\"]\n"),
        at: "4:12: source.nats.servers[0]",
        says: "expected a nats:// or tls:// URL",
    },
    Case {
        policy: nats!("servers = [\"nats://n:port\"]\n"),
        at: "4:12: source.nats.servers[0]",
        says: "not a valid NATS server URL",
    },
    Case {
        policy: "[source.nats]\nstream = \"\"\nconsumer = \"c\"\n",
        at: "2:1: source.nats.stream",
        says: "must not be empty",
    },
    Case {
        policy: "[source.nats]\nstream = \"orders.eu\"\nconsumer = \"c\"\n",
        at: "2:1: source.nats.stream",
        says: "not a valid JetStream stream name",
    },
    Case {
        policy: concat!(
            "[source.nats]\nconsumer = \"c\"\nstream = \"",
            "ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss",
            "ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss",
            "ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss",
            "ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\"\n"
        ),
        at: "3:1: source.nats.stream",
        says: "JetStream stream names have at most 255 bytes",
    },
    Case {
        policy: "[source.nats]\nstream = \"S\"\nconsumer = \"billing*\"\n",
        at: "3:1: source.nats.consumer",
        says: "not a valid JetStream consumer name",
    },
    Case {
        policy: nats!("dead_letter_stream = \"S\"\n"),
        at: "4:1: source.nats.dead_letter_stream",
        says: "must differ from source.nats.stream",
    },
    Case {
        policy: nats!("dead_letter_stream = \"S dlq\"\n"),
        at: "4:1: source.nats.dead_letter_stream",
        says: "not a valid JetStream stream name",
    },
    Case {
        policy: nats!("create_stream = true\n"),
        at: "4:1: source.nats.create_stream",
        says: "must list the subjects the stream captures when create_stream is on",
    },
    Case {
        policy: nats!("subjects = [\"orders..eu\"]\n"),
        at: "4:13: source.nats.subjects[0]",
        says: "not a valid NATS subject",
    },
    Case {
        policy: nats!("filter_subject = \"orders.>.eu\"\n"),
        at: "4:1: source.nats.filter_subject",
        says: "`*` is a whole token, `>` the whole last one",
    },
    Case {
        policy: nats!("[dead_letter]\ndestination = \"dlq.*\"\n"),
        at: "5:1: dead_letter.destination",
        says: "must be one subject, without `*` or `>`",
    },
    Case {
        policy: nats!("create_stream = true\nsubjects = [\"S.>\"]\n"),
        at: "5:13: source.nats.subjects[0]",
        says: "dead letters go to \"S.dlq\", which the source stream captures",
    },
    Case {
        policy: nats!("ack_wait = \"500ms\"\n"),
        at: "4:1: source.nats.ack_wait",
        says: "must be at least 1s",
    },
    Case {
        policy: nats!("max_ack_pending = 0\n"),
        at: "4:1: source.nats.max_ack_pending",
        says: "must be at least 1",
    },
    Case {
        policy: nats!("key_header = \"order id\"\n"),
        at: "4:1: source.nats.key_header",
        says: "not a valid NATS header name",
    },
    Case {
        policy: nats!("name = \" \"\n"),
        at: "4:1: source.nats.name",
        says: "name the connection",
    },
    Case {
        policy: nats!("user = \" \"\npassword = \"p\"\n"),
        at: "4:1: source.nats.user",
        says: "must not be empty; name the user",
    },
    Case {
        policy: nats!("token = \"\"\n"),
        at: "4:1: source.nats.token",
        says: "must not be empty; set the token",
    },
    Case {
        policy: nats!("user = \"app\"\n"),
        at: "4:1: source.nats.user",
        says: "needs source.nats.password",
    },
    Case {
        policy: nats!("password = \"p\"\n"),
        at: "4:1: source.nats.password",
        says: "needs source.nats.user",
    },
    Case {
        policy: nats!("token = \"t\"\ncredentials_file = \"app.creds\"\n"),
        at: "5:1: source.nats.credentials_file",
        says: "source.nats.token and source.nats.credentials_file are two ways to authenticate",
    },
    Case {
        policy: nats!("nkey_seed_file = \"\"\n"),
        at: "4:1: source.nats.nkey_seed_file",
        says: "must not be empty; name the file",
    },
    Case {
        policy: nats!("tls = { cert_file = \"c.pem\" }\n"),
        at: "4:9: source.nats.tls.cert_file",
        says: "needs source.nats.tls.key_file",
    },
    Case {
        policy: nats!("tls = { key_file = \"k.pem\" }\n"),
        at: "4:9: source.nats.tls.key_file",
        says: "needs source.nats.tls.cert_file",
    },
    Case {
        policy: nats!("[dead_letter]\ndestination = \"S\"\n"),
        at: "5:1: dead_letter.destination",
        says: "must differ from the source stream",
    },
];

#[tokio::test]
async fn every_nats_start_check_is_reported_by_check_and_refused_by_run() {
    for case in NATS {
        refused_by_check_and_run(case);
        let config: outrigger_nats::NatsConfig = table(case.policy, "nats");
        let destination = case
            .policy
            .split_once("destination = \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(d, _)| d.to_owned());
        let context = SourceContext {
            dead_letter_destination: destination,
            ..SourceContext::default()
        };
        connect_refuses::<outrigger_nats::Nats>(&config, &context, case.says).await;
    }
}

/// What a broker cannot do is refused by `check` and by `run` alike, saying which brokers can:
/// retry queues exist on every broker but the in-process memory one.
#[test]
fn queue_mode_retries_are_refused_on_every_broker_without_retry_queues() {
    let policy = "[source.memory]\n[dedup]\nstore = \"embedded\"\n[retry]\nmode = \"queue\"\n";
    refused_by_check_and_run(&Case {
        policy,
        at: "5:1: retry.mode",
        says: "queue mode needs retry queues, built for amqp, kafka, redis_streams and nats \
               sources only; use \"in_place\" with a memory source",
    });
}

/// A RabbitMQ source in retry mode `queue`: its delay queues `<queue>.retry.<n>`.
macro_rules! amqp_queue_mode {
    ($source:literal, $rest:literal) => {
        concat!(
            "[source.amqp]\nurl = \"amqp://127.0.0.1:1\"\n",
            $source,
            "[dedup]\nstore = \"embedded\"\n[ordering]\nmode = \"key\"\n",
            "[retry]\nmode = \"queue\"\n",
            $rest
        )
    };
}

/// Retry mode `queue` on RabbitMQ: each case with the tiers its policy sets.
const AMQP_QUEUE_MODE: &[(Case, &[Duration])] = &[
    (
        Case {
            policy: amqp_queue_mode!(
                "queue = \"orders\"\n",
                "tiers = [\"1s\", \"10s\"]\n[dead_letter]\ndestination = \"orders.retry.2\"\n"
            ),
            at: "12:1: dead_letter.destination",
            says: "\"orders.retry.2\" is the delay queue of retry tier 2: dead letters there \
                   would come back to the source queue",
        },
        &[Duration::from_secs(1), Duration::from_secs(10)],
    ),
    (
        Case {
            policy: amqp_queue_mode!("queue = \"orders.retry.1\"\n", ""),
            at: "3:1: source.amqp.queue",
            says: "\"orders.retry.1\" is named like a delay queue (<queue>.retry.<n>)",
        },
        &[
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(60),
        ],
    ),
    (
        Case {
            policy: amqp_queue_mode!(
                "queue = \"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq\"\n",
                ""
            ),
            at: "3:1: source.amqp.queue",
            says: "its delay queue",
        },
        &[
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(60),
        ],
    ),
    (
        Case {
            policy: amqp_queue_mode!("queue = \"orders\"\n", "tiers = [\"1s\", \"200us\"]\n"),
            at: "10:16: retry.tiers[1]",
            says: "a RabbitMQ delay queue holds a copy from 1ms up to",
        },
        &[Duration::from_secs(1), Duration::from_micros(200)],
    ),
];

#[tokio::test]
async fn every_amqp_queue_mode_check_is_reported_by_check_and_refused_by_run() {
    for (case, tiers) in AMQP_QUEUE_MODE {
        refused_by_check_and_run(case);
        let config: outrigger_amqp::AmqpConfig = table(case.policy, "amqp");
        let context = SourceContext {
            dead_letter_destination: case
                .policy
                .contains("destination")
                .then(|| "orders.retry.2".into()),
            retry_tiers: tiers.to_vec(),
            ..SourceContext::default()
        };
        connect_refuses::<outrigger_amqp::Amqp>(&config, &context, case.says).await;
    }
}

/// Retry mode `queue` on RabbitMQ is a policy `check` takes, with either queue type.
#[test]
fn check_accepts_queue_mode_on_rabbitmq() {
    for kind in ["quorum", "classic"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let policy = format!(
            "[source.amqp]\nqueue = \"orders\"\nretry_queue_type = \"{kind}\"\n\
             [dedup]\nstore = \"embedded\"\n[ordering]\nmode = \"key\"\n\
             [retry]\nmode = \"queue\"\ntiers = [\"1s\", \"10s\", \"1m\"]\n"
        );
        std::fs::write(&path, &policy).unwrap();
        let (code, text) = outrigger(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{policy}\n{text}");
    }
}

/// Retry mode `redeliver` needs a broker that redelivers after a delay (NATS), and an
/// ordering that lets a retried message be overtaken.
#[test]
fn redeliver_mode_is_refused_without_delayed_redelivery_or_under_an_ordering() {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    for (source, kind) in [
        ("[source.amqp]\nqueue = \"orders\"\n", "amqp"),
        (
            "[source.redis_streams]\nstreams = [\"orders\"]\ngroup = \"g\"\n",
            "redis_streams",
        ),
    ] {
        let policy = format!("{source}[retry]\nmode = \"redeliver\"\n");
        refused_by_check_and_run(&Case {
            at: leak(format!("{}:1: retry.mode", policy.lines().count())),
            policy: leak(policy),
            says: leak(format!(
                "redeliver mode needs a broker that redelivers after a delay, built for nats \
                 sources only; use \"in_place\" with a {kind} source"
            )),
        });
    }
    let nats =
        "[source.nats]\nstream = \"ORDERS\"\nconsumer = \"c\"\n[retry]\nmode = \"redeliver\"\n";
    refused_by_check_and_run(&Case {
        policy: nats,
        at: "5:1: retry.mode",
        says: "redeliver mode lets later messages overtake a retried one, which ordering \"key\" \
               forbids: set ordering.mode = \"none\"",
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, format!("{nats}[ordering]\nmode = \"none\"\n")).unwrap();
    let (code, text) = outrigger(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(
        code,
        Some(0),
        "NATS with ordering none may redeliver: {text}"
    );
}

/// A `[[routes]]` entry named `r` whose dead letters go to `destination`.
macro_rules! routed_to {
    ($destination:literal) => {
        concat!(
            "[[routes]]\nname = \"r\"\n[routes.dead_letter]\ndestination = \"",
            $destination,
            "\"\n"
        )
    };
}

/// What each adapter checks of the destination it is told a route names.
const ROUTE_DEAD_LETTERS: &[Case] = &[
    Case {
        policy: concat!("[source.amqp]\nqueue = \"orders\"\n", routed_to!("orders")),
        at: "6:1: routes[0].dead_letter.destination",
        says: "the dead-letter destination of route \"r\" must differ from the source queue",
    },
    Case {
        policy: concat!(
            "[source.amqp]\nqueue = \"orders\"\n",
            routed_to!(
                "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq\
                 qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq\
                 qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq\
                 qqqqqqqqqq"
            )
        ),
        at: "6:1: routes[0].dead_letter.destination",
        says: "AMQP queue names (a route's dead-letter queue's too) have at most 255 bytes",
    },
    Case {
        policy: concat!(kafka!("topics = [\"o\"]\n"), routed_to!("bad topic")),
        at: "8:1: routes[0].dead_letter.destination",
        says: "not a valid Kafka topic name",
    },
    Case {
        policy: concat!(kafka!("topics = [\"o\", \"p\"]\n"), routed_to!("p")),
        at: "8:1: routes[0].dead_letter.destination",
        says: "route \"r\" must differ from every source topic",
    },
    Case {
        policy: concat!(redis_streams!("streams = [\"o\"]\n"), routed_to!("o")),
        at: "8:1: routes[0].dead_letter.destination",
        says: "route \"r\" must differ from every source stream",
    },
    Case {
        policy: concat!(nats!("\n"), routed_to!("bad subject")),
        at: "8:1: routes[0].dead_letter.destination",
        says: "the dead-letter subject \"bad subject\"",
    },
    Case {
        policy: concat!(
            nats!("subjects = [\"orders.>\"]\ncreate_stream = true\n"),
            routed_to!("orders.refunds.dlq")
        ),
        at: "9:1: routes[0].dead_letter.destination",
        says: "dead letters of route \"r\" go to \"orders.refunds.dlq\", which the source stream captures",
    },
];

#[tokio::test]
async fn every_check_of_a_route_dead_letter_destination_is_reported_at_the_route() {
    for case in ROUTE_DEAD_LETTERS {
        refused_by_check_and_run(case);
        let (_, rest) = case.policy.split_once("destination = \"").unwrap();
        let context = SourceContext {
            route_dead_letters: vec![outrigger_core::RouteDeadLetter {
                route: "r".into(),
                destination: rest.split_once('"').unwrap().0.to_owned(),
                path: outrigger_core::KeyPath::parse("routes")
                    .index(0)
                    .key("dead_letter")
                    .key("destination"),
            }],
            ..SourceContext::default()
        };
        let says = case.says;
        if case.policy.starts_with("[source.amqp]") {
            let config = table(case.policy, "amqp");
            connect_refuses::<outrigger_amqp::Amqp>(&config, &context, says).await;
        } else if case.policy.starts_with("[source.kafka]") {
            let config = table(case.policy, "kafka");
            connect_refuses::<outrigger_kafka::Kafka>(&config, &context, says).await;
        } else if case.policy.starts_with("[source.redis_streams]") {
            let config = table(case.policy, "redis_streams");
            connect_refuses::<outrigger_redis_streams::RedisStreams>(&config, &context, says).await;
        } else {
            let config = table(case.policy, "nats");
            connect_refuses::<outrigger_nats::Nats>(&config, &context, says).await;
        }
    }
}
