//! A read-only view of the bookkeeping for `/metrics`: per partition, how far commits got, how
//! far the broker is, what is in flight and what is held back.

use std::sync::Arc;

use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::partition::TopicPartition;
use crate::state::Shared;

/// A cheap, cloneable handle on a source's per-partition numbers, readable at any time.
#[derive(Clone)]
pub struct KafkaStats {
    pub(crate) shared: Arc<Shared>,
}

/// One assigned partition as the adapter sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStats {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The next offset to commit: every record before it that this consumer received is
    /// settled. Before the first record of the assignment arrives it is the committed offset,
    /// or -1 when that is not known yet either.
    pub watermark: i64,
    /// The group's committed offset as last confirmed by the broker.
    pub committed: Option<i64>,
    /// The broker's high watermark (the offset the next produced record gets); with
    /// `committed` it gives the consumer lag. Refreshed every few seconds.
    pub high_watermark: Option<i64>,
    /// Records fetched from this partition and not settled (waiting for `recv` or out).
    pub in_flight: usize,
    /// Fetching is paused: this partition or the whole source reached an in-flight limit, so
    /// nothing more of it is taken and librdkafka stops fetching it once its prefetch is queued.
    pub paused: bool,
    /// A dead-letter write of one of its records failed and has not succeeded since: its
    /// commits cannot move past that record until a retry does.
    pub stalled_on_dead_letter: bool,
}

impl From<PartitionStats> for outrigger_core::PartitionStats {
    fn from(p: PartitionStats) -> Self {
        Self {
            source: p.topic,
            partition: p.partition.to_string(),
            watermark: Some(p.watermark),
            lag: p.high_watermark.map(|high| (high - p.watermark).max(0)),
            pending: None,
            in_flight: p.in_flight,
            paused: p.paused,
            stalled: p.stalled_on_dead_letter,
            deleted_while_pending: 0,
        }
    }
}

impl KafkaStats {
    /// Every assigned partition, ordered by topic and partition.
    pub fn partitions(&self) -> Vec<PartitionStats> {
        let st = self.shared.state.lock();
        st.partitions
            .iter()
            .map(|(tp, p)| PartitionStats {
                topic: tp.topic.clone(),
                partition: tp.partition,
                watermark: p.watermark.watermark().or(p.committed).unwrap_or(-1),
                committed: p.committed,
                high_watermark: p.high_watermark,
                in_flight: p.in_flight,
                paused: !p.open(&st.global),
                stalled_on_dead_letter: !p.dead_letter_failed.is_empty(),
            })
            .collect()
    }

    /// Records fetched and not settled, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.shared.state.lock().in_flight
    }

    /// Payload bytes of records fetched and not settled.
    pub fn buffered_bytes(&self) -> u64 {
        self.shared.state.lock().bytes
    }
}

impl std::fmt::Debug for KafkaStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStats")
            .field("partitions", &self.partitions())
            .finish()
    }
}

impl Shared {
    /// Takes high watermarks, committed offsets and broker states from librdkafka's
    /// periodic statistics.
    pub(crate) fn observe_statistics(&self, statistics: &Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|b| b.state == "UP" && b.source != "internal");
        if up {
            self.health.set(true);
        }
        let mut st = self.state.lock();
        for (topic, t) in &statistics.topics {
            for p in t.partitions.values().filter(|p| p.partition >= 0) {
                let tp = TopicPartition {
                    topic: topic.clone(),
                    partition: p.partition,
                };
                if let Some(ours) = st.partitions.get_mut(&tp) {
                    ours.high_watermark = (p.hi_offset >= 0).then_some(p.hi_offset);
                    if p.committed_offset >= 0 {
                        ours.committed = Some(p.committed_offset);
                    }
                }
            }
        }
    }

    /// Takes the offsets of a successful commit.
    pub(crate) fn observe_commit(&self, offsets: &TopicPartitionList) {
        let mut st = self.state.lock();
        for e in offsets.elements() {
            let Offset::Offset(offset) = e.offset() else {
                continue;
            };
            if e.error().is_err() {
                continue;
            }
            let tp = TopicPartition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            };
            if let Some(p) = st.partitions.get_mut(&tp) {
                p.committed = Some(offset);
            }
        }
    }
}
