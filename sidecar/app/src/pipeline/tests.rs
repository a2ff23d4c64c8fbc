//! The pipeline's own limits and route snapshot, in process: the memory broker, the embedded
//! store and a small app that records how many deliveries it holds at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use outrigger_memory::{MemoryBroker, Outgoing};
use tokio_util::sync::CancellationToken;

use super::RouteTable;
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::run::{build_pipeline, routes};
use crate::store::Store;

/// An app that takes 30 ms per delivery and remembers the most it held at once.
async fn slow_app() -> (String, Arc<AtomicUsize>) {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), most.clone());
    let app = Router::new().route(
        "/",
        post(move || {
            let (now, most) = (n.clone(), m.clone());
            async move {
                let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(held, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, most)
}

fn policy(url: &str, dir: &std::path::Path, backpressure: &str) -> Config {
    let text = format!(
        "[source.memory]\nqueue = \"q\"\n[delivery]\nurl = \"{url}\"\n[dedup]\nstore = \"embedded\"\n\
         [dedup.embedded]\npath = \"{}\"\n[backpressure]\n{backpressure}\n",
        dir.join("dedup.redb").display()
    );
    config::load_str(&text, "test.toml", std::iter::empty()).expect("a valid test policy")
}

/// Runs 40 messages through the pipeline; the most deliveries the app held at once.
async fn most_at_once(backpressure: &str) -> usize {
    let (url, most) = slow_app().await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy(&url, dir.path(), backpressure);
    let broker = MemoryBroker::new();
    for i in 0..40 {
        broker.publish("q", Outgoing::new("{}").message_id(format!("m-{i}")));
    }
    let metrics = Metrics::new().source("q");
    let store = Store::open(&config).await.unwrap();
    let pipeline = Arc::new(build_pipeline(&config, Some(store), metrics.clone()));
    super::run(
        pipeline,
        broker.source("q", "q.dlq"),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(metrics.delivered.get(), 40);
    most.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_toward_the_app_is_its_own_limit() {
    // Unset, it follows max_in_flight, as it always did ...
    assert_eq!(most_at_once("max_in_flight = 8").await, 8);
    // ... and set, it holds the app to it while max_in_flight messages are taken.
    assert_eq!(
        most_at_once("max_in_flight = 8\nmax_concurrency = 2").await,
        2
    );
}

#[test]
fn a_swapped_snapshot_applies_to_messages_taken_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = policy("http://127.0.0.1:1/first", dir.path(), "");
    let second = policy("http://127.0.0.1:1/second", dir.path(), "");
    let table = RouteTable::new(routes(&first));
    let message = outrigger_core::Message::new(
        "{}",
        outrigger_core::Coordinates::Memory {
            queue: "q".into(),
            sequence: 1,
        },
    );
    let in_flight = table.pick(&message);
    table.swap(routes(&second));
    assert_eq!(
        in_flight.delivery.url().path(),
        "/first",
        "in flight keeps its route"
    );
    assert_eq!(table.pick(&message).delivery.url().path(), "/second");
}

/// An app on a fixed loopback port that can go away (connections refused) and come back.
/// Going away is clean, like a rolling restart: it stops accepting, closes its idle kept-alive
/// connections, answers what it already read with `Connection: close`, and so never cuts a
/// request it received.
struct Flaky {
    addr: std::net::SocketAddr,
    /// Per idempotency key, the `outrigger-attempt` of each request the app received.
    seen: Arc<parking_lot::Mutex<std::collections::HashMap<String, Vec<u32>>>>,
    serving: Option<tokio::task::JoinHandle<()>>,
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled when it goes away: each connection shuts down gracefully.
    down: CancellationToken,
}

impl Flaky {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut app = Self {
            addr: listener.local_addr().unwrap(),
            seen: Default::default(),
            serving: None,
            closing: Default::default(),
            down: CancellationToken::new(),
        };
        app.serve(listener);
        app
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let seen = self.seen.clone();
        let closing = self.closing.clone();
        closing.store(false, Ordering::SeqCst);
        self.down = CancellationToken::new();
        let down = self.down.clone();
        self.serving = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, closing, down) = (seen.clone(), closing.clone(), down.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<_>| {
                        let (seen, closing) = (seen.clone(), closing.clone());
                        async move {
                            let header = |name| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|v: &http::HeaderValue| v.to_str().ok())
                                    .map(str::to_owned)
                            };
                            let key = header("outrigger-idempotency-key").unwrap_or_default();
                            let attempt = header("outrigger-attempt")
                                .and_then(|a| a.parse().ok())
                                .unwrap_or(0);
                            seen.lock().entry(key).or_default().push(attempt);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let mut response = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"ok"),
                            ));
                            if closing.load(Ordering::SeqCst) {
                                response.headers_mut().insert(
                                    http::header::CONNECTION,
                                    http::HeaderValue::from_static("close"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = down.cancelled() => {
                            // Idle: closed now; busy: closed after its answer.
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
        }));
    }

    /// Stops listening: connects are refused from now on, an idle kept-alive connection closes
    /// at once and a busy one after the answer to the request it carries.
    fn go_down(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        self.down.cancel();
        if let Some(task) = self.serving.take() {
            task.abort();
        }
    }

    async fn come_back(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    fn answered(&self) -> usize {
        self.seen.lock().values().map(Vec::len).sum()
    }
}

/// An app down for 30 s in the middle of a stream costs no attempt and no dead letter: the
/// breaker opens, nothing more is taken from the broker, and once the app is back every
/// message is delivered once, on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_down_for_thirty_seconds_costs_no_attempt_and_no_dead_letter() {
    const MESSAGES: usize = 300;
    let mut app = Flaky::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = policy(
        &format!("http://{}/", app.addr),
        dir.path(),
        "max_in_flight = 16",
    );
    let broker = MemoryBroker::new();
    for i in 0..MESSAGES {
        broker.publish("q", Outgoing::new("{}").message_id(format!("m-{i}")));
    }
    let metrics = Metrics::new();
    let source_metrics = metrics.source("q");
    let store = Store::open(&config).await.unwrap();
    let pipeline = Arc::new(build_pipeline(&config, Some(store), source_metrics.clone()));
    let breaker = pipeline.breaker.clone();
    let run = tokio::spawn(super::run(
        pipeline,
        broker.source("q", "q.dlq"),
        CancellationToken::new(),
    ));

    wait_for(|| app.answered() >= 100).await;
    app.go_down();
    wait_for(|| breaker.state() == super::BreakerState::Open).await;
    let consumed_when_open = source_metrics.consumed.get();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Open, it took nothing more from the broker (a half-open trial or two at most).
    assert!(source_metrics.consumed.get() <= consumed_when_open + 2);
    assert_ne!(breaker.state(), super::BreakerState::Closed);
    let gauge = metrics.render();
    assert!(
        gauge.contains("outrigger_breaker_transitions_total{source=\"q\",to=\"open\"}"),
        "{gauge}"
    );
    app.come_back().await;

    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the stream finishes once the app is back")
        .unwrap()
        .unwrap();
    assert_eq!(breaker.state(), super::BreakerState::Closed);
    assert!(broker.ready("q.dlq").is_empty(), "nothing dead-lettered");
    assert_eq!(source_metrics.delivered.get(), MESSAGES as u64);
    let seen = app.seen.lock();
    assert_eq!(seen.len(), MESSAGES, "every message reached the app");
    for (key, attempts) in seen.iter() {
        assert_eq!(
            attempts,
            &[1],
            "{key}: delivered once, on its first attempt"
        );
    }
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message whose dead letter is written is not delivered or dead-lettered again when the
/// broker hands a copy out again (a crash before the ack or the commit); a resubmitted copy is
/// new work and is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_written_once_and_a_resubmitted_copy_is_still_delivered() {
    let hits = Arc::new(parking_lot::Mutex::new(Vec::<(String, String)>::new()));
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h, f) = (hits.clone(), fixed.clone());
    let app = Router::new().route(
        "/",
        post(move |headers: http::HeaderMap| {
            let (hits, fixed) = (h.clone(), f.clone());
            async move {
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                hits.lock().push((
                    header("outrigger-idempotency-key"),
                    header("outrigger-attempt"),
                ));
                if fixed.load(Ordering::SeqCst) {
                    http::StatusCode::OK
                } else {
                    http::StatusCode::BAD_REQUEST
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let config = policy(&url, dir.path(), "");
    let store = Store::open(&config).await.unwrap();
    let broker = MemoryBroker::new();
    let run_once = |broker: &MemoryBroker, store: Arc<Store>| {
        let metrics = Metrics::new().source("q");
        let pipeline = Arc::new(build_pipeline(&config, Some(store), metrics.clone()));
        let source = broker.source("q", "q.dlq");
        async move {
            super::run(pipeline, source, CancellationToken::new())
                .await
                .unwrap();
            metrics
        }
    };

    broker.publish("q", Outgoing::new("{}").message_id("p-1"));
    run_once(&broker, store.clone()).await;
    assert_eq!(broker.ready("q.dlq").len(), 1, "dead-lettered");
    assert_eq!(hits.lock().len(), 1);

    // The broker hands the same message out again (its ack or commit was lost in a crash).
    broker.publish("q", Outgoing::new("{}").message_id("p-1"));
    let again = run_once(&broker, store.clone()).await;
    assert_eq!(
        broker.ready("q.dlq").len(),
        1,
        "its dead letter is not written twice"
    );
    assert_eq!(hits.lock().len(), 1, "nor is it delivered again");
    assert_eq!(again.delivered.get(), 0);

    // An operator fixed the app and resubmitted it: the copy is delivered, from attempt 1.
    fixed.store(true, Ordering::SeqCst);
    broker.publish(
        "q",
        Outgoing::new("{}")
            .message_id("copy-of-p-1")
            .header("outrigger-resubmit-count", "1")
            .header("outrigger-resubmitted-key", "p-1"),
    );
    let resubmitted = run_once(&broker, store.clone()).await;
    assert_eq!(resubmitted.delivered.get(), 1);
    assert_eq!(
        hits.lock().last().cloned(),
        Some(("p-1".to_owned(), "1".to_owned()))
    );
    assert_eq!(broker.ready("q.dlq").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_held_to_its_per_key_limit() {
    // Per key: requests held now, the most held at once; and the order requests arrived in.
    type Held = parking_lot::Mutex<std::collections::HashMap<String, (usize, usize)>>;
    let held: Arc<Held> = Arc::default();
    let arrivals = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let (h, a) = (held.clone(), arrivals.clone());
    let app = Router::new().route(
        "/",
        post(move |headers: http::HeaderMap| {
            let (held, arrivals) = (h.clone(), a.clone());
            async move {
                let key = headers["ce-id"].to_str().unwrap().to_owned();
                let entity = key.split('-').next().unwrap().to_owned();
                arrivals.lock().push(entity.clone());
                {
                    let mut held = held.lock();
                    let (now, most) = held.entry(entity.clone()).or_default();
                    *now += 1;
                    *most = (*most).max(*now);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                held.lock().get_mut(&entity).unwrap().0 -= 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let mut config = policy(
        &url,
        dir.path(),
        "max_in_flight = 16\nmax_in_flight_per_key = 2",
    );
    config.ordering.mode = Some(outrigger_core::OrderingMode::None);
    let broker = MemoryBroker::new();
    // A burst of one hot key, then a few messages of other keys behind it.
    for i in 0..30 {
        broker.publish(
            "q",
            Outgoing::new("{}")
                .key("hot")
                .message_id(format!("hot-{i}")),
        );
    }
    for i in 0..6 {
        broker.publish(
            "q",
            Outgoing::new("{}")
                .key(format!("k{i}"))
                .message_id(format!("k{i}-0")),
        );
    }
    let metrics = Metrics::new().source("q");
    let store = Store::open(&config).await.unwrap();
    let pipeline = Arc::new(build_pipeline(&config, Some(store), metrics.clone()));
    super::run(
        pipeline,
        broker.source("q", "q.dlq"),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(metrics.delivered.get(), 36);
    let held = held.lock();
    // Without the limit all 16 messages taken would be the hot key's, delivered at once.
    assert_eq!(
        held["hot"].1, 2,
        "the hot key never had more than its 2 at once"
    );
    assert!(held.iter().all(|(_, (now, _))| *now == 0));
}
