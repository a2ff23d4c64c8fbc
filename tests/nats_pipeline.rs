//! The pipeline end to end on NATS JetStream: the machine's nats-server, Redis dedup, the
//! real binary. Each test has a stream and dead-letter stream of its own.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use outrigger_testkit::nats::{self, Streams};
use rand::{Rng, SeedableRng};
use support::{
    app_failing_each_entitys_first_message_once, app_until_fixed, assert_each_entitys_order,
    interleaved, set, unique, wait_until, Dlq, Policy, Reply, Sidecar, TestApp, OUTRIGGER,
};
use toml_edit::Value;

const SETTLED: &str = "outrigger_messages_settled_total";
const LIMIT: Duration = Duration::from_secs(90);

/// The policy of `streams` into `app`, with these `[source.nats]` keys besides the stream and
/// the consumer.
fn policy(streams: &Streams, app: &TestApp, extra: &[(&str, Value)]) -> Policy {
    nats::policy(streams, &nats::url(), &app.url(), &unique("ns"), extra)
}

/// Publishes `payload` keyed `key`, for dedup and for ordering.
async fn publish(streams: &Streams, key: &str, payload: impl Into<bytes::Bytes>) {
    streams
        .publish(&[("idempotency-key", key), ("outrigger-key", key)], payload)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_acked_and_each_key_is_handled_once() {
    let streams = Streams::new("dedup").await;
    let app = TestApp::accepting().await;
    let sidecar = Sidecar::start(OUTRIGGER, policy(&streams, &app, &[]));

    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let mut keys: Vec<String> = Vec::new();
    for i in 0..1000 {
        let key = if !keys.is_empty() && rng.random_bool(0.2) {
            keys[rng.random_range(0..keys.len())].clone()
        } else {
            keys.push(format!("order-{i}"));
            keys.last().unwrap().clone()
        };
        publish(&streams, &key, format!(r#"{{"n":{i}}}"#)).await;
    }
    let duplicates = 1000 - keys.len();
    assert!(duplicates > 150, "the mix has about 20% duplicates");

    wait_until("all 1000 messages settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 1000.0
    })
    .await;
    let successes = app.successes();
    assert_eq!(successes.len(), keys.len(), "every key reached the app");
    app.assert_each_key_once();
    assert_eq!(
        sidecar.metric(SETTLED, r#"outcome="duplicate""#),
        duplicates as f64
    );
    assert_eq!(app.count(), keys.len(), "duplicates never reached the app");
    streams.wait_all_acked().await;
    sidecar.stop();
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_land_in_the_dead_letter_stream_byte_for_byte_with_their_reason() {
    let streams = Streams::new("poison").await;
    let app = TestApp::start(|key, _| {
        if key.starts_with("poison") {
            Reply::status(400).body("order rejected: amount must be positive")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let sidecar = Sidecar::start(OUTRIGGER, policy(&streams, &app, &[]));
    let mut originals = HashMap::new();
    for i in 0..3u8 {
        // Not UTF-8, with a NUL: the dead letter must keep the bytes, not a re-encoding.
        let body = vec![0xff, 0x00, 0xfe, i, b'{', 0x80];
        let key = format!("poison-{i}");
        publish(&streams, &key, body.clone()).await;
        originals.insert(key, body);
    }
    for i in 0..7 {
        publish(&streams, &format!("good-{i}"), "{}").await;
    }
    wait_until("three dead letters and seven deliveries", LIMIT, || async {
        streams.count(&streams.dead_letter_stream).await == 3 && app.successes().len() == 7
    })
    .await;
    streams.wait_all_acked().await;
    sidecar.stop();

    let dead = streams.dead_letters().await;
    assert_eq!(dead.len(), 3, "only the poison messages are dead-lettered");
    for m in &dead {
        let key = m
            .header_str("idempotency-key")
            .expect("original header kept");
        assert_eq!(
            Some(&m.payload.to_vec()),
            originals.get(key),
            "{key}: body byte for byte"
        );
        assert_eq!(
            m.header_str("outrigger-key"),
            Some(key),
            "every original header"
        );
        assert_eq!(m.header_str("outrigger-dlq-status"), Some("400"));
        assert_eq!(m.header_str("outrigger-dlq-attempts"), Some("1"));
        assert_eq!(m.header_str("outrigger-dlq-class"), Some("4xx"));
        assert_eq!(m.header_str("outrigger-dlq-key"), Some(key));
        let reason = m.header_str("outrigger-dlq-reason").unwrap();
        assert!(
            reason.contains("400"),
            "the reason names the status: {reason}"
        );
        assert_eq!(
            m.header_str("outrigger-dlq-response"),
            Some("order rejected: amount must be positive")
        );
        assert!(m
            .header_str("outrigger-dlq-source")
            .unwrap()
            .starts_with(&format!("nats:{}@", streams.stream)));
        assert_eq!(
            m.header_str("outrigger-dlq-subject"),
            Some(streams.subject.as_str())
        );
    }
    let info = streams
        .consumer_info(&streams.stream, &streams.consumer)
        .await;
    assert_eq!(info.num_ack_pending, 0, "the originals were terminated");
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_and_a_restart_resumes() {
    let streams = Streams::new("kill").await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_millis(5))).await;
    let max_in_flight = 16;
    let policy = policy(&streams, &app, &[("ack_wait", "2s".into())])
        .set("dedup.lease", "6s")
        .set("backpressure.max_in_flight", max_in_flight);
    for i in 0..400 {
        publish(&streams, &format!("k-{i}"), "{}").await;
    }
    let mut first = Sidecar::start(OUTRIGGER, policy.clone());
    wait_until("the first sidecar is mid-stream", LIMIT, || async {
        app.successes().len() >= 80
    })
    .await;
    first.kill();
    assert!(app.successes().len() < 400, "killed mid-stream");

    let second = Sidecar::start(OUTRIGGER, policy);
    wait_until("every key handled after the restart", LIMIT, || async {
        app.successes().len() == 400
    })
    .await;
    streams.wait_all_acked().await;
    second.stop();
    // Only messages in flight at the kill can reach the app twice, each under a higher fence.
    app.assert_repeats_only_in_flight(max_in_flight as usize);
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_share_the_consumer_and_the_survivor_gets_a_killed_ones_messages() {
    let streams = Streams::new("peers").await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_millis(20))).await;
    let max_in_flight = 8;
    let extra = [
        ("ack_wait", Value::from("2s")),
        ("max_ack_pending", Value::from(2 * max_in_flight)),
    ];
    let policy = policy(&streams, &app, &extra)
        .set("dedup.lease", "6s")
        .set("backpressure.max_in_flight", max_in_flight);
    for i in 0..300 {
        publish(&streams, &format!("k-{i}"), "{}").await;
    }
    let mut first = Sidecar::start(OUTRIGGER, policy.clone());
    let second = Sidecar::start(OUTRIGGER, policy);
    wait_until("both sidecars delivering", LIMIT, || async {
        first.metric(SETTLED, "") > 10.0 && second.metric(SETTLED, "") > 10.0
    })
    .await;
    first.kill();
    let at_kill = app.successes().len();
    assert!(at_kill < 300, "killed mid-stream");
    wait_until("the survivor delivered everything", LIMIT, || async {
        app.successes().len() == 300
    })
    .await;
    streams.wait_all_acked().await;
    let info = streams
        .consumer_info(&streams.stream, &streams.consumer)
        .await;
    assert_eq!(info.num_pending, 0);
    second.stop();
    app.assert_repeats_only_in_flight(max_in_flight as usize);
    streams.clean_up().await;
}

/// ack_wait 2s, one delivery of 7s, two sidecars: in-progress keeps the slow message with the
/// one delivering it. JetStream redelivers nothing, so the other never even sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_delivery_is_not_stolen() {
    let streams = Streams::new("slow").await;
    let app = TestApp::slow_on("slow", Duration::from_secs(7)).await;
    let policy = policy(&streams, &app, &[("ack_wait", "2s".into())])
        .set("delivery.timeout", "20s")
        .set("dedup.lease", "30s")
        .set("ordering.mode", "none");
    let first = Sidecar::start(OUTRIGGER, policy.clone());
    let second = Sidecar::start(OUTRIGGER, policy);
    publish(&streams, "slow", "{}").await;
    for i in 0..20 {
        publish(&streams, &format!("fast-{i}"), "{}").await;
    }
    wait_until("everything delivered", LIMIT, || async {
        app.successes().len() == 21
    })
    .await;
    let info = streams
        .consumer_info(&streams.stream, &streams.consumer)
        .await;
    assert_eq!(info.num_redelivered, 0, "nothing was handed out twice");
    assert_eq!(app.hits().iter().filter(|h| h.key == "slow").count(), 1);
    streams.wait_all_acked().await;
    let duplicates = first.metric(SETTLED, r#"outcome="duplicate""#)
        + second.metric(SETTLED, r#"outcome="duplicate""#);
    assert_eq!(duplicates, 0.0, "no copy of it reached the other sidecar");
    first.stop();
    second.stop();
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_cli_lists_shows_resubmits_and_purges_the_dead_letter_stream() {
    let streams = Streams::new("dlq-cli").await;
    let (app, fixed) = app_until_fixed(|key| {
        if key.starts_with('a') {
            Some(Reply::status(400).body("amount must be positive"))
        } else {
            Some(Reply::status(422).body("unknown product"))
        }
    })
    .await;
    let policy = policy(&streams, &app, &[]);
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    for i in 0..5 {
        publish(&streams, &format!("a-{i}"), format!("body-a-{i}")).await;
        publish(&streams, &format!("b-{i}"), format!("body-b-{i}")).await;
    }
    wait_until("ten dead letters", LIMIT, || async {
        streams.count(&streams.dead_letter_stream).await == 10
    })
    .await;
    let cli = Dlq::new(&policy);
    let listed = cli.list(&[]);
    assert_eq!(listed.len(), 10);
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=10).map(|n| n.to_string()).collect::<Vec<_>>(),
        "stream sequences"
    );
    let a0 = listed.iter().find(|r| r["key"] == "a-0").unwrap();
    assert_eq!(a0["status"], 400);
    let shown = cli.ok(&["show", a0["id"].as_str().unwrap()]);
    assert!(shown.contains("amount must be positive"), "{shown}");
    assert!(shown.contains("body-a-0"), "{shown}");
    assert_eq!(
        cli.keys(&["--status", "422"]),
        set((0..5).map(|i| format!("b-{i}")))
    );

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = app.count();
    let out = cli.ok(&["resubmit", "--key", "a-*", "--by", "tester"]);
    assert!(out.contains("Resubmitted 5 of 5"), "{out}");
    support::wait_resubmitted_once(&app, before, "a-", 5, LIMIT).await;
    let again = cli.ok(&["resubmit", "--key", "a-*"]);
    assert!(again.contains("Resubmitted 0 of 0"), "{again}");
    let resubmitted: Vec<_> = app.hits().into_iter().skip(before).collect();
    for hit in &resubmitted {
        let n = hit.key.strip_prefix("a-").unwrap();
        assert_eq!(
            &hit.body[..],
            format!("body-a-{n}").as_bytes(),
            "payload byte for byte"
        );
    }

    let unconfirmed = cli.run(&["purge", "--key", "b-*"]);
    assert_eq!(unconfirmed.status.code(), Some(64), "no --yes: refused");
    let purged = cli.ok(&["purge", "--key", "b-*", "--yes"]);
    assert!(purged.contains("Purged 5 of 5"), "{purged}");
    assert!(cli.list(&[]).is_empty());
    assert_eq!(streams.count(&streams.dead_letter_stream).await, 0);
    streams.wait_all_acked().await;
    sidecar.stop();
    assert_eq!(app.count(), before + 5, "nothing was delivered twice");
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_connection_the_lag_and_what_is_ack_pending() {
    let streams = Streams::new("gauges").await;
    let app = TestApp::slow_on("held", Duration::from_secs(7)).await;
    let sidecar = Sidecar::start(
        OUTRIGGER,
        policy(&streams, &app, &[]).set("delivery.timeout", "8s"),
    );
    publish(&streams, "held", "{}").await;
    let labels = format!(r#"partition="",topic="{}""#, streams.stream);
    wait_until(
        "the held message ack-pending, by the gauge",
        LIMIT,
        || async {
            app.arrived() == 1 && sidecar.metric("outrigger_pending_messages", &labels) == 1.0
        },
    )
    .await;
    wait_until("the connection up, by the gauge", LIMIT, || async {
        sidecar.metric("outrigger_source_up", "") == 1.0
    })
    .await;
    assert_eq!(
        sidecar.metric("outrigger_consumer_lag_messages", &labels),
        0.0,
        "nothing left to hand out"
    );
    wait_until("nothing ack-pending once it is done", LIMIT, || async {
        sidecar.metric("outrigger_pending_messages", &labels) == 0.0
    })
    .await;
    sidecar.stop();
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_mode_keeps_each_entitys_order_through_in_place_retries() {
    let streams = Streams::new("order").await;
    let app = app_failing_each_entitys_first_message_once().await;
    // Ordering `key` (the default) on the `outrigger-key` header (`key_header`'s default).
    let sidecar = Sidecar::start(OUTRIGGER, policy(&streams, &app, &[]));
    let messages = interleaved(8, 10);
    for (entity, id, body) in &messages {
        streams
            .publish(
                &[("idempotency-key", id), ("outrigger-key", entity)],
                body.clone(),
            )
            .await;
    }
    wait_until("every message settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= messages.len() as f64
    })
    .await;
    sidecar.stop();
    assert_each_entitys_order(&app.hits(), 8, 10);
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliver_mode_naks_a_retry_with_its_delay_and_frees_the_sidecar_meanwhile() {
    let streams = Streams::new("redeliver").await;
    let app = TestApp::start(|key, nth| match key {
        "flaky" if nth < 3 => Reply::status(500),
        "poison" => Reply::status(500).body("always down for this one"),
        _ => Reply::status(200),
    })
    .await;
    // One message in flight at a time: a retry waiting here would hold everything up. A
    // message naked with a delay stays ack-pending at JetStream until it is redelivered, so
    // the consumer's window is wider than the sidecar's.
    let policy = policy(&streams, &app, &[("max_ack_pending", 100.into())])
        .set("retry.mode", "redeliver")
        .set("ordering.mode", "none")
        .set("retry.max_attempts", 3)
        .set("retry.initial", "1s")
        .set("retry.max", "1s")
        .set("retry.jitter", 0.0)
        .set("backpressure.max_in_flight", 1);
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    publish(&streams, "flaky", "{}").await;
    publish(&streams, "poison", "{}").await;
    for i in 0..10 {
        publish(&streams, &format!("k-{i}"), "{}").await;
    }
    wait_until("every message settled for good", LIMIT, || async {
        sidecar.metric(SETTLED, r#"outcome="delivered""#) == 11.0
            && sidecar.metric(SETTLED, r#"outcome="dead_lettered""#) == 1.0
    })
    .await;
    let hits = app.hits();
    let attempts_of = |key: &str| -> Vec<u32> {
        hits.iter()
            .filter(|h| h.key == key)
            .map(|h| h.attempt)
            .collect()
    };
    assert_eq!(
        attempts_of("flaky"),
        [1, 2, 3],
        "each redelivery one attempt"
    );
    assert_eq!(attempts_of("poison"), [1, 2, 3]);
    // The sidecar went on while the retries waited at the broker.
    let first_retry = hits
        .iter()
        .position(|h| h.key == "flaky" && h.attempt == 2)
        .expect("flaky's second attempt");
    assert!(
        hits[..first_retry].iter().any(|h| h.key.starts_with("k-")),
        "no other message was delivered while flaky waited: {:?}",
        hits.iter().map(|h| (&h.key, h.attempt)).collect::<Vec<_>>()
    );
    assert_eq!(
        sidecar.metric(SETTLED, r#"outcome="redelivery""#),
        4.0,
        "two naks each for flaky and poison"
    );
    let dead = streams.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let m = &dead[0];
    assert_eq!(m.header_str("outrigger-dlq-key"), Some("poison"));
    assert_eq!(m.header_str("outrigger-dlq-attempts"), Some("3"));
    let reason = m.header_str("outrigger-dlq-reason").unwrap_or_default();
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
    streams.wait_all_acked().await;
    sidecar.stop();
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_dead_letters_go_to_its_own_subject_and_the_rest_to_the_policys() {
    let streams = Streams::new("route-dlq").await;
    let refunds_subject = format!("{}.refunds.dlq", streams.stream);
    let app = TestApp::start(|_, _| Reply::status(400).body("no")).await;
    let routes = format!(
        "[[routes]]\nname = \"refunds\"\nmatch = {{ headers = {{ x-kind = \"refund\" }} }}\n\
         [routes.dead_letter]\ndestination = \"{refunds_subject}\"\n"
    );
    let policy = policy(&streams, &app, &[]).with_toml(&routes);
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    streams
        .publish(
            &[("idempotency-key", "refund-0"), ("x-kind", "refund")],
            "{}",
        )
        .await;
    publish(&streams, "order-0", "{}").await;
    wait_until("two dead letters", LIMIT, || async {
        streams.count(&streams.dead_letter_stream).await == 2
    })
    .await;
    streams.wait_all_acked().await;
    sidecar.stop();

    // No stream captured the route's subject: the dead-letter stream was made to.
    let first = |subject: String| {
        let streams = &streams;
        async move {
            outrigger_nats::stored_message(
                &streams.client,
                &streams.dead_letter_stream,
                1,
                &subject,
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no dead letter on {subject}"))
        }
    };
    let key = |m: &outrigger_nats::StoredMessage| {
        m.headers
            .iter()
            .find(|h| h.name == "idempotency-key")
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    let refund = first(refunds_subject.clone()).await;
    assert_eq!(key(&refund).as_deref(), Some("refund-0"));
    let status = refund
        .headers
        .iter()
        .find(|h| h.name == "outrigger-dlq-status")
        .map(|h| h.value.clone());
    assert_eq!(status.as_deref(), Some(&b"400"[..]));
    let order = first(streams.dead_letter_subject.clone()).await;
    assert_eq!(key(&order).as_deref(), Some("order-0"));
    // One stream, two subjects: `outrigger dlq` reads the one it is pointed at.
    let cli = Dlq::new(&policy);
    assert_eq!(cli.keys(&[]), set(["order-0".to_owned()]));
    assert_eq!(
        cli.keys(&["--route", "refunds"]),
        set(["refund-0".to_owned()])
    );
    let out = cli.ok(&["purge", "--route", "refunds", "--yes"]);
    assert!(out.contains("Purged 1 of 1"), "{out}");
    assert!(cli.keys(&["--route", "refunds"]).is_empty());
    assert_eq!(
        cli.keys(&[]),
        set(["order-0".to_owned()]),
        "the other stays"
    );
    streams.clean_up().await;
}
