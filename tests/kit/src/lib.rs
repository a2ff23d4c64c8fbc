//! What Outrigger's test suites share, so that each exists once: waiting for a condition, a
//! TCP proxy that cuts connections, the brokers on loopback (a tansu process per test, the
//! machine's RabbitMQ), the recording app and policy files the end-to-end tests use, and the
//! contract suites every adapter and every store passes against its real server.
//!
//! A dev-dependency only. Servers bind `127.0.0.1:0`, names come from [`unique`], and nothing
//! synchronises by sleeping: a test waits for a condition with a deadline ([`wait_until`]).
//!
//! # Layout
//! - [`wait`]: [`wait_until`] and [`within`], the deadlines every wait has.
//! - [`names`]: [`unique`] names for queues, topics, groups and namespaces; [`free_port`].
//! - [`proxy`]: [`Proxy`], a TCP proxy a test can cut, refuse and allow again.
//! - [`app`]: [`TestApp`], the HTTP app that records each request and answers as scripted.
//! - [`policy`]: [`Policy`], policy files built as TOML documents.
//! - [`sidecar`]: [`Sidecar`], the `outrigger` binary as a child process.
//! - [`rabbit`]: [`Rabbit`], the local RabbitMQ: queues with `x-expires`, confirmed publishes,
//!   reading queues back; [`rabbit::Queues`], a test's own source and dead-letter queue.
//! - [`kafka`]: [`Kafka`], topics, producers, committed offsets and readers; [`Tansu`], a
//!   broker process of the test's own.
//! - [`source`]: the source contract: [`SourceFixture`], its points, and
//!   [`source_contract!`], which runs them for one broker.
//! - [`retry`]: the retry contract (retry mode `queue` end to end through the binary):
//!   [`retry::RetryFixture`], its scenario, [`retry_contract!`], and the Kafka and RabbitMQ
//!   fixtures.
//! - [`tls`]: [`tls::Certificates`], a throwaway CA and its certificates.
//! - [`redis_server`]: [`redis_server::RedisServer`], a `redis-server` of the test's own
//!   (TLS only, or with any more settings: ACL users, cluster mode);
//!   [`redis_cluster::RedisCluster`], a cluster of them.
//! - [`store`]: the dedup and parking contract: [`StoreFixture`], its cases, and
//!   [`store_contract!`], which runs them for one store.

pub mod app;
pub mod app_port;
pub mod kafka;
pub mod names;
pub mod nats;
pub mod policy;
pub mod proxy;
pub mod rabbit;
pub mod redis_cluster;
pub mod redis_server;
pub mod retry;
pub mod sidecar;
pub mod source;
pub mod store;
pub mod tls;
pub mod wait;

pub use app::{Hit, Reply, TestApp};
pub use kafka::{Kafka, Tansu};
pub use names::{free_port, unique};
pub use policy::Policy;
pub use proxy::Proxy;
pub use rabbit::Rabbit;
pub use sidecar::Sidecar;
pub use source::{dead_letter, AfterCut, Faults, Outgoing, Redelivery, SourceFixture};
pub use store::{Lifetimes, StoreFixture};
pub use wait::{wait_until, within};
