//! A TCP proxy a test can cut: the way to break one client's connection to Redis, RabbitMQ or
//! a Kafka broker without stopping the server every other test uses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running proxy to one target, stopped (every connection cut) when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    links: Arc<Links>,
    accept: AbortHandle,
}

/// The connections through the proxy and whether new ones go through.
struct Links {
    allowed: AtomicBool,
    open: Mutex<Vec<AbortHandle>>,
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
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.links.cut();
    }
}
