//! Connections to the app: at most `max_connections`, kept alive and reused where the app
//! allows it, each made within its own connect timeout.
//!
//! Connecting is timed apart from the exchange, so an app whose listen backlog makes connects
//! wait is not mistaken for a slow handler, and a connect that fails is known to have reached
//! nothing (the breaker counts it against the app, not the message). A request the app never
//! took in (a kept-alive connection it closed as idle, a reset from a restart's listen backlog)
//! goes out again on a new connection instead of spending an attempt.

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
    /// once the body is read. A connection that went away before answering in a way that says
    /// the app never took the request in (see [`unread`]) gets it again on a new connection,
    /// once.
    pub(crate) async fn exchange(
        &self,
        mut lease: Lease,
        request: Request<Full<Bytes>>,
        reused: bool,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        let request = self.form(request);
        let resend = clone_request(&request);
        match lease.sender.send(request).await {
            Ok(response) => Ok((response, lease)),
            Err(e) if unread(&e, reused) => {
                let mut lease = self.connect(lease._slot.take()).await?;
                let response = lease
                    .sender
                    .send(resend)
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

/// Whether a connection went away before answering in a way that says the app never took the
/// request in, so sending it again on a new connection spends no attempt and applies nothing
/// twice:
/// - the connection was gone before the request was handed to it (its channel closed), the
///   request was cancelled before it was written, or its write failed (broken pipe);
/// - the connection was reset: a socket closed with our request unread in it sends a reset,
///   as a restarting app does for the connections still in its listen backlog;
/// - a kept-alive (`reused`) connection closed cleanly with no answer: the app closed it as
///   idle while the request was on its way, the keep-alive race of RFC 9112 §9.3.1.
///
/// A new connection closed cleanly with no answer is different: the app read the request and
/// went away (a crash in the handler), and that is the attempt's failure.
fn unread(e: &hyper::Error, reused: bool) -> bool {
    use std::error::Error as _;
    if e.is_closed() || e.is_canceled() || (reused && e.is_incomplete_message()) {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            );
        }
        source = s.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// Reads one small request (it fits one read) and returns it.
    async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        buf.truncate(n);
        buf
    }

    fn request(body: &'static str) -> Request<Full<Bytes>> {
        Request::post("http://app/")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    /// A listener for the test's app, and a pool of one HTTP/1.1 connection to it.
    async fn app_and_pool() -> (TcpListener, Pool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        (
            listener,
            Pool::new(authority, false, Duration::from_secs(1), 1),
        )
    }

    async fn round_trip(pool: &Pool, body: &'static str) -> Result<(), PoolError> {
        use http_body_util::BodyExt as _;
        let (lease, reused) = pool.checkout().await?;
        let (response, lease) = pool.exchange(lease, request(body), reused).await?;
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        pool.give_back(lease);
        Ok(())
    }

    /// The app reads the second request on a kept-alive connection and closes it unanswered,
    /// as a restart's graceful shutdown does: the request goes out again on a new connection.
    #[tokio::test]
    async fn a_kept_alive_connection_closed_before_answering_is_retried_on_a_new_one() {
        let (listener, pool) = app_and_pool().await;
        let app = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (mut first, _) = listener.accept().await.unwrap();
            seen.push(read_request(&mut first).await);
            first.write_all(OK).await.unwrap();
            seen.push(read_request(&mut first).await);
            drop(first);
            let (mut second, _) = listener.accept().await.unwrap();
            seen.push(read_request(&mut second).await);
            second.write_all(OK).await.unwrap();
            seen
        });
        round_trip(&pool, "one").await.unwrap();
        round_trip(&pool, "two").await.unwrap();
        let seen = app.await.unwrap();
        let bodies: Vec<bool> = seen
            .iter()
            .zip(["one", "two", "two"])
            .map(|(r, body)| r.ends_with(body.as_bytes()))
            .collect();
        assert_eq!(bodies, [true, true, true], "{seen:?}");
    }

    /// A restarting app resets the connections left in its listen backlog, our request unread
    /// in them: the request goes out again on a new connection.
    #[tokio::test]
    async fn a_connection_reset_with_the_request_unread_is_retried_on_a_new_one() {
        let (listener, pool) = app_and_pool().await;
        let app = tokio::spawn(async move {
            let (first, _) = listener.accept().await.unwrap();
            // Closed with the request in its buffer, unread: the kernel answers with a reset.
            first.readable().await.unwrap();
            drop(first);
            let (mut second, _) = listener.accept().await.unwrap();
            let seen = read_request(&mut second).await;
            second.write_all(OK).await.unwrap();
            seen
        });
        round_trip(&pool, "one").await.unwrap();
        let seen = app.await.unwrap();
        assert!(seen.ends_with(b"one"), "{seen:?}");
    }

    /// A new connection closed before answering once the app read the request (a crash in its
    /// handler) is the attempt's failure: it is not sent again.
    #[tokio::test]
    async fn a_new_connection_closed_before_answering_is_an_error() {
        let (listener, pool) = app_and_pool().await;
        let app = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            read_request(&mut first).await;
            drop(first);
            // Another connection within a second would be a resend.
            tokio::time::timeout(Duration::from_secs(1), listener.accept())
                .await
                .is_ok()
        });
        let err = round_trip(&pool, "one").await.unwrap_err();
        assert!(matches!(err, PoolError::Exchange(_)), "{err}");
        assert!(!app.await.unwrap(), "the request was sent again");
    }
}
