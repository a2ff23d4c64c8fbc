//! Sequences through the whole pipeline, in process: the memory broker, the Redis store at
//! 127.0.0.1:6379 (a namespace per test, kept across its runs as across restarts) and an app
//! that records what it got.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use outrigger_memory::{MemoryBroker, Outgoing};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::metrics::{Metrics, SourceMetrics};
use crate::run::build_pipeline;
use crate::store::Store;

/// What the app received, in order: (key, sequence) from the body `{"k": .., "seq": ..}`.
type Received = Arc<parking_lot::Mutex<Vec<(String, u64)>>>;

async fn recording_app() -> (String, Received) {
    let got: Received = Arc::default();
    let g = got.clone();
    let app = Router::new().route(
        "/",
        post(move |body: axum::body::Bytes| {
            let got = g.clone();
            async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let key = v["k"].as_str().unwrap().to_owned();
                got.lock().push((key, v["seq"].as_u64().unwrap()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// A keyed message with its sequence in the body; its id names both, so a copy is a duplicate.
fn event(key: &str, seq: u64) -> Outgoing {
    Outgoing::new(format!(r#"{{"k":"{key}","seq":{seq}}}"#))
        .key(key.to_owned())
        .message_id(format!("{key}-{seq}"))
}

struct Setup {
    url: String,
    got: Received,
    namespace: String,
    broker: MemoryBroker,
}

impl Setup {
    async fn new() -> Self {
        let (url, got) = recording_app().await;
        Setup {
            url,
            got,
            namespace: format!("seq-test-{}-{}", std::process::id(), rand::random::<u64>()),
            broker: MemoryBroker::new(),
        }
    }

    /// Runs the pipeline until the broker's queue is drained and nothing waits, under
    /// `[ordering]` `ordering` (mode `key`, sequence `{json:/seq}` and what it adds; tables
    /// may follow); the same store namespace every run.
    async fn run(&self, ordering: &str) -> SourceMetrics {
        self.run_on(&self.broker, ordering).await
    }

    /// As [`Self::run`], consuming `broker`'s queue `q`: another broker's queue of the same
    /// name is another replica's share of the same source.
    async fn run_on(&self, broker: &MemoryBroker, ordering: &str) -> SourceMetrics {
        let text = format!(
            "[source.memory]\nqueue = \"q\"\n[delivery]\nurl = \"{}\"\n[dedup]\nstore = \"redis\"\nttl = \"10m\"\n\
             [dedup.redis]\nnamespace = \"{}\"\n[ordering]\nmode = \"key\"\nsequence = \"{{json:/seq}}\"\n{ordering}\n",
            self.url, self.namespace
        );
        let config = config::load_str(&text, "test.toml", std::iter::empty()).unwrap();
        let metrics = Metrics::new().source("q");
        let store = Store::open(&config).await.unwrap();
        let pipeline = Arc::new(build_pipeline(&config, Some(store), metrics.clone()));
        let run = super::super::run(
            pipeline,
            broker.source("q", "q.dlq"),
            CancellationToken::new(),
        );
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the pipeline drains")
            .unwrap();
        metrics
    }

    fn received(&self, key: &str) -> Vec<u64> {
        self.got
            .lock()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, s)| *s)
            .collect()
    }

    /// The dead letters: (key, sequence, reason).
    fn dead_letters(&self) -> Vec<(String, u64, String)> {
        self.broker
            .ready("q.dlq")
            .iter()
            .map(|m| {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                let reason = m
                    .header_str("outrigger-dlq-reason")
                    .unwrap_or_default()
                    .to_owned();
                (
                    v["k"].as_str().unwrap().to_owned(),
                    v["seq"].as_u64().unwrap(),
                    reason,
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_sequences_reach_the_app_in_order_once_each() {
    let s = Setup::new().await;
    let mut events: Vec<(String, u64)> = Vec::new();
    for key in ["a", "b", "c", "d"] {
        for seq in 1..=25 {
            events.push((key.to_owned(), seq));
            if seq % 7 == 0 {
                events.push((key.to_owned(), seq)); // a copy: dedup's
            }
        }
    }
    events.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    for (key, seq) in &events {
        s.broker.publish("q", event(key, *seq));
    }
    // Shuffled across all 100: the buffer must hold what is ahead while the rest comes in.
    let metrics = s
        .run("first_sequence = 1\nmax_waiting = 150\n[backpressure]\nmax_in_flight = 200")
        .await;
    for key in ["a", "b", "c", "d"] {
        assert_eq!(s.received(key), (1..=25).collect::<Vec<_>>(), "key {key}");
    }
    assert!(s.dead_letters().is_empty(), "{:?}", s.dead_letters());
    assert_eq!(metrics.delivered.get(), 100);
    assert_eq!(metrics.duplicates.get(), (events.len() - 100) as u64);
    assert_eq!(metrics.reorder_waiting.get(), 0);
    assert_eq!(
        metrics.gaps_delivered.get() + metrics.gaps_dead_lettered.get(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_delivered_past_after_its_timeout_and_the_late_one_is_dead_lettered() {
    let s = Setup::new().await;
    for seq in [1, 3, 4] {
        s.broker.publish("q", event("a", seq));
    }
    let started = Instant::now();
    let metrics = s.run("gap_timeout = \"400ms\"").await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "3 waited for 2"
    );
    assert_eq!(s.received("a"), [1, 3, 4]);
    assert_eq!(metrics.gaps_delivered.get(), 1);
    // A restart later: the key's position was kept, so the late 2 is behind it.
    s.broker.publish("q", event("a", 2));
    s.broker.publish("q", event("a", 5));
    let metrics = s.run("gap_timeout = \"400ms\"").await;
    assert_eq!(s.received("a"), [1, 3, 4, 5]);
    let dead = s.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0.as_str(), dead[0].1), ("a", 2));
    assert!(
        dead[0].2.contains("sequence 2") && dead[0].2.contains("behind the next one expected (5)"),
        "{}",
        dead[0].2
    );
    assert_eq!(metrics.sequence_behind.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dead_letter_a_gap_sends_its_waiting_messages_to_the_dead_letter_queue() {
    let s = Setup::new().await;
    for seq in [1, 3, 4] {
        s.broker.publish("q", event("a", seq));
    }
    s.broker.publish("q", event("b", 1));
    let metrics = s
        .run("gap_timeout = \"300ms\"\non_gap = \"dead_letter\"")
        .await;
    assert_eq!(s.received("a"), [1]);
    assert_eq!(s.received("b"), [1], "another key is not held up");
    let dead = s.dead_letters();
    let seqs: Vec<u64> = dead.iter().map(|d| d.1).collect();
    assert_eq!(seqs, [3, 4]);
    for (_, seq, reason) in &dead {
        assert!(
            reason.contains(&format!(
                "sequence {seq} of key \"a\" waited for the missing sequence 2"
            )),
            "{reason}"
        );
    }
    assert_eq!(metrics.gaps_dead_lettered.get(), 1);
    // The key goes on after what was given up.
    s.broker.publish("q", event("a", 5));
    s.run("gap_timeout = \"300ms\"\non_gap = \"dead_letter\"")
        .await;
    assert_eq!(s.received("a"), [1, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_gives_up_the_gap_at_once() {
    let s = Setup::new().await;
    for seq in [1, 3, 4, 5] {
        s.broker.publish("q", event("a", seq));
    }
    let started = Instant::now();
    let metrics = s.run("gap_timeout = \"1h\"\nmax_waiting_per_key = 2").await;
    assert!(started.elapsed() < Duration::from_secs(30), "not an hour");
    assert_eq!(s.received("a"), [1, 3, 4, 5]);
    assert_eq!(metrics.gaps_delivered.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_goes_on_where_it_was_after_a_restart() {
    let s = Setup::new().await;
    for seq in [1, 2] {
        s.broker.publish("q", event("a", seq));
    }
    s.run("").await;
    // Without the stored position, 4 (first seen, no first_sequence) would start the key.
    s.broker.publish("q", event("a", 4));
    s.broker.publish("q", event("a", 3));
    let metrics = s.run("").await;
    assert_eq!(s.received("a"), [1, 2, 3, 4]);
    assert_eq!(metrics.gaps_delivered.get(), 0);
    assert!(s.dead_letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_sequence_is_dead_lettered_and_holds_nothing_up() {
    let s = Setup::new().await;
    s.broker.publish(
        "q",
        Outgoing::new(r#"{"k":"a","seq":"soon"}"#)
            .key("a")
            .message_id("a-x"),
    );
    s.broker.publish("q", event("a", 1));
    let metrics = s.run("").await;
    assert_eq!(s.received("a"), [1]);
    let dl = s.broker.ready("q.dlq");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].header_str("outrigger-dlq-class"), Some("decode"));
    let reason = dl[0].header_str("outrigger-dlq-reason").unwrap();
    assert!(
        reason.contains("\"soon\" is not a whole number"),
        "{reason}"
    );
    assert_eq!(metrics.delivered.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_each_keys_position_through_the_store() {
    let s = Setup::new().await;
    // One replica is handed a's 2 and 3, the other its 1 (two brokers' queues of one name: one
    // source, shared out).
    let other = MemoryBroker::new();
    s.broker.publish("q", event("a", 2));
    s.broker.publish("q", event("a", 3));
    other.publish("q", event("a", 1));
    let (waiting, first) = tokio::join!(s.run("first_sequence = 1"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.run_on(&other, "first_sequence = 1").await
    });
    assert_eq!(
        s.received("a"),
        [1, 2, 3],
        "2 and 3 waited for the other replica's 1"
    );
    assert_eq!((first.delivered.get(), waiting.delivered.get()), (1, 2));
    assert_eq!(
        waiting.gaps_delivered.get(),
        0,
        "released by the store's position, not by the gap timeout"
    );
    assert!(s.dead_letters().is_empty(), "{:?}", s.dead_letters());
}
