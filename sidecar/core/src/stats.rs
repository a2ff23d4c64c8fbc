//! What an adapter reports about its partitions (or streams, or queues) for the gauges of
//! `/metrics`: lag, the commit position, what is in flight and what is held back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One partition of a source as its adapter sees it. Brokers without partitions report one
/// entry per queue or stream, with `partition` empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// The topic, queue or stream.
    pub source: String,
    /// The partition within it (`"3"`), or empty where there are none.
    pub partition: String,
    /// The next position the sidecar will commit (everything below is settled), where the
    /// broker has positions; `-1` while not known.
    pub watermark: Option<i64>,
    /// Messages between the committed position and the end of the partition, when known.
    pub lag: Option<i64>,
    /// Messages handed to this consumer and not settled, as the broker counts them (pending
    /// entries, unacknowledged deliveries), when it says.
    pub pending: Option<u64>,
    /// Messages taken from the broker and not settled yet.
    pub in_flight: usize,
    /// Taking more of it is paused by a backpressure limit.
    pub paused: bool,
    /// Settling its messages is blocked by a dead-letter or retry write that keeps failing.
    pub stalled: bool,
    /// Messages found deleted (or trimmed) while they were pending, since the source started,
    /// where the broker lets that happen (Redis Streams).
    pub deleted_while_pending: u64,
}

/// A future of a source's stats, boxed so sources of any broker can be probed alike.
pub type StatsFuture = Pin<Box<dyn Future<Output = Vec<PartitionStats>> + Send>>;

/// A cheap handle that reads a source's stats at any time, also after it stopped.
#[derive(Clone)]
pub struct StatsProbe(Arc<dyn Fn() -> StatsFuture + Send + Sync>);

impl StatsProbe {
    /// A probe that calls `read` each time.
    pub fn new(read: impl Fn() -> StatsFuture + Send + Sync + 'static) -> Self {
        Self(Arc::new(read))
    }

    /// A probe of a source that has nothing per partition to report.
    pub fn none() -> Self {
        Self::new(|| Box::pin(async { Vec::new() }))
    }

    /// The stats now.
    pub async fn read(&self) -> Vec<PartitionStats> {
        (self.0)().await
    }
}

impl std::fmt::Debug for StatsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsProbe")
    }
}
