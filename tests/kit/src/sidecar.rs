//! The `outrigger` binary as a child process, the way users run it.
//!
//! Only the app's own tests know where cargo built the binary (`CARGO_BIN_EXE_outrigger`), so
//! they pass its path in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::names::free_port;
use crate::Policy;

/// A running sidecar.
pub struct Sidecar {
    child: Child,
    /// The admin listener.
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Sidecar {
    /// Starts `binary run` with this policy (its admin address is set here).
    pub fn start(binary: impl AsRef<Path>, policy: Policy) -> Self {
        Self::start_listening(binary, policy, free_port())
    }

    /// Starts `binary run` with its admin listener on `listen`, which may be beyond loopback
    /// (`0.0.0.0:PORT`); [`Sidecar::admin`] is then that port on loopback.
    pub fn start_listening(binary: impl AsRef<Path>, policy: Policy, listen: SocketAddr) -> Self {
        let admin = SocketAddr::from(([127, 0, 0, 1], listen.port()));
        let policy = policy.set("admin.listen", listen.to_string());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("policy.toml");
        std::fs::write(&config, policy.text()).unwrap();
        let log = dir.path().join("stderr.log");
        let child = Command::new(binary.as_ref())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("outrigger starts");
        Self {
            child,
            admin,
            dir,
            log,
        }
    }

    /// The process id, for signals the fixture has no method for.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP (`kill -HUP <pid>` through the `kill` command: no unsafe code in the
    /// tests).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Writes `policy` as the sidecar's file, with the admin address it runs with, for a
    /// reload to read.
    pub fn rewrite_policy(&self, policy: Policy) {
        let text = policy.set("admin.listen", self.admin.to_string()).text();
        std::fs::write(self.dir().join("policy.toml"), text).unwrap();
    }

    /// What the sidecar logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.child.id(), libc::SIGTERM);
    }

    /// Stops with SIGTERM and checks that it exits 0 within 30 s.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(30));
    }

    /// Stops with SIGTERM and checks that it exits 0 within `limit`.
    pub fn stop_within(mut self, limit: Duration) {
        self.sigterm();
        let status = self.wait_exit(limit);
        assert!(
            status.is_some_and(|s| s.success()),
            "sidecar exits 0 on SIGTERM: {status:?}\n{}",
            self.logs()
        );
    }

    /// Kills with SIGKILL and reaps.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET on the admin listener: (status, body). `None` while it is not listening.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.admin, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    }

    /// A metric's value, summed over the label sets that contain `labels` (e.g. `outcome="duplicate"`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let Some((_, body)) = self.get("/metrics") else {
            return 0.0;
        };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Resident set size of the process now, KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The scratch directory (policy file, logs).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            eprintln!("--- sidecar log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: i32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}
