//! The per-stream numbers behind the lag and partition gauges, from `XINFO GROUPS` (the
//! group's lag) and `XPENDING` (this consumer's pending entries), beside what the source holds.

use outrigger_core::PartitionStats;
use redis::Value;

use crate::reply;
use crate::shared::Shared;

/// One entry per stream read (the retry streams of retry mode `queue` too), `partition`
/// empty. What Redis does not answer stays unknown.
pub(crate) async fn read(shared: &Shared) -> Vec<PartitionStats> {
    let mut out = Vec::with_capacity(shared.streams.len());
    for (index, stream) in shared.streams.iter().enumerate() {
        let lag = lag(shared, stream).await;
        let pending = own_pending(shared, stream).await;
        out.push(PartitionStats {
            source: stream.clone(),
            partition: String::new(),
            watermark: None,
            lag,
            pending,
            in_flight: shared.ledger.in_flight(index),
            paused: shared.ledger.full(),
            stalled: shared.ledger.stalled(index),
            deleted_while_pending: shared.ledger.deleted(index),
        });
    }
    out
}

/// Entries added to the stream that the group has not read yet (Redis 7.0 and later; none
/// while Redis cannot tell, after deletions in the middle of the stream).
async fn lag(shared: &Shared, stream: &str) -> Option<i64> {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("GROUPS").arg(stream);
    let groups: Value = shared.redis.query(&cmd).await.ok()?;
    let groups = reply::groups(groups).ok()?;
    let ours = groups.iter().find(|g| {
        reply::field(g, "name").and_then(reply::text).as_deref() == Some(&shared.settings.group)
    })?;
    reply::field(ours, "lag").and_then(reply::int)
}

/// Entries pending on this consumer, as Redis counts them.
async fn own_pending(shared: &Shared, stream: &str) -> Option<u64> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream).arg(&shared.settings.group);
    let summary: Value = shared.redis.query(&cmd).await.ok()?;
    let consumers = reply::pending_per_consumer(summary).ok()?;
    Some(
        consumers
            .iter()
            .find(|(name, _)| *name == shared.settings.consumer)
            .map_or(0, |(_, n)| *n),
    )
}
