//! A recording HTTP app whose answer per request is chosen by the test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// One request the app received.
#[derive(Clone, Debug)]
pub struct Hit {
    /// `outrigger-idempotency-key`.
    pub key: String,
    /// `outrigger-attempt`.
    pub attempt: u32,
    /// `outrigger-fence`.
    pub fence: Option<u64>,
    /// When it arrived.
    pub at: Instant,
    /// How many requests with this key came before, plus one.
    pub nth: u32,
    /// The status the app answered.
    pub status: u16,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
}

/// What the app answers.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Response body.
    pub body: String,
    /// Time spent before answering.
    pub delay: Duration,
}

impl Reply {
    /// A plain status.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// With a body.
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    /// After a delay.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Behaviour = Arc<dyn Fn(&str, u32) -> Reply + Send + Sync>;

struct Inner {
    behaviour: Behaviour,
    hits: Mutex<Vec<Hit>>,
    counts: Mutex<HashMap<String, u32>>,
}

/// The running app.
#[derive(Clone)]
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl TestApp {
    /// Starts an app that answers `behaviour(key, nth request for that key)`.
    pub async fn start(behaviour: impl Fn(&str, u32) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            behaviour: Arc::new(behaviour),
            hits: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, inner }
    }

    /// An app that accepts everything at once.
    pub async fn accepting() -> Self {
        Self::start(|_, _| Reply::status(200)).await
    }

    /// An app that accepts everything, the messages keyed `slow` only after `delay`.
    pub async fn slow_on(slow: &'static str, delay: Duration) -> Self {
        Self::start(move |key, _| {
            let reply = Reply::status(200);
            if key == slow {
                reply.after(delay)
            } else {
                reply
            }
        })
        .await
    }

    /// The URL to configure as the delivery target.
    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.hits.lock().clone()
    }

    /// Requests answered 2xx, per key.
    pub fn successes(&self) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        for h in self.inner.hits.lock().iter() {
            if (200..300).contains(&h.status) {
                *out.entry(h.key.clone()).or_default() += 1;
            }
        }
        out
    }

    /// After a crash: the keys the app accepted more than once are at most `in_flight` (what
    /// the dead process had taken), and each repeat came under a higher fence, so an app that
    /// checks `outrigger-fence` or the idempotency key can refuse it.
    pub fn assert_repeats_only_in_flight(&self, in_flight: usize) {
        let hits = self.hits();
        let twice: Vec<String> = self
            .successes()
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k)
            .collect();
        assert!(
            twice.len() <= in_flight,
            "only keys in flight at the crash can repeat: {twice:?}"
        );
        for key in &twice {
            let fences: Vec<u64> = hits
                .iter()
                .filter(|h| &h.key == key && (200..300).contains(&h.status))
                .map(|h| h.fence.expect("a dedup claim"))
                .collect();
            assert!(
                fences.windows(2).all(|w| w[0] < w[1]),
                "{key}: fences grow {fences:?}"
            );
        }
    }

    /// Checks that the app accepted no key more than once.
    pub fn assert_each_key_once(&self) {
        let successes = self.successes();
        let twice: HashMap<_, _> = successes.iter().filter(|(_, &n)| n != 1).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    }

    /// Requests that arrived, answered or not yet (a slow answer is counted by [`count`]
    /// only once it was sent).
    ///
    /// [`count`]: Self::count
    pub fn arrived(&self) -> usize {
        self.inner.counts.lock().values().map(|&n| n as usize).sum()
    }

    /// Requests answered so far (a slow one counts once its answer was sent).
    pub fn count(&self) -> usize {
        self.inner.hits.lock().len()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = header(&headers, "outrigger-idempotency-key").unwrap_or_default();
    let nth = {
        let mut counts = inner.counts.lock();
        let n = counts.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    let reply = (inner.behaviour)(&key, nth);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    inner.hits.lock().push(Hit {
        attempt: header(&headers, "outrigger-attempt")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        fence: header(&headers, "outrigger-fence").and_then(|v| v.parse().ok()),
        key,
        at: Instant::now(),
        nth,
        status: reply.status,
        headers,
        body,
    });
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        reply.body.clone(),
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
