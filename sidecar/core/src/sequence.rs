//! Sequence positions: the store side of the reorder buffer (`ordering.sequence`).
//!
//! For each key whose messages carry a sequence number, the store keeps the next sequence
//! expected, next to the dedup records, so a restart or another replica goes on where the key
//! was. A position only ever grows, so two replicas advancing one key at once cannot move it
//! back; it is kept for the store's record TTL (`dedup.ttl`) after its last advance, and a key quiet for longer starts over
//! at the first message seen (or `ordering.first_sequence`).

use std::fmt;
use std::future::Future;

use bytes::Bytes;

use crate::dedup::StoreError;

/// Names the sequence of one key: the source (topic, queue, stream) its messages come from,
/// and the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceId {
    /// The topic, queue or stream name (not the partition: a key's sequence spans them).
    pub source: String,
    /// The message key, bytes as carried.
    pub key: Bytes,
}

impl fmt::Display for SequenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} key {}",
            self.source,
            String::from_utf8_lossy(&self.key)
        )
    }
}

/// A store that keeps the next expected sequence of each key.
pub trait SequenceStore: Send + Sync + 'static {
    /// The next sequence expected for `id`, when the store holds one.
    fn next_sequence(
        &self,
        id: &SequenceId,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Raises the next sequence expected for `id` to `next`, never lowering it, and keeps it
    /// for the store's record TTL from now. Returns the position the store holds afterwards (higher than `next`
    /// when another holder went further).
    fn advance_sequence(
        &self,
        id: &SequenceId,
        next: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
