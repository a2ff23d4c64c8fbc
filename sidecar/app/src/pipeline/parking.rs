//! Retry mode `queue`: delay tiers, and the parked-key chains read and changed in the store.
//!
//! A message's place in its key's chain is a [`Link`]; the chain's rules are
//! `outrigger_policies::chain`. A chain is read, changed by one of those rules and written back
//! by compare-and-set, again from a fresh read when another replica changed it in between.

use std::time::Duration;

use bytes::Bytes;
use outrigger_core::{ChainId, Coordinates, Message, ParkingStore, StoreError};
use outrigger_policies::{Chain, Finish};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Backoff, WAIT_MAX};
use crate::metrics::SourceMetrics;

/// Retry mode `queue`: where failing messages wait, and what their parked followers do when
/// one is dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryQueue {
    /// The delay of each tier, shortest first by convention.
    pub tiers: Vec<Duration>,
    /// Whether the messages parked behind a dead-lettered one follow it.
    pub dead_letter_parked: bool,
}

impl RetryQueue {
    /// The tier of the copy written after failed attempt `attempt` (from 1): the n-th failure
    /// waits in the n-th tier (the last from then on), or in the first tier at least as long
    /// as the app's `Retry-After`, whichever is later.
    pub fn tier_for(&self, attempt: u32, retry_after: Option<Duration>) -> usize {
        let last = self.tiers.len().saturating_sub(1);
        let by_attempt = (attempt.max(1) as usize - 1).min(last);
        let by_app = retry_after.map_or(0, |wanted| {
            self.tiers
                .iter()
                .position(|delay| *delay >= wanted)
                .unwrap_or(last)
        });
        by_attempt.max(by_app)
    }
}

/// What a message is to its key's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Taken from the source with nothing parked for its key: runs as usual.
    Free,
    /// A copy whose turn it is.
    Head,
    /// Written back to a retry queue to wait for its turn.
    Parked,
    /// Dead-lettered because of its chain (it follows its head, or redoes an interrupted write).
    Doomed,
}

/// A message's place in a parked-key chain.
#[derive(Clone, Debug)]
pub(super) struct Link {
    pub(super) id: ChainId,
    /// The message's id in the chain: its origin coordinates.
    pub(super) entry: String,
    pub(super) role: Role,
}

impl Link {
    /// The chain a message belongs to: its ordering key within its origin partition (or
    /// queue). `None` for a message without a key, which no chain orders.
    pub(super) fn of(message: &Message) -> Option<Self> {
        let key = message.key.clone().filter(|k| !k.is_empty())?;
        let origin = &message.coordinates;
        Some(Self {
            id: ChainId {
                group: group(origin),
                key,
            },
            entry: origin.to_string(),
            role: Role::Free,
        })
    }
}

/// The chain group of a position: its partition (see [`partition_group`]), or the queue or
/// stream name.
pub fn group(at: &Coordinates) -> String {
    match at {
        Coordinates::Kafka {
            topic, partition, ..
        } => partition_group(topic, *partition),
        other => other.source_name().to_owned(),
    }
}

/// The chain group of a partition: `<topic>/<partition>`; parked keys are counted per group.
pub fn partition_group(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// A change to a chain, made around a settlement.
#[derive(Clone, Debug)]
pub(super) enum Step {
    Finish(Finish),
    Failed { tier: usize, hop: u32 },
    Cleared,
}

impl Step {
    fn apply(&self, chain: &mut Chain, entry: &str) {
        match self {
            Step::Finish(how) => chain.finish(entry, how.clone()),
            Step::Failed { tier, hop } => chain.failed(entry, *tier, *hop),
            Step::Cleared => chain.cleared(entry),
        }
    }
}

/// Reads the chain, applies `change` and writes it back if it changed, until the write is not
/// raced. Waits out store outages; `None` when `abort` interrupts the wait.
pub(super) async fn update<D, R>(
    store: &D,
    id: &ChainId,
    abort: &CancellationToken,
    metrics: &SourceMetrics,
    mut change: impl FnMut(&mut Chain) -> R,
) -> Option<R>
where
    D: ParkingStore,
{
    let mut backoff = Backoff::up_to(WAIT_MAX);
    loop {
        match try_update(store, id, &mut change).await {
            Ok(Some(answer)) => return Some(answer),
            // Another replica changed it meanwhile: read it again.
            Ok(None) => continue,
            Err(error) => {
                metrics.store_errors.inc();
                warn!(%error, chain = %id, "Dedup store unreachable; the parked-key chain waits.");
            }
        }
        if !backoff.pause(abort).await {
            return None;
        }
    }
}

/// Applies a step: see [`update`].
pub(super) async fn apply<D: ParkingStore>(
    store: &D,
    link: &Link,
    step: &Step,
    abort: &CancellationToken,
    metrics: &SourceMetrics,
) -> bool {
    update(store, &link.id, abort, metrics, |chain| {
        step.apply(chain, &link.entry)
    })
    .await
    .is_some()
}

async fn try_update<D, R>(
    store: &D,
    id: &ChainId,
    change: &mut impl FnMut(&mut Chain) -> R,
) -> Result<Option<R>, StoreError>
where
    D: ParkingStore,
{
    let old: Option<Bytes> = store.load_chain(id).await?;
    let mut chain = match &old {
        None => Chain::default(),
        Some(bytes) => Chain::decode(bytes)
            .map_err(|e| StoreError::Protocol(format!("unreadable parked-key chain {id}: {e}")))?,
    };
    let answer = change(&mut chain);
    let new = (!chain.is_empty()).then(|| chain.encode());
    if old.as_deref() == new.as_deref() {
        return Ok(Some(answer));
    }
    let swapped = store
        .swap_chain(id, old.as_deref(), new.as_deref(), chain.is_parked())
        .await?;
    Ok(swapped.then_some(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tier_follows_the_attempt_and_the_apps_retry_after() {
        let q = RetryQueue {
            tiers: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
            dead_letter_parked: false,
        };
        assert_eq!(q.tier_for(1, None), 0);
        assert_eq!(q.tier_for(2, None), 1);
        assert_eq!(q.tier_for(3, None), 2);
        assert_eq!(q.tier_for(9, None), 2);
        assert_eq!(q.tier_for(1, Some(Duration::from_secs(5))), 1);
        assert_eq!(q.tier_for(1, Some(Duration::from_secs(600))), 2);
        assert_eq!(q.tier_for(3, Some(Duration::from_millis(10))), 2);
    }
}
