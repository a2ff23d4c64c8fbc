//! The pipeline end to end: RabbitMQ → Redis dedup → HTTP app, through the real binary.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::{unique, wait_until, Policy, Proxy, Rabbit, Reply, Sidecar, TestApp, OUTRIGGER};

const SETTLED: &str = "outrigger_messages_settled_total";
const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_acked_and_each_key_is_handled_once() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dedup");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let sidecar = Sidecar::start(OUTRIGGER, Policy::amqp(&queue, &app.url(), &unique("ns")));

    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let mut keys: Vec<String> = Vec::new();
    for i in 0..1000 {
        let key = if !keys.is_empty() && rng.random_bool(0.2) {
            keys[rng.random_range(0..keys.len())].clone()
        } else {
            keys.push(format!("order-{i}"));
            keys.last().unwrap().clone()
        };
        rabbit
            .publish_keyed(&queue, &key, format!(r#"{{"n":{i}}}"#).as_bytes())
            .await;
    }
    let duplicates = 1000 - keys.len();
    assert!(duplicates > 150, "the mix has about 20% duplicates");

    wait_until("all 1000 messages settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 1000.0
    })
    .await;
    let successes = app.successes();
    assert_eq!(successes.len(), keys.len(), "every key reached the app");
    let twice: Vec<_> = successes.iter().filter(|(_, &n)| n != 1).collect();
    assert!(twice.is_empty(), "keys handled more than once: {twice:?}");
    assert_eq!(
        sidecar.metric(SETTLED, r#"outcome="duplicate""#),
        duplicates as f64
    );
    assert_eq!(app.count(), keys.len(), "duplicates never reached the app");
    sidecar.stop();
    assert_eq!(rabbit.depth(&queue).await, 0, "the queue ends empty");
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("retry");
    rabbit.declare(&queue).await;
    let app = TestApp::start(|key, nth| {
        if key.starts_with("flaky") && nth <= 2 {
            Reply::status(500).body("database busy")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("retry.backoff", "exponential")
        .set("retry.initial", "150ms")
        .set("retry.multiplier", 2.0)
        .set("retry.max", "2s")
        .set("retry.max_attempts", 5);
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    for i in 0..5 {
        rabbit
            .publish_keyed(&queue, &format!("flaky-{i}"), b"{}")
            .await;
        rabbit
            .publish_keyed(&queue, &format!("fine-{i}"), b"{}")
            .await;
    }
    wait_until("all ten keys handled", LIMIT, || async {
        app.successes().len() == 10
    })
    .await;

    let hits = app.hits();
    for i in 0..5 {
        let key = format!("flaky-{i}");
        let mine: Vec<_> = hits.iter().filter(|h| h.key == key).collect();
        let attempts: Vec<u32> = mine.iter().map(|h| h.attempt).collect();
        let statuses: Vec<u16> = mine.iter().map(|h| h.status).collect();
        assert_eq!(attempts, [1, 2, 3], "{key}: outrigger-attempt counts up");
        assert_eq!(statuses, [500, 500, 200], "{key}: delivered on attempt 3");
        // Exponential backoff without jitter: 150ms after the first failure, 300ms after the
        // second. Only lower bounds: a loaded machine may add delay, never remove it.
        let gap1 = mine[1].at - mine[0].at;
        let gap2 = mine[2].at - mine[1].at;
        assert!(
            gap1 >= Duration::from_millis(140),
            "{key}: first gap {gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_millis(290),
            "{key}: second gap {gap2:?}"
        );
    }
    for i in 0..5 {
        let key = format!("fine-{i}");
        let attempts: Vec<u32> = hits
            .iter()
            .filter(|h| h.key == key)
            .map(|h| h.attempt)
            .collect();
        assert_eq!(attempts, [1], "{key} succeeded at once");
    }
    assert_eq!(sidecar.metric("outrigger_retries_total", ""), 10.0);
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_land_in_the_dlq_byte_for_byte_with_their_reason() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("poison");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let app = TestApp::start(|key, _| {
        if key.starts_with("poison") {
            Reply::status(400).body("order rejected: amount must be positive")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let sidecar = Sidecar::start(OUTRIGGER, Policy::amqp(&queue, &app.url(), &unique("ns")));

    let mut originals = HashMap::new();
    for i in 0..3u8 {
        // Not UTF-8, with a NUL: the DLQ must keep the bytes, not a re-encoding.
        let body = vec![0xff, 0x00, 0xfe, i, b'{', 0x80];
        let key = format!("poison-{i}");
        rabbit.publish_keyed(&queue, &key, &body).await;
        originals.insert(key, body);
    }
    for i in 0..7 {
        rabbit
            .publish_keyed(&queue, &format!("good-{i}"), b"{}")
            .await;
    }
    wait_until("three dead letters and seven deliveries", LIMIT, || async {
        rabbit.depth(&dlq).await == 3 && app.successes().len() == 7
    })
    .await;
    sidecar.stop();

    let dead = rabbit.drain(&dlq).await;
    assert_eq!(dead.len(), 3, "only the poison messages are dead-lettered");
    for m in &dead {
        let key = m.header("idempotency-key").expect("original header kept");
        assert_eq!(
            Some(&m.body),
            originals.get(&key),
            "{key}: body byte for byte"
        );
        assert_eq!(m.header("outrigger-dlq-status").as_deref(), Some("400"));
        assert_eq!(m.header("outrigger-dlq-attempts").as_deref(), Some("1"));
        assert_eq!(m.header("outrigger-dlq-class").as_deref(), Some("4xx"));
        assert_eq!(m.header("outrigger-dlq-key"), Some(key.clone()));
        let reason = m.header("outrigger-dlq-reason").unwrap();
        assert!(reason.contains("400"), "reason names the status: {reason}");
        assert_eq!(
            m.header("outrigger-dlq-response").as_deref(),
            Some("order rejected: amount must be positive")
        );
        assert!(m
            .header("outrigger-dlq-source")
            .unwrap()
            .starts_with(&format!("amqp:{queue}#")));
    }
    assert_eq!(rabbit.depth(&queue).await, 0);
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_pauses_delivery_and_resumes_without_duplicates() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("outage");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let redis = Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("dedup.redis.url", format!("redis://{}", redis.addr))
        .set("dedup.redis.timeout", "300ms")
        .set("backpressure.max_in_flight", 8);
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    for i in 0..50 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    wait_until("first 50 delivered", LIMIT, || async {
        app.successes().len() == 50
    })
    .await;

    redis.refuse();
    wait_until("readiness reports the store down", LIMIT, || async {
        sidecar
            .get("/readyz")
            .is_some_and(|(s, body)| s == 503 && body.contains("store"))
    })
    .await;
    let before = app.count();
    // New keys and duplicates of delivered ones arrive while Redis is away.
    for i in 50..100 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    for i in 0..20 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    wait_until("the sidecar noticed the store errors", LIMIT, || async {
        sidecar.metric("outrigger_dedup_store_errors_total", "") > 0.0
    })
    .await;
    // An observation window: nothing may reach the app while it cannot be deduplicated.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.count(),
        before,
        "no delivery without dedup during the outage"
    );

    redis.allow();
    wait_until(
        "all 100 keys delivered after Redis is back",
        LIMIT,
        || async { app.successes().len() == 100 && sidecar.metric(SETTLED, "") >= 120.0 },
    )
    .await;
    let successes = app.successes();
    assert!(successes.values().all(|&n| n == 1), "{successes:?}");
    assert!(
        app.hits().iter().all(|h| h.fence.is_some()),
        "every delivery held a claim"
    );
    assert_eq!(sidecar.metric(SETTLED, r#"outcome="duplicate""#), 20.0);
    sidecar.stop();
    assert_eq!(rabbit.depth(&queue).await, 0);
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_and_a_restart_resumes() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("kill");
    rabbit.declare(&queue).await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_millis(5))).await;
    let max_in_flight = 16;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("dedup.lease", "6s")
        .set("backpressure.max_in_flight", max_in_flight);
    for i in 0..400 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    let mut first = Sidecar::start(OUTRIGGER, policy.clone());
    wait_until("the first sidecar is mid-stream", LIMIT, || async {
        app.successes().len() >= 80
    })
    .await;
    first.kill();
    let at_kill = app.successes().len();
    assert!(at_kill < 400, "killed mid-stream");

    let second = Sidecar::start(OUTRIGGER, policy);
    wait_until("every key handled after the restart", LIMIT, || async {
        app.successes().len() == 400
    })
    .await;
    second.stop();
    assert_eq!(rabbit.depth(&queue).await, 0, "nothing left behind");

    // The one window no consumer can close alone: the app answered, the sidecar died before
    // recording it. Only messages in flight at the kill can fall in it, and their redelivery
    // carries a higher fence, so an app that checks outrigger-fence or the idempotency key
    // rejects it.
    app.assert_repeats_only_in_flight(max_in_flight as usize);
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_leaves_the_rest_queued() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("term");
    rabbit.declare(&queue).await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_millis(400))).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("backpressure.max_in_flight", 4)
        .set("shutdown.grace_period", "10s");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    for i in 0..40 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    wait_until("deliveries in flight", LIMIT, || async { app.count() >= 1 }).await;
    sidecar.stop_within(Duration::from_secs(20));

    let delivered = app.successes();
    assert!(delivered.values().all(|&n| n == 1));
    let left = rabbit.depth(&queue).await as usize;
    assert_eq!(
        delivered.len() + left,
        40,
        "each message delivered or still queued"
    );
    assert!(left > 0, "consumption stopped at SIGTERM");
    // Every request the app started before SIGTERM was answered and acked, not cut off.
    assert_eq!(app.count(), delivered.len());
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_in_flight_messages_go_back_to_the_queue() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("grace");
    rabbit.declare(&queue).await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_secs(30))).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("delivery.timeout", "60s")
        .set("dedup.lease", "90s")
        .set("backpressure.max_in_flight", 3)
        .set("shutdown.grace_period", "500ms");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    for i in 0..10 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    wait_until("three messages in flight", LIMIT, || async {
        sidecar.metric("outrigger_in_flight_messages", "") >= 3.0
    })
    .await;
    sidecar.stop_within(Duration::from_secs(15));
    assert_eq!(
        rabbit.depth(&queue).await,
        10,
        "unfinished messages are back in the queue"
    );
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_gets_cloudevents_attributes_trace_context_and_allowed_headers() {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let rabbit = Rabbit::connect().await;
    let queue = unique("headers");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let forward = toml_edit::Array::from_iter(["x-tenant"]);
    let sidecar = Sidecar::start(
        OUTRIGGER,
        Policy::amqp(&queue, &app.url(), &unique("ns")).set("delivery.forward_headers", forward),
    );
    let mut headers = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    headers.insert("idempotency-key".into(), text("order-7"));
    headers.insert(
        "traceparent".into(),
        text("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    headers.insert("x-tenant".into(), text("acme"));
    headers.insert("x-internal".into(), text("do-not-forward"));
    let properties = lapin::BasicProperties::default()
        .with_headers(headers)
        .with_message_id("m-42".into())
        .with_content_type("application/json".into());
    rabbit.publish(&queue, br#"{"total":12}"#, properties).await;
    wait_until("delivered", LIMIT, || async { app.count() == 1 }).await;

    let hit = &app.hits()[0];
    let h = |name: &str| {
        hit.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(&hit.body[..], br#"{"total":12}"#, "body byte for byte");
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    assert_eq!(h("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(h("ce-id").as_deref(), Some("m-42"));
    assert!(h("ce-source").is_some_and(|s| s.contains(&queue)));
    assert!(h("ce-type").is_some() && h("ce-time").is_some());
    assert_eq!(h("outrigger-attempt").as_deref(), Some("1"));
    assert_eq!(h("outrigger-idempotency-key").as_deref(), Some("order-7"));
    assert!(h("outrigger-fence").is_some_and(|f| f.parse::<u64>().is_ok()));
    assert_eq!(
        h("traceparent").as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(h("x-tenant").as_deref(), Some("acme"));
    assert_eq!(
        h("x-internal"),
        None,
        "headers off the allow-list stay behind"
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_mode_keeps_messages_flowing_without_dedup_while_redis_is_down() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("deliver");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let redis = Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    redis.refuse();
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("dedup.redis.url", format!("redis://{}", redis.addr))
        .set("dedup.redis.timeout", "300ms")
        .set("dedup.on_store_error", "deliver");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    for i in 0..5 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    wait_until("all five delivered", LIMIT, || async {
        app.successes().len() == 5
    })
    .await;
    assert!(
        app.hits().iter().all(|h| h.fence.is_none()),
        "no claim was held: these went out undeduplicated, as configured"
    );
    sidecar.stop();
    assert_eq!(rabbit.depth(&queue).await, 0);
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}
