//! Retry mode `queue`: the parked-key chains, read and changed in the store.
//!
//! A message's place in its key's chain is a [`Link`]; the chain's rules are
//! `outrigger_policies::chain`. A chain is read, changed by one of those rules and written back
//! by compare-and-set, again from a fresh read when another replica changed it in between.

use bytes::Bytes;
use outrigger_core::{ChainId, Episode, Message, ParkingStore, StoreError};
use outrigger_policies::chain::link::{ChainStep, Role};
use outrigger_policies::Chain;
use tokio_util::sync::CancellationToken;

use super::{Doubling, WAIT_MAX};
use crate::metrics::SourceMetrics;

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
                group: origin.partition(),
                key,
            },
            entry: origin.to_string(),
            role: Role::Free,
        })
    }
}

/// Reads the chain, applies `change` and writes it back if it changed, until the write is not
/// raced. Waits out store outages; `None` when `abort` interrupts the wait.
pub(super) async fn update<D, R>(
    store: &D,
    down: &Episode,
    id: &ChainId,
    abort: &CancellationToken,
    metrics: &SourceMetrics,
    mut change: impl FnMut(&mut Chain) -> R,
) -> Option<R>
where
    D: ParkingStore,
{
    let mut backoff = Doubling::up_to(WAIT_MAX);
    loop {
        match try_update(store, id, &mut change).await {
            Ok(Some(answer)) => {
                down.recovered();
                return Some(answer);
            }
            // Another replica changed it meanwhile: read it again.
            Ok(None) => continue,
            Err(error) => {
                metrics.store_errors.inc();
                down.failed(&format_args!("{error} (parked-key chain {id})"));
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
    down: &Episode,
    link: &Link,
    step: &ChainStep,
    abort: &CancellationToken,
    metrics: &SourceMetrics,
) -> bool {
    update(store, down, &link.id, abort, metrics, |chain| {
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
