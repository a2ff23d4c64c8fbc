//! A `redis-server` process of the test's own: on a free loopback port, its data in a scratch
//! directory, every write fsynced to the append-only file before it is acknowledged. A test can
//! SIGKILL it and bring it back on the same port with everything it had acknowledged, which a
//! shared Redis (the machine's 6379, which other tests use) must never be put through.
//!
//! `OUTRIGGER_TEST_REDIS_SERVER` names the binary when it is not `redis-server` on PATH.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::names::free_port;

/// Upper bound for a start, a restart (replaying the append-only file included) or a stop.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A Redis server the test owns; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Where it listens (127.0.0.1 and a port of its own).
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    binary: String,
}

impl RedisServer {
    /// Starts a server with `--appendonly yes --appendfsync always` and waits until it
    /// answers `PING`. Fails the test, saying what is missing, when the binary is not there.
    pub async fn start() -> Self {
        let binary =
            std::env::var("OUTRIGGER_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut server = Self {
            child: None,
            addr: free_port(),
            dir: tempfile::tempdir().expect("a scratch directory for Redis"),
            binary,
        };
        server.spawn().await;
        server
    }

    /// `redis://127.0.0.1:PORT`, for a policy's `dedup.redis.url`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Whether the process is running (started and not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and reap: no shutdown save, no goodbye to clients. What it acknowledged is in
    /// the append-only file.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory, and waits until it has loaded its
    /// append-only file and answers `PING`.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.log")
    }

    async fn spawn(&mut self) {
        let dir: &Path = self.dir.path();
        let child = Command::new(&self.binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            // Only the append-only file: an RDB snapshot in between would add nothing.
            .args(["--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): these tests need redis-server on PATH (or \
                     OUTRIGGER_TEST_REDIS_SERVER=/path/to/redis-server), e.g. apt-get install \
                     redis-server",
                    self.binary
                )
            });
        self.child = Some(child);
        self.wait_until_ready().await;
    }

    /// Polls with `PING` until `+PONG` (a server replaying its file answers `-LOADING`).
    async fn wait_until_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "redis-server on {} exited at start ({status}):\n{}",
                    self.addr,
                    self.log()
                );
            }
            let addr = self.addr;
            let pong = tokio::task::spawn_blocking(move || ping(addr))
                .await
                .unwrap_or(false);
            if pong {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "redis-server on {} did not answer PING within {DEADLINE:?}:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One `PING` on a fresh connection: true when the answer is `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.is_running() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- redis-server {} log (last lines) ---", self.addr);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}
