//! A tansu broker process of the test's own: in memory, on a free loopback port, killed on
//! drop. `OUTRIGGER_TEST_TANSU` names the binary when it is not `tansu` on PATH.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::{Kafka, DEADLINE};
use crate::names::free_port;
use crate::proxy::Proxy;
use crate::wait::wait_until;

/// A running tansu broker.
pub struct Tansu {
    child: Child,
    /// How clients reach it: its own port, or the proxy's.
    pub kafka: Kafka,
    /// Its stdout and stderr; kept when the test fails.
    pub log: PathBuf,
    proxy: Option<Proxy>,
}

impl Tansu {
    /// Starts a broker and waits until it answers metadata requests. Fails the test, saying
    /// how to get tansu, when the binary is missing: these tests must not pass without it.
    pub async fn start() -> Self {
        let port = free_port().port();
        Self::spawn(port, port, None).await
    }

    /// Starts a broker that every client reaches through a [`Proxy`]: it advertises the
    /// proxy's address, so the bootstrap connection and every broker connection after it go
    /// through the proxy, and [`Tansu::proxy`] can cut them all.
    pub async fn behind_proxy() -> Self {
        let port = free_port().port();
        let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
        Self::spawn(port, proxy.addr.port(), Some(proxy)).await
    }

    /// The proxy every client goes through, when started [`behind_proxy`](Self::behind_proxy).
    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    async fn spawn(port: u16, advertised: u16, proxy: Option<Proxy>) -> Self {
        let binary = std::env::var("OUTRIGGER_TEST_TANSU").unwrap_or_else(|_| "tansu".into());
        let listener = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let log = std::env::temp_dir().join(format!("outrigger-tansu-{port}.log"));
        let out = std::fs::File::create(&log).expect("creating the tansu log file");
        let child = Command::new(&binary)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the Kafka-protocol broker `{binary}` ({e}). These tests need \
                     tansu on PATH (or OUTRIGGER_TEST_TANSU=/path/to/tansu): \
                     cargo install tansu --version 0.6.0 --features dynostore --locked"
                )
            });
        let bootstrap = advertised.trim_start_matches("tcp://").to_owned();
        let tansu = Self {
            child,
            kafka: Kafka { bootstrap },
            log,
            proxy,
        };
        tansu.wait_until_ready().await;
        tansu
    }

    async fn wait_until_ready(&self) {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.bootstrap)
            .create()
            .unwrap();
        let client = std::sync::Arc::new(client);
        let what = format!(
            "tansu to answer metadata requests (its log is {})",
            self.log.display()
        );
        wait_until(&what, DEADLINE, || {
            let client = client.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    client.fetch_metadata(None, Duration::from_secs(1)).is_ok()
                })
                .await
                .unwrap()
            }
        })
        .await;
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test keeps the broker's log to look at.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
