//! Early claims through the whole pipeline: the memory broker in partition order (one lane), a
//! real Redis holding the claims, and an app that looks at the store while it holds a message.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use outrigger_memory::{MemoryBroker, Outgoing};
use outrigger_testkit::wait::wait_until;
use redis::AsyncCommands;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::super::Pipeline;
use crate::config::{self, Config};
use crate::metrics::{Metrics, SourceMetrics};
use crate::run::build_pipeline;
use crate::store::Store;

const REDIS: &str = "redis://127.0.0.1:6379";

/// What the app saw of one request: its key, attempt and fence, and the state of the next
/// message's dedup record in the store while it held this one.
#[derive(Clone, Debug)]
struct Seen {
    key: String,
    attempt: u32,
    fence: u64,
    next_state: Option<String>,
}

struct App {
    url: String,
    seen: Arc<parking_lot::Mutex<Vec<Seen>>>,
    /// Told when a request arrives.
    arrived: Arc<Notify>,
}

/// An app that holds each request `hold` (and `first_hold` for `m-0`), then reads the state of
/// the next message's record (`m-<n+1>`) under `namespace` before it answers 200.
async fn app(namespace: &str, hold: Duration, first_hold: Duration) -> App {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let arrived = Arc::new(Notify::new());
    let redis = redis::Client::open(REDIS).unwrap();
    let conn = redis.get_multiplexed_async_connection().await.unwrap();
    let (s, a, ns) = (seen.clone(), arrived.clone(), namespace.to_owned());
    let router = Router::new().route(
        "/",
        post(move |headers: HeaderMap| {
            let (seen, arrived, ns, mut conn) = (s.clone(), a.clone(), ns.clone(), conn.clone());
            async move {
                let text = |name: &str| headers[name].to_str().unwrap().to_owned();
                let key = text("outrigger-idempotency-key");
                arrived.notify_one();
                let n: u32 = key.trim_start_matches("m-").parse().unwrap();
                tokio::time::sleep(if n == 0 { first_hold } else { hold }).await;
                let next_state: Option<String> = conn
                    .hget(record(&ns, &format!("m-{}", n + 1)), "s")
                    .await
                    .unwrap();
                seen.lock().push(Seen {
                    attempt: text("outrigger-attempt").parse().unwrap(),
                    fence: text("outrigger-fence").parse().unwrap(),
                    key,
                    next_state,
                });
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    App { url, seen, arrived }
}

/// The Redis key of the dedup record of `key`.
fn record(namespace: &str, key: &str) -> String {
    format!("outrigger:dedup:{namespace}:{key}")
}

/// A namespace no other test run shares.
fn namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("early-{test}-{}-{nanos}", std::process::id())
}

/// One lane (partition order on the memory broker), dedup in Redis with a 2s lease, and a 1s
/// delivery timeout: an early claim may be at most (2s - 1s) / 2 = 500ms old when used.
fn policy(url: &str, namespace: &str) -> Config {
    let text = format!(
        "[source.memory]\nqueue = \"q\"\n[delivery]\nurl = \"{url}\"\ntimeout = \"1s\"\n\
         [dedup]\nstore = \"redis\"\nlease = \"2s\"\n[dedup.redis]\nurl = \"{REDIS}\"\n\
         namespace = \"{namespace}\"\n[ordering]\nmode = \"partition\"\n\
         [backpressure]\nmax_in_flight = 6\n"
    );
    config::load_str(&text, "test.toml", std::iter::empty()).expect("a valid test policy")
}

/// A pipeline toward `app` under `namespace`, and a broker holding `m-0` .. `m-<n - 1>`.
async fn staged(
    app: &App,
    namespace: &str,
    n: usize,
) -> (MemoryBroker, SourceMetrics, Arc<Pipeline<Store>>) {
    let config = policy(&app.url, namespace);
    let broker = MemoryBroker::new();
    for i in 0..n {
        broker.publish("q", Outgoing::new("{}").message_id(format!("m-{i}")));
    }
    let metrics = Metrics::new().source("q");
    let store = Store::open(&config).await.unwrap();
    let pipeline = Arc::new(build_pipeline(&config, Some(store), metrics.clone()));
    (broker, metrics, pipeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_message_is_claimed_before_its_turn_and_delivered_once() {
    let ns = namespace("turn");
    let app = app(&ns, Duration::from_millis(30), Duration::from_millis(30)).await;
    let (broker, metrics, pipeline) = staged(&app, &ns, 12).await;
    super::super::run(
        pipeline,
        broker.source("q", "q.dlq"),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    let seen = app.seen.lock().clone();
    let keys: Vec<&str> = seen.iter().map(|s| s.key.as_str()).collect();
    let expected: Vec<String> = (0..12).map(|i| format!("m-{i}")).collect();
    assert_eq!(keys, expected, "each delivered once, in order");
    assert!(
        seen.iter().all(|s| s.attempt == 1 && s.fence == 1),
        "each on its first claim: {seen:?}"
    );
    // In partition order the next message only starts once this one is answered; its key was
    // claimed while it waited all the same.
    for s in &seen[..11] {
        assert_eq!(
            s.next_state.as_deref(),
            Some("claimed"),
            "the message after {} was claimed while it waited: {seen:?}",
            s.key
        );
    }
    assert_eq!(metrics.delivered.get(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_claim_held_too_long_is_given_back_and_made_again() {
    let ns = namespace("stale");
    // m-0 holds the lane 800ms: m-1's early claim is then older than the 500ms it may be.
    let app = app(&ns, Duration::ZERO, Duration::from_millis(800)).await;
    let (broker, metrics, pipeline) = staged(&app, &ns, 2).await;
    super::super::run(
        pipeline,
        broker.source("q", "q.dlq"),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    let seen = app.seen.lock().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0].next_state.as_deref(),
        Some("claimed"),
        "m-1 was claimed early"
    );
    // Its early claim (fence 1) was given back with its attempt refunded, and the key claimed
    // again (fence 2) for the delivery: still attempt 1.
    assert_eq!((seen[1].attempt, seen[1].fence), (1, 2), "{seen:?}");
    assert_eq!(metrics.delivered.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_claims_of_messages_returned_at_shutdown_are_given_back() {
    let ns = namespace("shutdown");
    let app = app(&ns, Duration::ZERO, Duration::from_millis(800)).await;
    let (broker, metrics, pipeline) = staged(&app, &ns, 6).await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(super::super::run(
        pipeline,
        broker.source("q", "q.dlq"),
        shutdown.clone(),
    ));
    app.arrived.notified().await;
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let waiting: Vec<String> = (1..6).map(|i| record(&ns, &format!("m-{i}"))).collect();
    let states = |redis: &mut redis::aio::MultiplexedConnection| {
        let (mut redis, waiting) = (redis.clone(), waiting.clone());
        async move {
            let mut out = Vec::new();
            for key in &waiting {
                let (s, a): (Option<String>, Option<u32>) =
                    redis.hmget(key, &["s", "a"]).await.unwrap();
                out.push((s.unwrap_or_default(), a.unwrap_or(0)));
            }
            out
        }
    };
    wait_until(
        "the waiting messages are claimed early",
        Duration::from_secs(5),
        || {
            let states = states(&mut redis);
            async move { states.await.iter().all(|(s, _)| s == "claimed") }
        },
    )
    .await;

    // SIGTERM while m-0 is delivered: the waiting ones go back to the broker unstarted, and
    // their claims go back to the store, the attempt not spent.
    shutdown.cancel();
    run.await.unwrap().unwrap();
    wait_until(
        "the early claims are given back",
        Duration::from_secs(5),
        || {
            let states = states(&mut redis);
            async move { states.await.iter().all(|(s, a)| s == "released" && *a == 0) }
        },
    )
    .await;
    assert_eq!(metrics.delivered.get(), 1, "only m-0 was delivered");
    assert_eq!(broker.ready("q").len(), 5, "the rest wait at the broker");
}
