//! A `redis-server` process of the test's own: on a free loopback port, its data in a scratch
//! directory, every write fsynced to the append-only file before it is acknowledged. A test can
//! SIGKILL it and bring it back on the same port with everything it had acknowledged, which a
//! shared Redis (the machine's 6379, which other tests use) must never be put through.
//!
//! [`RedisServer::start_tls`] starts one that speaks only TLS, and [`RedisServer::start_with`]
//! one with more settings (an ACL user, cluster mode).
//!
//! `OUTRIGGER_TEST_REDIS_SERVER` names the binary when it is not `redis-server` on PATH.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::names::free_port;
use crate::tls::Certificates;

/// The TLS side of a server: its certificate, and the CA its clients' certificates must have.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA of client certificates.
    pub ca: PathBuf,
    /// `tls-auth-clients yes`: a client without a certificate from `ca` is refused.
    pub require_client_cert: bool,
}

impl ServerTls {
    /// The server side of `certificates`.
    pub fn from(certificates: &Certificates, require_client_cert: bool) -> Self {
        Self {
            cert: certificates.server_cert.clone(),
            key: certificates.server_key.clone(),
            ca: certificates.ca.clone(),
            require_client_cert,
        }
    }
}

/// Upper bound for a start, a restart (replaying the append-only file included) or a stop.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A Redis server the test owns; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Where it listens (127.0.0.1 and a port of its own).
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    binary: String,
    tls: Option<ServerTls>,
    args: Vec<String>,
    /// Starts so far: a TLS server is ready once its log says so this many times.
    spawns: usize,
}

impl RedisServer {
    /// Starts a server with `--appendonly yes --appendfsync always` and waits until it
    /// answers `PING`. Fails the test, saying what is missing, when the binary is not there.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server as [`start`](Self::start) does, with more `args` (`--user`, ...).
    pub async fn start_with(args: &[&str]) -> Self {
        Self::launch(None, args).await
    }

    /// Starts a server that speaks only TLS on its port (`--port 0 --tls-port PORT`), with
    /// more `args`, and waits until its log says it is ready.
    pub async fn start_tls(tls: ServerTls, args: &[&str]) -> Self {
        Self::launch(Some(tls), args).await
    }

    async fn launch(tls: Option<ServerTls>, args: &[&str]) -> Self {
        let binary =
            std::env::var("OUTRIGGER_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut server = Self {
            child: None,
            addr: free_port(),
            dir: tempfile::tempdir().expect("a scratch directory for Redis"),
            binary,
            tls,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            spawns: 0,
        };
        server.spawn().await;
        server
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server), for a policy's
    /// `dedup.redis.url`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The server's scratch directory (its data, its log, a `nodes.conf`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
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
        let port = self.addr.port().to_string();
        let mut command = Command::new(&self.binary);
        command.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => {
                command.args(["--port", &port]);
            }
            Some(tls) => {
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args([
                        "--tls-auth-clients",
                        if tls.require_client_cert { "yes" } else { "no" },
                    ]);
            }
        }
        let child = command
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            // Only the append-only file: an RDB snapshot in between would add nothing.
            .args(["--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.args)
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
        self.spawns += 1;
        self.wait_until_ready().await;
    }

    /// Polls with `PING` until `+PONG` (a server replaying its file answers `-LOADING`); a TLS
    /// server, which a plain `PING` cannot reach, until its log says it is ready once more.
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
            let ready = if self.tls.is_some() {
                self.log().matches("Ready to accept connections").count() >= self.spawns
            } else {
                let addr = self.addr;
                tokio::task::spawn_blocking(move || ping(addr))
                    .await
                    .unwrap_or(false)
            };
            if ready {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "redis-server on {} was not ready within {DEADLINE:?}:\n{}",
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
