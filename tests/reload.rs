//! Live reload through the real binary on RabbitMQ and Redis: SIGHUP and a watched file swap
//! the policy for the messages taken after it, while messages in flight finish under theirs;
//! what fails validation or needs a restart changes nothing.

mod support;

use std::time::Duration;

use support::{unique, wait_until, Policy, Rabbit, Sidecar, TestApp, OUTRIGGER};

const SETTLED: &str = "outrigger_messages_settled_total";
const RELOADS: &str = "outrigger_policy_reloads_total";
const LIMIT: Duration = Duration::from_secs(60);

/// The hash label of `outrigger_policy_info`, the policy in force.
fn policy_hash(sidecar: &Sidecar) -> Option<String> {
    let (_, body) = sidecar.get("/metrics")?;
    let line = body
        .lines()
        .find(|l| l.starts_with("outrigger_policy_info{") && l.ends_with(" 1"))?;
    let start = line.find("hash=\"")? + "hash=\"".len();
    let end = start + line[start..].find('"')?;
    Some(line[start..end].to_owned())
}

async fn ready(sidecar: &Sidecar) {
    wait_until("ready", LIMIT, || async {
        sidecar.get("/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_sends_new_messages_to_the_new_route_while_in_flight_ones_finish_under_theirs() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("reload");
    rabbit.declare(&queue).await;
    let old_app = TestApp::slow_on("slow", Duration::from_secs(3)).await;
    let new_app = TestApp::accepting().await;
    let policy = Policy::amqp(&queue, &old_app.url(), &unique("ns"));
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    ready(&sidecar).await;
    let before = policy_hash(&sidecar).expect("the policy in force is shown");

    rabbit.publish_keyed(&queue, "slow", b"{}").await;
    wait_until("the slow message in flight", LIMIT, || async {
        sidecar.metric("outrigger_in_flight_messages", "") >= 1.0
    })
    .await;
    sidecar.rewrite_policy(
        policy
            .clone()
            .set("delivery.url", new_app.url())
            .set("retry.max_attempts", 9),
    );
    sidecar.hangup();
    wait_until("the reload applied", LIMIT, || async {
        sidecar.metric(RELOADS, r#"result="applied""#) == 1.0
    })
    .await;
    for i in 0..5 {
        rabbit
            .publish_keyed(&queue, &format!("after-{i}"), b"{}")
            .await;
    }
    wait_until("six settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 6.0
    })
    .await;
    let after = policy_hash(&sidecar).expect("the policy in force is shown");
    let logs = sidecar.logs();
    sidecar.stop();

    assert_ne!(before, after, "the info gauge names the new policy");
    assert_eq!(
        old_app.successes().get("slow"),
        Some(&1),
        "the message in flight finished at the app it started with"
    );
    assert_eq!(old_app.count(), 1, "nothing new went to the old app");
    let new = new_app.successes();
    assert_eq!(
        new.len(),
        5,
        "every later message went to the new app: {new:?}"
    );
    assert!(new.values().all(|n| *n == 1) && !new.contains_key("slow"));
    assert!(
        logs.contains("in force for messages taken from now on"),
        "{logs}"
    );
    assert_eq!(rabbit.depth(&queue).await, 0);
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_validation_or_needs_a_restart_changes_nothing() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("reload-refused");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let other = TestApp::accepting().await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"));
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    ready(&sidecar).await;
    let before = policy_hash(&sidecar).unwrap();

    // A new queue (a restart's business) and a new app URL (a route's) in one file: none of
    // it is applied.
    sidecar.rewrite_policy(
        policy
            .clone()
            .set("source.amqp.queue", "another-queue")
            .set("backpressure.max_in_flight", 7)
            .set("delivery.url", other.url()),
    );
    sidecar.hangup();
    wait_until("the reload refused", LIMIT, || async {
        sidecar.metric(RELOADS, r#"result="refused""#) == 1.0
    })
    .await;
    let text = std::fs::read_to_string(sidecar.dir().join("policy.toml")).unwrap();
    std::fs::write(
        sidecar.dir().join("policy.toml"),
        format!("{text}\n[delivery.batch]\nmax_events = 0\n"),
    )
    .unwrap();
    sidecar.hangup();
    wait_until("the invalid file refused", LIMIT, || async {
        sidecar.metric(RELOADS, r#"result="invalid""#) == 1.0
    })
    .await;

    rabbit.publish_keyed(&queue, "still-here", b"{}").await;
    wait_until("delivered under the old policy", LIMIT, || async {
        app.successes().get("still-here") == Some(&1)
    })
    .await;
    let after = policy_hash(&sidecar).unwrap();
    let applied = sidecar.metric(RELOADS, r#"result="applied""#);
    let logs = sidecar.logs();
    sidecar.stop();

    assert_eq!(before, after, "the policy in force is still the first");
    assert_eq!(applied, 0.0);
    assert_eq!(
        other.count(),
        0,
        "nothing went to the URL of the refused file"
    );
    assert!(
        logs.contains("only a restart can change") && logs.contains("source, backpressure"),
        "names what needs a restart: {logs}"
    );
    assert!(
        logs.contains("delivery.batch.max_events") && logs.contains("must be at least 1"),
        "logs what is invalid, and where: {logs}"
    );
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_file_is_applied_when_it_changes_without_a_signal() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("reload-watch");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let new_app = TestApp::accepting().await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("reload.watch", true)
        .set("reload.interval", "200ms");
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    ready(&sidecar).await;
    rabbit.publish_keyed(&queue, "first", b"{}").await;
    wait_until("the first delivered", LIMIT, || async {
        app.successes().get("first") == Some(&1)
    })
    .await;

    sidecar.rewrite_policy(policy.clone().set("delivery.url", new_app.url()));
    wait_until("the change applied", LIMIT, || async {
        sidecar.metric(RELOADS, r#"result="applied""#) == 1.0
    })
    .await;
    rabbit.publish_keyed(&queue, "second", b"{}").await;
    wait_until("the second delivered", LIMIT, || async {
        new_app.successes().get("second") == Some(&1)
    })
    .await;
    // Polling an unchanged file reloads nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reloads = sidecar.metric(RELOADS, "");
    sidecar.stop();
    assert_eq!(reloads, 1.0, "only the change was reloaded");
    assert_eq!(app.count(), 1, "the first app saw only the first message");
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}
