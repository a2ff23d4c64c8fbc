//! Delivery to the application over HTTP: one `POST` per attempt, CloudEvents binary mode, or
//! (opt-in) several attempts in one `POST` as a CloudEvents batch.
//!
//! The request carries the payload byte for byte. What the app answers (or why it did not) comes
//! back as a [`Reply`] for the classifier; nothing here decides a message's fate.

mod batch;
mod headers;
mod pool;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use outrigger_core::{Message, Reply, Response, TransportError, TransportErrorKind};

use pool::{Pool, PoolError};

pub use batch::{Batching, BATCH_CONTENT_TYPE};
pub use headers::{cloudevents_id, is_structured_cloudevent, HeaderPlan};

/// Response bodies are read to the end so the connection can be reused, but never more than
/// this, so a runaway app cannot make the sidecar buffer without bound.
const MAX_RESPONSE_READ: usize = 1 << 20;

/// What one attempt sends besides the message itself.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// The idempotency key, when one was extracted.
    pub key: Option<&'a str>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Fence token of the current dedup claim.
    pub fence: Option<u64>,
}

/// The settings [`HttpDelivery`] needs.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Where to `POST`.
    pub url: Uri,
    /// Deadline for the exchange once connected, response body included.
    pub timeout: Duration,
    /// Deadline for making a connection.
    pub connect_timeout: Duration,
    /// Connections to the app at most (HTTP/1.1 carries one exchange at a time on each).
    pub max_connections: usize,
    /// How much of the response body to keep for classification and dead letters.
    pub excerpt: usize,
    /// Speak HTTP/2 without TLS (h2c) instead of HTTP/1.1.
    pub http2: bool,
    /// Which headers are set.
    pub headers: HeaderPlan,
    /// Several events in one request, when set.
    pub batch: Option<Batching>,
}

/// A keep-alive HTTP client bound to the app's URL.
#[derive(Clone)]
pub struct HttpDelivery {
    pool: std::sync::Arc<Pool>,
    settings: std::sync::Arc<DeliverySettings>,
    /// The batching task, when events go out in batches.
    batches: Option<batch::Batches>,
}

impl HttpDelivery {
    /// The deadline of one exchange once connected.
    pub fn timeout(&self) -> std::time::Duration {
        self.settings.timeout
    }

    /// A client for these settings; connections are opened lazily and kept alive.
    pub fn new(settings: DeliverySettings) -> Self {
        let host = settings.url.host().unwrap_or("127.0.0.1");
        let port = settings.url.port_u16().unwrap_or(80);
        // An IPv6 literal keeps its brackets in `host()`, which `TcpStream::connect` takes.
        let pool = Pool::new(
            format!("{host}:{port}"),
            settings.http2,
            settings.connect_timeout,
            settings.max_connections,
        );
        let delivery = Self {
            pool: std::sync::Arc::new(pool),
            settings: std::sync::Arc::new(settings),
            batches: None,
        };
        match delivery.settings.batch {
            Some(batching) => Self {
                batches: Some(batch::Batches::start(delivery.clone(), batching)),
                ..delivery
            },
            None => delivery,
        }
    }

    /// The app URL.
    pub fn url(&self) -> &Uri {
        &self.settings.url
    }

    /// Sends one attempt and reports what happened; never panics on app behaviour. With
    /// batching on, the attempt goes out in a batch with others (see [`batch`]).
    pub async fn send(&self, message: &Message, attempt: Attempt<'_>) -> (Reply, Duration) {
        if let Some(batches) = &self.batches {
            return batches.send(message, attempt).await;
        }
        let started = Instant::now();
        match self.request(message, attempt) {
            Ok(request) => self.exchange(request, self.settings.excerpt).await,
            Err(e) => (Reply::Undeliverable(e), started.elapsed()),
        }
    }

    /// Whether attempts go out in batches, each batch one request toward the app.
    pub fn batches(&self) -> bool {
        self.batches.is_some()
    }

    /// Sends one request and reports what came back, keeping up to `keep` bytes of the body.
    async fn exchange(&self, request: Request<Full<Bytes>>, keep: usize) -> (Reply, Duration) {
        let started = Instant::now();
        let failed = |kind, detail: String| {
            Reply::Failed(TransportError {
                kind,
                detail,
                elapsed: started.elapsed(),
            })
        };
        // Connecting has its own deadline; the delivery timeout starts once a connection is
        // ready, so an app whose backlog delays connects is not taken for a slow handler.
        let (lease, reused) = match self.pool.checkout().await {
            Ok(checked_out) => checked_out,
            Err(e) => return (failed(kind_of(&e), e.to_string()), started.elapsed()),
        };
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let timed_out = || {
            failed(
                TransportErrorKind::Timeout,
                format!("no complete response within {:?}", self.settings.timeout),
            )
        };
        let exchange = self.pool.exchange(lease, request, reused);
        let (response, lease) = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => return (failed(kind_of(&e), e.to_string()), started.elapsed()),
            Err(_) => return (timed_out(), started.elapsed()),
        };
        let (parts, mut body) = response.into_parts();
        let read = async {
            let mut excerpt = BytesMut::new();
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                if let Ok(data) = frame.into_data() {
                    read += data.len();
                    let room = keep.saturating_sub(excerpt.len());
                    excerpt.extend_from_slice(&data[..room.min(data.len())]);
                    if read > MAX_RESPONSE_READ {
                        return Ok::<_, hyper::Error>((excerpt, false));
                    }
                }
            }
            Ok((excerpt, true))
        };
        let reply = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok((excerpt, complete))) => {
                // A body read to its end leaves the connection ready for the next exchange.
                if complete {
                    self.pool.give_back(lease);
                }
                Reply::Response(Response {
                    status: parts.status.as_u16(),
                    headers: parts
                        .headers
                        .iter()
                        .filter_map(|(n, v)| {
                            Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned()))
                        })
                        .collect(),
                    body_excerpt: excerpt.freeze(),
                })
            }
            Ok(Err(e)) => failed(
                TransportErrorKind::Connection,
                format!("response body broke off: {e}"),
            ),
            Err(_) => timed_out(),
        };
        (reply, started.elapsed())
    }

    fn request(
        &self,
        message: &Message,
        attempt: Attempt<'_>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut builder = Request::post(self.settings.url.clone());
        let headers = builder.headers_mut().expect("fresh builder has headers");
        self.settings.headers.apply(headers, message, attempt);
        builder
            .body(Full::new(message.payload.clone()))
            .map_err(|e| format!("cannot build the HTTP request: {e}"))
    }
}

/// A pool error as the classifier sees it: a connect reached nothing, a broken exchange may
/// have reached the app.
fn kind_of(e: &PoolError) -> TransportErrorKind {
    match e {
        PoolError::Connect(_) => TransportErrorKind::Connect,
        PoolError::Exchange(_) => TransportErrorKind::Connection,
    }
}
