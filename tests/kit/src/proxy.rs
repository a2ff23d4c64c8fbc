//! A TCP proxy a test can cut: the way to break one client's connection to Redis, RabbitMQ or
//! a Kafka broker without stopping the server every other test uses; or stall, so that the
//! client hears nothing from a server it is still connected to.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running proxy to one target, stopped (every connection cut) when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    links: Arc<Links>,
    accept: AbortHandle,
}

/// The connections through the proxy, whether new ones go through, and whether what the
/// server sends is held back.
struct Links {
    allowed: AtomicBool,
    open: Mutex<Vec<AbortHandle>>,
    stall: Stall,
}

/// Held back: reads from the server wait, and the tasks waiting are woken on resume. Nothing
/// is lost: what the server sent meanwhile stays in the sockets' buffers.
#[derive(Default)]
struct Stall {
    on: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Stall {
    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            for waker in self.waiting.lock().drain(..) {
                waker.wake();
            }
        }
    }
}

/// The proxy's side of a connection to the server: reads wait while stalled.
struct FromServer {
    stream: TcpStream,
    links: Arc<Links>,
}

impl AsyncRead for FromServer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let stall = &this.links.stall;
        if stall.on.load(Ordering::SeqCst) {
            let mut waiting = stall.waiting.lock();
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            drop(waiting);
            // Resumed between the check and the push: the waker may have been missed.
            if stall.on.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FromServer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Links {
    fn cut(&self) {
        for link in self.open.lock().drain(..) {
            link.abort();
        }
    }
}

impl Proxy {
    /// Proxies a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), target).await
    }

    /// Proxies `listen` to `target`: to bring a server "back" on the port a client already
    /// points at.
    pub async fn start_at(listen: SocketAddr, target: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("binding the proxy on {listen}: {e}"));
        let addr = listener.local_addr().unwrap();
        let links = Arc::new(Links {
            allowed: AtomicBool::new(true),
            open: Mutex::default(),
            stall: Stall::default(),
        });
        let shared = Arc::clone(&links);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !shared.allowed.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                // Either side closing ends the pair; aborting the task drops both sockets,
                // which the client and the server both see as the connection breaking.
                let links = Arc::clone(&shared);
                let link = tokio::spawn(async move {
                    if let Ok(stream) = TcpStream::connect(target).await {
                        let mut server = FromServer { stream, links };
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = shared.open.lock();
                open.retain(|l| !l.is_finished());
                open.push(link.abort_handle());
            }
        });
        Self {
            addr,
            links,
            accept: accept.abort_handle(),
        }
    }

    /// Breaks every connection open through the proxy; new ones still go through.
    pub fn cut(&self) {
        self.links.cut();
    }

    /// Breaks every open connection and closes each new one at once: the server is "down".
    pub fn refuse(&self) {
        self.links.allowed.store(false, Ordering::SeqCst);
        self.links.cut();
    }

    /// Lets new connections through again: the server is "back".
    pub fn allow(&self) {
        self.links.allowed.store(true, Ordering::SeqCst);
    }

    /// Holds back what the server sends, on every connection open or new, until
    /// [`resume`](Self::resume): the connections stay open and the client's own traffic still
    /// reaches the server, but the client hears nothing (a server that went silent, a network
    /// that drops one direction).
    pub fn stall(&self) {
        self.links.stall.set(true);
    }

    /// Passes on what the server sent while stalled, and everything after.
    pub fn resume(&self) {
        self.links.stall.set(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.links.cut();
    }
}
