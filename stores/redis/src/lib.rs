//! Redis dedup store for Outrigger: the claim/complete/release protocol of
//! [`outrigger_core::DedupStore`], each operation one atomic Lua script.
//!
//! The rules are those of `outrigger_policies::dedup`, restated in Lua so a record is read and
//! written in one step on the server, with the server's clock (`TIME`) so replicas of the
//! sidecar agree on when a lease ends. Records live under `outrigger:dedup:<namespace>:<key>`.
//!
//! The same store keeps the parked-key chains of retry queues
//! ([`outrigger_core::ParkingStore`]): one value per chain, swapped by a script that also keeps
//! the group's set of parked chains, so a restart or another replica finds them where they were.
//!
//! # Layout
//! - `config`: [`RedisStoreConfig`], where Redis is, how to log in ([`RedisTls`] for
//!   `rediss://`), and the protocol timings.
//! - `client`: from a config to a Redis client (standalone or cluster), every problem named
//!   by its setting.
//! - `connection`: one connection type over a standalone server or a cluster.
//! - `store`: [`RedisStore`], the connection and the calls.
//! - `keys`: where records and chains live in Redis.
//! - `scripts`: the Lua scripts and how their replies decode.
//! - `error`: which Redis failures are worth a retry.

mod client;
mod config;
mod connection;
mod error;
mod keys;
mod scripts;
mod store;

pub use config::{redacted, RedisStoreConfig, RedisTls};
pub use store::RedisStore;
