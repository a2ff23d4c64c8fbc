//! `backpressure.adaptive` through the real binary on RabbitMQ: against an app with a
//! concurrency knee (a fixed number of workers; past it, requests queue and each one takes
//! longer), the adaptive limit settles near the knee and keeps the app's latency bounded, where
//! the fixed default limit piles every message onto the app at once.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Router;
use parking_lot::Mutex;
use support::{unique, wait_until, Policy, Rabbit, Sidecar, OUTRIGGER};

/// What a request takes when the app has a worker free.
const BASE: Duration = Duration::from_millis(20);
/// The app's workers.
const KNEE: usize = 8;
const MESSAGES: usize = 1_500;
const SETTLED: &str = "outrigger_messages_settled_total";
const LIMIT: &str = "outrigger_concurrency_limit";

#[derive(Default)]
struct Seen {
    in_flight: AtomicUsize,
    latencies: Mutex<Vec<Duration>>,
}

/// An app with [`KNEE`] workers: a request that finds `c` requests in progress (itself
/// included) takes `BASE × c / KNEE` once `c` passes the knee, as the workers are shared.
async fn knee_app() -> (String, Arc<Seen>) {
    async fn handle(State(seen): State<Arc<Seen>>) -> &'static str {
        let started = Instant::now();
        let c = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(BASE.mul_f64((c as f64 / KNEE as f64).max(1.0))).await;
        seen.in_flight.fetch_sub(1, Ordering::SeqCst);
        seen.latencies.lock().push(started.elapsed());
        "ok"
    }
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = Router::new().fallback(handle).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn p99(latencies: &[Duration]) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[sorted.len() * 99 / 100]
}

/// Runs [`MESSAGES`] through a sidecar with `backpressure` settings against a fresh knee app:
/// the app's p99 latency over the second half of the run, and the concurrency limits the
/// sidecar showed meanwhile.
async fn run(rabbit: &Rabbit, adaptive: bool) -> (Duration, Vec<f64>) {
    let queue = unique("adaptive");
    rabbit.declare(&queue).await;
    for i in 0..MESSAGES {
        rabbit.publish_keyed(&queue, &format!("m-{i}"), b"{}").await;
    }
    let (url, seen) = knee_app().await;
    let policy = Policy::amqp(&queue, &url, &unique("ns"))
        .set("backpressure.max_in_flight", 128)
        .set("delivery.max_connections", 128)
        .set("backpressure.adaptive", adaptive);
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until(
        "half of the backlog settled",
        Duration::from_secs(120),
        || async { sidecar.metric(SETTLED, "") >= (MESSAGES / 2) as f64 },
    )
    .await;
    let warm = seen.latencies.lock().len();
    let limits = Mutex::new(Vec::new());
    wait_until(
        "every message settled",
        Duration::from_secs(120),
        || async {
            limits.lock().push(sidecar.metric(LIMIT, ""));
            sidecar.metric(SETTLED, "") >= MESSAGES as f64
        },
    )
    .await;
    let limits = limits.into_inner();
    sidecar.stop();
    rabbit.delete(&queue).await;
    let latencies = seen.latencies.lock();
    (p99(&latencies[warm..]), limits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limit_settles_near_the_apps_knee_and_keeps_its_latency_bounded() {
    let rabbit = Rabbit::connect().await;
    let (fixed_p99, fixed_limits) = run(&rabbit, false).await;
    let (adaptive_p99, limits) = run(&rabbit, true).await;
    eprintln!("p99: fixed {fixed_p99:?}, adaptive {adaptive_p99:?}; adaptive limits {limits:?}");

    assert!(
        fixed_limits.iter().all(|&l| l == 128.0),
        "a fixed limit stays put: {fixed_limits:?}"
    );
    assert!(
        fixed_p99 >= BASE * 3,
        "with up to 128 at once the app queues: p99 {fixed_p99:?}"
    );
    // Past the warm-up: at the knee plus the couple Vegas lets wait, or half that in a probe.
    let settled = limits
        .iter()
        .filter(|&&l| (KNEE as f64..=2.0 * KNEE as f64).contains(&l))
        .count();
    assert!(
        settled * 10 >= limits.len() * 8,
        "the limit sits near the knee ({KNEE}): {limits:?}"
    );
    assert!(
        adaptive_p99 * 3 <= fixed_p99,
        "the app's p99 stays bounded: adaptive {adaptive_p99:?}, fixed {fixed_p99:?}"
    );
}
