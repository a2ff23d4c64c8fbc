//! `ordering.sequence` through the real binary on RabbitMQ and Redis: messages ahead of their
//! key's next sequence wait, survive a SIGKILL of the sidecar (the broker hands them out again,
//! the store kept the key's position) and reach the app in order once the missing one comes.

mod support;

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use support::{unique, wait_until, Policy, Rabbit, Sidecar, TestApp, OUTRIGGER};

const LIMIT: Duration = Duration::from_secs(60);
const WAITING: &str = "outrigger_reorder_waiting_messages";

/// Publishes sequence `seq` of `key` through `amq.topic`, routed by `<prefix>.<key>` (the
/// message key the sidecar orders by), idempotency key `<key>-<seq>`.
async fn publish(rabbit: &Rabbit, prefix: &str, key: &str, seq: u64) {
    let mut headers = FieldTable::default();
    headers.insert(
        "idempotency-key".into(),
        AMQPValue::LongString(LongString::from(format!("{key}-{seq}").into_bytes())),
    );
    let body = format!(r#"{{"seq":{seq}}}"#);
    rabbit
        .publish_routed(
            "amq.topic",
            &format!("{prefix}.{key}"),
            body.as_bytes(),
            BasicProperties::default().with_headers(headers),
        )
        .await;
}

/// The sequences of `key` the app answered 2xx, in the order it got them.
fn delivered(app: &TestApp, key: &str) -> Vec<u64> {
    app.hits()
        .into_iter()
        .filter(|h| (200..300).contains(&h.status))
        .filter_map(|h| {
            let (k, seq) = h.key.rsplit_once('-')?;
            (k == key).then(|| seq.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_ahead_of_their_turn_survive_a_sigkill_and_arrive_in_order() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("sequence");
    let prefix = unique("seq");
    rabbit.declare(&queue).await;
    rabbit
        .bind(&queue, "amq.topic", &format!("{prefix}.#"))
        .await;
    let app = TestApp::accepting().await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("ordering.mode", "key")
        .set("ordering.sequence", "{json:/seq}")
        .set("ordering.first_sequence", 1)
        .set("ordering.gap_timeout", "1h");
    let mut sidecar = Sidecar::start(OUTRIGGER, policy.clone());

    // c1's 2 and 3 come before its 1; c2 arrives in order and is not held up by c1.
    publish(&rabbit, &prefix, "c1", 3).await;
    publish(&rabbit, &prefix, "c1", 2).await;
    for seq in 1..=3 {
        publish(&rabbit, &prefix, "c2", seq).await;
    }
    wait_until("c2 delivered while c1 waits", LIMIT, || async {
        delivered(&app, "c2").len() == 3 && sidecar.metric(WAITING, "") == 2.0
    })
    .await;
    assert_eq!(delivered(&app, "c2"), [1, 2, 3]);
    assert!(delivered(&app, "c1").is_empty(), "c1 waits for its 1");

    // Killed with both waiting: unacked, the broker hands them out again.
    sidecar.kill();
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("both waiting again after the restart", LIMIT, || async {
        sidecar.metric(WAITING, "") == 2.0
    })
    .await;
    publish(&rabbit, &prefix, "c1", 1).await;
    // A copy of c2's 2: its key moved past it and dedup knows it.
    publish(&rabbit, &prefix, "c2", 2).await;
    publish(&rabbit, &prefix, "c2", 4).await;
    wait_until("c1 delivered", LIMIT, || async {
        delivered(&app, "c1").len() == 3 && delivered(&app, "c2").len() == 4
    })
    .await;
    assert_eq!(delivered(&app, "c1"), [1, 2, 3], "in sequence order");
    assert_eq!(
        delivered(&app, "c2"),
        [1, 2, 3, 4],
        "the copy never reached the app"
    );
    wait_until("nothing left waiting", LIMIT, || async {
        sidecar.metric(WAITING, "") == 0.0
            && sidecar.metric("outrigger_messages_settled_total", r#"outcome="duplicate""#) == 1.0
    })
    .await;
    sidecar.stop();
    assert_eq!(rabbit.depth(&queue).await, 0, "every message settled");
    assert_eq!(
        rabbit.depth(&format!("{queue}.dlq")).await,
        0,
        "none dead-lettered"
    );
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}
