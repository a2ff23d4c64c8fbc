//! What the source reports for `/metrics`: the consumer as JetStream last described it (lag,
//! unacked, redelivered), refreshed every few seconds, with what this sidecar holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use outrigger_core::{PartitionStats, StatsProbe};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::shared::Shared;

/// How often the consumer's info is asked for: gauges a few seconds old, one small request.
const REFRESH: Duration = Duration::from_secs(2);

/// The numbers of one consumer, from its info.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Messages of the stream (matching the filter) not delivered yet: the lag.
    pub num_pending: u64,
    /// Messages handed out and not acked, over every sidecar sharing the consumer.
    pub num_ack_pending: u64,
    /// Messages handed out more than once (not acked within `ack_wait`, naked).
    pub num_redelivered: u64,
    /// The stream sequence every message up to which is acked.
    pub ack_floor: u64,
}

impl From<&async_nats::jetstream::consumer::Info> for ConsumerStats {
    fn from(info: &async_nats::jetstream::consumer::Info) -> Self {
        Self {
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending as u64,
            num_redelivered: info.num_redelivered as u64,
            ack_floor: info.ack_floor.stream_sequence,
        }
    }
}

/// Asks for the consumer's info every [`REFRESH`] until stopped.
pub(crate) async fn refresh(consumer: PullConsumer, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
        match consumer.get_info().await {
            Ok(info) => *shared.consumer_info.lock() = Some(info),
            Err(error) => debug!(%error, "Consumer info not read; the gauges keep the last."),
        }
    }
}

/// The latest consumer numbers, when the server described it at least once.
pub(crate) fn consumer_stats(shared: &Shared) -> Option<ConsumerStats> {
    shared
        .consumer_info
        .lock()
        .as_ref()
        .map(ConsumerStats::from)
}

/// The source's one entry: the stream, no partition.
pub(crate) fn partition(shared: &Shared) -> PartitionStats {
    let consumer = consumer_stats(shared);
    let in_flight = shared.in_flight();
    PartitionStats {
        source: shared.stream.clone(),
        partition: String::new(),
        watermark: consumer
            .as_ref()
            .map(|c| i64::try_from(c.ack_floor + 1).unwrap_or(i64::MAX)),
        lag: consumer
            .as_ref()
            .map(|c| i64::try_from(c.num_pending).unwrap_or(i64::MAX)),
        pending: consumer.as_ref().map(|c| c.num_ack_pending),
        in_flight,
        paused: in_flight >= shared.max_in_flight || shared.bytes_full(),
        stalled: shared.dead_letters_failing.load(Ordering::Acquire) > 0,
        deleted_while_pending: 0,
    }
}

/// A probe of `shared`, readable after the source stopped.
pub(crate) fn probe(shared: Arc<Shared>) -> StatsProbe {
    StatsProbe::new(move || {
        let one = partition(&shared);
        Box::pin(async move { vec![one] })
    })
}
