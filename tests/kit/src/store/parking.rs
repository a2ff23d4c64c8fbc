//! The parked-key chains every store keeps for retry mode `queue`: one opaque value per
//! chain, swapped by compare-and-set, and a count of the chains holding parked messages per
//! group.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{ChainId, Claim, Completion, DedupStore, ParkingStore};

use super::{with_store, Lifetimes, StoreFixture};
use crate::wait::wait_until;

/// Dedup records that expire within a case: chains must outlive every one of them.
const CHAINS: Lifetimes = Lifetimes {
    lease: Duration::from_millis(100),
    ttl: Duration::from_millis(100),
};

/// Tasks racing on one chain.
const RACERS: usize = 20;

/// The chain of `key` in `group`.
pub fn chain(group: &str, key: &[u8]) -> ChainId {
    ChainId {
        group: group.to_owned(),
        key: key.to_vec().into(),
    }
}

/// The chain's value, as a plain `Vec` for comparisons.
async fn load<S: ParkingStore>(store: &S, chain: &ChainId) -> Option<Vec<u8>> {
    store
        .load_chain(chain)
        .await
        .unwrap()
        .map(|value| value.to_vec())
}

async fn swap<S: ParkingStore>(
    store: &S,
    chain: &ChainId,
    old: Option<&[u8]>,
    new: Option<&[u8]>,
    parked: bool,
) -> bool {
    store.swap_chain(chain, old, new, parked).await.unwrap()
}

async fn parked<S: ParkingStore>(store: &S, group: &str) -> u64 {
    store.parked_chains(group).await.unwrap()
}

/// A swap replaces the value only when it still is the expected one (absent is not any value); a stale or wrong expectation changes nothing.
pub async fn swap_is_compare_and_set<F: StoreFixture>() {
    with_store::<F, _, _>(CHAINS, |store| async move {
        let store = &*store;
        let c = chain("orders/0", b"customer-1");

        assert_eq!(load(store, &c).await, None);
        // Absent is not any value.
        assert!(!swap(store, &c, Some(b"v0"), Some(b"v1"), true).await);
        assert_eq!(load(store, &c).await, None);

        assert!(swap(store, &c, None, Some(b"v1"), true).await);
        assert_eq!(load(store, &c).await.as_deref(), Some(&b"v1"[..]));

        // A stale or wrong expectation changes nothing.
        assert!(!swap(store, &c, None, Some(b"v9"), true).await);
        assert!(!swap(store, &c, Some(b"v0"), Some(b"v9"), true).await);
        assert!(!swap(store, &c, Some(b"v1-"), None, false).await);
        assert_eq!(load(store, &c).await.as_deref(), Some(&b"v1"[..]));

        assert!(swap(store, &c, Some(b"v1"), Some(b"v2"), true).await);
        assert_eq!(load(store, &c).await.as_deref(), Some(&b"v2"[..]));
        assert!(!swap(store, &c, Some(b"v1"), Some(b"v3"), true).await);
        // Swapping to the same value is a swap too.
        assert!(swap(store, &c, Some(b"v2"), Some(b"v2"), true).await);
        assert_eq!(load(store, &c).await.as_deref(), Some(&b"v2"[..]));
        assert_eq!(parked(store, "orders/0").await, 1);

        // Another key of the group is another chain.
        assert_eq!(load(store, &chain("orders/0", b"customer-2")).await, None);
    })
    .await;
}

/// An empty value is a value: it is not absent, and swaps from and to it are compare-and-set like any other.
pub async fn empty_value_is_not_absent<F: StoreFixture>() {
    with_store::<F, _, _>(CHAINS, |store| async move {
        let store = &*store;
        let c = chain("orders/0", b"k");

        assert!(swap(store, &c, None, Some(b""), false).await);
        assert_eq!(load(store, &c).await, Some(Vec::new()));
        assert!(!swap(store, &c, None, Some(b"v"), false).await);
        assert_eq!(load(store, &c).await, Some(Vec::new()));

        assert!(swap(store, &c, Some(b""), Some(b"v"), true).await);
        assert!(!swap(store, &c, Some(b""), Some(b"w"), true).await);
        assert!(swap(store, &c, Some(b"v"), Some(b""), true).await);
        assert_eq!(load(store, &c).await, Some(Vec::new()));
        assert_eq!(parked(store, "orders/0").await, 1);

        assert!(swap(store, &c, Some(b""), None, false).await);
        assert_eq!(load(store, &c).await, None);
        assert_eq!(parked(store, "orders/0").await, 0);
    })
    .await;
}

