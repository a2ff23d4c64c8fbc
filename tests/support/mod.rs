//! Shared harness for the integration tests: a recording test app, RabbitMQ and Kafka helpers,
//! the sidecar as a child process, `outrigger dlq` as an operator runs it, a cuttable TCP proxy
//! for fault injection, and condition waits.
//!
//! Everything binds `127.0.0.1:0` or uses uniquely named queues and Redis namespaces, so tests
//! can run in parallel against the one RabbitMQ and Redis of the machine.

#![allow(dead_code, unused_imports)]

pub mod app;
pub mod dlq;
pub mod kafka;
pub mod policy;
pub mod proxy;
pub mod rabbit;
pub mod sidecar;

use std::future::Future;
use std::time::{Duration, Instant};

pub use app::{Hit, Reply, TestApp};
pub use dlq::{
    app_refusing_a_and_b, app_until_fixed, ids, keys, kill_a_resubmit_halfway, lines_starting,
    resubmit_100_paced, set, wait_resubmitted_once, Dlq,
};
pub use policy::Policy;
pub use proxy::Proxy;
pub use rabbit::Rabbit;
pub use sidecar::Sidecar;

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    format!("{prefix}-{:08x}", rand::rng().random::<u32>())
}

/// Waits until `check` returns true, polling; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
