//! The admin API's `/dlq` routes: what `outrigger dlq` does, as JSON over HTTP.
//!
//! - `GET /dlq?since=2h&reason=HTTP+400&status=4xx&key=order-*&source=orders&limit=50&all=true`:
//!   `{"queue", "count", "records": [...]}`, each record as a `dlq list --json` line.
//! - `GET /dlq/{id}`: one record in full (`dlq show --json`); 404 when it is not there.
//! - `POST /dlq/resubmit`, body `{"ids": [...], <filters>, "limit", "to", "rate", "by",
//!   "dry_run"}`: `{"selected", "resubmitted", "ids", "not_found", "dry_run"}`.
//! - `POST /dlq/purge`, body `{"ids": [...], <filters>, "limit", "by", "dry_run"}`; without
//!   ids or filters it purges nothing unless `"everything": true` says so.
//! - Each works on the policy's dead-letter destination, or with `route=NAME` (`"route"` in a
//!   body) on that route's, or with `destination=NAME` on one the policy or a route names, as
//!   `outrigger dlq --route` and `--destination` do; an unknown one is a 404 saying which
//!   there are.
//!
//! The routes sit behind the listener's bearer-token check (a token is mandatory once the
//! listener is off loopback), so an unauthenticated request is refused before it reaches
//! the broker. A bad filter is a 400 naming the field; a broker failure a 502, with what was
//! done before it. Operations run one at a time, so a list never sees another request's
//! records as missing while that request holds them.

use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use outrigger_core::{DeadLetterPass, DeadLetterQueue, Resubmission, Scope, SourceError};
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::filter::{self, Filter};
use super::{
    apply, open_and_select, render, select_and_finish, DeadLetters, Destination, Operation,
    Selection,
};
use crate::admin::AdminState;
use crate::config::Config;
use crate::metrics::Metrics;

/// Who the resubmission mark names when a request does not say.
const DEFAULT_BY: &str = "admin-api";

/// The dead-letter queue behind the admin API, and the counters of what it did.
pub struct DlqApi {
    queue: Result<DeadLetters, String>,
    /// The policy, for the destinations routes name, opened when a request asks.
    config: Config,
    /// One operation at a time.
    lock: Mutex<()>,
    resubmitted: IntCounter,
    purged: IntCounter,
}

impl DlqApi {
    /// The API over the dead-letter queue of `config`'s source; for a source without one,
    /// every route answers 404 saying why.
    pub fn new(config: &Config, metrics: &Metrics) -> Self {
        let queue = super::dead_letters(config);
        let source = queue
            .as_ref()
            .map_or_else(|_| config.source.name(), |q| q.source().to_owned());
        let counters = metrics.dlq(&source);
        Self {
            queue,
            config: config.clone(),
            lock: Mutex::new(()),
            resubmitted: counters.resubmitted,
            purged: counters.purged,
        }
    }
}

/// The `/dlq` routes, for the admin listener to mount behind its token check.
pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/dlq", get(list))
        .route("/dlq/{id}", get(show))
        .route("/dlq/resubmit", post(resubmit))
        .route("/dlq/purge", post(purge))
}

/// Query parameters and JSON bodies alike; each route reads the fields it needs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    ids: Vec<String>,
    since: Option<String>,
    until: Option<String>,
    reason: Option<String>,
    status: Option<String>,
    key: Option<String>,
    source: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    all: bool,
    to: Option<String>,
    rate: Option<f64>,
    by: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    everything: bool,
    route: Option<String>,
    destination: Option<String>,
}

impl Request {
    fn selection(&self) -> Result<Selection, ApiError> {
        let filter = Filter {
            since: parse("since", &self.since, filter::parse_time)?,
            until: parse("until", &self.until, filter::parse_time)?,
            reason: self.reason.clone(),
            status: parse("status", &self.status, str::parse)?,
            key: parse("key", &self.key, str::parse)?,
            source: self.source.clone(),
        };
        Ok(Selection {
            ids: self.ids.clone(),
            filter,
            limit: self.limit,
        })
    }
}

