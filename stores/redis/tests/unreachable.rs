//! A Redis that is down or silent costs a call at most the timeout, and the store recovers when
//! Redis comes back.

mod common;

use std::time::Duration;

use outrigger_core::{ChainId, DedupStore, ParkingStore, Release, StoreError};
use outrigger_redis::{RedisStore, RedisStoreConfig};
use outrigger_testkit::{free_port, wait_until, Proxy};
use tokio::net::TcpListener;
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_millis(300);
/// Scheduling slack on top of the timeout before a call counts as hanging.
const SLACK: Duration = Duration::from_millis(700);

fn config(port: u16) -> RedisStoreConfig {
    RedisStoreConfig {
        url: format!("redis://127.0.0.1:{port}"),
        cluster: Vec::new(),
        username: None,
        password: None,
        tls: None,
        namespace: common::namespace(),
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(60),
        timeout: TIMEOUT,
    }
}

async fn assert_every_call_unavailable(store: &RedisStore) {
    let chain = ChainId {
        group: "g".to_owned(),
        key: b"k".to_vec().into(),
    };
    for _ in 0..3 {
        let started = Instant::now();
        let results = [
            store.claim("k").await.err(),
            store.complete("k", 1).await.err(),
            store.release("k", 1, Release::Retry).await.err(),
            store.ping().await.err(),
            store.load_chain(&chain).await.err(),
            store.swap_chain(&chain, None, Some(b"v"), true).await.err(),
            store.parked_chains("g").await.err(),
        ];
        for result in results {
            assert!(
                matches!(result, Some(StoreError::Unavailable(_))),
                "{result:?}"
            );
        }
        assert!(started.elapsed() < 7 * (TIMEOUT + SLACK), "calls hung");
    }
}

#[tokio::test]
async fn refused_connection_is_unavailable_within_the_timeout() {
    let port = free_port().port();
    // Connecting does not need Redis: the sidecar starts while Redis is down.
    let store = RedisStore::connect(config(port)).await.unwrap();
    let started = Instant::now();
    assert!(matches!(
        store.claim("k").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < TIMEOUT + SLACK);
    assert_every_call_unavailable(&store).await;
}

#[tokio::test]
async fn silent_server_is_unavailable_within_the_timeout() {
    // Accepts connections (the kernel completes the handshake) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = RedisStore::connect(config(port)).await.unwrap();
    assert_every_call_unavailable(&store).await;
    drop(listener);
}

#[tokio::test]
async fn store_recovers_when_redis_comes_back() {
    let port = free_port().port();
    let config = config(port);
    let namespace = config.namespace.clone();
    let store = RedisStore::connect(config).await.unwrap();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));

    // "Redis comes back": a proxy to the real Redis starts on the port the store points at.
    let redis = "127.0.0.1:6379".parse().unwrap();
    let proxy = Proxy::start_at(([127, 0, 0, 1], port).into(), redis).await;

    wait_until(
        "the store to reach Redis",
        Duration::from_secs(10),
        || async { store.ping().await.is_ok() },
    )
    .await;
    assert!(store.claim("k").await.is_ok());

    drop(proxy);
    common::cleanup(&namespace).await;
}
