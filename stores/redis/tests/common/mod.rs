//! Helpers for tests against the Redis at 127.0.0.1:6379.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::HashMap;
use std::time::Duration;

use outrigger_redis::{RedisStore, RedisStoreConfig};
use outrigger_testkit::{unique, Lifetimes};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A namespace no other test (or concurrent test run) uses.
pub fn namespace() -> String {
    unique("test")
}

pub fn config(namespace: &str, lease: Duration) -> RedisStoreConfig {
    config_with(
        namespace,
        Lifetimes {
            lease,
            // Long enough for any test, short enough that a panicking test leaves nothing for
            // long.
            ttl: Duration::from_secs(120),
        },
    )
}

pub fn config_with(namespace: &str, lifetimes: Lifetimes) -> RedisStoreConfig {
    RedisStoreConfig {
        url: REDIS_URL.to_owned(),
        cluster: Vec::new(),
        username: None,
        password: None,
        tls: None,
        namespace: namespace.to_owned(),
        lease: lifetimes.lease,
        ttl: lifetimes.ttl,
        timeout: Duration::from_secs(2),
    }
}

pub async fn store(namespace: &str, lease: Duration) -> RedisStore {
    RedisStore::connect(config(namespace, lease))
        .await
        .expect("store config is valid")
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("test Redis at 127.0.0.1:6379 is running")
}

/// The stored hash of one record, as Redis holds it.
pub async fn record(namespace: &str, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("outrigger:dedup:{namespace}:{key}"))
        .query_async(&mut raw().await)
        .await
        .expect("HGETALL")
}

/// Milliseconds left before the record expires (-2 when absent, -1 without expiry).
pub async fn pttl(namespace: &str, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(format!("outrigger:dedup:{namespace}:{key}"))
        .query_async(&mut raw().await)
        .await
        .expect("PTTL")
}

/// Deletes every record, chain and parked set of `namespace`.
pub async fn cleanup(namespace: &str) {
    let mut connection = raw().await;
    for kind in ["dedup", "chain", "parked", "seq"] {
        // SCAN rather than KEYS: the test Redis may be shared, and KEYS blocks it.
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("outrigger:{kind}:{namespace}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .expect("SCAN");
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await
                    .expect("DEL");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

/// Runs one Redis command on a connection of its own, outside the store.
pub async fn query<T: redis::FromRedisValue>(command: &redis::Cmd) -> T {
    command.query_async(&mut raw().await).await.expect("query")
}
