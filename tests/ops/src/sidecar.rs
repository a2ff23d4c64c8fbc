//! The real `outrigger` binary, its admin endpoints, and a stub app for it to deliver to.

use std::io::{BufRead, BufReader, Read, Write};

pub use crate::http::get;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `target/debug/outrigger`, next to this test's own `target/debug/deps/` executable
/// (`cargo nextest run --workspace` builds it first). `OUTRIGGER_BIN` overrides it.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("OUTRIGGER_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let bin = profile_dir.join("outrigger");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p outrigger` (`cargo nextest run --workspace` \
         builds it), or point OUTRIGGER_BIN at a built binary",
        bin.display()
    );
    bin
}

/// A port nothing listens on right now (bound on 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running `outrigger run`, killed (SIGKILL) when dropped.
pub struct Sidecar {
    child: Child,
    /// The admin listener.
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Sidecar {
    /// Starts `outrigger run --config policy` with these extra environment variables; its
    /// stderr goes to `log`.
    pub fn start(policy: &Path, admin: SocketAddr, env: &[(&str, &str)], log: &Path) -> Self {
        let stderr = std::fs::File::create(log).expect("a log file for the sidecar");
        let mut cmd = Command::new(binary());
        cmd.args(["run", "--config"])
            .arg(policy)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Self {
            child,
            admin,
            log: log.to_owned(),
        }
    }

    /// Waits until `GET /healthz` answers 200; panics with the sidecar's log if it exits.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        let admin = self.admin;
        crate::wait::until("the sidecar's /healthz", timeout, || {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("the sidecar exited ({status}):\n{}", self.log());
            }
            matches!(get(admin, "/healthz", None), Ok((200, _))).then_some(())
        });
    }

    /// What the sidecar logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a node failure or an OOM kill would: nothing is flushed or released.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An app that answers every request with 200 and counts the POSTs, on 127.0.0.1:0.
pub struct StubApp {
    /// Where it listens.
    pub addr: SocketAddr,
    posts: Arc<AtomicUsize>,
}

impl StubApp {
    /// Starts it on a thread of its own (one more per connection).
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub app");
        let addr = listener.local_addr().expect("its address");
        let posts = Arc::new(AtomicUsize::new(0));
        let counter = posts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || serve_ok(conn, &counter));
            }
        });
        Self { addr, posts }
    }

    /// POSTs answered so far.
    pub fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }
}

/// Answers each request of a keep-alive connection with an empty 200.
fn serve_ok(conn: TcpStream, posts: &AtomicUsize) {
    let mut writer = conn.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if request_line.starts_with("POST") {
            posts.fetch_add(1, Ordering::SeqCst);
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
