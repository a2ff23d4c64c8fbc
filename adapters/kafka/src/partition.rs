//! One assigned partition's bookkeeping: its key, its watermark and in-flight count, its gate,
//! and the ticket an acker carries back to it.
//!
//! Nothing here knows the consumer: where the poll thread reads a partition's records from is
//! the `F` of [`PartitionState`], filled in by the shared state.

use std::collections::BTreeSet;
use std::fmt;

use crate::backpressure::Gate;
use crate::watermark::Watermark;

/// A partition of a topic; the key of everything per partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TopicPartition {
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

/// What an acker needs to account for its record when it settles.
#[derive(Clone, Debug)]
pub(crate) struct Ticket {
    pub(crate) tp: TopicPartition,
    /// The assignment the record was fetched in; a settlement from an older one is ignored.
    pub(crate) generation: u64,
    pub(crate) offset: i64,
    pub(crate) bytes: u64,
}

/// One assigned partition; `F` is where the poll thread reads its records.
pub(crate) struct PartitionState<F> {
    /// Which assignment of this partition this is; grows with every assignment.
    pub(crate) generation: u64,
    pub(crate) watermark: Watermark,
    /// Records fetched in this assignment and not settled (buffered or handed out).
    pub(crate) in_flight: usize,
    /// Closed while this partition alone is at its limit.
    pub(crate) gate: Gate,
    /// Where its records come from, read by the poll thread only while both gates are open.
    pub(crate) feed: F,
    /// Set once a revoke started: nothing more of it is handed out.
    pub(crate) revoking: bool,
    /// Offsets whose dead-letter write failed and that have not settled since.
    pub(crate) dead_letter_failed: BTreeSet<i64>,
    /// Last committed offset, from commit results and librdkafka statistics.
    pub(crate) committed: Option<i64>,
    /// The broker's high watermark, from librdkafka statistics.
    pub(crate) high_watermark: Option<i64>,
}

impl<F> PartitionState<F> {
    pub(crate) fn new(generation: u64, feed: F) -> Self {
        Self {
            generation,
            watermark: Watermark::new(),
            in_flight: 0,
            gate: Gate::default(),
            feed,
            revoking: false,
            dead_letter_failed: BTreeSet::new(),
            committed: None,
            high_watermark: None,
        }
    }

    /// Whether the poll thread may take more of its records: its gate and the global one are
    /// open and no revoke started.
    pub(crate) fn open(&self, global: &Gate) -> bool {
        !global.is_closed() && !self.gate.is_closed() && !self.revoking
    }
}

impl<F: fmt::Debug> fmt::Debug for PartitionState<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionState")
            .field("generation", &self.generation)
            .field("watermark", &self.watermark)
            .field("in_flight", &self.in_flight)
            .field("gate", &self.gate)
            .field("feed", &self.feed)
            .field("revoking", &self.revoking)
            .finish_non_exhaustive()
    }
}
