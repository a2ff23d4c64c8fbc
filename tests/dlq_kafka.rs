//! `outrigger dlq` on Kafka, against a tansu broker process and Redis: dead letters made by
//! the running sidecar, then listed, resubmitted and purged by an operator through the real
//! binary. A topic keeps its records, so these tests also check the handled markers: what was
//! resubmitted is never sent again, and `list` hides it unless `--all`.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rdkafka::message::Message as _;
use serde_json::Value;
use support::kafka::{self, tansu::Tansu};
use support::{
    app_refusing_a_and_b, app_until_fixed, ids, keys, kill_a_resubmit_halfway, lines_starting,
    resubmit_100_paced, set, unique, wait_resubmitted_once, wait_until, Dlq, Policy, Reply,
    Sidecar, TestApp, OUTRIGGER,
};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLED: &str = "outrigger_messages_settled_total";
/// Partitions of every source and dead-letter topic here.
const PARTITIONS: i32 = 2;

/// A source topic and its dead-letter topic on a tansu of the test's own, and a policy that
/// consumes it into `app`.
struct Setup {
    tansu: Tansu,
    topic: String,
    dlq: String,
    policy: Policy,
}

impl Setup {
    async fn new(name: &str, app: &TestApp) -> Self {
        let tansu = Tansu::start().await;
        let topic = unique(name);
        let dlq = format!("{topic}.dlq");
        tansu.kafka.create_topic(&topic, PARTITIONS).await;
        tansu.kafka.create_topic(&dlq, PARTITIONS).await;
        let policy = kafka::policy(&tansu.kafka, &topic, app);
        Self {
            tansu,
            topic,
            dlq,
            policy,
        }
    }

    /// The sidecar on the policy, and `outrigger dlq` with the same policy.
    fn start(&self) -> (Sidecar, Dlq) {
        (
            Sidecar::start(OUTRIGGER, self.policy.clone()),
            Dlq::new(&self.policy),
        )
    }

