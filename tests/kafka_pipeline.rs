//! The pipeline end to end on Kafka: a tansu broker process (librdkafka's mock cluster where
//! tansu falls short), Redis dedup, the real binary.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use support::kafka::{self, tansu::Tansu};
use support::{unique, wait_until, Policy, Reply, Sidecar, TestApp, OUTRIGGER};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLED: &str = "outrigger_messages_settled_total";

/// `count` records over `keys` keys: payload `{"id":"m-<n>","key":"k<n % keys>","seq":n}`.
fn keyed(count: usize, keys: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|n| {
            let key = format!("k{}", n % keys);
            (
                key.clone(),
                format!(r#"{{"id":"m-{n}","key":"{key}","seq":{n}}}"#),
            )
        })
        .collect()
}

fn seq_of(body: &[u8]) -> (String, u64) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    (
        v["key"].as_str().unwrap().to_owned(),
        v["seq"].as_u64().unwrap(),
    )
}

/// Runs 20,000 keyed records through one sidecar in `mode`; returns the time to settle them all
/// and checks each key's records reached the app in order.
async fn run_ordered(tansu: &Tansu, mode: &str, records: &[(String, String)]) -> Duration {
    let topic = unique("ordered");
    tansu.kafka.create_topic(&topic, 4).await;
    tansu.kafka.create_topic(&format!("{topic}.dlq"), 1).await;
    tansu.kafka.produce_keyed(&topic, records).await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_millis(2))).await;
    let policy = kafka::policy(&tansu.kafka, &topic, &app)
        .set("ordering.mode", mode)
        .set("backpressure.max_in_flight", 32)
        .set("backpressure.max_in_flight_per_partition", 32);
    let started = Instant::now();
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("every record settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= records.len() as f64
    })
    .await;
    let took = started.elapsed();
    sidecar.stop();

    let mut last: HashMap<String, u64> = HashMap::new();
    for hit in app.hits() {
        let (key, seq) = seq_of(&hit.body);
        if let Some(prev) = last.insert(key.clone(), seq) {
            assert!(
                prev < seq,
                "{mode} mode: key {key} saw seq {seq} after {prev}"
            );
        }
    }
    assert_eq!(
        app.successes().len(),
        records.len(),
        "{mode} mode: every record once"
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_mode_keeps_each_keys_order_and_outruns_partition_mode() {
    let tansu = Tansu::start().await;
    let records = keyed(20_000, 200);
    let key_mode = run_ordered(&tansu, "key", &records).await;
    let partition_mode = run_ordered(&tansu, "partition", &records).await;
    println!(
        "20,000 records, app 2ms each: key mode {key_mode:?}, partition mode {partition_mode:?}"
    );
    // A comparison within one run, not a timing bound: 32 key lanes against 4 partition lanes.
    assert!(
        key_mode < partition_mode,
        "key mode ({key_mode:?}) should beat partition mode ({partition_mode:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_key_retries_and_dead_letters_while_other_keys_flow() {
    let tansu = Tansu::start().await;
    let topic = unique("poison");
    let dlq = format!("{topic}.dlq");
    tansu.kafka.create_topic(&topic, 2).await;
    tansu.kafka.create_topic(&dlq, 1).await;
    let app = TestApp::start(|key, _| {
        if key == "m-0" {
            Reply::status(500)
                .body("ledger says no")
                .after(Duration::from_millis(20))
        } else {
            Reply::status(200)
        }
    })
    .await;
    let mut records = vec![(
        "poison".to_owned(),
        r#"{"id":"m-0","key":"poison","seq":0}"#.to_owned(),
    )];
    records.extend(keyed(300, 30).into_iter().skip(1));
    tansu.kafka.produce_keyed(&topic, &records).await;
    let policy = kafka::policy(&tansu.kafka, &topic, &app)
        .set("ordering.mode", "key")
        .set("retry.max_attempts", 6)
        .set("retry.initial", "300ms")
        .set("retry.max", "300ms");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("every other key delivered", LIMIT, || async {
        app.successes().len() == 299
    })
    .await;
    let poison_attempts = app.hits().iter().filter(|h| h.key == "m-0").count();
    assert!(
        poison_attempts < 6,
        "the other keys finished while the poison key was still retrying ({poison_attempts} attempts)"
    );
    wait_until("the poison record dead-lettered", LIMIT, || async {
        sidecar.metric("outrigger_dead_lettered_total", "") >= 1.0
    })
    .await;
    let dead = tansu.kafka.read(&dlq, 0, 1).await;
    let headers: HashMap<_, _> = kafka::headers_of(&dead[0]).into_iter().collect();
    let text = |k: &str| {
        headers
            .get(k)
            .cloned()
            .flatten()
            .map(|v| String::from_utf8(v).unwrap())
    };
    use rdkafka::message::Message as _;
    assert_eq!(dead[0].key(), Some(&b"poison"[..]));
    assert_eq!(dead[0].payload(), Some(records[0].1.as_bytes()));
    assert_eq!(text("outrigger-dlq-attempts").as_deref(), Some("6"));
    assert_eq!(text("outrigger-dlq-status").as_deref(), Some("500"));
    assert!(text("outrigger-dlq-reason")
        .unwrap()
        .contains("gave up after 6 attempts"));
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_waits_for_a_slow_message_then_jumps_to_the_end() {
    let tansu = Tansu::start().await;
    let topic = unique("watermark");
    let group = unique("g");
    tansu.kafka.create_topic(&topic, 1).await;
    tansu.kafka.create_topic(&format!("{topic}.dlq"), 1).await;
    // Record 10 of 50 is slow; key mode lets the 40 after it finish first.
    let records = keyed(50, 50);
    tansu.kafka.produce_keyed(&topic, &records).await;
    let app = TestApp::start(|key, _| {
        if key == "m-10" {
            Reply::status(200).after(Duration::from_secs(4))
        } else {
            Reply::status(200)
        }
    })
    .await;
    let policy = Policy::kafka(
        &tansu.kafka.bootstrap,
        &topic,
        &group,
        &app.url(),
        &unique("ns"),
    )
    .set("ordering.mode", "key");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("the other 49 delivered", LIMIT, || async {
        app.successes().len() == 49
    })
    .await;
    // Give the commit interval several turns: it must still not pass offset 10.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let committed = tansu.kafka.committed(&group, &topic, 1).await[0];
    assert!(
        committed.is_none_or(|c| c <= 10),
        "committed {committed:?} passed the slow offset 10"
    );
    wait_until("the slow one delivered", LIMIT, || async {
        app.successes().len() == 50
    })
    .await;
    tansu
        .kafka
        .wait_committed(&group, &topic, &[Some(50)])
        .await;
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_app_pauses_the_partitions_and_bounds_what_is_buffered() {
    let tansu = Tansu::start().await;
    let topic = unique("stall");
    tansu.kafka.create_topic(&topic, 2).await;
    tansu.kafka.create_topic(&format!("{topic}.dlq"), 1).await;
    let big = "x".repeat(10_000);
    let records: Vec<_> = (0..400)
        .map(|n| {
            (
                format!("k{n}"),
                format!(r#"{{"id":"m-{n}","pad":"{big}"}}"#),
            )
        })
        .collect();
    tansu.kafka.produce_keyed(&topic, &records).await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_secs(600))).await;
    let policy = kafka::policy(&tansu.kafka, &topic, &app)
        .set("ordering.mode", "none")
        .set("delivery.timeout", "900s")
        .set("dedup.lease", "1000s")
        .set("backpressure.max_in_flight", 8)
        .set("backpressure.max_in_flight_per_partition", 4);
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("both partitions paused", LIMIT, || async {
        sidecar.metric("outrigger_partition_paused", "") >= 2.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let consumed = sidecar.metric("outrigger_messages_consumed_total", "");
    assert!(
        consumed <= 8.0,
        "only the in-flight limit was taken: {consumed}"
    );
    assert!(sidecar.metric("outrigger_partition_in_flight_messages", "") <= 8.0);
    let rss_kib = sidecar.rss_kib();
    assert!(
        rss_kib < 150 * 1024,
        "sidecar RSS {rss_kib} KiB with 4 MB of records waiting"
    );
    sidecar.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_split_a_group_and_the_survivor_takes_over_after_a_sigkill() {
    // Not tansu: when a member's session times out, tansu 0.6.0 rebalances the survivor in the
    // same generation and hands it its old assignment again, so the dead member's partitions
    // are never consumed. librdkafka's mock cluster expires members as Kafka does.
    let mock = MockCluster::new(1).unwrap();
    let broker = kafka::Kafka {
        bootstrap: mock.bootstrap_servers(),
    };
    let topic = unique("group");
    let group = unique("g");
    // The mock cluster does not implement CreateTopics.
    mock.create_topic(&topic, 4, 1).unwrap();
    mock.create_topic(&format!("{topic}.dlq"), 1, 1).unwrap();
    let records = keyed(2_000, 100);
    broker.produce_keyed(&topic, &records).await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_millis(5))).await;
    let max_in_flight = 16;
    let policy = Policy::kafka(&broker.bootstrap, &topic, &group, &app.url(), &unique("ns"))
        .set("backpressure.max_in_flight", max_in_flight)
        .set("backpressure.max_in_flight_per_partition", 8)
        // Notice a dead member within seconds rather than the 45 s default.
        .kafka_property("session.timeout.ms", "6000")
        .kafka_property("heartbeat.interval.ms", "1000");
    let mut first = Sidecar::start(OUTRIGGER, policy.clone());
    let second = Sidecar::start(OUTRIGGER, policy);
    wait_until("both members consuming", LIMIT, || async {
        first.metric(SETTLED, "") > 0.0 && second.metric(SETTLED, "") > 0.0
    })
    .await;
    first.kill();
    let at_kill = app.successes().len();
    assert!(at_kill < records.len(), "killed mid-stream");
    wait_until("the survivor delivered everything", LIMIT, || async {
        app.successes().len() == records.len()
    })
    .await;
    second.stop();

    // As on RabbitMQ: only records in flight in the killed member can reach the app twice,
    // each time under a higher fence.
    app.assert_repeats_only_in_flight(max_in_flight as usize);
}

/// A one-partition topic for the retry-queue tests: `m-0` of key `K` first, then 40 records
/// where every tenth is `K` again (`m-10` ... `m-40`) and the rest have keys of their own.
async fn parked_key_topic(tansu: &Tansu, name: &str) -> (String, Vec<(String, String)>) {
    let topic = unique(name);
    tansu.kafka.create_topic(&topic, 1).await;
    let records: Vec<_> = (0..=40)
        .map(|n| {
            let key = if n % 10 == 0 {
                "K".to_owned()
            } else {
                format!("o{n}")
            };
            (
                key.clone(),
                format!(r#"{{"id":"m-{n}","key":"{key}","seq":{n}}}"#),
            )
        })
        .collect();
    tansu.kafka.produce_keyed(&topic, &records).await;
    (topic, records)
}

fn queue_policy(tansu: &Tansu, topic: &str, group: &str, app: &TestApp, ns: &str) -> Policy {
    Policy::kafka(&tansu.kafka.bootstrap, topic, group, &app.url(), ns)
        .set("ordering.mode", "key")
        .set("retry.mode", "queue")
        .set("retry.tiers", toml_edit::Array::from_iter(["1s", "2s"]))
}

/// An app where `m-0` fails twice, then succeeds, and everything else succeeds at once.
async fn app_failing_m0_twice() -> TestApp {
    TestApp::start(|key, nth| {
        if key == "m-0" && nth <= 2 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await
}

/// Waits until the app accepted every one of `records`.
async fn wait_all_delivered(app: &TestApp, records: &[(String, String)]) {
    wait_until("every record delivered", LIMIT, || async {
        app.successes().len() == records.len()
    })
    .await;
}

/// The successful deliveries of key `K`, in the order the app got them.
fn k_successes(app: &TestApp) -> Vec<String> {
    app.hits()
        .into_iter()
        .filter(|h| h.status == 200 && seq_of(&h.body).0 == "K")
        .map(|h| h.key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_parks_a_failing_keys_later_messages_while_the_partition_flows() {
    let tansu = Tansu::start().await;
    let (topic, records) = parked_key_topic(&tansu, "queue").await;
    let group = unique("g");
    let app = app_failing_m0_twice().await;
    let sidecar = Sidecar::start(
        OUTRIGGER,
        queue_policy(&tansu, &topic, &group, &app, &unique("ns")),
    );
    wait_until("key K parked", LIMIT, || async {
        sidecar.metric("outrigger_parked_keys", "") >= 1.0
    })
    .await;
    wait_all_delivered(&app, &records).await;

    // K's records reached the app in offset order, the parked ones only after m-0 succeeded.
    assert_eq!(k_successes(&app), ["m-0", "m-10", "m-20", "m-30", "m-40"]);
    let hits = app.hits();
    let attempts: Vec<u32> = hits
        .iter()
        .filter(|h| h.key == "m-0")
        .map(|h| h.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3], "attempts count across retry topics");
    let m0_done = hits
        .iter()
        .find(|h| h.key == "m-0" && h.status == 200)
        .unwrap()
        .at;
    for hit in &hits {
        let (key, _) = seq_of(&hit.body);
        if key == "K" && hit.key != "m-0" {
            assert!(hit.at > m0_done, "{} overtook m-0", hit.key);
        } else if key != "K" {
            // The partition's other keys did not wait for the retries.
            assert!(hit.at < m0_done, "{} waited behind m-0's retries", hit.key);
        }
    }
    assert_eq!(hits.len(), records.len() + 2, "nothing delivered twice");

    // The retries went through the tier topics, with their trail.
    let first = tansu.kafka.read(&format!("{topic}.retry.1"), 0, 1).await;
    let headers: HashMap<_, _> = kafka::headers_of(&first[0]).into_iter().collect();
    assert_eq!(
        headers["outrigger-retry-origin"].as_deref(),
        Some(format!("kafka:{topic}/0@0").as_bytes())
    );
    let second = tansu.kafka.read(&format!("{topic}.retry.2"), 0, 1).await;
    let headers: HashMap<_, _> = kafka::headers_of(&second[0]).into_iter().collect();
    assert_eq!(headers["outrigger-retry-hop"].as_deref(), Some(&b"2"[..]));
    assert!(sidecar.metric(SETTLED, r#"outcome="retry_queued""#) >= 2.0);
    assert!(sidecar.metric(SETTLED, r#"outcome="parked""#) >= 4.0);

    // Everything settled: the source topic is committed to its end, the chain is gone.
    tansu
        .kafka
        .wait_committed(&group, &topic, &[Some(records.len() as i64)])
        .await;
    wait_until("no key parked", LIMIT, || async {
        sidecar.metric("outrigger_parked_keys", "") == 0.0
    })
    .await;
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_keys_survive_a_sigkill_and_keep_their_order() {
    let tansu = Tansu::start().await;
    let (topic, records) = parked_key_topic(&tansu, "queue-kill").await;
    let (group, ns) = (unique("g"), unique("ns"));
    let app = app_failing_m0_twice().await;
    let policy = queue_policy(&tansu, &topic, &group, &app, &ns)
        .set("retry.tiers", toml_edit::Array::from_iter(["3s"]))
        // The restarted member waits for the killed one's session to end before it gets the
        // partitions: seconds, not the 45 s default.
        .kafka_property("session.timeout.ms", "6000")
        .kafka_property("heartbeat.interval.ms", "1000");
    let mut first = Sidecar::start(OUTRIGGER, policy.clone());
    wait_until("K's later records parked", LIMIT, || async {
        first.metric(SETTLED, r#"outcome="parked""#) >= 4.0
    })
    .await;
    first.kill();
    assert!(
        !app.successes().contains_key("m-0"),
        "killed while m-0 was still waiting"
    );
    let second = Sidecar::start(OUTRIGGER, policy);
    wait_all_delivered(&app, &records).await;
    assert_eq!(k_successes(&app), ["m-0", "m-10", "m-20", "m-30", "m-40"]);
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_records_follow_a_dead_lettered_head_when_the_policy_says_so() {
    let tansu = Tansu::start().await;
    let (topic, records) = parked_key_topic(&tansu, "queue-dlq").await;
    let dlq = format!("{topic}.dlq");
    let app = TestApp::start(|key, _| {
        if key == "m-0" {
            Reply::status(500).body("no such account")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let policy = queue_policy(&tansu, &topic, &unique("g"), &app, &unique("ns"))
        .set("retry.tiers", toml_edit::Array::from_iter(["500ms"]))
        .set("retry.max_attempts", 2)
        .set("retry.parked_after_dead_letter", "dead_letter");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("K's five records dead-lettered", LIMIT, || async {
        sidecar.metric(SETTLED, r#"outcome="dead_lettered""#) >= 5.0
    })
    .await;
    wait_until("the other keys delivered", LIMIT, || async {
        app.successes().len() == records.len() - 5
    })
    .await;
    assert!(k_successes(&app).is_empty(), "no K record reached the app");
    let dead = tansu.kafka.read(&dlq, 0, 5).await;
    use rdkafka::message::Message as _;
    let reasons: Vec<(Vec<u8>, String)> = dead
        .iter()
        .map(|m| {
            let headers: HashMap<_, _> = kafka::headers_of(m).into_iter().collect();
            let reason = headers["outrigger-dlq-reason"].clone().unwrap();
            assert!(
                !headers.keys().any(|h| h.starts_with("outrigger-retry-")),
                "dead letters carry no retry headers"
            );
            (
                m.payload().unwrap().to_vec(),
                String::from_utf8(reason).unwrap(),
            )
        })
        .collect();
    assert_eq!(reasons[0].0, records[0].1.as_bytes());
    assert!(
        reasons[0].1.contains("gave up after 2 attempts"),
        "{reasons:?}"
    );
    for (n, (payload, reason)) in reasons.iter().enumerate().skip(1) {
        assert_eq!(payload, records[n * 10].1.as_bytes());
        assert!(
            reason.contains(&format!("parked behind kafka:{topic}/0@0")),
            "{reason}"
        );
    }
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_dead_letters_go_to_its_own_topic_and_the_rest_to_the_policys() {
    let tansu = Tansu::start().await;
    let topic = unique("route-dlq");
    let (dlq, refunds_dlq) = (format!("{topic}.dlq"), format!("{topic}.refunds.dlq"));
    tansu.kafka.create_topic(&topic, 1).await;
    tansu.kafka.create_topic(&dlq, 1).await;
    let app = TestApp::start(|_, _| Reply::status(400).body("no")).await;
    // The route's topic does not exist: the sidecar creates it at startup.
    let routes = format!(
        "[[routes]]\nname = \"refunds\"\nmatch = {{ headers = {{ x-kind = \"refund\" }} }}\n\
         [routes.dead_letter]\ndestination = \"{refunds_dlq}\"\n"
    );
    let producer = tansu.kafka.producer();
    let kind: &[u8] = b"refund";
    tansu
        .kafka
        .produce(
            &producer,
            &topic,
            0,
            Some(b"r"),
            Some(br#"{"id":"refund-0"}"#),
            &[("x-kind", Some(kind))],
        )
        .await;
    tansu
        .kafka
        .produce(
            &producer,
            &topic,
            0,
            Some(b"o"),
            Some(br#"{"id":"order-0"}"#),
            &[],
        )
        .await;
    let policy = kafka::policy(&tansu.kafka, &topic, &app).with_toml(&routes);
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    wait_until("two dead letters", LIMIT, || async {
        sidecar.metric("outrigger_dead_lettered_total", "") >= 2.0
    })
    .await;
    sidecar.stop();

    use rdkafka::message::Message as _;
    let refunds = tansu.kafka.read(&refunds_dlq, 0, 1).await;
    assert_eq!(refunds[0].payload(), Some(&br#"{"id":"refund-0"}"#[..]));
    let headers: HashMap<_, _> = kafka::headers_of(&refunds[0]).into_iter().collect();
    assert_eq!(
        headers["x-kind"].as_deref(),
        Some(kind),
        "original headers kept"
    );
    assert_eq!(
        headers["outrigger-dlq-status"].as_deref(),
        Some(&b"400"[..])
    );
    assert_eq!(
        headers["outrigger-dlq-source"].as_deref(),
        Some(format!("kafka:{topic}/0@0").as_bytes())
    );
    let dead = tansu.kafka.read(&dlq, 0, 1).await;
    assert_eq!(dead[0].payload(), Some(&br#"{"id":"order-0"}"#[..]));
    assert_eq!(
        tansu.kafka.read_all(&refunds_dlq, 0).await.len(),
        1,
        "only the route's message in the route's topic"
    );
    assert_eq!(tansu.kafka.read_all(&dlq, 0).await.len(), 1);
    let cli = support::Dlq::new(&policy);
    let keys = |args: &[&str]| support::dlq::record_keys(&cli.list(args));
    assert_eq!(keys(&[]), ["order-0"]);
    assert_eq!(keys(&["--route", "refunds"]), ["refund-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_out_of_sequence_reach_the_app_in_sequence_order_per_key() {
    let tansu = Tansu::start().await;
    let topic = unique("sequenced");
    tansu.kafka.create_topic(&topic, 4).await;
    tansu.kafka.create_topic(&format!("{topic}.dlq"), 1).await;
    // Ten accounts, twenty entries each, every pair sent the wrong way round: 2, 1, 4, 3, ...
    let mut records = Vec::new();
    for pair in 0..10u64 {
        for key in 0..10 {
            for seq in [pair * 2 + 2, pair * 2 + 1] {
                let key = format!("acct-{key}");
                let body = format!(r#"{{"id":"{key}-{seq}","key":"{key}","seq":{seq}}}"#);
                records.push((key, body));
            }
        }
    }
    tansu.kafka.produce_keyed(&topic, &records).await;
    let app = TestApp::accepting().await;
    let policy = kafka::policy(&tansu.kafka, &topic, &app)
        .set("ordering.mode", "key")
        .set("ordering.sequence", "{json:/seq}")
        .set("ordering.first_sequence", 1);
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("every record settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= records.len() as f64
    })
    .await;
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for hit in app.hits() {
        let (key, seq) = seq_of(&hit.body);
        seen.entry(key).or_default().push(seq);
    }
    assert_eq!(seen.len(), 10);
    for (key, seqs) in &seen {
        assert_eq!(*seqs, (1..=20).collect::<Vec<_>>(), "{key}");
    }
    assert_eq!(
        sidecar.metric("outrigger_reorder_waiting_messages", ""),
        0.0
    );
    assert_eq!(
        sidecar.metric(SETTLED, r#"outcome="delivered""#),
        records.len() as f64
    );
    sidecar.stop();
    assert!(
        tansu
            .kafka
            .read_all(&format!("{topic}.dlq"), 0)
            .await
            .is_empty(),
        "nothing dead-lettered"
    );
}
