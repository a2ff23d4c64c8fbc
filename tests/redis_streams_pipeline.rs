//! The pipeline end to end on Redis Streams: the machine's Redis (streams and dedup), the real
//! binary, the recording app. Each test has streams, a group and a dedup namespace of its own.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use redis::aio::MultiplexedConnection;
use redis::Value;
use support::{
    app_failing_each_entitys_first_message_once, app_until_fixed, assert_each_entitys_order, ids,
    interleaved, keys, kill_a_resubmit_halfway, unique, wait_resubmitted_once, wait_until, Dlq,
    Policy, Reply, Sidecar, TestApp, OUTRIGGER,
};

const LIMIT: Duration = Duration::from_secs(90);
const SETTLED: &str = "outrigger_messages_settled_total";
const REDIS: &str = "redis://127.0.0.1:6379";

/// A stream and its dead-letter stream, the group that consumes it, and a connection to look.
struct Streams {
    redis: MultiplexedConnection,
    stream: String,
    dlq: String,
    group: String,
    namespace: String,
}

type Fields = Vec<(Bytes, Bytes)>;

impl Streams {
    async fn new(name: &str) -> Self {
        let client = redis::Client::open(REDIS).unwrap();
        let stream = unique(name);
        Self {
            redis: client.get_multiplexed_async_connection().await.unwrap(),
            dlq: format!("{stream}.dlq"),
            stream,
            group: unique("group"),
            namespace: unique("ns"),
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut c = self.redis.clone();
        cmd.query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }

    /// The policy of consumer `consumer` into `app`: dedup on the `idempotency-key` field,
    /// quick reads, `claim_idle` as given.
    fn policy(&self, consumer: &str, app: &TestApp, claim_idle: &str) -> Policy {
        let mut source = toml_edit::InlineTable::new();
        source.insert("url", REDIS.into());
        source.insert(
            "streams",
            toml_edit::Value::Array(toml_edit::Array::from_iter([self.stream.as_str()])),
        );
        source.insert("group", self.group.as_str().into());
        source.insert("consumer", consumer.into());
        source.insert("block", "200ms".into());
        source.insert("claim_idle", claim_idle.into());
        let mut table = toml_edit::InlineTable::new();
        table.insert("redis_streams", toml_edit::Value::InlineTable(source));
        // The kit builds RabbitMQ and Kafka policies; the rest of one is what every test
        // shares, and the source table is swapped for this one.
        Policy::amqp("unused", &app.url(), &self.namespace)
            .set("source", toml_edit::Value::InlineTable(table))
    }

    /// Creates the group (and the stream) at the stream's start, as a sidecar would.
    async fn create_group(&self) {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM");
        let _: Value = self.run(&cmd).await;
    }

    /// Reads one new entry as `consumer` and leaves it pending there: a sidecar of that name
    /// that died holding it.
    async fn read_one_as(&self, consumer: &str) {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">");
        let _: Value = self.run(&cmd).await;
    }

