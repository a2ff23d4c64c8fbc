//! A tansu broker process of the test's own: in memory, on a free loopback port, killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::{Kafka, DEADLINE};

/// A running tansu broker.
pub struct Tansu {
    child: Child,
    pub kafka: Kafka,
    pub log: PathBuf,
}

impl Tansu {
    /// Starts a broker and waits until it answers metadata requests. Fails the test, saying
    /// how to get tansu, when the binary is missing: these tests must not pass without it.
    pub async fn start() -> Self {
        let binary = std::env::var("OUTRIGGER_TEST_TANSU").unwrap_or_else(|_| "tansu".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("outrigger-tansu-{port}.log"));
        let out = std::fs::File::create(&log).expect("creating the tansu log file");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
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
        let tansu = Self {
            child,
            kafka: Kafka {
                bootstrap: format!("127.0.0.1:{port}"),
            },
            log,
        };
        tansu.wait_until_ready().await;
        tansu
    }

    async fn wait_until_ready(&self) {
        let bootstrap = self.kafka.bootstrap.clone();
        let ready = tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .unwrap();
            let start = Instant::now();
            while start.elapsed() < DEADLINE {
                if client.fetch_metadata(None, Duration::from_secs(1)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
        .await
        .unwrap();
        assert!(
            ready,
            "tansu did not answer metadata requests in time; its log is {}",
            self.log.display()
        );
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