/// Parses an optional field; a bad value is a 400 naming the field.
fn parse<T>(
    field: &str,
    text: &Option<String>,
    f: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ApiError> {
    text.as_deref()
        .map(f)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

async fn list(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<Request>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(request) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let (api, queue) = queue(&state, &request)?;
    let queue = &*queue;
    let selection = request.selection()?;
    let _one_at_a_time = api.lock.lock().await;
    let scope = Scope {
        include_handled: request.all || selection.filter.wants_handled(),
    };
    let selected = select_and_finish(queue, &selection, scope)
        .await
        .map_err(|e| ApiError::broker(&e, json!({})))?;
    Ok(Json(json!({
        "queue": queue.name(),
        "count": selected.records.len(),
        "records": selected.records.iter().map(render::summary).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn show(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    query: Result<Query<Request>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(request) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let (api, queue) = queue(&state, &request)?;
    let queue = &*queue;
    let selection = Selection {
        ids: vec![id.clone()],
        ..Selection::default()
    };
    let _one_at_a_time = api.lock.lock().await;
    let scope = Scope {
        include_handled: true,
    };
    let selected = select_and_finish(queue, &selection, scope)
        .await
        .map_err(|e| ApiError::broker(&e, json!({})))?;
    match selected.records.first() {
        Some(record) => Ok(Json(render::detail(record)).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no dead letter with id {id} in {}", queue.name()),
        )),
    }
}

async fn resubmit(State(state): State<Arc<AdminState>>, body: Bytes) -> Result<Response, ApiError> {
    let how = |r: &Request| {
        Operation::Resubmit(Resubmission {
            to: r.to.clone(),
            by: r.by.clone().unwrap_or_else(|| DEFAULT_BY.to_owned()),
            at: SystemTime::now(),
        })
    };
    act(&state, &body, how, "resubmitted").await
}

async fn purge(State(state): State<Arc<AdminState>>, body: Bytes) -> Result<Response, ApiError> {
    let how = |r: &Request| Operation::Purge(r.by.clone().unwrap_or_else(|| DEFAULT_BY.to_owned()));
    act(&state, &body, how, "purged").await
}

/// Selects, then resubmits or purges, in one pass; answers what was done.
async fn act(
    state: &AdminState,
    body: &[u8],
    action: impl Fn(&Request) -> Operation,
    done_field: &str,
) -> Result<Response, ApiError> {
    let request: Request = if body.iter().all(u8::is_ascii_whitespace) {
        Request::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?
    };
    let (api, queue) = queue(state, &request)?;
    let queue = &*queue;
    let selection = request.selection()?;
    let action = action(&request);
    if let Operation::Purge(_) = action {
        if selection.ids.is_empty() && selection.filter.is_empty() && !request.everything {
            return Err(ApiError::bad_request(
                "name the records to purge with ids or filters, or say \"everything\": true".into(),
            ));
        }
    }
    if let Some(Err(e)) = request.rate.map(filter::check_rate) {
        return Err(ApiError::bad_request(format!("rate: {e}")));
    }
    let _one_at_a_time = api.lock.lock().await;
    let nothing_done = || json!({ done_field: 0 });
    let (mut pass, selected) = open_and_select(queue, &selection)
        .await
        .map_err(|e| ApiError::broker(&e, nothing_done()))?;
    let ids: Vec<&str> = selected.records.iter().map(|r| r.id.as_str()).collect();
    let mut body = json!({
        "queue": queue.name(),
        "selected": selected.records.len(),
        "ids": ids,
        "not_found": selected.missing,
        "dry_run": request.dry_run,
        done_field: 0,
    });
    if request.dry_run {
        let _ = pass.finish().await;
        return Ok(Json(body).into_response());
    }
    // Runs to the end even if the client goes away: stopping halfway would only leave the
    // caller unsure what happened.
    let never = CancellationToken::new();
    let counter = match action {
        Operation::Resubmit(_) => &api.resubmitted,
        Operation::Purge(_) => &api.purged,
    };
    let applied = apply(
        &mut pass,
        &selected.records,
        &action,
        request.rate,
        &never,
        |_| counter.inc(),
    )
    .await;
    let finished = pass.finish().await;
    body[done_field] = json!(applied.done);
    match (applied.failed, finished) {
        (Some((id, e)), _) => {
            body["failed_id"] = json!(id);
            Err(ApiError::broker(&e, body))
        }
        (None, Err(e)) => Err(ApiError::broker(&e, body)),
        (None, Ok(())) => Ok(Json(body).into_response()),
    }
}

/// The dead-letter queue a request works on: the policy's, or a route's.
enum Queue<'a> {
    Policy(&'a DeadLetters),
    Other(Box<DeadLetters>),
}

impl Deref for Queue<'_> {
    type Target = DeadLetters;

    fn deref(&self) -> &DeadLetters {
        match self {
            Queue::Policy(queue) => queue,
            Queue::Other(queue) => queue,
        }
    }
}

fn queue<'a>(
    state: &'a AdminState,
    request: &Request,
) -> Result<(&'a DlqApi, Queue<'a>), ApiError> {
    let Some(api) = &state.dlq else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this listener serves no dead-letter queue".into(),
        ));
    };
    let which = match (&request.route, &request.destination) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "route and destination both name a dead-letter destination: give one".into(),
            ))
        }
        (Some(route), None) => Destination::Route(route),
        (None, Some(destination)) => Destination::Named(destination),
        (None, None) => Destination::Policy,
    };
    let not_found = |why: String| ApiError::new(StatusCode::NOT_FOUND, why);
    match (&api.queue, which) {
        (Ok(queue), Destination::Policy) => Ok((api, Queue::Policy(queue))),
        (Err(why), _) => Err(not_found(why.clone())),
        (Ok(_), which) => super::dead_letters_at(&api.config, which)
            .map(|queue| (api, Queue::Other(Box::new(queue))))
            .map_err(not_found),
    }
}

/// A refused or failed request: its status and JSON body (with an `error` field).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        Self {
            status,
            body: json!({ "error": message }),
        }
    }

    fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The broker failed: 502, with what was done before in `body`.
    fn broker(e: &SourceError, mut body: Value) -> Self {
        body["error"] = json!(e.to_string());
        Self {
            status: StatusCode::BAD_GATEWAY,
            body,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
