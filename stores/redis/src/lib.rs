//! Redis dedup store for Outrigger: the claim/complete/release protocol of
//! [`outrigger_core::DedupStore`], each operation one atomic Lua script.
//!
//! The rules are those of `outrigger_policies::dedup`, restated in Lua so a record is read and
//! written in one step on the server, with the server's clock (`TIME`) so replicas of the
//! sidecar agree on when a lease ends. Records live under `outrigger:dedup:<namespace>:<key>`.
//!
//! # Layout
//! - `config`: [`RedisStoreConfig`], where Redis is and the protocol timings.
//! - `store`: [`RedisStore`], the connection and the calls.
//! - `scripts`: the Lua scripts and how their replies decode.
//! - `error`: which Redis failures are worth a retry.

mod config;
mod error;
mod scripts;
mod store;

pub use config::RedisStoreConfig;
pub use store::RedisStore;
