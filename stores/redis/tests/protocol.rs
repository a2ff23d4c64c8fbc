//! The dedup protocol against a real Redis at 127.0.0.1:6379, as Redis holds it: where each
//! record lives, its TTL, and what each call leaves in it. The protocol every store keeps is
//! in `contract.rs`.

mod common;

use std::time::Duration;

use common::{cleanup, namespace, pttl, record, store};
use outrigger_core::{Claim, Completion, DedupStore, Release, StoreError};
use outrigger_redis::RedisStore;
use outrigger_testkit::wait_until;

const LONG_LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn record_lives_under_the_namespaced_key_with_the_ttl() {
    let ns = namespace();
    let store = store(&ns, LONG_LEASE).await;

    store.claim("k").await.unwrap();
    let stored = record(&ns, "k").await;
    assert_eq!(stored["s"], "claimed");
    assert_eq!(stored["f"], "1");
    assert_eq!(stored["a"], "1");
    let ttl = pttl(&ns, "k").await;
    assert!((60_000..=120_000).contains(&ttl), "pttl {ttl}");

    store.complete("k", 1).await.unwrap();
    assert_eq!(record(&ns, "k").await["s"], "done");
    assert!(pttl(&ns, "k").await > 60_000);

    cleanup(&ns).await;
}

#[tokio::test]
async fn a_busy_answer_spends_no_fence_and_no_attempt_in_the_record() {
    let ns = namespace();
    let store = store(&ns, LONG_LEASE).await;

    store.claim("k").await.unwrap();
    assert!(matches!(store.claim("k").await, Ok(Claim::Busy { .. })));
    // Busy did not count as an attempt or hand out a fence.
    assert_eq!(record(&ns, "k").await["f"], "1");
    assert_eq!(record(&ns, "k").await["a"], "1");

    cleanup(&ns).await;
}

#[tokio::test]
async fn calls_of_a_stale_holder_leave_the_record_unchanged() {
    let ns = namespace();
    let store = store(&ns, Duration::from_millis(200)).await;

    store.claim("k").await.unwrap();
    let second = wait_until("the lease to expire", Duration::from_secs(5), || async {
        match store.claim("k").await.unwrap() {
            Claim::Busy { .. } => None,
            other => Some(other),
        }
    })
    .await;
    assert!(matches!(second, Claim::Acquired { fence: 2, .. }));

    let before = record(&ns, "k").await;
    assert_eq!(
        store.complete("k", 1).await,
        Ok(Completion::Fenced { current: 2 })
    );
    assert!(!store.release("k", 1, Release::Reset).await.unwrap());
    assert_eq!(record(&ns, "k").await, before);

    cleanup(&ns).await;
}

#[tokio::test]
async fn unsuperseded_holder_completes_after_its_lease() {
    let ns = namespace();
    let store = store(&ns, Duration::from_millis(100)).await;

    store.claim("k").await.unwrap();
    // Wait (by the server's clock) until the lease is over, without claiming again.
    wait_until("the lease to end", Duration::from_secs(5), || async {
        let lease_until: u64 = record(&ns, "k").await["l"].parse().unwrap();
        server_now_ms().await >= lease_until
    })
    .await;
    assert_eq!(store.complete("k", 1).await, Ok(Completion::Completed));

    cleanup(&ns).await;
}

#[tokio::test]
async fn refunds_and_a_reset_bring_the_stored_attempts_to_zero() {
    let ns = namespace();
    let store = store(&ns, LONG_LEASE).await;

    // The release kinds of the contract's `release_kinds_count_attempts`, as stored.
    store.claim("k").await.unwrap();
    store.release("k", 1, Release::Retry).await.unwrap();
    store.claim("k").await.unwrap();
    store.release("k", 2, Release::Refund).await.unwrap();
    store.claim("k").await.unwrap();
    store.release("k", 3, Release::Reset).await.unwrap();
    assert_eq!(
        store.claim("k").await,
        Ok(Claim::Acquired {
            fence: 4,
            attempt: 1
        })
    );
    assert_eq!(store.release("k", 4, Release::Refund).await, Ok(true));
    assert_eq!(store.release("k", 4, Release::Reset).await, Ok(false));
    assert_eq!(store.release("k", 3, Release::Reset).await, Ok(false));
    assert_eq!(record(&ns, "k").await["a"], "0");

    cleanup(&ns).await;
}

#[tokio::test]
async fn an_unknown_key_leaves_no_record() {
    let ns = namespace();
    let store = store(&ns, LONG_LEASE).await;

    assert_eq!(
        store.complete("nobody", 1).await,
        Ok(Completion::Fenced { current: 0 })
    );
    assert_eq!(store.release("nobody", 1, Release::Retry).await, Ok(false));
    assert!(record(&ns, "nobody").await.is_empty());
    assert_eq!(store.ping().await, Ok(()));
}

#[tokio::test]
async fn keys_with_braces_and_colons_are_stored_verbatim() {
    let ns = namespace();
    let store = store(&ns, LONG_LEASE).await;

    store.claim("{tenant}:a:b").await.unwrap();
    assert_eq!(record(&ns, "{tenant}:a:b").await["f"], "1");

    cleanup(&ns).await;
}

#[tokio::test]
async fn namespace_with_a_colon_is_rejected() {
    let config = common::config("a:b", LONG_LEASE);
    assert!(matches!(
        RedisStore::connect(config).await,
        Err(StoreError::Protocol(_))
    ));
}

async fn server_now_ms() -> u64 {
    let client = redis::Client::open(common::REDIS_URL).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut connection)
        .await
        .unwrap();
    secs * 1000 + micros / 1000
}
