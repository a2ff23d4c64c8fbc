//! Delivery to the application over HTTP: one `POST` per attempt, CloudEvents binary mode.
//!
//! The request carries the payload byte for byte. What the app answers (or why it did not) comes
//! back as a [`Reply`] for the classifier; nothing here decides a message's fate.

mod headers;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use outrigger_core::{Message, Reply, Response, TransportError, TransportErrorKind};

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
    /// Deadline for the whole exchange, response body included.
    pub timeout: Duration,
    /// How much of the response body to keep for classification and dead letters.
    pub excerpt: usize,
    /// Speak HTTP/2 without TLS (h2c) instead of HTTP/1.1.
    pub http2: bool,
    /// Which headers are set.
    pub headers: HeaderPlan,
}

/// A keep-alive HTTP client bound to the app's URL.
#[derive(Clone)]
pub struct HttpDelivery {
    client: Client<HttpConnector, Full<Bytes>>,
    settings: std::sync::Arc<DeliverySettings>,
}

impl HttpDelivery {
    /// A client for these settings; connections are opened lazily and kept alive.
    pub fn new(settings: DeliverySettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.timeout));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(settings.http2)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self {
            client,
            settings: std::sync::Arc::new(settings),
        }
    }

    /// The app URL.
    pub fn url(&self) -> &Uri {
        &self.settings.url
    }

    /// Sends one attempt and reports what happened; never panics on app behaviour.
    pub async fn send(&self, message: &Message, attempt: Attempt<'_>) -> (Reply, Duration) {
        let started = Instant::now();
        let request = match self.request(message, attempt) {
            Ok(r) => r,
            Err(e) => return (Reply::Undeliverable(e), started.elapsed()),
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, mut body) = response.into_parts();
            let mut excerpt = BytesMut::new();
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(ExchangeError::Body)?;
                if let Ok(data) = frame.into_data() {
                    read += data.len();
                    let room = self.settings.excerpt.saturating_sub(excerpt.len());
                    excerpt.extend_from_slice(&data[..room.min(data.len())]);
                    if read > MAX_RESPONSE_READ {
                        break;
                    }
                }
            }
            Ok::<_, ExchangeError>(Response {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect(),
                body_excerpt: excerpt.freeze(),
            })
        };
        let reply = match tokio::time::timeout(self.settings.timeout, exchange).await {
            Ok(Ok(response)) => Reply::Response(response),
            Ok(Err(e)) => Reply::Failed(TransportError {
                kind: TransportErrorKind::Connection,
                detail: e.to_string(),
                elapsed: started.elapsed(),
            }),
            Err(_) => Reply::Failed(TransportError {
                kind: TransportErrorKind::Timeout,
                detail: format!("no complete response within {:?}", self.settings.timeout),
                elapsed: started.elapsed(),
            }),
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

#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("{}", describe_client_error(.0))]
    Client(#[from] hyper_util::client::legacy::Error),
    #[error("response body broke off: {0}")]
    Body(hyper::Error),
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
