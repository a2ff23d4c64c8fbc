//! The `outrigger` release binary as a child process: policy, metrics, peak RSS, SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::metrics::Scrape;

/// What the generated policy says.
pub struct PolicySpec<'a> {
    /// The broker and what is consumed there.
    pub source: SourceSpec<'a>,
    /// The stub app.
    pub app_url: &'a str,
    /// Redis URL.
    pub redis_url: &'a str,
    /// Dedup namespace, unique per run.
    pub namespace: &'a str,
    /// `backpressure.max_in_flight`, which is also the amqp prefetch.
    pub prefetch: u16,
    /// The admin listener.
    pub admin: SocketAddr,
    /// `[delivery.batch]`: events per batch request, when batching.
    pub batch: Option<u16>,
}

/// The `[source]` table, and for Kafka what depends on it.
pub enum SourceSpec<'a> {
    /// `[source.amqp]`: one queue.
    Amqp {
        /// RabbitMQ URL.
        url: &'a str,
        /// The queue consumed.
        queue: &'a str,
    },
    /// `[source.kafka]`: one topic, in its own consumer group.
    Kafka {
        /// `bootstrap_servers`.
        bootstrap: &'a str,
        /// The topic consumed.
        topic: &'a str,
        /// The consumer group.
        group: &'a str,
        /// `ordering.mode`.
        ordering: Ordering,
        /// `backpressure.max_in_flight_per_partition`.
        per_partition: u16,
        /// `[source.kafka.properties]`.
        properties: &'a [(String, String)],
    },
    /// `[source.nats]`: one stream, through a durable consumer the sidecar creates.
    Nats {
        /// The server.
        url: &'a str,
        /// The stream consumed.
        stream: &'a str,
        /// The durable consumer.
        consumer: &'a str,
        /// `ordering.mode`.
        ordering: Ordering,
    },
    /// `[source.redis_streams]`: one stream, in its own consumer group.
    RedisStreams {
        /// The Redis URL.
        url: &'a str,
        /// The stream consumed.
        stream: &'a str,
        /// The consumer group.
        group: &'a str,
    },
}

/// The ordering modes the sidecar is benched under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// One message at a time per partition (or queue, or stream).
    Partition,
    /// One message at a time per key.
    Key,
    /// No order kept: as many messages at once as the in-flight limit lets through.
    None,
}

impl Ordering {
    /// The `ordering.mode` value, also the report's column.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::Partition => "partition",
            Ordering::Key => "key",
            Ordering::None => "none",
        }
    }
}

impl PolicySpec<'_> {
    /// The `ordering.mode` the sidecar runs under: the policy's, else the broker's default.
    pub fn ordering(&self) -> Ordering {
        match &self.source {
            SourceSpec::Amqp { .. } => Ordering::None,
            SourceSpec::RedisStreams { .. } => Ordering::Key,
            SourceSpec::Kafka { ordering, .. } | SourceSpec::Nats { ordering, .. } => *ordering,
        }
    }

    /// The policy TOML.
    pub fn toml(&self) -> String {
        let s = |v: &str| serde_json::to_string(v).expect("a string serializes");
        let (source, ordering, per_partition) = match &self.source {
            SourceSpec::Amqp { url, queue } => (
                format!("[source.amqp]\nurl = {}\nqueue = {}\n", s(url), s(queue)),
                String::new(),
                String::new(),
            ),
            SourceSpec::Nats {
                url,
                stream,
                consumer,
                ordering,
            } => (
                format!(
                    "[source.nats]\nservers = [{}]\nstream = {}\nconsumer = {}\n",
                    s(url),
                    s(stream),
                    s(consumer)
                ),
                format!("[ordering]\nmode = {}\n\n", s(ordering.as_str())),
                String::new(),
            ),
            SourceSpec::RedisStreams { url, stream, group } => (
                format!(
                    "[source.redis_streams]\nurl = {}\nstreams = [{}]\ngroup = {}\n",
                    s(url),
                    s(stream),
                    s(group)
                ),
                String::new(),
                String::new(),
            ),
            SourceSpec::Kafka {
                bootstrap,
                topic,
                group,
                ordering,
                per_partition,
                properties,
            } => (
                format!(
                    "[source.kafka]\nbootstrap_servers = {}\ntopics = [{}]\ngroup_id = {}\n\n\
                     [source.kafka.properties]\n{}",
                    s(bootstrap),
                    s(topic),
                    s(group),
                    properties
                        .iter()
                        .map(|(key, value)| format!("{} = {}\n", s(key), s(value)))
                        .collect::<String>()
                ),
                format!("[ordering]\nmode = {}\n\n", s(ordering.as_str())),
                format!("max_in_flight_per_partition = {per_partition}\n"),
            ),
        };
        let batch = match self.batch {
            Some(events) => format!("[delivery.batch]\nmax_events = {events}\n\n"),
            None => String::new(),
        };
        format!(
            "{source}\n{ordering}\
             [delivery]\nurl = {}\ntimeout = \"10s\"\n\n{batch}\
             [dedup]\nkey = \"{{message_id}}\"\nstore = \"redis\"\n\n\
             [dedup.redis]\nurl = {}\nnamespace = {}\n\n\
             [backpressure]\nmax_in_flight = {}\n{per_partition}\n\
             [admin]\nlisten = {}\n\n\
             [log]\nlevel = \"warn\"\n",
            s(self.app_url),
            s(self.redis_url),
            s(self.namespace),
            self.prefetch,
            s(&self.admin.to_string()),
        )
    }
}

