//! What only the app's own integration tests need beside the test kit: the binary cargo built
//! for them, and `outrigger dlq` as an operator runs it. Everything else (the recording app,
//! policies, the sidecar process, RabbitMQ and Kafka, the proxy, waits) is the kit's,
//! re-exported here.

#![allow(dead_code, unused_imports)]

pub mod dlq;

pub use dlq::{
    app_refusing_a_and_b, app_until_fixed, ids, keys, kill_a_resubmit_halfway, lines_starting,
    resubmit_100_paced, set, wait_resubmitted_once, Dlq,
};
pub use outrigger_testkit::{
    free_port, kafka, unique, wait_until, Hit, Policy, Proxy, Rabbit, Reply, Sidecar, TestApp,
};

/// The `outrigger` binary cargo built for these tests.
pub const OUTRIGGER: &str = env!("CARGO_BIN_EXE_outrigger");
