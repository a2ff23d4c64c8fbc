//! The demo's built-in flaky app: an HTTP server on loopback that fails on purpose.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// What the app saw, per event id.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Requests per id.
    pub attempts: HashMap<String, u32>,
    /// Accepted (2xx without a drop) per id: must end at exactly 1 for accepted events.
    pub accepted: HashMap<String, u32>,
    /// Whether the attempt header ever disagreed with the app's own count.
    pub attempt_header_mismatches: u32,
    /// Accepted events per handler (the request's path).
    pub by_path: HashMap<String, u32>,
    /// Requests of legacy events, which their route drops: must stay 0.
    pub legacy_seen: u32,
    /// Accepted ledger entries per account, in the order they came: must be 1, 2, 3, ...
    pub sequences: HashMap<String, Vec<u64>>,
}

/// The app's workers: more requests at once than this wait inside it, and take longer.
pub const WORKERS: usize = 4;
/// What one request takes once a worker has it.
const WORK: Duration = Duration::from_millis(1);

struct AppState {
    ledger: Arc<Mutex<Ledger>>,
    workers: Semaphore,
    /// Go away once this many events were accepted, for this long.
    outage: Option<(usize, Duration)>,
    outages: mpsc::UnboundedSender<Duration>,
}

#[derive(Deserialize)]
struct Payload {
    id: String,
    kind: String,
    fail_times: u32,
    /// A ledger entry's account and number.
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
}

/// A running flaky app.
pub struct FlakyApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub ledger: Arc<Mutex<Ledger>>,
}

/// Starts the app on an ephemeral loopback port. With `outage = (n, d)`, once it accepted `n`
/// events it goes away for `d`, as in a restart: it stops listening (connections are refused),
/// then listens on the same address again.
pub async fn start(
    shutdown: CancellationToken,
    outage: Option<(usize, Duration)>,
) -> std::io::Result<FlakyApp> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (outages, down) = mpsc::unbounded_channel();
    let state = Arc::new(AppState {
        ledger: ledger.clone(),
        workers: Semaphore::new(WORKERS),
        outage,
        outages,
    });
    let router = Router::new().fallback(post(handle)).with_state(state);
    tokio::spawn(serve(listener, router, shutdown, down));
    Ok(FlakyApp { addr, ledger })
}

/// Serves until `shutdown`, going away for each outage asked for.
async fn serve(
    mut listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    mut outages: mpsc::UnboundedReceiver<Duration>,
) {
    loop {
        let addr = listener.local_addr().ok();
        let stop = shutdown.child_token();
        let server = tokio::spawn(
            axum::serve(listener, router.clone())
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        let outage = tokio::select! {
            _ = shutdown.cancelled() => None,
            outage = outages.recv() => outage,
        };
        stop.cancel();
        let _ = server.await;
        let (Some(outage), Some(addr)) = (outage, addr) else {
            return;
        };
        tokio::time::sleep(outage).await;
        listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(_) => return,
        };
    }
}

async fn handle(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(p) = serde_json::from_slice::<Payload>(&body) else {
        return (StatusCode::BAD_REQUEST, "payload is not an order").into_response();
    };
    {
        let _worker = app.workers.acquire().await.expect("never closed");
        tokio::time::sleep(WORK).await;
    }
    let mut ledger = app.ledger.lock();
    if p.kind == "legacy" {
        ledger.legacy_seen += 1;
    }
    let n = {
        let n = ledger.attempts.entry(p.id.clone()).or_default();
        *n += 1;
        *n
    };
    let header_attempt = headers
        .get("outrigger-attempt")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    match p.kind.as_str() {
        "transient" if n <= p.fail_times => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "database busy, try again",
        )
            .into_response(),
        "throttled" if n == 1 => (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response(),
        "poison" => (
            StatusCode::BAD_REQUEST,
            r#"{"error":"amount must be positive"}"#,
        )
            .into_response(),
        "hopeless" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "downstream ledger unavailable",
        )
            .into_response(),
        "unwanted" => (
            StatusCode::OK,
            [("outrigger-action", "drop")],
            "not for this service",
        )
            .into_response(),
        _ => {
            // Attempts the app saw must match the header, except throttles (not counted).
            let expected = if p.kind == "throttled" { n - 1 } else { n };
            if header_attempt != Some(expected) {
                ledger.attempt_header_mismatches += 1;
            }
            *ledger.accepted.entry(p.id).or_default() += 1;
            if let (Some(account), Some(seq)) = (p.account, p.seq) {
                ledger.sequences.entry(account).or_default().push(seq);
            }
            *ledger.by_path.entry(uri.path().to_owned()).or_default() += 1;
            if let Some((after, how_long)) = app.outage {
                if ledger.accepted.len() == after {
                    let _ = app.outages.send(how_long);
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