    /// Adds an entry; its id.
    async fn add(&self, fields: &[(&[u8], &[u8])]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream).arg("*");
        for (n, v) in fields {
            cmd.arg(*n).arg(*v);
        }
        self.run(&cmd).await
    }

    /// Adds `payload` with key and idempotency key `key`.
    async fn add_keyed(&self, key: &str, payload: &[u8]) -> String {
        self.add(&[
            (b"payload", payload),
            (b"key", key.as_bytes()),
            (b"idempotency-key", key.as_bytes()),
        ])
        .await
    }

    async fn range(&self, stream: &str) -> Vec<(String, Fields)> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(stream).arg("-").arg("+");
        // Each entry: its id and its field-value pairs, as Redis sends them.
        type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);
        let rows: Vec<Entry> = self.run(&cmd).await;
        rows.into_iter()
            .map(|(id, fields)| {
                let fields = fields
                    .into_iter()
                    .map(|(n, v)| (Bytes::from(n), Bytes::from(v)))
                    .collect();
                (id, fields)
            })
            .collect()
    }

    async fn len(&self, stream: &str) -> usize {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(stream);
        self.run(&cmd).await
    }

    /// The group's pending entries: (id, consumer); none before a sidecar created the group.
    async fn pending(&self) -> Vec<(String, String)> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.stream)
            .arg(&self.group)
            .arg("-")
            .arg("+")
            .arg(100_000);
        let mut c = self.redis.clone();
        let rows: Vec<(String, String, u64, u64)> = match cmd.query_async(&mut c).await {
            Ok(rows) => rows,
            Err(e) if e.code() == Some("NOGROUP") => Vec::new(),
            Err(e) => panic!("XPENDING: {e}"),
        };
        rows.into_iter().map(|(id, c, _, _)| (id, c)).collect()
    }

    /// The group's lag: entries it has not read.
    async fn lag(&self) -> i64 {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(&self.stream);
        let groups: Vec<HashMap<String, Value>> = self.run(&cmd).await;
        let ours = groups
            .iter()
            .find(|g| g.get("name") == Some(&Value::BulkString(self.group.clone().into_bytes())))
            .expect("the group");
        redis::from_redis_value(ours["lag"].clone()).unwrap()
    }

    async fn clean_up(&self) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&self.stream).arg(&self.dlq);
        let _: i64 = self.run(&cmd).await;
    }
}