/// The release `outrigger` binary beside this one (both live in target/release).
pub fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let dir = exe.parent().context("the bench binary has a directory")?;
    let path = dir.join(format!("outrigger{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "{} not found: build the sidecar first with `cargo build --release -p outrigger`",
            path.display()
        );
    }
    Ok(path)
}

/// A free loopback port (bound, then released for the sidecar to take).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running sidecar.
pub struct Sidecar {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Runs `outrigger run --config <policy>`, its stderr in a scratch file.
    pub fn start(binary: &Path, spec: &PolicySpec<'_>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("policy.toml");
        std::fs::write(&config, spec.toml())?;
        let log = dir.path().join("stderr.log");
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            admin: spec.admin,
            log,
            _dir: dir,
        })
    }

    /// An error with the sidecar's log when it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the sidecar exited early ({status}):\n{}", self.logs());
        }
        Ok(())
    }

    /// What the sidecar wrote to stderr.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric summed over its label sets; 0 while the admin listener is not up.
    pub async fn metric(&self, name: &str) -> f64 {
        match self.scrape().await {
            Ok(scrape) => scrape.sum(name, &[]),
            Err(_) => 0.0,
        }
    }

    /// Everything `/metrics` shows now.
    pub async fn scrape(&self) -> anyhow::Result<Scrape> {
        let text = tokio::time::timeout(Duration::from_secs(5), get(self.admin, "/metrics"))
            .await
            .context("/metrics did not answer within 5 s")??;
        Ok(Scrape::new(text))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the sidecar has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("VmHWM in /proc/<pid>/status")?;
        Ok(kib * 1024)
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after `grace`).
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await?;
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) if status.as_ref().is_ok_and(|s| s.success()) => Ok(()),
            Ok(status) => bail!("the sidecar exited with {status:?}:\n{}", self.logs()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the sidecar did not exit within {grace:?} of SIGTERM")
            }
        }
    }
}

/// A plain HTTP/1.0 GET: the body.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_has_the_expected_sections() {
        let spec = PolicySpec {
            source: SourceSpec::Amqp {
                url: "amqp://guest:guest@127.0.0.1:5672/%2f",
                queue: "q",
            },
            app_url: "http://127.0.0.1:1/",
            redis_url: "redis://127.0.0.1:6379",
            namespace: "ns",
            prefetch: 64,
            admin: "127.0.0.1:9".parse().unwrap(),
            batch: None,
        };
        let toml = spec.toml();
        assert!(!toml.contains("[delivery.batch]"));
        assert!(toml.contains("[source.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\""));
        assert!(toml.contains("key = \"{message_id}\""));
        assert!(toml.contains("max_in_flight = 64\n\n"));
        assert!(toml.contains("listen = \"127.0.0.1:9\""));
        assert!(!toml.contains("[ordering]"));
    }

    #[test]
    fn a_kafka_policy_names_its_ordering_and_partition_limit() {
        let spec = PolicySpec {
            source: SourceSpec::Kafka {
                bootstrap: "127.0.0.1:9092",
                topic: "t",
                group: "g",
                ordering: Ordering::Key,
                per_partition: 16,
                properties: &[("fetch.wait.max.ms".into(), "10".into())],
            },
            app_url: "http://127.0.0.1:1/",
            redis_url: "redis://127.0.0.1:6379",
            namespace: "ns",
            prefetch: 64,
            admin: "127.0.0.1:9".parse().unwrap(),
            batch: Some(32),
        };
        let toml = spec.toml();
        assert!(toml.contains("[delivery.batch]\nmax_events = 32\n"));
        assert!(toml.contains(
            "[source.kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n"
        ));
        assert!(toml.contains("[source.kafka.properties]\n\"fetch.wait.max.ms\" = \"10\"\n"));
        assert!(toml.contains("[ordering]\nmode = \"key\"\n"));
        assert!(toml.contains("max_in_flight = 64\nmax_in_flight_per_partition = 16\n"));
    }
}
