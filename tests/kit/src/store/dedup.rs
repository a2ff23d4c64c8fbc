//! The dedup protocol every store keeps: claim with a lease and a fence, complete by
//! compare-and-set on the fence, release on a retryable failure.

use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{Claim, Completion, DedupStore, Release, StoreError};

use super::{with_store, Lifetimes, StoreFixture};
use crate::wait::wait_until;

/// Longer than any case: a claim never expires by itself.
const LONG: Lifetimes = Lifetimes {
    lease: Duration::from_secs(30),
    ttl: Duration::from_secs(120),
};

fn acquired(fence: u64, attempt: u32) -> Result<Claim, StoreError> {
    Ok(Claim::Acquired { fence, attempt })
}

/// A completed key is done for every later claim; completing it again (a retry whose first
/// reply was lost) still succeeds; other keys are independent.
pub async fn completed_key_is_done_for_every_later_claim<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
        assert_eq!(store.claim("order-1").await, acquired(1, 1));
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
        assert_eq!(store.claim("order-2").await, acquired(1, 1));
        assert_eq!(store.ping().await, Ok(()));
    })
    .await;
}

/// A claim on a key whose lease is live answers busy, with the time left on it, and spends no
/// fence and no attempt: the holder still completes with its fence.
pub async fn live_lease_answers_busy<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
        store.claim("k").await.unwrap();
        match store.claim("k").await {
            Ok(Claim::Busy { retry_in }) => {
                assert!(
                    retry_in > Duration::from_secs(25) && retry_in <= LONG.lease,
                    "{retry_in:?}"
                );
            }
            other => panic!("expected busy, got {other:?}"),
        }
        assert_eq!(store.complete("k", 1).await, Ok(Completion::Completed));
    })
    .await;
}

/// Of many callers claiming one key at once, exactly one acquires it.
pub async fn concurrent_claims_acquire_once<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
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
                Claim::Done | Claim::DeadLettered { .. } => panic!("nothing settled the key"),
            }
        }
        assert_eq!(acquired, 1);
    })
    .await;
}

/// Once a lease expired the key is claimed again with a higher fence and the next attempt;
/// the stale holder can neither complete nor release it, and the new holder completes.
pub async fn expired_lease_is_taken_over_and_the_stale_holder_is_fenced<F: StoreFixture>() {
    let short = Lifetimes {
        lease: Duration::from_millis(200),
        ..LONG
    };
    with_store::<F, _, _>(short, |store| async move {
        assert_eq!(store.claim("k").await, acquired(1, 1));
        let second = wait_until("the lease to expire", Duration::from_secs(5), || async {
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
        assert_eq!(
            store.complete("k", 1).await,
            Ok(Completion::Fenced { current: 2 })
        );
        assert_eq!(store.release("k", 1, Release::Reset).await, Ok(false));
        // The stale calls left fence 2's claim in place.
        assert_eq!(store.complete("k", 2).await, Ok(Completion::Completed));
        assert_eq!(store.claim("k").await, Ok(Claim::Done));
    })
    .await;
}

/// `Retry` counts the attempt, `Refund` gives it back, `Reset` starts over at 1; a release
/// with a stale fence changes nothing, and a released claim cannot complete.
pub async fn release_kinds_count_attempts<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
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
        // A released claim can no longer complete.
        assert_eq!(
            store.complete("k", 4).await,
            Ok(Completion::Fenced { current: 4 })
        );
        // Refunds stop at zero.
        assert_eq!(store.claim("k").await, acquired(5, 1));
    })
    .await;
}

/// A key nobody claimed is fenced at zero: completing or releasing it changes nothing, and
/// its first claim starts at fence 1, attempt 1.
pub async fn unknown_key_is_fenced_at_zero<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
        assert_eq!(
            store.complete("nobody", 1).await,
            Ok(Completion::Fenced { current: 0 })
        );
        assert_eq!(store.release("nobody", 1, Release::Retry).await, Ok(false));
        assert_eq!(store.ping().await, Ok(()));
        assert_eq!(store.claim("nobody").await, acquired(1, 1));
    })
    .await;
}

/// A key recorded as dead-lettered by its holder is recognised by every later claim, survives
/// a stale holder's attempts, and only a newer resubmission revives it, starting at attempt 1.
pub async fn dead_lettered_key_is_recognised_until_a_resubmission_revives_it<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
        assert_eq!(store.claim("poison").await, acquired(1, 1));
        store.release("poison", 1, Release::Retry).await.unwrap();
        assert_eq!(store.claim("poison").await, acquired(2, 2));
        // A stale holder cannot record it.
        assert_eq!(
            store.dead_lettered("poison", 1, 0).await,
            Ok(Completion::Fenced { current: 2 })
        );
        assert_eq!(
            store.dead_lettered("poison", 2, 0).await,
            Ok(Completion::Completed)
        );
        // Recording it again (the first reply lost) still succeeds.
        assert_eq!(
            store.dead_lettered("poison", 2, 0).await,
            Ok(Completion::Completed)
        );
        assert_eq!(
            store.claim("poison").await,
            Ok(Claim::DeadLettered { generation: 0 })
        );
        assert!(!store.release("poison", 2, Release::Retry).await.unwrap());
        assert_eq!(
            store.complete("poison", 2).await,
            Ok(Completion::Fenced { current: 2 })
        );
        // The same generation stays dead; a resubmission revives it, once.
        assert_eq!(store.revive("poison", 0).await, Ok(false));
        assert_eq!(store.revive("poison", 1).await, Ok(true));
        assert_eq!(store.revive("poison", 1).await, Ok(false));
        assert_eq!(store.claim("poison").await, acquired(3, 1));
        assert_eq!(
            store.dead_lettered("poison", 3, 1).await,
            Ok(Completion::Completed)
        );
        assert_eq!(
            store.claim("poison").await,
            Ok(Claim::DeadLettered { generation: 1 })
        );
        // A done key is not revived; a key never seen neither.
        assert_eq!(store.revive("never", 5).await, Ok(false));
    })
    .await;
}

/// Claims and completions of several keys in one call answer per key, in order, what one call
/// each would: a key named twice in one batch is acquired once and busy the second time; a
/// done key is done; a stale fence is fenced.
pub async fn batched_claims_and_completions_answer_per_key<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
        assert_eq!(store.claim("done").await, acquired(1, 1));
        assert_eq!(store.complete("done", 1).await, Ok(Completion::Completed));
        let claims = store
            .claim_many(&["a", "done", "a", "b"])
            .await
            .expect("one call");
        assert_eq!(
            claims[0],
            Claim::Acquired {
                fence: 1,
                attempt: 1
            }
        );
        assert_eq!(claims[1], Claim::Done);
        assert!(matches!(claims[2], Claim::Busy { .. }), "{:?}", claims[2]);
        assert_eq!(
            claims[3],
            Claim::Acquired {
                fence: 1,
                attempt: 1
            }
        );
        let completions = store
            .complete_many(&[("a", 1), ("b", 7), ("never", 1)])
            .await
            .expect("one call");
        assert_eq!(
            completions,
            [
                Completion::Completed,
                Completion::Fenced { current: 1 },
                Completion::Fenced { current: 0 },
            ]
        );
        assert_eq!(store.claim("a").await, Ok(Claim::Done));
        assert_eq!(store.claim_many(&[]).await, Ok(Vec::new()));
    })
    .await;
}