    /// Produces `{"id":"<key>"}` under each key `<prefix>-0` to `<prefix>-<n - 1>`: the
    /// payload's `id` is the dedup key.
    async fn produce(&self, prefix: &str, n: usize) {
        let records: Vec<(String, String)> = (0..n)
            .map(|i| {
                let key = format!("{prefix}-{i}");
                (key.clone(), format!(r#"{{"id":"{key}"}}"#))
            })
            .collect();
        self.tansu.kafka.produce_keyed(&self.topic, &records).await;
    }

    /// Waits until `n` records were dead-lettered.
    async fn wait_dead_letters(&self, n: usize) {
        wait_until(&format!("{n} dead letters"), LIMIT, || async {
            self.count(&self.dlq).await == n
        })
        .await;
    }

    /// Records ever written to `topic`, over its partitions.
    async fn count(&self, topic: &str) -> usize {
        self.tansu.kafka.read_topic(topic, PARTITIONS).await.len()
    }

    /// Whether the marker topic exists.
    async fn has_markers(&self) -> bool {
        let markers = format!("{}.handled", self.dlq);
        self.tansu.kafka.partitions(&markers).await.is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmit_by_reason_delivers_each_once_and_a_second_run_nothing() {
    let (app, fixed) = app_until_fixed(|key| {
        if key.starts_with("poison") {
            Some(Reply::status(400).body("constraint violated"))
        } else {
            Some(Reply::status(422).body("unknown product"))
        }
    })
    .await;
    let kafka = Setup::new("dlq-fix", &app).await;
    let (sidecar, cli) = kafka.start();
    kafka.produce("poison", 50).await;
    kafka.produce("other", 5).await;
    kafka.wait_dead_letters(55).await;
    let poison = keys("poison", 50);
    assert_eq!(cli.keys(&["--reason", "HTTP 400"]), poison);
    assert_eq!(cli.keys(&["--reason", "HTTP 422"]), keys("other", 5));
    assert!(!kafka.has_markers().await, "listing wrote nothing");

    fixed.store(true, Ordering::SeqCst);
    let before = app.count();
    let out = cli.ok(&["resubmit", "--reason", "HTTP 400", "--by", "tester"]);
    assert!(out.contains("Resubmitted 50 of 50"), "{out}");
    wait_resubmitted_once(&app, before, "poison", 50, LIMIT).await;
    assert_eq!(kafka.count(&kafka.topic).await, 55 + 50, "one copy each");

    let again = cli.ok(&["resubmit", "--reason", "HTTP 400", "--by", "tester"]);
    assert!(again.contains("Resubmitted 0 of 0"), "{again}");
    assert_eq!(
        kafka.count(&kafka.topic).await,
        55 + 50,
        "nothing new was published"
    );
    assert!(cli.list(&["--reason", "HTTP 400"]).is_empty());
    let rest = cli.list(&[]);
    assert_eq!(rest.len(), 5, "only the others are listed");
    assert!(rest
        .iter()
        .all(|r| r["status"] == 422 && r["handled"].is_null()));
    let all = cli.list(&["--all"]);
    assert_eq!(all.len(), 55, "--all lists handled records too");
    let handled: Vec<&Value> = all.iter().filter(|r| !r["handled"].is_null()).collect();
    assert_eq!(handled.len(), 50);
    assert!(handled
        .iter()
        .all(|r| r["handled"]["action"] == "resubmitted" && r["handled"]["by"] == "tester"));
    assert_eq!(cli.keys(&["--status", "resubmitted"]), poison);
    assert_eq!(cli.keys(&["--status", "pending"]), keys("other", 5));
    let table = cli.ok(&["list", "--all", "--key", "poison-7"]);
    assert!(
        table.contains("HANDLED") && table.contains("resubmitted"),
        "{table}"
    );

    // The admin API reads the same markers.
    let (status, body) = sidecar.get("/dlq?status=resubmitted").unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["count"], 50);
    let (_, body) = sidecar.get("/dlq").unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["count"], 5);

    sidecar.stop();
    assert_eq!(app.count(), before + 50, "nothing was delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_rate_paces_a_faithful_copy() {
    let app = TestApp::start(|_, _| Reply::status(400).body("no")).await;
    let kafka = Setup::new("dlq-rate", &app).await;
    let replay = format!("{}.replay", kafka.topic);
    kafka.tansu.kafka.create_topic(&replay, PARTITIONS).await;
    let (sidecar, cli) = kafka.start();
    kafka.produce("k", 100).await;
    kafka.wait_dead_letters(100).await;
    sidecar.stop();
    let listed = ids(&cli.list(&[]));
    assert_eq!(listed.len(), 100);
    assert_eq!(set(listed.clone()).len(), 100, "ids are unique");
    assert!(
        listed
            .iter()
            .all(|id| id.starts_with(&format!("{}/", kafka.dlq))),
        "ids are positions in the dead-letter topic: {listed:?}"
    );

    let dry = cli.ok(&["resubmit", "--dry-run", "--to", &replay]);
    assert_eq!(lines_starting(&dry, "would resubmit"), 100);
    assert!(
        dry.contains(&format!("to {replay} as resubmission #1")),
        "{dry}"
    );
    let purge = cli.ok(&["purge", "--dry-run", "--key", "k-1*"]);
    assert_eq!(lines_starting(&purge, "would purge"), 11);
    assert_eq!(kafka.count(&replay).await, 0, "the dry runs sent nothing");
    assert!(!kafka.has_markers().await, "the dry runs marked nothing");
    assert_eq!(ids(&cli.list(&[])), listed, "ids and order are stable");

    resubmit_100_paced(&cli, &replay);
    assert!(cli.list(&[]).is_empty());
    assert_eq!(
        kafka.count(&kafka.topic).await,
        100,
        "none went to the source"
    );
    let copies = kafka.tansu.kafka.read_topic(&replay, PARTITIONS).await;
    assert_eq!(copies.len(), 100);
    let mut seen = BTreeSet::new();
    for m in &copies {
        let key = std::str::from_utf8(m.key().unwrap()).unwrap().to_owned();
        assert_eq!(
            m.payload(),
            Some(format!(r#"{{"id":"{key}"}}"#).as_bytes()),
            "{key}: payload byte for byte"
        );
        let headers: HashMap<String, String> = kafka::headers_of(m)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.unwrap_or_default()).unwrap()))
            .collect();
        assert_eq!(headers["outrigger-resubmit-count"], "1");
        assert_eq!(headers["outrigger-resubmitted-by"], "tester");
        assert!(headers.contains_key("outrigger-resubmitted-at"));
        assert!(
            headers.keys().all(|k| !k.starts_with("outrigger-dlq-")),
            "context headers are off: {headers:?}"
        );
        seen.insert(key);
    }
    assert_eq!(seen, keys("k", 100), "each record once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmit_killed_halfway_and_rerun_delivers_every_record_once() {
    let (app, fixed) = app_until_fixed(|_| Some(Reply::status(400))).await;
    let kafka = Setup::new("dlq-kill", &app).await;
    let (sidecar, cli) = kafka.start();
    kafka.produce("k", 100).await;
    kafka.wait_dead_letters(100).await;
    fixed.store(true, Ordering::SeqCst);

    kill_a_resubmit_halfway(&cli, &app, LIMIT).await;
    let left = cli.list(&[]).len();
    assert!(
        (1..=100 - 39).contains(&left),
        "the dead run's confirmed records are marked: {left} left"
    );

    // Nothing is held at the broker: one rerun carries on where the dead run stopped.
    let out = cli.ok(&["resubmit"]);
    assert!(
        out.contains(&format!("Resubmitted {left} of {left}")),
        "{out}"
    );
    wait_until("every key delivered", LIMIT, || async {
        app.successes().len() == 100
    })
    .await;
    wait_until("every copy settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= (100 + 100) as f64
    })
    .await;
    app.assert_each_key_once();
    assert!(cli.list(&[]).is_empty(), "none left");
    assert_eq!(cli.list(&["--all"]).len(), 100);
    let again = cli.ok(&["resubmit"]);
    assert!(again.contains("Resubmitted 0 of 0"), "{again}");
    sidecar.stop();
    assert_eq!(app.successes().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_exactly_the_expected_records() {
    let app = app_refusing_a_and_b().await;
    let kafka = Setup::new("dlq-filter", &app).await;
    let (sidecar, cli) = kafka.start();
    kafka.produce("a", 5).await;
    kafka.wait_dead_letters(5).await;
    // Every `a` record failed before `between`, every `b` one after.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(30)).await;
    kafka.produce("b", 5).await;
    kafka.wait_dead_letters(10).await;
    sidecar.stop();

    let (a, b) = (keys("a", 5), keys("b", 5));
    let all: BTreeSet<String> = a.union(&b).cloned().collect();
    assert_eq!(cli.keys(&[]), all);
    assert_eq!(cli.keys(&["--since", &between]), b);
    assert_eq!(cli.keys(&["--until", &between]), a);
    assert_eq!(cli.keys(&["--reason", "HTTP 400"]), a);
    assert_eq!(cli.keys(&["--reason", "http 422"]), b);
    assert_eq!(cli.keys(&["--status", "422"]), b);
    assert_eq!(cli.keys(&["--key", "a-3"]), set(["a-3".to_owned()]));
    assert_eq!(cli.keys(&["--key", "b-*"]), b);
    assert_eq!(cli.keys(&["--source", &kafka.topic]), all);
    assert_eq!(cli.keys(&["--source", "elsewhere"]), BTreeSet::new());
    assert_eq!(cli.list(&["--limit", "3"]).len(), 3);

    let a0 = cli.list(&["--key", "a-0"]).remove(0);
    assert!(
        a0["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("kafka:{}/", kafka.topic)),
        "{a0}"
    );
    let shown = cli.ok(&["show", a0["id"].as_str().unwrap()]);
    assert!(
        shown.contains("\"id\": \"a-0\""),
        "pretty JSON payload:\n{shown}"
    );
    assert!(shown.contains("amount must be positive"), "{shown}");
    let missing = cli.run(&["show", &format!("{}/0@999", kafka.dlq)]);
    assert_eq!(missing.status.code(), Some(1));
    let bad = cli.run(&["list", "--status", "gone"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--status"));

    let purged = cli.ok(&["purge", "--key", "b-*", "--yes", "--by", "ops"]);
    assert!(purged.contains("Purged 5 of 5"), "{purged}");
    assert_eq!(cli.keys(&[]), a);
    assert_eq!(cli.keys(&["--status", "purged"]), b);
    assert_eq!(cli.keys(&["--all"]), all);
    let b0 = cli.list(&["--all", "--key", "b-0"]).remove(0);
    assert_eq!(b0["handled"]["action"], "purged");
    assert_eq!(b0["handled"]["by"], "ops");
    // A purged record still shows, with how it was handled.
    let shown = cli.ok(&["show", b0["id"].as_str().unwrap()]);
    assert!(shown.contains("purged by ops"), "{shown}");
    let again = cli.ok(&["purge", "--key", "b-*", "--yes"]);
    assert!(again.contains("Purged 0 of 0"), "{again}");
    assert_eq!(kafka.count(&kafka.topic).await, 10, "purge sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_keeps_the_originals_dedup_key_so_a_second_copy_is_a_duplicate() {
    // Dedup on the record's position (the default key): a copy sits elsewhere, so without the
    // original's key in its mark it would be a new key to dedup.
    let (app, fixed) = app_until_fixed(|_| Some(Reply::status(400))).await;
    let mut kafka = Setup::new("dlq-key", &app).await;
    kafka.policy = kafka.policy.clone().set("dedup.key", "{message_id}");
    let (sidecar, cli) = kafka.start();
    kafka.produce("p", 3).await;
    kafka.wait_dead_letters(3).await;
    let listed = cli.list(&[]);
    let originals: BTreeSet<String> =
        set(listed.iter().map(|r| r["key"].as_str().unwrap().to_owned()));
    assert!(
        originals
            .iter()
            .all(|k| k.starts_with(&format!("{}/", kafka.topic))),
        "{originals:?}"
    );

    fixed.store(true, Ordering::SeqCst);
    let out = cli.ok(&["resubmit", "--reason", "HTTP 400"]);
    assert!(out.contains("Resubmitted 3 of 3"), "{out}");
    wait_until("the three copies delivered", LIMIT, || async {
        app.successes().len() == 3
    })
    .await;
    assert_eq!(
        set(app.successes().keys().cloned()),
        originals,
        "each copy was delivered under its original's key"
    );

    // Lose the markers (a tombstone per id lists the records again) and resubmit once more:
    // the second copies are duplicates of keys already delivered.
    let producer = kafka.tansu.kafka.producer();
    let markers = format!("{}.handled", kafka.dlq);
    for record in &listed {
        let id = record["id"].as_str().unwrap();
        kafka
            .tansu
            .kafka
            .produce(&producer, &markers, 0, Some(id.as_bytes()), None, &[])
            .await;
    }
    let again = cli.ok(&["resubmit", "--reason", "HTTP 400"]);
    assert!(again.contains("Resubmitted 3 of 3"), "{again}");
    wait_until("the second copies skipped as duplicates", LIMIT, || async {
        sidecar.metric("outrigger_duplicates_skipped_total", "") >= 3.0
    })
    .await;
    app.assert_each_key_once();
    sidecar.stop();
}
