//! The stub app: an HTTP/1.1 server that answers 200 at once and records when each message came.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::payload::{self, Clock};
use crate::record::Recorder;

/// The running stub app; it records into the recorder of the current phase.
pub struct Stub {
    /// Where it listens.
    pub addr: SocketAddr,
    current: Arc<RwLock<Arc<Recorder>>>,
}

impl Stub {
    /// Binds 127.0.0.1:0 and serves until the process ends.
    pub async fn start(clock: Clock) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let current = Arc::new(RwLock::new(Arc::new(Recorder::new(0))));
        let shared = current.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let service = service_fn(move |request| handle(request, clock, shared.clone()));
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, current })
    }

    /// The URL the consumers POST to.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Starts a phase of `messages` messages: later requests are recorded in the returned recorder.
    pub fn begin(&self, messages: usize) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder::new(messages));
        *self.current.write().expect("stub lock") = recorder.clone();
        recorder
    }
}

async fn handle(
    request: Request<Incoming>,
    clock: Clock,
    current: Arc<RwLock<Arc<Recorder>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let batch = request.headers().get("content-type").is_some_and(|ct| {
        ct.as_bytes()
            .starts_with(b"application/cloudevents-batch+json")
    });
    // A broken body is recorded as nothing; the answer stays 200 so nothing is redelivered.
    // A batch is answered 200 without a body: every event of it acked.
    if let Ok(body) = request.into_body().collect().await {
        let received = clock.now_ns();
        let body = body.to_bytes();
        let recorder = current.read().expect("stub lock").clone();
        if batch {
            for payload in batch_payloads(&body) {
                if let Some((seq, sent)) = payload::decode(&payload) {
                    recorder.record(seq, sent, received);
                }
            }
        } else if let Some((seq, sent)) = payload::decode(&body) {
            recorder.record(seq, sent, received);
        }
    }
    Ok(Response::new(Full::new(Bytes::new())))
}

/// The payloads of a CloudEvents batch: each event's `data_base64` (the bench's bodies are
/// not JSON).
fn batch_payloads(body: &[u8]) -> Vec<Vec<u8>> {
    let Ok(events) = serde_json::from_slice::<Vec<serde_json::Value>>(body) else {
        return Vec::new();
    };
    events
        .iter()
        .filter_map(|e| e["data_base64"].as_str())
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .collect()
}