/// Keys and groups a careless encoding would spell alike are different chains.
pub async fn binary_keys_and_groups_are_told_apart<F: StoreFixture>() {
    with_store::<F, _, _>(CHAINS, |store| async move {
        let store = &*store;
        // Keys and groups that a careless encoding would spell alike.
        let chains = [
            chain("a:b", b"c"),
            chain("a", b"b:c"),
            chain("a", b":"),
            chain("a", b"%3A"),
            chain("a", b""),
            chain("a", b"\0"),
            chain("a", b"\xff\xfe{tag} \n"),
            chain("a", "ключ".as_bytes()),
            chain("a/0", b"c"),
        ];
        for (i, c) in chains.iter().enumerate() {
            let value = [0, 0xff, b'\n', u8::try_from(i).unwrap()];
            assert!(swap(store, c, None, Some(&value), i % 2 == 0).await, "{c}");
        }
        for (i, c) in chains.iter().enumerate() {
            let value = [0, 0xff, b'\n', u8::try_from(i).unwrap()];
            assert_eq!(load(store, c).await.as_deref(), Some(&value[..]), "{c}");
        }
        // Indexes 2, 4, 6 of group "a" are parked; "a:b" and "a/0" are groups of their own.
        assert_eq!(parked(store, "a").await, 3);
        assert_eq!(parked(store, "a:b").await, 1);
        assert_eq!(parked(store, "a/0").await, 1);

        for (i, c) in chains.iter().enumerate() {
            let value = [0, 0xff, b'\n', u8::try_from(i).unwrap()];
            assert!(swap(store, c, Some(&value), None, false).await, "{c}");
        }
        for group in ["a", "a:b", "a/0"] {
            assert_eq!(parked(store, group).await, 0, "{group}");
        }
    })
    .await;
}

/// Swapping to `None` deletes the chain (and its parked count); the key can start a new chain.
pub async fn delete_removes_the_chain<F: StoreFixture>() {
    with_store::<F, _, _>(CHAINS, |store| async move {
        let store = &*store;
        let c = chain("orders/1", b"k");

        // Deleting what is already absent succeeds and leaves it absent.
        assert!(swap(store, &c, None, None, false).await);
        assert!(!swap(store, &c, Some(b"v"), None, false).await);
        assert_eq!(load(store, &c).await, None);

        assert!(swap(store, &c, None, Some(b"v1"), true).await);
        assert_eq!(parked(store, "orders/1").await, 1);
        // A deleted chain holds no parked message, whatever `parked` says.
        assert!(swap(store, &c, Some(b"v1"), None, true).await);
        assert_eq!(load(store, &c).await, None);
        assert_eq!(parked(store, "orders/1").await, 0);
        assert!(!swap(store, &c, Some(b"v1"), None, false).await);

        // The key can start a new chain.
        assert!(swap(store, &c, None, Some(b"v2"), true).await);
        assert_eq!(load(store, &c).await.as_deref(), Some(&b"v2"[..]));
        assert_eq!(parked(store, "orders/1").await, 1);
        assert!(swap(store, &c, Some(b"v2"), None, false).await);
    })
    .await;
}

/// The chains holding parked messages are counted per group, each once.
pub async fn parked_chains_are_counted_per_group<F: StoreFixture>() {
    with_store::<F, _, _>(CHAINS, |store| async move {
        let store = &*store;
        let (a, b) = ("payments/0", "payments/1");
        assert_eq!(parked(store, a).await, 0);

        assert!(swap(store, &chain(a, b"k1"), None, Some(b"1"), true).await);
        assert!(swap(store, &chain(a, b"k2"), None, Some(b"1"), true).await);
        assert!(swap(store, &chain(a, b"k3"), None, Some(b"1"), false).await);
        assert!(swap(store, &chain(b, b"k1"), None, Some(b"1"), true).await);
        assert_eq!((parked(store, a).await, parked(store, b).await), (2, 1));

        // Staying parked counts once; a failed swap changes no count.
        assert!(swap(store, &chain(a, b"k1"), Some(b"1"), Some(b"2"), true).await);
        assert!(!swap(store, &chain(a, b"k3"), Some(b"0"), Some(b"2"), true).await);
        assert!(!swap(store, &chain(a, b"k2"), Some(b"0"), Some(b"2"), false).await);
        assert_eq!((parked(store, a).await, parked(store, b).await), (2, 1));

        // No longer parked, newly parked, deleted.
        assert!(swap(store, &chain(a, b"k1"), Some(b"2"), Some(b"3"), false).await);
        assert_eq!(parked(store, a).await, 1);
        assert!(swap(store, &chain(a, b"k3"), Some(b"1"), Some(b"2"), true).await);
        assert_eq!(parked(store, a).await, 2);
        assert!(swap(store, &chain(a, b"k2"), Some(b"1"), None, false).await);
        assert_eq!((parked(store, a).await, parked(store, b).await), (1, 1));
        // Unparking what is not parked leaves the count alone.
        assert!(swap(store, &chain(a, b"k1"), Some(b"3"), Some(b"4"), false).await);
        assert_eq!(parked(store, a).await, 1);

        for (group, key, value) in [(a, b"k1", b"4"), (a, b"k3", b"2"), (b, b"k1", b"1")] {
            assert!(swap(store, &chain(group, key), Some(value), None, false).await);
        }
        assert_eq!((parked(store, a).await, parked(store, b).await), (0, 0));
    })
    .await;
}

