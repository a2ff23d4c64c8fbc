//! The store contract: the dedup protocol ([`DedupStore`]), the parked-key chains
//! ([`ParkingStore`]) and the sequence positions ([`SequenceStore`]) every dedup store keeps, checked against the real thing.
//!
//! A store's tests implement [`StoreFixture`] (open a fresh, empty store; clean up after it)
//! and call [`store_contract!`](crate::store_contract) with it: one `#[tokio::test]` per case
//! of [`dedup`], [`parking`] and [`sequence`]. Each case runs in a task of its own on a multi-threaded
//! runtime, so that it can race tasks on the store and the fixture cleans up even when the
//! case failed.

pub mod dedup;
pub mod parking;
pub mod sequence;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{DedupStore, ParkingStore, SequenceStore};

/// How long a store's claims and done records last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// The claim lease.
    pub lease: Duration,
    /// How long a record lives after its last write.
    pub ttl: Duration,
}

/// A store of the test's own: a namespace of a shared server, or a file in a fresh directory.
pub trait StoreFixture: Sized + 'static {
    /// The store under test.
    type Store: DedupStore + ParkingStore + SequenceStore;

    /// A fresh, empty store with these lifetimes.
    fn open(lifetimes: Lifetimes) -> impl Future<Output = Self>;

    /// The store, shared with the tasks of a case.
    fn store(&self) -> Arc<Self::Store>;

    /// Removes what the case wrote (chains have no TTL: nothing else would). Runs whether the
    /// case passed or failed.
    fn clean_up(self) -> impl Future<Output = ()> {
        async {}
    }
}

/// Opens a fresh store, runs `case` on it in a task of its own, cleans up, then passes on the
/// case's panic, if any.
pub async fn with_store<F, C, Fut>(lifetimes: Lifetimes, case: C)
where
    F: StoreFixture,
    C: FnOnce(Arc<F::Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fixture = F::open(lifetimes).await;
    let outcome = tokio::spawn(case(fixture.store())).await;
    fixture.clean_up().await;
    if let Err(failed) = outcome {
        std::panic::resume_unwind(failed.into_panic());
    }
}

/// Expands to modules `dedup_contract` and `parking_contract` with one `#[tokio::test]` per
/// case of [`dedup`](crate::store::dedup), [`parking`](crate::store::parking) and
/// [`sequence`](crate::store::sequence) for the
/// [`StoreFixture`] `$fixture`. The crate needs `tokio` (with `macros` and `rt-multi-thread`)
/// among its dependencies. A new case goes in the lists below, so that every store runs it.
#[macro_export]
macro_rules! store_contract {
    ($fixture:ty $(,)?) => {
        $crate::store_contract!(@cases $fixture;
            dedup: [
                completed_key_is_done_for_every_later_claim,
                live_lease_answers_busy,
                concurrent_claims_acquire_once,
                expired_lease_is_taken_over_and_the_stale_holder_is_fenced,
                release_kinds_count_attempts,
                unknown_key_is_fenced_at_zero,
                dead_lettered_key_is_recognised_until_a_resubmission_revives_it,
                batched_claims_and_completions_answer_per_key,
            ];
            parking: [
                swap_is_compare_and_set,
                empty_value_is_not_absent,
                binary_keys_and_groups_are_told_apart,
                delete_removes_the_chain,
                parked_chains_are_counted_per_group,
                chains_outlive_dedup_records,
                racing_swaps_from_one_value_have_one_winner,
                racing_increments_lose_no_update,
            ];
            sequence: [
                positions_only_grow,
                positions_expire_after_the_ttl,
                racing_advances_keep_the_highest,
            ];
        );
    };
    (@cases $fixture:ty;
        dedup: [$($dedup:ident),+ $(,)?];
        parking: [$($parking:ident),+ $(,)?];
        sequence: [$($sequence:ident),+ $(,)?];
    ) => {
        mod dedup_contract {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $dedup() {
                    $crate::store::dedup::$dedup::<$fixture>().await;
                }
            )+
        }
        mod parking_contract {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $parking() {
                    $crate::store::parking::$parking::<$fixture>().await;
                }
            )+
        }
        mod sequence_contract {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $sequence() {
                    $crate::store::sequence::$sequence::<$fixture>().await;
                }
            )+
        }
    };
}
