//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and the dead-letter API under `/dlq`
//! (see [`crate::dlq::api`]).
//!
//! Bound to loopback by default. When a token is configured, `/metrics` (and every later
//! operator endpoint) requires `Authorization: Bearer <token>`; the probes stay open because they
//! reveal nothing and kubelets call them.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use outrigger_core::HealthFlag;
use parking_lot::RwLock;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long each readiness check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A readiness check of the dedup store.
pub type StoreProbe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What the admin endpoints look at.
pub struct AdminState {
    /// Rendered at `/metrics`.
    pub metrics: Metrics,
    /// The broker connection flag, set once the source is connected.
    pub source: RwLock<Option<HealthFlag>>,
    /// Dedup store check, when dedup is on.
    pub store: Option<StoreProbe>,
    /// `host:port` of the app, checked with a TCP connect.
    pub app: String,
    /// The circuit breaker in front of the app, once the pipeline is built: open means the
    /// app is down whatever a connect says.
    pub breaker: RwLock<Option<Arc<crate::pipeline::Breaker>>>,
    /// Bearer token required on operator endpoints, when set.
    pub token: Option<String>,
    /// The dead-letter queue behind `/dlq`, when the sidecar serves one.
    pub dlq: Option<crate::dlq::api::DlqApi>,
}

/// Binds the admin listener; fails before anything else starts if the address is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .merge(crate::dlq::api::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "Admin listener failed.");
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let source = state.source.read().as_ref().is_some_and(HealthFlag::is_up);
    let store = match &state.store {
        None => Ok(()),
        Some(probe) => tokio::time::timeout(PROBE_TIMEOUT, probe())
            .await
            .unwrap_or_else(|_| Err("no answer within 1s".into())),
    };
    let circuit = state.breaker.read().as_ref().map(|b| b.state());
    let app = match circuit {
        Some(crate::pipeline::BreakerState::Open) => {
            Err("circuit open: deliveries could not reach the app".to_owned())
        }
        Some(crate::pipeline::BreakerState::HalfOpen) => {
            Err("circuit half-open: a trial delivery is checking the app".to_owned())
        }
        _ => tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&state.app))
            .await
            .map_err(|_| "no answer within 1s".to_owned())
            .and_then(|r| r.map(drop).map_err(|e| e.to_string())),
    };
    let ready = source && store.is_ok() && app.is_ok();
    let body = json!({
        "ready": ready,
        "source": if source { "up" } else { "down" },
        "store": store.as_ref().map(|_| "up".to_owned()).unwrap_or_else(|e| format!("down: {e}")),
        "app": app.as_ref().map(|_| "up".to_owned()).unwrap_or_else(|e| format!("down: {e}")),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn require_token(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| same_secret(p.as_bytes(), token.as_bytes())) {
            return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
        }
    }
    next.run(request).await
}

/// Compares a presented token with the configured one in time that does not depend on where
/// they differ, so the token cannot be guessed byte by byte from response times.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn tokens_match_only_when_identical() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cres", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
