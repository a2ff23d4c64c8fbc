//! A tansu broker of the bench's own: in memory, on a free loopback port, stopped at the end.
//!
//! The same launch as the Kafka tests' (`adapters/kafka/tests/support/tansu.rs`), which the
//! bench cannot depend on; see ../shared/KAFKA.md for installing tansu.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::sidecar;

/// How long tansu may take to answer its first metadata request.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// A running tansu broker.
pub struct Tansu {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub bootstrap: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts `binary` and waits until it answers metadata requests.
    pub async fn start(binary: &str) -> anyhow::Result<Self> {
        let port = sidecar::free_port()?.port();
        let url = format!("tcp://127.0.0.1:{port}");
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting the Kafka-protocol broker `{binary}`; install it with \
                     `cargo install tansu --version 0.6.0 --features dynostore --locked`, \
                     or pass --tansu PATH or --kafka-bootstrap HOST:PORT"
                )
            })?;
        let mut tansu = Self {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        tansu.wait_until_ready().await?;
        Ok(tansu)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()?;
        let client = std::sync::Arc::new(client);
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("tansu exited at start ({status}):\n{}", self.logs());
            }
            let probe = client.clone();
            let answered = tokio::task::spawn_blocking(move || {
                probe.fetch_metadata(None, Duration::from_secs(1)).is_ok()
            })
            .await?;
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "tansu did not answer metadata requests within {READY_LIMIT:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What tansu wrote.
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the broker (its storage is in memory: nothing to keep) and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