/// The text of field `name`.
fn field(fields: &Fields, name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(n, _)| n.as_ref() == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_acked_and_each_key_is_handled_once() {
    let s = Streams::new("rs-dedup").await;
    let app = TestApp::accepting().await;
    let sidecar = Sidecar::start(OUTRIGGER, s.policy("sidecar-1", &app, "30s"));

    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let mut keys: Vec<String> = Vec::new();
    for i in 0..1000 {
        let key = if !keys.is_empty() && rng.random_bool(0.2) {
            keys[rng.random_range(0..keys.len())].clone()
        } else {
            keys.push(format!("order-{i}"));
            keys.last().unwrap().clone()
        };
        s.add_keyed(&key, format!(r#"{{"n":{i}}}"#).as_bytes())
            .await;
    }
    let duplicates = 1000 - keys.len();
    assert!(duplicates > 150, "the mix has about 20% duplicates");

    wait_until("all 1000 entries settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 1000.0
    })
    .await;
    app.assert_each_key_once();
    assert_eq!(
        app.successes().len(),
        keys.len(),
        "every key reached the app"
    );
    assert_eq!(
        sidecar.metric(SETTLED, r#"outcome="duplicate""#),
        duplicates as f64
    );
    assert_eq!(app.count(), keys.len(), "duplicates never reached the app");
    // The lag and pending gauges come from the group.
    wait_until("the lag gauge at 0", LIMIT, || async {
        sidecar.get("/metrics").is_some_and(|(_, body)| {
            body.contains(&format!(
                "outrigger_consumer_lag_messages{{partition=\"\",topic=\"{}\"}} 0",
                s.stream
            ))
        })
    })
    .await;
    sidecar.stop();
    assert!(s.pending().await.is_empty(), "every entry acknowledged");
    assert_eq!(s.lag().await, 0, "and read");
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_land_in_the_dead_letter_stream_byte_for_byte_with_their_reason() {
    let s = Streams::new("rs-poison").await;
    let app = TestApp::start(|key, _| {
        if key.starts_with("poison") {
            Reply::status(400).body("order rejected: amount must be positive")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let sidecar = Sidecar::start(OUTRIGGER, s.policy("sidecar-1", &app, "30s"));
    let mut originals = HashMap::new();
    for i in 0..3u8 {
        // Not UTF-8, with a NUL, and a field of its own: the dead letter keeps the bytes.
        let body = vec![0xff, 0x00, 0xfe, i, b'{', 0x80];
        let key = format!("poison-{i}");
        let id = s
            .add(&[
                (b"trace", &[0xde, 0xad, i]),
                (b"payload", &body),
                (b"idempotency-key", key.as_bytes()),
                (b"empty", b""),
            ])
            .await;
        originals.insert(key, id);
    }
    for i in 0..7 {
        s.add_keyed(&format!("good-{i}"), b"{}").await;
    }
    wait_until("three dead letters and seven deliveries", LIMIT, || async {
        s.len(&s.dlq).await == 3 && app.successes().len() == 7
    })
    .await;
    sidecar.stop();

    let entries: HashMap<String, Fields> = s.range(&s.stream).await.into_iter().collect();
    let dead = s.range(&s.dlq).await;
    assert_eq!(dead.len(), 3, "only the poison entries are dead-lettered");
    for (_, fields) in &dead {
        let key = field(fields, "idempotency-key").expect("the original field kept");
        let id = &originals[&key];
        let original = &entries[id];
        assert_eq!(
            &fields[..original.len()],
            &original[..],
            "{key}: the entry's fields byte for byte, in order, first"
        );
        let context = &fields[original.len()..];
        assert!(
            context
                .iter()
                .all(|(n, _)| n.starts_with(b"outrigger-dlq-")),
            "then only the context"
        );
        let context = context.to_vec();
        assert_eq!(
            field(&context, "outrigger-dlq-status").as_deref(),
            Some("400")
        );
        assert_eq!(
            field(&context, "outrigger-dlq-attempts").as_deref(),
            Some("1")
        );
        assert_eq!(
            field(&context, "outrigger-dlq-class").as_deref(),
            Some("4xx")
        );
        assert_eq!(field(&context, "outrigger-dlq-key"), Some(key.clone()));
        let reason = field(&context, "outrigger-dlq-reason").unwrap();
        assert!(reason.contains("400"), "reason names the status: {reason}");
        assert_eq!(
            field(&context, "outrigger-dlq-response").as_deref(),
            Some("order rejected: amount must be positive")
        );
        assert_eq!(
            field(&context, "outrigger-dlq-source"),
            Some(format!("redis:{}@{id}", s.stream))
        );
    }
    assert!(
        s.pending().await.is_empty(),
        "the originals were acknowledged"
    );
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_handed_out_past_its_budget_is_dead_lettered_not_delivered_again() {
    let s = Streams::new("rs-budget").await;
    let app = TestApp::accepting().await;
    // Five hand-outs to this consumer name already, each ending with the sidecar gone.
    s.create_group().await;
    let id = s.add_keyed("crasher", b"{}").await;
    s.add_keyed("fine", b"{}").await;
    s.read_one_as("sidecar-1").await;
    let mut count = redis::cmd("XCLAIM");
    count
        .arg(&s.stream)
        .arg(&s.group)
        .arg("sidecar-1")
        .arg(0)
        .arg(&id)
        .arg("RETRYCOUNT")
        .arg(5)
        .arg("JUSTID");
    let _: Value = s.run(&count).await;
    let policy = s
        .policy("sidecar-1", &app, "30s")
        .set("retry.max_attempts", 5);
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("one dead letter and one delivery", LIMIT, || async {
        s.len(&s.dlq).await == 1 && app.successes().len() == 1
    })
    .await;
    sidecar.stop();
    assert_eq!(
        app.hits()[0].key,
        "fine",
        "the app never saw the sixth hand-out"
    );
    let dead = s.range(&s.dlq).await;
    let fields = &dead[0].1;
    assert_eq!(
        field(fields, "outrigger-dlq-class").as_deref(),
        Some("exhausted")
    );
    assert_eq!(
        field(fields, "outrigger-dlq-attempts").as_deref(),
        Some("5")
    );
    assert!(
        s.pending().await.is_empty(),
        "acknowledged with its dead letter"
    );
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_and_a_restart_resumes() {
    let s = Streams::new("rs-kill").await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_millis(5))).await;
    let max_in_flight = 16;
    let policy = s
        .policy("sidecar-1", &app, "30s")
        .set("dedup.lease", "6s")
        .set("backpressure.max_in_flight", max_in_flight);
    for i in 0..400 {
        s.add_keyed(&format!("k-{i}"), b"{}").await;
    }
    let mut first = Sidecar::start(OUTRIGGER, policy.clone());
    wait_until("the first sidecar is mid-stream", LIMIT, || async {
        app.successes().len() >= 80
    })
    .await;
    first.kill();
    let at_kill = app.successes().len();
    assert!(at_kill < 400, "killed mid-stream");
    let stranded = s.pending().await.len();
    assert!(
        (1..=max_in_flight as usize).contains(&stranded),
        "the dead sidecar left its in-flight entries pending: {stranded}"
    );

    // The same consumer name: its own pending entries come first, at once.
    let second = Sidecar::start(OUTRIGGER, policy);
    wait_until("every key handled after the restart", LIMIT, || async {
        app.successes().len() == 400
    })
    .await;
    wait_until("nothing left pending", LIMIT, || async {
        s.pending().await.is_empty()
    })
    .await;
    second.stop();
    // The one window no consumer can close alone: the app answered, the sidecar died before
    // recording it. Only entries in flight at the kill can fall in it, and their redelivery
    // carries a higher fence.
    app.assert_repeats_only_in_flight(max_in_flight as usize);
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_takes_over_a_killed_peers_entries_after_claim_idle() {
    let s = Streams::new("rs-peers").await;
    let app = TestApp::start(|_, _| Reply::status(200).after(Duration::from_millis(40))).await;
    let max_in_flight = 8;
    let claim_idle = Duration::from_secs(2);
    let policy = |consumer| {
        s.policy(consumer, &app, "2s")
            .set("backpressure.max_in_flight", max_in_flight)
            // The killed sidecar's claims on the keys it was delivering expire with the lease.
            .set("dedup.lease", "6s")
    };
    for i in 0..300 {
        s.add_keyed(&format!("k-{i}"), b"{}").await;
    }
    let mut a = Sidecar::start(OUTRIGGER, policy("sidecar-a"));
    let b = Sidecar::start(OUTRIGGER, policy("sidecar-b"));
    wait_until("both sidecars mid-stream", LIMIT, || async {
        let pending = s.pending().await;
        app.successes().len() >= 40
            && pending.iter().any(|(_, c)| c == "sidecar-a")
            && pending.iter().any(|(_, c)| c == "sidecar-b")
    })
    .await;
    a.kill();
    let killed = Instant::now();
    let stranded: BTreeSet<String> = s
        .pending()
        .await
        .into_iter()
        .filter(|(_, c)| c == "sidecar-a")
        .map(|(id, _)| id)
        .collect();
    assert!(!stranded.is_empty(), "the killed sidecar held entries");
    let entries: HashMap<String, Fields> = s.range(&s.stream).await.into_iter().collect();
    let stranded_keys: BTreeSet<String> = stranded
        .iter()
        .map(|id| field(&entries[id], "idempotency-key").unwrap())
        .collect();

    // The survivor takes them over once they idled for claim_idle; the killed sidecar's
    // keeper refreshed them at most a quarter of claim_idle before the kill.
    let moved = wait_until("the survivor took them over", LIMIT, || async {
        let left = s
            .pending()
            .await
            .into_iter()
            .filter(|(id, c)| stranded.contains(id) && c == "sidecar-a")
            .count();
        (left == 0).then(|| killed.elapsed())
    })
    .await;
    assert!(
        moved >= claim_idle * 3 / 4,
        "taken over {moved:?} after the kill, before claim_idle"
    );
    wait_until("every key handled by the survivor", LIMIT, || async {
        app.successes().len() == 300
    })
    .await;
    wait_until("nothing left pending", LIMIT, || async {
        s.pending().await.is_empty()
    })
    .await;
    b.stop();
    for key in &stranded_keys {
        let after: Vec<_> = app
            .hits()
            .into_iter()
            .filter(|h| &h.key == key && h.at > killed)
            .collect();
        let Some(last) = after.last() else {
            // Delivered and recorded by the killed sidecar just before the kill: the survivor
            // found it done and acknowledged it without a delivery.
            continue;
        };
        assert!(
            last.at.duration_since(killed) >= claim_idle * 3 / 4,
            "{key} delivered {:?} after the kill, before claim_idle",
            last.at.duration_since(killed)
        );
        assert!(last.attempt >= 2, "{key}: the killed hand-out counts");
    }
    app.assert_repeats_only_in_flight(max_in_flight as usize);
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_delivery_is_not_taken_over_by_a_peer() {
    let s = Streams::new("rs-slow").await;
    let app = TestApp::slow_on("slow", Duration::from_secs(4)).await;
    // Without dedup, an entry taken over while it is delivered would reach the app twice.
    let policy = |consumer| {
        s.policy(consumer, &app, "1s")
            .set("dedup.enabled", false)
            .set("delivery.timeout", "10s")
    };
    let a = Sidecar::start(OUTRIGGER, policy("sidecar-a"));
    let b = Sidecar::start(OUTRIGGER, policy("sidecar-b"));
    s.add_keyed("slow", b"{}").await;
    for i in 0..20 {
        s.add_keyed(&format!("k-{i}"), b"{}").await;
    }
    wait_until("every entry delivered", LIMIT, || async {
        app.successes().len() == 21
    })
    .await;
    wait_until("nothing left pending", LIMIT, || async {
        s.pending().await.is_empty()
    })
    .await;
    a.stop();
    b.stop();
    let slow: Vec<_> = app.hits().into_iter().filter(|h| h.key == "slow").collect();
    assert_eq!(slow.len(), 1, "four times claim_idle, and delivered once");
    assert_eq!(app.count(), 21, "nothing was delivered twice");
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_cli_lists_shows_resubmits_and_purges_and_a_rerun_never_doubles() {
    let s = Streams::new("rs-dlq").await;
    let (app, fixed) = app_until_fixed(|key| {
        if key.starts_with("poison") {
            Some(Reply::status(400).body("constraint violated"))
        } else {
            Some(Reply::status(422).body("unknown product"))
        }
    })
    .await;
    let policy = s.policy("sidecar-1", &app, "30s");
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    let cli = Dlq::new(&policy);
    for i in 0..100 {
        s.add_keyed(&format!("poison-{i}"), format!(r#"{{"n":{i}}}"#).as_bytes())
            .await;
    }
    for i in 0..5 {
        s.add_keyed(&format!("other-{i}"), b"{}").await;
    }
    wait_until("105 dead letters", LIMIT, || async {
        s.len(&s.dlq).await == 105
    })
    .await;

    // list: ids are the dead letters' entry ids, stable across passes.
    let records = cli.list(&[]);
    assert_eq!(records.len(), 105);
    let dead_ids: Vec<String> = s
        .range(&s.dlq)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids(&records), dead_ids, "ids are the entry ids, in order");
    assert_eq!(ids(&cli.list(&[])), dead_ids, "and stable");
    assert_eq!(cli.keys(&["--reason", "HTTP 400"]), keys("poison", 100));

    // show: one record with its context and payload.
    let first = &dead_ids[0];
    let key = records[0]["key"].as_str().unwrap();
    let n = key.strip_prefix("poison-").expect("a poison key");
    let shown = cli.ok(&["show", first]);
    assert!(
        shown.contains(&format!("position       redis:{}@{first}", s.dlq)),
        "{shown}"
    );
    assert!(shown.contains(&format!("key            {key}")), "{shown}");
    assert!(shown.contains("status         400"), "{shown}");
    assert!(shown.contains("constraint violated"), "{shown}");
    assert!(
        shown.contains(&format!(r#""n": {n}"#)),
        "the payload: {shown}"
    );

    // purge: the record is gone, and nothing went to the source.
    let before = s.len(&s.stream).await;
    let purged = cli.ok(&["purge", "--key", "other-1", "--yes"]);
    assert!(purged.contains("Purged 1 of 1"), "{purged}");
    assert_eq!(s.len(&s.dlq).await, 104);
    assert!(cli.list(&["--key", "other-1"]).is_empty());

    // resubmit, killed halfway, then run again: each record goes back exactly once.
    fixed.store(true, Ordering::SeqCst);
    let delivered_before = app.count();
    kill_a_resubmit_halfway(&cli, &app, LIMIT).await;
    let again = cli.ok(&["resubmit", "--reason", "HTTP 400", "--by", "tester"]);
    assert!(again.contains("Resubmitted"), "{again}");
    wait_resubmitted_once(&app, delivered_before, "poison", 100, LIMIT).await;
    assert_eq!(
        s.len(&s.stream).await,
        before + 100,
        "one copy per record, across the killed run and the rerun"
    );
    let once_more = cli.ok(&["resubmit", "--reason", "HTTP 400"]);
    assert!(once_more.contains("Resubmitted 0 of 0"), "{once_more}");
    assert_eq!(s.len(&s.stream).await, before + 100, "a rerun adds nothing");

    // The copies: the entry's fields as they were, the mark on, no context.
    let copies = s.range(&s.stream).await.split_off(before);
    for (_, fields) in &copies {
        let key = field(fields, "idempotency-key").unwrap();
        let n: usize = key.strip_prefix("poison-").unwrap().parse().unwrap();
        assert_eq!(
            &fields[..3],
            &[
                (
                    Bytes::from("payload"),
                    Bytes::from(format!(r#"{{"n":{n}}}"#))
                ),
                (Bytes::from("key"), Bytes::from(key.clone())),
                (Bytes::from("idempotency-key"), Bytes::from(key.clone())),
            ],
            "{key}: the original fields first, in order"
        );
        assert_eq!(
            field(fields, "outrigger-resubmit-count").as_deref(),
            Some("1")
        );
        assert_eq!(
            field(fields, "outrigger-resubmitted-key"),
            Some(key.clone())
        );
        assert!(fields
            .iter()
            .all(|(n, _)| !n.starts_with(b"outrigger-dlq-")));
    }
    wait_until("every copy settled", LIMIT, || async {
        s.pending().await.is_empty() && s.lag().await == 0
    })
    .await;
    let rest = cli.list(&[]);
    assert_eq!(rest.len(), 4, "the other records stay");
    assert!(rest.iter().all(|r| r["status"] == 422));
    sidecar.stop();
    app.assert_each_key_once();
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_connection_what_is_pending_and_what_was_deleted_while_pending() {
    let s = Streams::new("rs-gauges").await;
    // Held long enough for the once-a-second gauge to be read while it is pending, even on a
    // loaded machine, and shorter than the delivery timeout below, or it would be retried.
    let app = TestApp::slow_on("held", Duration::from_secs(7)).await;
    // An entry this consumer read before (a crash), then deleted from the stream.
    let gone = s.add_keyed("gone", b"{}").await;
    s.create_group().await;
    s.read_one_as("sidecar-1").await;
    let mut delete = redis::cmd("XDEL");
    delete.arg(&s.stream).arg(&gone);
    let _: i64 = s.run(&delete).await;
    s.add_keyed("held", b"{}").await;

    let sidecar = Sidecar::start(
        OUTRIGGER,
        s.policy("sidecar-1", &app, "30s")
            .set("delivery.timeout", "9s"),
    );
    let labels = format!(r#"partition="",topic="{}""#, s.stream);
    wait_until("the held entry pending, by the gauge", LIMIT, || async {
        app.arrived() == 1 && sidecar.metric("outrigger_pending_messages", &labels) == 1.0
    })
    .await;
    wait_until("the connection up, by the gauge", LIMIT, || async {
        sidecar.metric("outrigger_source_up", "") == 1.0
    })
    .await;
    wait_until("the deleted entry counted", LIMIT, || async {
        sidecar.metric("outrigger_deleted_while_pending_total", &labels) == 1.0
    })
    .await;
    wait_until("nothing pending once it is done", LIMIT, || async {
        sidecar.metric("outrigger_pending_messages", &labels) == 0.0
    })
    .await;
    assert_eq!(s.len(&s.dlq).await, 1, "the tombstone of the deleted entry");
    sidecar.stop();
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_mode_keeps_each_entitys_order_through_in_place_retries() {
    let s = Streams::new("rs-order").await;
    let app = app_failing_each_entitys_first_message_once().await;
    // Ordering `key` (the default) on the entry's `key` field.
    let sidecar = Sidecar::start(OUTRIGGER, s.policy("sidecar-1", &app, "30s"));
    let messages = interleaved(8, 10);
    for (entity, id, body) in &messages {
        s.add(&[
            (b"payload", body.as_bytes()),
            (b"key", entity.as_bytes()),
            (b"idempotency-key", id.as_bytes()),
        ])
        .await;
    }
    wait_until("every message settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= messages.len() as f64
    })
    .await;
    sidecar.stop();
    assert_each_entitys_order(&app.hits(), 8, 10);
    s.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_dead_letters_go_to_its_own_stream_and_the_rest_to_the_policys() {
    let s = Streams::new("rs-route-dlq").await;
    let refunds_dlq = format!("{}.refunds.dlq", s.stream);
    // Refunds fail until their route gives up; anything else is refused for good.
    let app = TestApp::start(|key, _| {
        if key.starts_with("refund") {
            Reply::status(500)
        } else {
            Reply::status(400)
        }
    })
    .await;
    let routes = format!(
        "[[routes]]\nname = \"refunds\"\nmatch = {{ headers = {{ x-kind = \"refund\" }} }}\n\
         [routes.retry]\nmax_attempts = 2\ninitial = \"50ms\"\n\
         [routes.dead_letter]\ndestination = \"{refunds_dlq}\"\n"
    );
    let policy = s.policy("sidecar-1", &app, "30s").with_toml(&routes);
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    let refund = s
        .add(&[
            (b"payload", b"{}"),
            (b"idempotency-key", b"refund-0"),
            (b"x-kind", b"refund"),
        ])
        .await;
    let order = s.add_keyed("order-0", b"{}").await;
    wait_until("two dead letters", LIMIT, || async {
        s.len(&s.dlq).await + s.len(&refunds_dlq).await == 2
    })
    .await;
    sidecar.stop();

    let refunds = s.range(&refunds_dlq).await;
    assert_eq!(
        refunds.len(),
        1,
        "the route's dead letter in its own stream"
    );
    let fields = &refunds[0].1;
    assert_eq!(
        field(fields, "idempotency-key").as_deref(),
        Some("refund-0")
    );
    assert_eq!(
        field(fields, "outrigger-dlq-attempts").as_deref(),
        Some("2")
    );
    assert_eq!(
        field(fields, "outrigger-dlq-status").as_deref(),
        Some("500")
    );
    assert_eq!(
        field(fields, "outrigger-dlq-source"),
        Some(format!("redis:{}@{refund}", s.stream))
    );
    let dead = s.range(&s.dlq).await;
    assert_eq!(dead.len(), 1, "the other message's in the policy's");
    assert_eq!(
        field(&dead[0].1, "idempotency-key").as_deref(),
        Some("order-0")
    );
    assert_eq!(
        field(&dead[0].1, "outrigger-dlq-source"),
        Some(format!("redis:{}@{order}", s.stream))
    );
    assert!(s.pending().await.is_empty(), "both originals acknowledged");
    let cli = Dlq::new(&policy);
    let keys = |args: &[&str]| support::dlq::record_keys(&cli.list(args));
    assert_eq!(keys(&[]), ["order-0"]);
    assert_eq!(keys(&["--route", "refunds"]), ["refund-0"]);
    assert_eq!(keys(&["--destination", &refunds_dlq]), ["refund-0"]);
    let mut cmd = redis::cmd("DEL");
    cmd.arg(&refunds_dlq);
    let _: i64 = s.run(&cmd).await;
    s.clean_up().await;
}
