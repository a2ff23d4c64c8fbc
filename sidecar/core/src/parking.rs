//! Parked-key chains: the store side of retry mode `queue`.
//!
//! While a message waits in a retry queue, later messages with the same ordering key are parked
//! behind it, in arrival order, so none overtakes it. That chain lives in the dedup store, next
//! to the dedup records, so a restart or another replica picks it up where it was. The store
//! only keeps an opaque value per chain and swaps it atomically: the rules of a chain are pure
//! logic (`outrigger_policies::chain`), the same for every store.

use std::fmt;
use std::future::Future;

use bytes::Bytes;

use crate::dedup::StoreError;

/// Names one chain: the partition (or queue) it belongs to, and the ordering key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId {
    /// `<topic>/<partition>` (or the queue name) of the messages' origin; parked chains are
    /// counted per group for the parked-keys metric.
    pub group: String,
    /// The ordering key, bytes as carried.
    pub key: Bytes,
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} key {}",
            self.group,
            String::from_utf8_lossy(&self.key)
        )
    }
}

/// A store that keeps one opaque value per chain, swapped by compare-and-set.
pub trait ParkingStore: Send + Sync + 'static {
    /// The value stored for `chain`, if any.
    fn load_chain(
        &self,
        chain: &ChainId,
    ) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;

    /// Atomically replaces the value of `chain` by `new` (`None` deletes it) if it still is
    /// `old` (`None`: absent). Returns false, changing nothing, when it is not. `parked` says
    /// whether the new value holds parked messages: the chain then counts in
    /// [`parked_chains`](Self::parked_chains) of its group, and otherwise not.
    fn swap_chain(
        &self,
        chain: &ChainId,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
        parked: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// How many chains of `group` hold parked messages.
    fn parked_chains(&self, group: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
