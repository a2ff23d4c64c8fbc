//! `outrigger dlq` as an operator runs it, and an app that fails until it is fixed: what
//! every dead-letter test, whatever the broker, starts from.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{wait_until, Policy, Reply, TestApp, OUTRIGGER};

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
        let mut c = Command::new(OUTRIGGER);
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
        set(record_keys(&self.list(filters)))
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

/// An app that refuses keys starting with `a` with 400 "amount must be positive" and every
/// other key with 422 "unknown product": two reasons and two statuses for filters to tell apart.
pub async fn app_refusing_a_and_b() -> TestApp {
    TestApp::start(|key, _| {
        if key.starts_with('a') {
            Reply::status(400).body("amount must be positive")
        } else {
            Reply::status(422).body("unknown product")
        }
    })
    .await
}

/// The keys as a set.
pub fn set(keys: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    keys.into_iter().collect()
}

/// `<prefix>-0` to `<prefix>-<n - 1>`.
pub fn keys(prefix: &str, n: usize) -> BTreeSet<String> {
    set((0..n).map(|i| format!("{prefix}-{i}")))
}

/// The keys of listed records, in order.
pub fn record_keys(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of listed records, in order.
pub fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// How many lines of a command's output start with `prefix` (`would purge`, ...).
pub fn lines_starting(out: &str, prefix: &str) -> usize {
    out.lines().filter(|l| l.starts_with(prefix)).count()
}

/// Waits until the app accepted `n` keys starting with `prefix`, then checks that the requests
/// after the first `before` are exactly those: each key once, as a first attempt.
pub async fn wait_resubmitted_once(
    app: &TestApp,
    before: usize,
    prefix: &str,
    n: usize,
    limit: Duration,
) {
    wait_until(
        &format!("{n} resubmitted keys delivered"),
        limit,
        || async {
            app.successes()
                .keys()
                .filter(|k| k.starts_with(prefix))
                .count()
                == n
        },
    )
    .await;
    let after: Vec<_> = app.hits().into_iter().skip(before).collect();
    assert_eq!(after.len(), n, "each resubmitted key reached the app once");
    assert!(
        after.iter().all(|h| h.attempt == 1 && h.status == 200),
        "attempts start over at 1: {:?}",
        after.iter().map(|h| h.attempt).collect::<Vec<_>>()
    );
}

/// Resubmits the 100 pending records to `to` at 20 a second, by `tester`, and checks that all
/// went and that the rate held them back.
pub fn resubmit_100_paced(cli: &Dlq, to: &str) {
    let started = Instant::now();
    let out = cli.ok(&["resubmit", "--to", to, "--rate", "20", "--by", "tester"]);
    let took = started.elapsed();
    assert!(out.contains("Resubmitted 100 of 100"), "{out}");
    assert!(
        took >= Duration::from_millis(4500),
        "100 at 20/s took only {took:?}"
    );
}

/// Starts `resubmit --rate 20` of 100 records and SIGKILLs it once the app accepted 40 of
/// them, before the end.
pub async fn kill_a_resubmit_halfway(cli: &Dlq, app: &TestApp, limit: Duration) {
    let mut first = cli.spawn(&["resubmit", "--rate", "20"]);
    wait_until("about half delivered", limit, || async {
        app.successes().len() >= 40
    })
    .await;
    first.kill().unwrap(); // SIGKILL: no cleanup, no goodbye to the broker
    let _ = first.wait();
    assert!(app.successes().len() < 100, "killed before the end");
}
