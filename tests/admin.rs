//! The admin listener: probes and metrics as Kubernetes and Prometheus see them.

mod support;

use std::time::Duration;

use support::{unique, wait_until, Policy, Rabbit, Sidecar, TestApp, OUTRIGGER};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_when_broker_store_and_app_answer_and_metrics_are_prometheus_text() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("admin");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let sidecar = Sidecar::start(OUTRIGGER, Policy::amqp(&queue, &app.url(), &unique("ns")));
    wait_until("ready", LIMIT, || async {
        sidecar.get("/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(sidecar.get("/healthz").map(|(s, _)| s), Some(200));
    rabbit.publish_keyed(&queue, "secret-key-123", b"{}").await;
    wait_until("delivered", LIMIT, || async { app.count() == 1 }).await;
    let (status, text) = sidecar.get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE outrigger_messages_consumed_total counter"));
    assert!(text.contains("outrigger_delivery_duration_seconds_bucket"));
    assert!(!text.contains("secret-key-123"), "no keys in labels");
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_app_or_the_broker_is_unreachable() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("admin");
    rabbit.declare(&queue).await;
    let dead = support::free_port();
    let no_app = Sidecar::start(
        OUTRIGGER,
        Policy::amqp(&queue, &format!("http://{dead}/"), &unique("ns")),
    );
    wait_until("app reported down", LIMIT, || async {
        no_app
            .get("/readyz")
            .is_some_and(|(s, body)| s == 503 && body.contains(r#""app":"down"#))
    })
    .await;

    let app = TestApp::accepting().await;
    let no_broker = Sidecar::start(
        OUTRIGGER,
        Policy::amqp(&queue, &app.url(), &unique("ns"))
            .set("source.amqp.url", format!("amqp://guest:guest@{dead}/%2f")),
    );
    wait_until("broker reported down", LIMIT, || async {
        no_broker
            .get("/readyz")
            .is_some_and(|(s, body)| s == 503 && body.contains(r#""source":"down"#))
    })
    .await;
    assert_eq!(
        no_broker.get("/healthz").map(|(s, _)| s),
        Some(200),
        "alive while waiting"
    );
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}
