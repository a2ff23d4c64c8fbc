//! The pipeline's own limits and route snapshot, in process: the memory broker, the embedded
//! store and a small app that records how many deliveries it holds at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use outrigger_memory::{MemoryBroker, Outgoing};
use tokio_util::sync::CancellationToken;

use super::{RouteTable, Routes};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::run::{build_pipeline, default_route};
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
    let table = RouteTable::new(Routes::single(default_route(&first)));
    let message = outrigger_core::Message::new(
        "{}",
        outrigger_core::Coordinates::Memory {
            queue: "q".into(),
            sequence: 1,
        },
    );
    let in_flight = table.pick(&message);
    table.swap(Routes::single(default_route(&second)));
    assert_eq!(
        in_flight.delivery.url().path(),
        "/first",
        "in flight keeps its route"
    );
    assert_eq!(table.pick(&message).delivery.url().path(), "/second");
}