/// Of tasks racing to swap from one value, exactly one wins.
pub async fn racing_swaps_from_one_value_have_one_winner<F: StoreFixture>() {
    with_store::<F, _, _>(CHAINS, |store| async move {
        for old in [None, Some(&b"start"[..])] {
            let c = chain(
                "race/0",
                if old.is_some() {
                    b"from-value"
                } else {
                    b"from-absent"
                },
            );
            if let Some(old) = old {
                assert!(swap(&*store, &c, None, Some(old), false).await);
            }
            let winners = race(&store, |store, i| {
                let c = c.clone();
                async move {
                    let new = format!("racer-{i}");
                    swap(&*store, &c, old, Some(new.as_bytes()), true)
                        .await
                        .then_some(new)
                }
            })
            .await;
            let winners: Vec<String> = winners.into_iter().flatten().collect();
            assert_eq!(winners.len(), 1, "{winners:?}");
            assert_eq!(
                load(&*store, &c).await,
                Some(winners[0].clone().into_bytes())
            );
        }
        assert_eq!(parked(&*store, "race/0").await, 2);
    })
    .await;
}

/// Read-modify-swap loops racing on one chain lose no update and apply none twice.
pub async fn racing_increments_lose_no_update<F: StoreFixture>() {
    with_store::<F, _, _>(CHAINS, |store| async move {
        let c = chain("race/1", b"counter");
        let done = race(&store, |store, _| {
            let c = c.clone();
            async move {
                // Read, add one, swap; on a lost race read again.
                loop {
                    let current = load(&*store, &c).await;
                    let next = match &current {
                        None => 1,
                        Some(value) => {
                            std::str::from_utf8(value).unwrap().parse::<u64>().unwrap() + 1
                        }
                    };
                    let next = next.to_string();
                    if swap(&*store, &c, current.as_deref(), Some(next.as_bytes()), true).await {
                        return next;
                    }
                }
            }
        })
        .await;
        // Each increment saw a different value: none was lost or applied twice.
        let seen: HashSet<String> = done.into_iter().collect();
        assert_eq!(seen.len(), RACERS);
        assert_eq!(
            load(&*store, &c).await,
            Some(RACERS.to_string().into_bytes())
        );
        assert_eq!(parked(&*store, "race/1").await, 1);
    })
    .await;
}

/// Runs `racer` in [`RACERS`] tasks started together; returns what each returned.
async fn race<S, F, Fut>(store: &Arc<S>, racer: F) -> Vec<Fut::Output>
where
    S: ParkingStore,
    F: Fn(Arc<S>, usize) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send,
{
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (start, racing) = (Arc::clone(&start), racer(Arc::clone(store), i));
            tokio::spawn(async move {
                start.wait().await;
                racing.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(RACERS);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// A chain stays when the dedup records beside it expire: it holds messages until it empties.
pub async fn chains_outlive_dedup_records<F: StoreFixture>() {
    with_store::<F, _, _>(CHAINS, |store| async move {
        let c = chain("orders/2", b"k");
        assert!(swap(&*store, &c, None, Some(b"parked"), true).await);
        assert_eq!(
            store.claim("k").await,
            Ok(Claim::Acquired {
                fence: 1,
                attempt: 1
            })
        );
        assert_eq!(store.complete("k", 1).await, Ok(Completion::Completed));
        wait_until(
            "the done record to expire",
            Duration::from_secs(10),
            || async { store.claim("k").await.unwrap() != Claim::Done },
        )
        .await;
        assert_eq!(load(&*store, &c).await.as_deref(), Some(&b"parked"[..]));
        assert_eq!(parked(&*store, "orders/2").await, 1);
        assert!(swap(&*store, &c, Some(b"parked"), None, false).await);
    })
    .await;
}
