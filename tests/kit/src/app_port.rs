//! An app that can go away and come back on the port the sidecar points at, the way a service
//! restarts in a rolling deploy: it stops accepting (connections are refused), answers what it
//! was already handling, closes its idle keep-alive connections, and later listens again on the
//! same port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a close waits for the requests under way to be answered before it drops them.
pub const DRAIN: Duration = Duration::from_secs(10);
/// How long an open keeps trying to bind the port again.
const REBIND: Duration = Duration::from_secs(10);

/// An axum app served on a fixed loopback port that the test can close and open again.
pub struct AppPort {
    /// Where it listens while open.
    pub addr: SocketAddr,
    router: Router,
    serving: Option<Serving>,
}

struct Serving {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl AppPort {
    /// Serves `router` on a free loopback port.
    pub async fn serve(router: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut port = Self {
            addr,
            router,
            serving: None,
        };
        port.serve_on(listener);
        port
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Whether it is listening.
    pub fn is_open(&self) -> bool {
        self.serving.is_some()
    }

    /// Goes away: the listening socket is closed at once (a connect is refused from then on),
    /// requests under way are answered (for at most [`DRAIN`]), then every connection is
    /// closed. Nothing is cut in the middle of an answer, so what the app answered is what
    /// the client got.
    pub async fn close(&mut self) {
        let Some(serving) = self.serving.take() else {
            return;
        };
        let _ = serving.stop.send(());
        let abort = serving.task.abort_handle();
        if tokio::time::timeout(DRAIN, serving.task).await.is_err() {
            abort.abort();
        }
    }

    /// Comes back on the same port.
    pub async fn open(&mut self) {
        if self.is_open() {
            return;
        }
        let started = Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // The port was ours a moment ago; a socket of the old listener may linger.
                Err(_) if started.elapsed() < REBIND => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("binding the app again on {}: {e}", self.addr),
            }
        };
        self.serve_on(listener);
    }

    fn serve_on(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let router = self.router.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.serving = Some(Serving { stop, task });
    }
}

impl Drop for AppPort {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.task.abort();
        }
    }
}
