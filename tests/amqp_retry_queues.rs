//! Retry mode `queue` on RabbitMQ end to end, through the real binary against the local
//! RabbitMQ and Redis: what the delay queues keep (attempts, the age limit, the dead letter's
//! context), Retry-After choosing a longer tier, a delay queue declared otherwise, and a copy
//! written twice by a crash between its confirm and the original's ack. The scenario every
//! broker shares (parked keys in order through a SIGKILL) is the retry contract
//! (`retry_contract.rs`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use outrigger_amqp::AmqpSettings;
use outrigger_testkit::rabbit::{self, Got, Queues};
use support::{unique, wait_until, Policy, Proxy, Reply, Sidecar, TestApp, OUTRIGGER};

const LIMIT: Duration = Duration::from_secs(60);
const SETTLED: &str = "outrigger_messages_settled_total";

/// A queue of the test's own bound to `amq.topic` by `<queue>.#`: each message keeps the
/// routing key (its ordering key) `<queue>.<key>`.
async fn keyed_queue(test: &str) -> Queues {
    let f = Queues::new(test).await;
    f.bind(&f.queue, "amq.topic", &format!("{}.#", f.queue))
        .await;
    f
}

/// Publishes `{"id": <id>, "key": <key>}` with routing key `<queue>.<key>`.
async fn publish(f: &Queues, key: &str, id: &str) {
    let body = format!(r#"{{"id":"{id}","key":"{key}"}}"#);
    f.publish_routed(
        "amq.topic",
        &format!("{}.{key}", f.queue),
        body.as_bytes(),
        BasicProperties::default().with_message_id(id.into()),
    )
    .await;
}

fn policy(f: &Queues, app: &TestApp, tiers: &[&str]) -> Policy {
    Policy::amqp(&f.queue, &app.url(), &unique("ns"))
        .set("source.amqp.url", rabbit::url())
        .set("dedup.key", "{json:/id}")
        .set("ordering.mode", "key")
        .set("retry.mode", "queue")
        .set(
            "retry.tiers",
            toml_edit::Array::from_iter(tiers.iter().copied()),
        )
}

async fn clean_up(f: Queues, tiers: usize) {
    for tier in 0..tiers {
        f.delete(&AmqpSettings::retry_queue_for(&f.queue, tier))
            .await;
    }
    f.clean_up().await;
}

fn header_names(got: &Got) -> Vec<String> {
    got.properties
        .headers()
        .as_ref()
        .map(|h| h.into_iter().map(|(n, _)| n.to_string()).collect())
        .unwrap_or_default()
}

/// The attempts the app saw for `id`, with its answers.
fn attempts(app: &TestApp, id: &str) -> Vec<(u32, u16)> {
    app.hits()
        .iter()
        .filter(|h| h.key == id)
        .map(|h| (h.attempt, h.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_after_the_delay_queues_names_the_original_queue_and_its_attempts() {
    let f = keyed_queue("retry-dlq").await;
    publish(&f, "K", "m-0").await;
    publish(&f, "K", "m-1").await;
    let app = TestApp::start(|id, _| match id {
        "m-0" => Reply::status(500).body("no such account"),
        _ => Reply::status(200),
    })
    .await;
    let tiers = ["300ms", "600ms"];
    let sidecar = Sidecar::start(
        OUTRIGGER,
        policy(&f, &app, &tiers).set("retry.max_attempts", 3),
    );
    let dead = f.take(&f.dead_letter_queue).await;
    wait_until("m-1 delivered after m-0's dead letter", LIMIT, || async {
        app.successes().contains_key("m-1")
    })
    .await;

    assert_eq!(
        attempts(&app, "m-0"),
        [(1, 500), (2, 500), (3, 500)],
        "attempts count through both delay queues"
    );
    assert_eq!(dead.body, br#"{"id":"m-0","key":"K"}"#, "byte for byte");
    assert_eq!(dead.header("outrigger-dlq-attempts").as_deref(), Some("3"));
    let source = dead.header("outrigger-dlq-source").unwrap();
    assert!(
        source.starts_with(&format!("amqp:{}#", f.queue)),
        "the original queue: {source}"
    );
    assert!(
        dead.header("outrigger-dlq-reason")
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{:?}",
        dead.header("outrigger-dlq-reason")
    );
    assert_eq!(
        dead.header("outrigger-dlq-response").as_deref(),
        Some("no such account")
    );
    assert_eq!(
        dead.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("m-0")
    );
    for name in header_names(&dead) {
        assert!(
            !name.starts_with("outrigger-retry-") && !name.starts_with("x-"),
            "no retry or delay-queue header in the dead letter: {name}"
        );
    }
    // The app never saw them either.
    for hit in app.hits() {
        for name in hit.headers.keys() {
            assert!(!name.as_str().starts_with("outrigger-retry-"), "{name}");
            assert!(!name.as_str().starts_with("x-death"), "{name}");
        }
    }
    // Both tiers were used: the first failure waited in .retry.1, the second in .retry.2.
    assert!(sidecar.metric(SETTLED, r#"outcome="retry_queued""#) >= 2.0);
    let first_seen = app.hits()[0].at;
    let m1 = app.hits().iter().find(|h| h.key == "m-1").unwrap().at;
    assert!(
        m1.duration_since(first_seen) >= Duration::from_millis(850),
        "m-1 waited behind m-0's two delays"
    );
    sidecar.stop();
    clean_up(f, tiers.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_limit_counts_from_the_first_take_through_the_delay_queues() {
    let f = keyed_queue("retry-age").await;
    publish(&f, "K", "m-0").await;
    let app = TestApp::start(|_, _| Reply::status(500)).await;
    let tiers = ["700ms"];
    let sidecar = Sidecar::start(
        OUTRIGGER,
        policy(&f, &app, &tiers)
            .set("retry.max_attempts", 10)
            .set("retry.max_age", "1s"),
    );
    let dead = f.take(&f.dead_letter_queue).await;
    let reason = dead.header("outrigger-dlq-reason").unwrap();
    assert!(reason.contains("age limit"), "{reason}");
    // 0s, 0.7s, 1.4s: the third attempt is the last one the age limit lets start, if each
    // copy started the clock again there would be ten.
    let seen = attempts(&app, "m-0");
    assert!(
        (2..=3).contains(&seen.len()),
        "the age of the first take, not of the copy: {seen:?}"
    );
    assert_eq!(
        dead.header("outrigger-dlq-attempts"),
        Some(seen.len().to_string())
    );
    sidecar.stop();
    clean_up(f, tiers.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_a_tier_picks_a_longer_tier() {
    let f = keyed_queue("retry-after").await;
    publish(&f, "A", "slow").await;
    publish(&f, "B", "quick").await;
    let app = TestApp::start(|id, nth| match (id, nth) {
        ("slow", 1) => {
            let mut r = Reply::status(500);
            r.headers.push(("retry-after", "2".to_owned()));
            r
        }
        ("quick", 1) => Reply::status(500),
        _ => Reply::status(200),
    })
    .await;
    let tiers = ["300ms", "3s"];
    let sidecar = Sidecar::start(OUTRIGGER, policy(&f, &app, &tiers));
    wait_until("both delivered", LIMIT, || async {
        app.successes().len() == 2
    })
    .await;
    let gap = |id: &str| {
        let at: Vec<Instant> = app
            .hits()
            .iter()
            .filter(|h| h.key == id)
            .map(|h| h.at)
            .collect();
        at[1].duration_since(at[0])
    };
    assert!(
        gap("slow") >= Duration::from_millis(2_800),
        "Retry-After: 2 waited in the 3s tier, not the 300ms one: {:?}",
        gap("slow")
    );
    assert!(
        gap("quick") < Duration::from_millis(2_000),
        "the first failure without Retry-After waits in the first tier: {:?}",
        gap("quick")
    );
    sidecar.stop();
    clean_up(f, tiers.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_delay_queues_are_declared_and_one_declared_otherwise_stops_run() {
    let f = keyed_queue("retry-declare").await;
    let app = TestApp::accepting().await;
    let tiers = ["1s", "5s"];
    // Missing: declared at start, the sidecar consumes.
    let sidecar = Sidecar::start(OUTRIGGER, policy(&f, &app, &tiers));
    wait_until("consuming", LIMIT, || async {
        f.counts(&f.queue).await.1 == 1
    })
    .await;
    for tier in 0..tiers.len() {
        let delay_queue = AmqpSettings::retry_queue_for(&f.queue, tier);
        assert_eq!(
            f.counts(&delay_queue).await,
            (0, 0),
            "{delay_queue} declared"
        );
    }
    sidecar.stop();

    // Declared with another TTL: run says which queue and what it needs, and stops.
    let mut other = Sidecar::start(OUTRIGGER, policy(&f, &app, &["1s", "7s"]));
    let status = other.wait_exit(LIMIT).expect("run stops");
    assert!(!status.success());
    let logs = other.logs();
    let delay_queue = AmqpSettings::retry_queue_for(&f.queue, 1);
    assert!(
        logs.contains(&format!(
            "delay queue \\\"{delay_queue}\\\" of retry tier 2 exists, declared otherwise"
        )) || logs.contains(&format!(
            "delay queue \"{delay_queue}\" of retry tier 2 exists, declared otherwise"
        )),
        "{logs}"
    );
    assert!(logs.contains("x-message-ttl 7000 ms"), "{logs}");
    assert!(logs.contains("inequivalent arg 'x-message-ttl'"), "{logs}");
    assert_eq!(f.counts(&f.queue).await.1, 0, "nothing consumed");
    clean_up(f, tiers.len()).await;
}

/// A SIGKILL after the broker stored a copy and before the original's ack: RabbitMQ hands the
/// original out again, and a second copy is written. Made certain here by a proxy that holds
/// back what RabbitMQ sends (the copy's confirm, so no ack goes out) from the moment the app
/// first refuses `m-0`, and a kill once the copy is in its delay queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_written_twice_by_a_kill_before_the_ack_is_settled_as_stale() {
    let f = keyed_queue("retry-twice").await;
    publish(&f, "K", "m-0").await;
    publish(&f, "K", "m-1").await;
    publish(&f, "other", "o-1").await;
    let proxy = Arc::new(Proxy::start(rabbit::address().await).await);
    let stall = proxy.clone();
    let app = TestApp::start(move |id, nth| {
        if id == "m-0" && nth == 1 {
            stall.stall();
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let tiers = ["4s"];
    let delay_queue = AmqpSettings::retry_queue_for(&f.queue, 0);
    let policy = policy(&f, &app, &tiers).set("backpressure.prefetch", 1);
    let mut first = Sidecar::start(
        OUTRIGGER,
        policy
            .clone()
            .set("source.amqp.url", rabbit::url_through(&proxy)),
    );
    wait_until(
        "m-0's copy stored, its confirm held back",
        LIMIT,
        || async { f.peek(&delay_queue).await.len() == 1 },
    )
    .await;
    first.kill();
    drop(proxy);
    let origin = f.peek(&delay_queue).await[0]
        .header("outrigger-retry-origin")
        .unwrap();
    // Back in the source queue, unacked: m-0 (and what came after it).
    wait_until("m-0 handed back", LIMIT, || async {
        f.counts(&f.queue).await == (3, 0)
    })
    .await;

    let second = Sidecar::start(OUTRIGGER, policy);
    wait_until("m-0 parked behind its own live copy", LIMIT, || async {
        let copies = f.peek(&delay_queue).await;
        copies
            .iter()
            .filter(|c| c.header("outrigger-retry-origin").as_deref() == Some(&origin))
            .count()
            == 2
    })
    .await;
    wait_until("every message delivered", LIMIT, || async {
        app.successes().len() == 3
    })
    .await;
    wait_until(
        "the second copy read and settled as stale",
        LIMIT,
        || async { second.metric(SETTLED, r#"outcome="stale""#) >= 1.0 },
    )
    .await;
    assert_eq!(
        attempts(&app, "m-0"),
        [(1, 500), (2, 200)],
        "one copy ran, the other never reached the app"
    );
    app.assert_each_key_once();
    let hits = app.hits();
    let at = |id: &str| {
        hits.iter()
            .find(|h| h.key == id && h.status == 200)
            .unwrap()
            .at
    };
    assert!(at("m-1") > at("m-0"), "m-1 kept behind m-0");
    wait_until("nothing left anywhere", LIMIT, || async {
        f.depth(&delay_queue).await == 0 && f.depth(&f.queue).await == 0
    })
    .await;
    second.stop();
    clean_up(f, tiers.len()).await;
}
