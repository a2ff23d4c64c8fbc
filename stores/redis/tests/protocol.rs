//! The dedup protocol against a real Redis at 127.0.0.1:6379.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{cleanup, eventually, namespace, pttl, record, store};
use outrigger_core::{Claim, Completion, DedupStore, Release, StoreError};
use outrigger_redis::RedisStore;

const LONG_LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn completed_key_is_done_for_every_later_claim() {
    let ns = namespace();
    let store = store(&ns, LONG_LEASE).await;

    assert_eq!(
        store.claim("order-1").await,
        Ok(Claim::Acquired {
            fence: 1,
            attempt: 1
        })
    );
    assert_eq!(
        store.complete("order-1", 1).await,
        Ok(Completion::Completed)
    );
    assert_eq!(store.claim("order-1").await, Ok(Claim::Done));
    assert_eq!(store.claim("order-1").await, Ok(Claim::Done));
    // A retried completion (its first reply lost) still succeeds.
    assert_eq!(
        store.complete("order-1", 1).await,
        Ok(Completion::Completed)
    );
    // Other keys are independent.
    assert_eq!(
        store.claim("order-2").await,
        Ok(Claim::Acquired {
            fence: 1,
            attempt: 1
        })
    );

    cleanup(&ns).await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_acquire_once() {
    let ns = namespace();
    let store = Arc::new(store(&ns, LONG_LEASE).await);

    let claims: Vec<_> = (0..32)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.claim("k").await.unwrap() })
        })
        .collect();
    let mut acquired = 0;
    for claim in claims {
        match claim.await.unwrap() {
            Claim::Acquired { fence, attempt } => {
                assert_eq!((fence, attempt), (1, 1));
                acquired += 1;
            }
            Claim::Busy { .. } => {}
            Claim::Done => panic!("nothing completed the key"),
        }
    }
    assert_eq!(acquired, 1);

    cleanup(&ns).await;
}

#[tokio::test]
async fn live_lease_answers_busy() {
    let ns = namespace();
    let store = store(&ns, LONG_LEASE).await;

    store.claim("k").await.unwrap();
    match store.claim("k").await {
        Ok(Claim::Busy { retry_in }) => {
            assert!(retry_in > Duration::from_secs(25) && retry_in <= LONG_LEASE);
        }
        other => panic!("expected busy, got {other:?}"),
    }
    // Busy did not count as an attempt or hand out a fence.
    assert_eq!(record(&ns, "k").await["f"], "1");
    assert_eq!(record(&ns, "k").await["a"], "1");

    cleanup(&ns).await;
}

#[tokio::test]
async fn expired_lease_is_taken_over_and_the_stale_holder_is_fenced() {
    let ns = namespace();
    let store = store(&ns, Duration::from_millis(200)).await;

    assert_eq!(
        store.claim("k").await,
        Ok(Claim::Acquired {
            fence: 1,
            attempt: 1
        })
    );
    let second = eventually(Duration::from_secs(5), || async {
        match store.claim("k").await.unwrap() {
            Claim::Busy { .. } => None,
            other => Some(other),
        }
    })
    .await;
    assert_eq!(
        second,
        Claim::Acquired {
            fence: 2,
            attempt: 2
        }
    );

    let before = record(&ns, "k").await;
    assert_eq!(
        store.complete("k", 1).await,
        Ok(Completion::Fenced { current: 2 })
    );
    assert!(!store.release("k", 1, Release::Reset).await.unwrap());
    assert_eq!(record(&ns, "k").await, before);

    assert_eq!(store.complete("k", 2).await, Ok(Completion::Completed));
    assert_eq!(store.claim("k").await, Ok(Claim::Done));

    cleanup(&ns).await;
}

#[tokio::test]
async fn unsuperseded_holder_completes_after_its_lease() {
    let ns = namespace();
    let store = store(&ns, Duration::from_millis(100)).await;

    store.claim("k").await.unwrap();
    // Wait (by the server's clock) until the lease is over, without claiming again.
    eventually(Duration::from_secs(5), || async {
        let lease_until: u64 = record(&ns, "k").await["l"].parse().unwrap();
        let now = server_now_ms().await;
        (now >= lease_until).then_some(())
    })
    .await;
    assert_eq!(store.complete("k", 1).await, Ok(Completion::Completed));

    cleanup(&ns).await;
}

#[tokio::test]
async fn release_kinds_count_attempts() {
    let ns = namespace();
    let store = store(&ns, LONG_LEASE).await;
    let acquired = |fence, attempt| Ok(Claim::Acquired { fence, attempt });

    assert_eq!(store.claim("k").await, acquired(1, 1));
    assert_eq!(store.release("k", 1, Release::Retry).await, Ok(true));
    assert_eq!(store.claim("k").await, acquired(2, 2));
    assert_eq!(store.release("k", 2, Release::Refund).await, Ok(true));
    // The refunded attempt is handed out again, with a new fence.
    assert_eq!(store.claim("k").await, acquired(3, 2));
    assert_eq!(store.release("k", 3, Release::Reset).await, Ok(true));
    assert_eq!(store.claim("k").await, acquired(4, 1));
    // Releasing twice, or with another fence, changes nothing.
    assert_eq!(store.release("k", 4, Release::Refund).await, Ok(true));
    assert_eq!(store.release("k", 4, Release::Reset).await, Ok(false));
    assert_eq!(store.release("k", 3, Release::Reset).await, Ok(false));
    assert_eq!(record(&ns, "k").await["a"], "0");
    // A released claim can no longer complete.
    assert_eq!(
        store.complete("k", 4).await,
        Ok(Completion::Fenced { current: 4 })
    );
    // Refunds stop at zero.
    assert_eq!(store.claim("k").await, acquired(5, 1));

    cleanup(&ns).await;
}

#[tokio::test]
async fn unknown_key_is_fenced_at_zero() {
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
