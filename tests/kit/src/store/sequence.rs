//! The sequence positions every store keeps for the reorder buffer: the next expected sequence
//! of a key, which only grows and expires a TTL after its last advance.

use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{SequenceId, SequenceStore};

use super::{with_store, Lifetimes, StoreFixture};
use crate::wait::wait_until;

/// Positions that outlive every case but the expiry one.
const LONG: Lifetimes = Lifetimes {
    lease: Duration::from_secs(30),
    ttl: Duration::from_secs(60),
};

/// Positions that expire within a case.
const SHORT: Lifetimes = Lifetimes {
    lease: Duration::from_millis(200),
    ttl: Duration::from_millis(400),
};

/// The sequence of `key` in `source`.
pub fn sequence(source: &str, key: &[u8]) -> SequenceId {
    SequenceId {
        source: source.to_owned(),
        key: key.to_vec().into(),
    }
}

async fn next<S: SequenceStore>(store: &S, id: &SequenceId) -> Option<u64> {
    store.next_sequence(id).await.unwrap()
}

async fn advance<S: SequenceStore>(store: &S, id: &SequenceId, to: u64) -> u64 {
    store.advance_sequence(id, to).await.unwrap()
}

/// An unknown key has no position; an advance sets it, a lower one leaves it and answers the
/// higher position; keys and sources are told apart byte for byte.
pub async fn positions_only_grow<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
        let store = &*store;
        let id = sequence("orders", b"customer-1");
        assert_eq!(next(store, &id).await, None);
        assert_eq!(advance(store, &id, 5).await, 5);
        assert_eq!(next(store, &id).await, Some(5));
        assert_eq!(
            advance(store, &id, 3).await,
            5,
            "a lower position never wins"
        );
        assert_eq!(next(store, &id).await, Some(5));
        assert_eq!(advance(store, &id, 9).await, 9);
        let big = u64::from(u32::MAX) * 1_000;
        assert_eq!(
            advance(store, &id, big).await,
            big,
            "numbers past u32 round-trip"
        );
        for other in [
            sequence("orders", b"customer-2"),
            sequence("orders", b"customer-1\0"),
            sequence("refunds", b"customer-1"),
            sequence("orders:customer-1", b""),
        ] {
            assert_eq!(next(store, &other).await, None, "{other} is another key's");
        }
    })
    .await;
}

/// A position lives for the store's TTL after its last advance, and is gone after it.
pub async fn positions_expire_after_the_ttl<F: StoreFixture>() {
    with_store::<F, _, _>(SHORT, |store| async move {
        let id = sequence("orders", b"quiet");
        assert_eq!(advance(&*store, &id, 7).await, 7);
        assert_eq!(next(&*store, &id).await, Some(7));
        let s = Arc::clone(&store);
        let id2 = id.clone();
        wait_until(
            "the position to expire",
            Duration::from_secs(10),
            move || {
                let (s, id) = (Arc::clone(&s), id2.clone());
                async move { s.next_sequence(&id).await.unwrap().is_none() }
            },
        )
        .await;
        assert_eq!(
            advance(&*store, &id, 2).await,
            2,
            "an expired position does not hold a new one back"
        );
    })
    .await;
}

/// Advances racing on one key leave the highest of them.
pub async fn racing_advances_keep_the_highest<F: StoreFixture>() {
    with_store::<F, _, _>(LONG, |store| async move {
        let id = sequence("orders", b"hot");
        let racers: Vec<_> = (1..=20u64)
            .map(|n| {
                let (store, id) = (Arc::clone(&store), id.clone());
                // Out of order: 13, 6, 19, 12, ...
                tokio::spawn(async move { store.advance_sequence(&id, (n * 7) % 20 + 1).await })
            })
            .collect();
        for racer in racers {
            let stored = racer.await.unwrap().unwrap();
            assert!((1..=20).contains(&stored));
        }
        assert_eq!(next(&*store, &id).await, Some(20));
    })
    .await;
}
