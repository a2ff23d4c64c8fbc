//! The app under the sidecar and its own ledger: every request it got, what it answered, and
//! so every application (a key is APPLIED when, and only when, the app sends a 2xx for it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use parking_lot::Mutex;

use super::workload::{copy_of, Kind, TRANSIENT_FAILURES};

/// One request the app answered.
#[derive(Clone, Debug)]
pub struct Request {
    /// `outrigger-idempotency-key`.
    pub key: String,
    /// The `copy` field of the payload: which published message this was.
    pub copy: Option<u32>,
    /// `outrigger-fence`.
    pub fence: Option<u64>,
    /// `outrigger-attempt`.
    pub attempt: u32,
    /// What the app answered.
    pub status: u16,
    /// When it answered.
    pub at: Instant,
}

impl Request {
    /// Whether the app applied the key with this answer.
    pub fn applied(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct Book {
    requests: Vec<Request>,
    /// Requests per key, to fail a transient key's first ones.
    seen: HashMap<String, u32>,
    applied: HashSet<String>,
}

/// The ledger, shared by the app's handler and the test.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Book>>);

impl Ledger {
    /// The app: healthy keys accepted, transient ones failed with a 500
    /// [`TRANSIENT_FAILURES`] times then accepted, poison ones refused with a 400.
    pub fn router(&self) -> Router {
        Router::new().fallback(answer).with_state(self.clone())
    }

    /// Every request so far, in the order answered.
    pub fn requests(&self) -> Vec<Request> {
        self.0.lock().requests.clone()
    }

    /// How many requests so far.
    pub fn count(&self) -> usize {
        self.0.lock().requests.len()
    }

    /// How many of `keys` were applied.
    pub fn applied_among<'a>(&self, keys: impl IntoIterator<Item = &'a String>) -> usize {
        let book = self.0.lock();
        keys.into_iter()
            .filter(|k| book.applied.contains(*k))
            .count()
    }
}

async fn answer(State(ledger): State<Ledger>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = text("outrigger-idempotency-key")
        .unwrap_or_default()
        .to_owned();
    let mut book = ledger.0.lock();
    let nth = {
        let n = book.seen.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    let status = match Kind::of(&key) {
        Kind::Poison => StatusCode::BAD_REQUEST,
        Kind::Transient if nth <= TRANSIENT_FAILURES => StatusCode::INTERNAL_SERVER_ERROR,
        Kind::Healthy | Kind::Transient => StatusCode::OK,
    };
    // Recorded under the lock and answered right after: the app applied the key exactly
    // when it sent this 2xx.
    if status.is_success() {
        book.applied.insert(key.clone());
    }
    book.requests.push(Request {
        copy: copy_of(&body),
        fence: text("outrigger-fence").and_then(|v| v.parse().ok()),
        attempt: text("outrigger-attempt")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        key,
        status: status.as_u16(),
        at: Instant::now(),
    });
    status
}
