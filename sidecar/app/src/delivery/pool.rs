//! Connections to the app: at most `max_connections`, kept alive and reused where the app
//! allows it, each made within its own connect timeout.
//!
//! Connecting is timed apart from the exchange, so an app whose listen backlog makes connects
//! wait is not mistaken for a slow handler, and a connect that fails is known to have reached
//! nothing (the breaker counts it against the app, not the message). A request that finds a
//! kept-alive connection closed under it before anything was sent goes out again on a new one.

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an unused kept-alive connection is kept: apps close idle ones after about a
/// minute or more; a closed one found in the pool costs a reconnect, not an error.
const IDLE: Duration = Duration::from_secs(60);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// No connection could be made: the request reached nothing.
    #[error("{0}")]
    Connect(String),
    /// The exchange broke after the request was (perhaps) sent.
    #[error("{}", describe(.0))]
    Exchange(hyper::Error),
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn send(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            Sender::Http2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
        }
    }
}

/// A connection checked out for one exchange, holding one of the pool's slots.
pub(crate) struct Lease {
    sender: Sender,
    _slot: Option<OwnedSemaphorePermit>,
}

/// The connections to one app.
pub(crate) struct Pool {
    /// `host:port` of the app.
    authority: String,
    http2: bool,
    connect_timeout: Duration,
    /// One per connection (HTTP/1.1 carries one exchange at a time on each).
    slots: std::sync::Arc<Semaphore>,
    idle: Mutex<Vec<(http1::SendRequest<Full<Bytes>>, Instant)>>,
    /// h2c multiplexes every exchange on one connection.
    shared: Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

impl Pool {
    pub(crate) fn new(
        authority: String,
        http2: bool,
        connect_timeout: Duration,
        max_connections: usize,
    ) -> Self {
        Self {
            authority,
            http2,
            connect_timeout,
            slots: std::sync::Arc::new(Semaphore::new(max_connections.max(1))),
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(None),
        }
    }

    /// A connection for one exchange: a kept-alive one when there is one (`true`), else a new
    /// one, made within the connect timeout. Waits for a free slot first.
    pub(crate) async fn checkout(&self) -> Result<(Lease, bool), PoolError> {
        if self.http2 {
            let existing = self.shared.lock().clone().filter(|s| !s.is_closed());
            if let Some(sender) = existing {
                let lease = Lease {
                    sender: Sender::Http2(sender),
                    _slot: None,
                };
                return Ok((lease, true));
            }
            let lease = self.connect(None).await?;
            if let Sender::Http2(s) = &lease.sender {
                *self.shared.lock() = Some(s.clone());
            }
            return Ok((lease, false));
        }
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection slots are never closed");
        let reusable = {
            let mut idle = self.idle.lock();
            idle.retain(|(s, since)| !s.is_closed() && since.elapsed() < IDLE);
            idle.pop()
        };
        match reusable {
            Some((sender, _)) => {
                let lease = Lease {
                    sender: Sender::Http1(sender),
                    _slot: Some(slot),
                };
                Ok((lease, true))
            }
            None => Ok((self.connect(Some(slot)).await?, false)),
        }
    }

    /// Sends `request` on `lease` and returns the response head with the lease, to give back
    /// once the body is read. On a kept-alive connection (`reused`) that the app closed before
    /// the request went out, it goes out again on a new connection, once.
    pub(crate) async fn exchange(
        &self,
        mut lease: Lease,
        request: Request<Full<Bytes>>,
        reused: bool,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        let request = self.form(request);
        let resend = reused.then(|| clone_request(&request));
        match lease.sender.send(request).await {
            Ok(response) => Ok((response, lease)),
            Err(e) if e.is_canceled() && resend.is_some() => {
                let mut lease = self.connect(lease._slot.take()).await?;
                let response = lease
                    .sender
                    .send(resend.expect("checked"))
                    .await
                    .map_err(PoolError::Exchange)?;
                Ok((response, lease))
            }
            Err(e) => Err(PoolError::Exchange(e)),
        }
    }

    /// The request as the connection's protocol wants it: HTTP/1.1 in origin form with a Host
    /// header, h2c with the absolute URL (its `:authority`).
    fn form(&self, mut request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
        if !self.http2 {
            if let Ok(host) = http::HeaderValue::from_str(&self.authority) {
                request
                    .headers_mut()
                    .entry(http::header::HOST)
                    .or_insert(host);
            }
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            if let Ok(origin) = path.parse() {
                *request.uri_mut() = origin;
            }
        }
        request
    }

    /// Returns a connection whose exchange completed, to be reused while the app keeps it.
    pub(crate) fn give_back(&self, lease: Lease) {
        if let Sender::Http1(sender) = lease.sender {
            if !sender.is_closed() {
                self.idle.lock().push((sender, Instant::now()));
            }
        }
    }

    async fn connect(&self, slot: Option<OwnedSemaphorePermit>) -> Result<Lease, PoolError> {
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
                .await
                .map_err(|_| {
                    PoolError::Connect(format!(
                        "connecting to {} took longer than {:?}",
                        self.authority, self.connect_timeout
                    ))
                })?
                .map_err(|e| PoolError::Connect(connect_error(&self.authority, &e)))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let sender = if self.http2 {
            let (sender, connection) =
                http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| {
                        PoolError::Connect(format!("h2c handshake with {}: {e}", self.authority))
                    })?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(|e| {
                PoolError::Connect(format!("handshake with {}: {e}", self.authority))
            })?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(Lease {
            sender,
            _slot: slot,
        })
    }
}

/// A hyper error with its causes, which say what actually happened (reset, closed early).
fn describe(e: &hyper::Error) -> String {
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

fn connect_error(authority: &str, e: &io::Error) -> String {
    format!("connecting to {authority}: {e}")
}

/// A copy of a request whose body is in memory, for the one resend.
fn clone_request(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::builder()
        .method(request.method().clone())
        .uri(request.uri().clone())
        .version(request.version());
    if let Some(headers) = copy.headers_mut() {
        *headers = request.headers().clone();
    }
    copy.body(request.body().clone())
        .expect("a copy of a valid request is valid")
}
