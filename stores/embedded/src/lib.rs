//! Embedded dedup store for Outrigger: the claim/complete/release protocol of
//! [`outrigger_core::DedupStore`] in a local redb file, for a service that runs one replica.
//!
//! One writer thread owns the file. It applies each operation's pure transition from
//! `outrigger_policies::dedup` to the key's record inside a write transaction, and answers only
//! once that transaction has committed durably, so a restart remembers every done key for the
//! store's TTL. Operations that arrive while a commit waits for the disk share the next
//! transaction (group commit), so one fsync serves many messages in flight. Time is the wall
//! clock, because records outlive the process.
//!
//! The same file keeps the parked-key chains of retry queues ([`outrigger_core::ParkingStore`]):
//! each swap is one more operation of the writer's transactions, answered once durable like the
//! others, and chains never expire.
//!
//! # Layout
//! - `config`: [`EmbeddedStoreConfig`], the file and the protocol timings.
//! - `store`: [`EmbeddedStore`], the shared handle and the queue to the writer.
//! - `writer`: the writer thread, batched transactions and pruning.
//! - `table`: the on-disk dedup tables and how a record is encoded.
//! - `chains`: the on-disk chain tables and the parked count per group.
//! - `error`: how failures read.

mod chains;
mod config;
mod error;
mod sequences;
mod store;
mod table;
mod writer;

pub use config::EmbeddedStoreConfig;
pub use store::EmbeddedStore;
