//! Pipeline behaviour under faults a real broker cannot be made to show on demand: the
//! in-process broker's fault injection, with the real pipeline, embedded store and HTTP app.

mod support;

use std::sync::Arc;
use std::time::Duration;

use outrigger::config::{self, Config};
use outrigger::metrics::{Metrics, SourceMetrics};
use outrigger::pipeline;
use outrigger::run::build_pipeline;
use outrigger::store::Store;
use outrigger_memory::{MemoryBroker, Outgoing};
use support::{wait_until, Reply, TestApp};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

fn policy(app: &TestApp, dir: &std::path::Path) -> Config {
    policy_with(app, dir, "")
}

fn policy_with(app: &TestApp, dir: &std::path::Path, extra: &str) -> Config {
    let text = format!(
        r#"
[source.memory]
queue = "orders"
[delivery]
url = "{}"
timeout = "2s"
[dedup]
key = "{{header:idempotency-key}}"
store = "embedded"
lease = "5s"
[dedup.embedded]
path = "{}"
[retry]
initial = "10ms"
max = "50ms"
{}
"#,
        app.url(),
        dir.join("dedup.redb").display(),
        extra
    );
    config::load_str(&text, "test.toml", std::iter::empty()).expect("valid test policy")
}

/// Runs the real pipeline over the in-process `orders` queue until every message is settled;
/// returns the source's metrics.
async fn run_until_drained(config: &Config, broker: &MemoryBroker) -> SourceMetrics {
    let metrics = Metrics::new().source("orders");
    let store = Store::open(config).await.unwrap();
    let pipeline = Arc::new(build_pipeline(config, Some(store), metrics.clone()));
    let source = broker.source("orders", "orders.dlq");
    pipeline::run(pipeline, source, CancellationToken::new())
        .await
        .unwrap();
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dead_letter_write_never_acks_the_original() {
    let app = TestApp::start(|_, _| Reply::status(400).body("bad order")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy(&app, dir.path());
    let broker = MemoryBroker::new();
    broker.publish(
        "orders",
        Outgoing::new(&b"\xffpoison"[..]).header("idempotency-key", "p-1"),
    );
    broker.set_fail_dead_letters(true);

    let metrics = Metrics::new();
    let source_metrics = metrics.source("orders");
    let store = Store::open(&config).await.unwrap();
    let pipeline = Arc::new(build_pipeline(&config, Some(store), source_metrics.clone()));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(pipeline::run(
        pipeline,
        broker.source("orders", "orders.dlq"),
        shutdown.clone(),
    ));

    wait_until("several failed dead-letter writes", LIMIT, || async {
        source_metrics.dlq_failures.get() >= 3
    })
    .await;
    assert_eq!(
        broker.depth("orders"),
        (0, 1),
        "the original is held, unacked"
    );
    assert!(broker.ready("orders.dlq").is_empty());
    assert_eq!(
        source_metrics.settled_count(),
        0,
        "nothing counted as settled"
    );
    assert_eq!(
        app.count(),
        1,
        "the app is not asked again while the DLQ write is retried"
    );

    broker.set_fail_dead_letters(false);
    wait_until("the dead letter is written", LIMIT, || async {
        broker.ready("orders.dlq").len() == 1
    })
    .await;
    run.await.unwrap().unwrap(); // the drained in-process queue ends the run
    assert_eq!(broker.depth("orders"), (0, 0));
    let dead = &broker.ready("orders.dlq")[0];
    assert_eq!(&dead.payload[..], b"\xffpoison");
    assert_eq!(dead.header_str("outrigger-dlq-status"), Some("400"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_waits_for_retry_after_and_spends_no_attempt() {
    let app = TestApp::start(|_, nth| {
        if nth == 1 {
            let mut r = Reply::status(429);
            r.headers.push(("retry-after", "1".into()));
            r
        } else {
            Reply::status(200)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy(&app, dir.path());
    let broker = MemoryBroker::new();
    broker.publish(
        "orders",
        Outgoing::new("{}").header("idempotency-key", "t-1"),
    );
    run_until_drained(&config, &broker).await;

    let hits = app.hits();
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [429, 200]
    );
    assert_eq!(
        hits.iter().map(|h| h.attempt).collect::<Vec<_>>(),
        [1, 1],
        "a throttle does not spend the attempt"
    );
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(950),
        "Retry-After honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_header_overrides_the_status() {
    let app = TestApp::start(|key, _| {
        let mut r = Reply::status(200);
        match key {
            "to-dlq" => r.headers.push(("outrigger-action", "dead-letter".into())),
            "to-drop" => r.headers.push(("outrigger-action", "drop".into())),
            _ => r = Reply::status(500).body("ignored"),
        }
        if key == "ack-500" {
            r.headers.push(("outrigger-action", "ack".into()));
        }
        r
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy(&app, dir.path());
    let broker = MemoryBroker::new();
    for key in ["to-dlq", "to-drop", "ack-500"] {
        broker.publish("orders", Outgoing::new("{}").header("idempotency-key", key));
    }
    let m = run_until_drained(&config, &broker).await;

    let dead = broker.ready("orders.dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header_str("outrigger-dlq-key"), Some("to-dlq"));
    assert_eq!(m.dropped.get(), 1);
    assert_eq!(
        m.delivered.get(),
        1,
        "500 with outrigger-action: ack is a success"
    );
    assert_eq!(app.count(), 3, "each decided on its first attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_holds_through_in_place_retries_while_other_keys_flow() {
    // "a-1" fails twice; "a-2" and "a-3" share its ordering key and must wait for it, while
    // the "b" messages must not.
    let app = TestApp::start(|key, nth| {
        if key == "a-1" && nth <= 2 {
            Reply::status(500).after(Duration::from_millis(50))
        } else {
            Reply::status(200)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy_with(&app, dir.path(), "[ordering]\nmode = \"key\"");
    let broker = MemoryBroker::new();
    for (id, key) in [
        ("a-1", "a"),
        ("b-1", "b"),
        ("a-2", "a"),
        ("b-2", "b"),
        ("a-3", "a"),
        ("b-3", "b"),
    ] {
        broker.publish(
            "orders",
            Outgoing::new("{}").header("idempotency-key", id).key(key),
        );
    }
    run_until_drained(&config, &broker).await;

    let hits = app.hits();
    let order: Vec<(&str, u16)> = hits.iter().map(|h| (h.key.as_str(), h.status)).collect();
    let a: Vec<_> = order.iter().filter(|(k, _)| k.starts_with('a')).collect();
    assert_eq!(
        a,
        [
            &("a-1", 500),
            &("a-1", 500),
            &("a-1", 200),
            &("a-2", 200),
            &("a-3", 200)
        ],
        "key a in order, its later messages behind the retried one"
    );
    let a1_done = order.iter().position(|&x| x == ("a-1", 200)).unwrap();
    let b_done = order.iter().filter(|(k, _)| k.starts_with('b')).count();
    assert_eq!(b_done, 3);
    assert!(
        order[..a1_done]
            .iter()
            .filter(|(k, _)| k.starts_with('b'))
            .count()
            == 3,
        "key b was not held back by key a's retries: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_dead_letters_go_to_its_own_queue_in_process_too() {
    let app = TestApp::start(|key, _| match key {
        k if k.starts_with("refund") => Reply::status(500),
        _ => Reply::status(400),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let routes = "[[routes]]\nname = \"refunds\"\nmatch = { headers = { x-kind = \"refund\" } }\n\
                  [routes.retry]\nmax_attempts = 2\n\
                  [routes.dead_letter]\ndestination = \"refunds.dlq\"\n\
                  [[routes]]\nname = \"legacy\"\naction = \"dead_letter\"\n\
                  match = { headers = { x-kind = \"legacy\" } }\n\
                  [routes.dead_letter]\ndestination = \"legacy.dlq\"\n";
    let config = policy_with(&app, dir.path(), routes);
    let broker = MemoryBroker::new();
    let keyed = |key: &str, kind: &str| {
        Outgoing::new("{}")
            .header("idempotency-key", key.to_owned())
            .header("x-kind", kind.to_owned())
    };
    broker.publish("orders", keyed("refund-1", "refund"));
    broker.publish("orders", keyed("legacy-1", "legacy"));
    broker.publish("orders", keyed("order-1", "order"));
    run_until_drained(&config, &broker).await;

    let only = |queue: &str| {
        let ready = broker.ready(queue);
        assert_eq!(ready.len(), 1, "{queue}: {ready:?}");
        ready[0].clone()
    };
    let refund = only("refunds.dlq");
    assert_eq!(refund.header_str("idempotency-key"), Some("refund-1"));
    assert_eq!(refund.header_str("outrigger-dlq-attempts"), Some("2"));
    let legacy = only("legacy.dlq");
    assert_eq!(legacy.header_str("idempotency-key"), Some("legacy-1"));
    assert_eq!(legacy.header_str("outrigger-dlq-class"), Some("route"));
    let order = only("orders.dlq");
    assert_eq!(order.header_str("idempotency-key"), Some("order-1"));
}
