//! `outrigger dlq` as an operator runs it, and an app that fails until it is fixed: what
//! every dead-letter test, whatever the broker, starts from.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use super::{Policy, Reply, TestApp};

/// `outrigger dlq` with a policy file of its own.
pub struct Dlq {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Dlq {
    /// Writes `policy` for the commands to read.
    pub fn new(policy: &Policy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("policy.toml");
        std::fs::write(&config, policy.text()).unwrap();
        Self { _dir: dir, config }
    }

    /// `outrigger dlq ARGS --config FILE`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_outrigger"));
        c.arg("dlq")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("OUTRIGGER_CONFIG")
            .stdin(Stdio::null());
        c
    }

    /// Runs to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("outrigger runs")
    }

    /// Starts in the background, output discarded.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("outrigger starts")
    }

    /// Runs, expects success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dlq {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `list --json` with these filters: one object per record.
    pub fn list(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["list", "--json"];
        args.extend_from_slice(filters);
        self.ok(&args)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The keys of the records these filters select.
    pub fn keys(&self, filters: &[&str]) -> BTreeSet<String> {
        self.list(filters)
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// An app that answers `fail(key)` until fixed, then 200.
pub async fn app_until_fixed(fail: fn(&str) -> Option<Reply>) -> (TestApp, Arc<AtomicBool>) {
    let fixed = Arc::new(AtomicBool::new(false));
    let flag = fixed.clone();
    let app = TestApp::start(move |key, _| match fail(key) {
        Some(reply) if !flag.load(Ordering::SeqCst) => reply,
        _ => Reply::status(200),
    })
    .await;
    (app, fixed)
}
