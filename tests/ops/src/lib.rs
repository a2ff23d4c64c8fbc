//! Support for the ops tests: the chart, the alert rules, the dashboard, the live sidecar's
//! metrics and the example app, each checked by the tool its users run.
//!
//! # Layout
//! - `tools`: finding helm, promtool, kubernetes-validate, python and psql, failing with how to
//!   install a missing one (`.ci/install-ops-tools`), never skipping;
//! - `chart`: rendering the chart (`helm template`) and reading the manifests it gives;
//! - `metrics`: the metric names `sidecar/app/src/metrics.rs` declares, read from its source;
//! - `sidecar`: the real `outrigger` binary and a stub app for it to deliver to;
//! - `http`: a minimal HTTP/1.1 client, and a proxy that swallows answers;
//! - `rabbit`: declaring, publishing to and counting RabbitMQ queues;
//! - `wait`: polling a condition until a deadline.

pub mod chart;
pub mod http;
pub mod metrics;
pub mod rabbit;
pub mod sidecar;
pub mod tools;
pub mod wait;

use std::path::PathBuf;

/// The repository's root directory.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// A name no other test run uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
