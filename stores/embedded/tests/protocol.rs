//! The dedup protocol on the embedded store, where it is a file: many callers batched into one
//! transaction, restarts, expiry, one process per file. The protocol every store keeps is in
//! `contract.rs`.

use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{Claim, Completion, DedupStore, Release};
use outrigger_embedded::{EmbeddedStore, EmbeddedStoreConfig};
use outrigger_testkit::wait_until;
use tempfile::TempDir;

const LONG_LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(120);

fn open(dir: &TempDir, lease: Duration, ttl: Duration) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedStoreConfig {
        path: dir.path().join("state").join("dedup.redb"),
        lease,
        ttl,
    })
    .expect("store opens")
}

fn acquired(fence: u64, attempt: u32) -> Result<Claim, outrigger_core::StoreError> {
    Ok(Claim::Acquired { fence, attempt })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_claims_on_one_key_see_each_other() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(open(&dir, LONG_LEASE, TTL));

    // Enough callers that many of their claims share a transaction.
    let claims: Vec<_> = (0..200)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.claim("k").await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for claim in claims {
        answers.push(claim.await.unwrap());
    }
    let winners = answers
        .iter()
        .filter(|answer| {
            **answer
                == Claim::Acquired {
                    fence: 1,
                    attempt: 1,
                }
        })
        .count();
    let busy = answers
        .iter()
        .filter(|answer| matches!(answer, Claim::Busy { .. }))
        .count();
    assert_eq!((winners, busy), (1, 199));

    // The winner completes while others keep claiming: each sees the key held or done.
    let completion = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.complete("k", 1).await.unwrap() })
    };
    let claims: Vec<_> = (0..100)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.claim("k").await.unwrap() })
        })
        .collect();
    assert_eq!(completion.await.unwrap(), Completion::Completed);
    for claim in claims {
        let answer = claim.await.unwrap();
        assert!(
            matches!(answer, Claim::Busy { .. } | Claim::Done),
            "{answer:?}"
        );
    }
    assert_eq!(store.claim("k").await, Ok(Claim::Done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_operations_are_answered_and_durable() {
    const KEYS: u64 = 200;
    let dir = TempDir::new().unwrap();
    {
        let store = Arc::new(open(&dir, LONG_LEASE, TTL));
        let claims: Vec<_> = (0..KEYS)
            .map(|key| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.claim(&format!("key-{key}")).await })
            })
            .collect();
        for claim in claims {
            assert_eq!(claim.await.unwrap(), acquired(1, 1));
        }

        // Completes, with a release of a fence nobody holds on every tenth key in between.
        let completes: Vec<_> = (0..KEYS)
            .map(|key| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let key = format!("key-{key}");
                    store.complete(&key, 1).await
                })
            })
            .collect();
        let releases: Vec<_> = (0..KEYS)
            .step_by(10)
            .map(|key| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let key = format!("key-{key}");
                    store.release(&key, 2, Release::Retry).await
                })
            })
            .collect();
        for complete in completes {
            assert_eq!(complete.await.unwrap(), Ok(Completion::Completed));
        }
        for release in releases {
            assert_eq!(release.await.unwrap(), Ok(false));
        }
        // The last handle goes here, and with it the file.
    }

    let store = open(&dir, LONG_LEASE, TTL);
    for key in 0..KEYS {
        assert_eq!(store.claim(&format!("key-{key}")).await, Ok(Claim::Done));
    }
}

#[tokio::test]
async fn records_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir, LONG_LEASE, TTL);
        store.claim("done").await.unwrap();
        assert_eq!(store.complete("done", 1).await, Ok(Completion::Completed));
        store.claim("held").await.unwrap();
        store.claim("retried").await.unwrap();
        assert_eq!(store.release("retried", 1, Release::Retry).await, Ok(true));
    }

    let store = open(&dir, LONG_LEASE, TTL);
    assert_eq!(store.claim("done").await, Ok(Claim::Done));
    assert!(matches!(store.claim("held").await, Ok(Claim::Busy { .. })));
    // Fence and attempts carry on from before the restart.
    assert_eq!(store.claim("retried").await, acquired(2, 2));
}

#[tokio::test]
async fn expired_records_are_forgotten() {
    let dir = TempDir::new().unwrap();
    let ttl = Duration::from_millis(100);
    let store = open(&dir, Duration::from_millis(50), ttl);

    store.claim("k").await.unwrap();
    assert_eq!(store.complete("k", 1).await, Ok(Completion::Completed));
    assert_eq!(store.claim("k").await, Ok(Claim::Done));
    // Once the done record's TTL is over the key starts from scratch: fence 1, attempt 1.
    let claim = wait_until(
        "the done record to expire",
        Duration::from_secs(5),
        || async {
            match store.claim("k").await.unwrap() {
                Claim::Done => None,
                other => Some(other),
            }
        },
    )
    .await;
    assert_eq!(
        claim,
        Claim::Acquired {
            fence: 1,
            attempt: 1
        }
    );
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let _store = open(&dir, LONG_LEASE, TTL);
    let second = EmbeddedStore::open(EmbeddedStoreConfig {
        path: dir.path().join("state").join("dedup.redb"),
        lease: LONG_LEASE,
        ttl: TTL,
    });
    assert!(matches!(
        second,
        Err(outrigger_core::StoreError::Unavailable(_))
    ));
}
