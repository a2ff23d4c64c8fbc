//! Embedded dedup store for Outrigger: the claim/complete/release protocol of
//! [`outrigger_core::DedupStore`] in a local redb file, for a service that runs one replica.
//!
//! Each operation is one redb write transaction that reads the key's record, applies the pure
//! transition from `outrigger_policies::dedup`, and commits durably before answering, so a
//! restart remembers every done key for the store's TTL. Time is the wall clock, because
//! records outlive the process.
//!
//! # Layout
//! - `config`: [`EmbeddedStoreConfig`], the file and the protocol timings.
//! - `store`: [`EmbeddedStore`], transactions and pruning.
//! - `table`: the on-disk tables and how a record is encoded.

mod config;
mod store;
mod table;

pub use config::EmbeddedStoreConfig;
pub use store::EmbeddedStore;
