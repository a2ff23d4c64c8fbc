//! `ordering.sequence`: the store side of the reorder buffer, and the gate a sequenced message
//! passes before its delivery.
//!
//! A message's key lane runs it only when its predecessors of the lane are settled; the gate
//! then compares its sequence with the key's next expected one (`outrigger_policies::sequence`):
//! the next one runs, one ahead goes back to the consumer loop to wait in the [`Reorder`]
//! buffer (giving up its lane), one behind is settled as such. The next expected sequence is
//! read from the dedup store the first time a key is seen and kept here after, raised before a
//! message is settled at the broker (so a crash in between finds it behind, and dedup settles
//! it as the duplicate it is), and the loop is told so that what waited for it runs. Replicas
//! share the positions through the store: a message about to wait reads its key's position
//! again, and the keys with waiting messages are read again every [`REFRESH`].
//!
//! [`Reorder`]: outrigger_policies::Reorder

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use outrigger_core::dlq::resubmit_headers;
use outrigger_core::{Message, SequenceId, SequenceStore};
use outrigger_policies::sequence::{place, Place, Resolution, SequencePolicy};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Dedup, Doubling, Route, WAIT_MAX};
use crate::config::RouteAction;
use crate::metrics::SourceMetrics;

/// How often the positions of keys with waiting messages are read again from the store, for
/// what other replicas settled.
pub(super) const REFRESH: Duration = Duration::from_secs(1);

/// Keys with waiting messages read per refresh at most.
pub(super) const REFRESH_MAX: usize = 256;

/// Keys whose next sequence is kept in memory at most; past it the memory starts over, and
/// keys are read from the store again.
const KNOWN_MAX: usize = 65_536;

/// The keys' next sequences as this sidecar last saw or raised them (never above the
/// store's), and the keys raised since the consumer loop last looked.
#[derive(Default)]
pub struct Sequencer {
    known: parking_lot::Mutex<HashMap<SequenceId, u64>>,
    raised: parking_lot::Mutex<Vec<SequenceId>>,
    notify: Notify,
    refreshing: AtomicBool,
}

impl Sequencer {
    /// The next sequence of `id`, as last seen here.
    pub(super) fn known(&self, id: &SequenceId) -> Option<u64> {
        self.known.lock().get(id).copied()
    }

    /// Learns that `id`'s next sequence is at least `next`.
    fn learn(&self, id: &SequenceId, next: u64) {
        let mut known = self.known.lock();
        if known.len() >= KNOWN_MAX && !known.contains_key(id) {
            known.clear();
        }
        let at = known.entry(id.clone()).or_insert(next);
        *at = (*at).max(next);
    }

    /// The next sequence of `id`: as known here, else as the store holds it, else where
    /// `policy` starts a key first seen at `seq`. With `fresh`, from the store whatever is
    /// known. `None` when shutdown's abort came during a store outage.
    async fn expected<D: SequenceStore>(
        &self,
        dedup: &Dedup<D>,
        metrics: &SourceMetrics,
        id: &SequenceId,
        start: u64,
        fresh: bool,
        abort: &CancellationToken,
    ) -> Option<u64> {
        if !fresh {
            if let Some(next) = self.known(id) {
                return Some(next);
            }
        }
        let mut backoff = Doubling::up_to(WAIT_MAX);
        loop {
            match dedup.store.next_sequence(id).await {
                Ok(stored) => {
                    dedup.down.recovered();
                    let next = stored.unwrap_or(start);
                    self.learn(id, next);
                    return self.known(id);
                }
                Err(e) => {
                    metrics.store_errors.inc();
                    dedup.down.failed(&e);
                }
            }
            if !backoff.pause(abort).await {
                return None;
            }
        }
    }

    /// Raises `id`'s next sequence to `next` in the store, waiting out an outage, and tells the
    /// consumer loop. False when shutdown's abort came first: nothing was raised.
    pub(super) async fn raise<D: SequenceStore>(
        &self,
        dedup: &Dedup<D>,
        metrics: &SourceMetrics,
        id: &SequenceId,
        next: u64,
        abort: &CancellationToken,
    ) -> bool {
        let mut backoff = Doubling::up_to(WAIT_MAX);
        loop {
            match dedup.store.advance_sequence(id, next).await {
                Ok(stored) => {
                    dedup.down.recovered();
                    self.learn(id, stored);
                    self.tell(id.clone());
                    return true;
                }
                Err(e) => {
                    metrics.store_errors.inc();
                    dedup.down.failed(&e);
                }
            }
            if !backoff.pause(abort).await {
                return false;
            }
        }
    }

    /// Reads the positions of `ids` (keys with waiting messages) from the store, and tells the
    /// consumer loop of those another replica moved. One pass at a time; a failed read is
    /// left for the next pass.
    pub(super) async fn refresh<D: SequenceStore>(&self, store: &D, ids: Vec<SequenceId>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        for id in ids {
            let Ok(Some(stored)) = store.next_sequence(&id).await else {
                continue;
            };
            if self.known(&id).is_none_or(|known| stored > known) {
                self.learn(&id, stored);
                self.tell(id);
            }
        }
        self.refreshing.store(false, Ordering::Release);
    }

    /// Tells the consumer loop `id` moved.
    fn tell(&self, id: SequenceId) {
        self.raised.lock().push(id);
        self.notify.notify_one();
    }

    /// Waits until a key was raised, then takes the keys raised since the last call.
    pub(super) async fn raised(&self) -> Vec<SequenceId> {
        loop {
            let raised = std::mem::take(&mut *self.raised.lock());
            if !raised.is_empty() {
                return raised;
            }
            self.notify.notified().await;
        }
    }
}

/// What a sequenced message is, once it passed the gate.
#[derive(Clone, Debug)]
pub(super) struct Ticket {
    pub(super) id: SequenceId,
    pub(super) seq: u64,
    pub(super) kind: TicketKind,
}

/// Where the message stood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TicketKind {
    /// Its key's next: delivered; the key moves past it before it is settled.
    Next,
    /// Its key had passed it: a duplicate if dedup knows it, else dead-lettered.
    Behind { expected: u64 },
    /// Waited behind a gap given up under `on_gap = "dead_letter"`: dead-lettered, naming the
    /// missing sequence; the key moves past it.
    Expired { missing: u64 },
}

impl Ticket {
    /// Why its message is dead-lettered without a delivery, when it is.
    pub(super) fn refusal(&self) -> Option<String> {
        let key = String::from_utf8_lossy(&self.id.key);
        match self.kind {
            TicketKind::Next => None,
            TicketKind::Behind { expected } => Some(format!(
                "sequence {} of key {key:?} is behind the next one expected ({expected}): it came \
                 after its gap was given up (ordering.gap_timeout), or it was sent again under \
                 another idempotency key",
                self.seq
            )),
            TicketKind::Expired { missing } => Some(format!(
                "sequence {} of key {key:?} waited for the missing sequence {missing} longer than \
                 ordering.gap_timeout, and ordering.on_gap = \"dead_letter\"",
                self.seq
            )),
        }
    }

    /// The key's next sequence once its message is settled; `None`: it does not move.
    pub(super) fn moves_to(&self) -> Option<u64> {
        match self.kind {
            TicketKind::Next | TicketKind::Expired { .. } => Some(self.seq + 1),
            TicketKind::Behind { .. } => None,
        }
    }
}

/// What the gate decided.
pub(super) enum Gate {
    /// Not sequenced: runs as any other message.
    Free,
    /// Runs (or is settled) as the ticket says.
    Run(Ticket),
    /// Ahead of its key's next: waits in the reorder buffer.
    Wait { id: SequenceId, seq: u64 },
    /// Its sequence could not be read (why): dead-lettered, class `decode`.
    Unreadable(String),
}

/// What the worker is told of a sequenced message: its ticket, or why its sequence could not
/// be read.
pub(super) type Sequenced = Result<Ticket, String>;

/// The sequence of `message`'s key, when its route orders by one and it takes part: a keyed
/// message, delivered by its route, and not a resubmitted dead letter (which an operator sends
/// back on purpose, out of its sequence).
pub(super) fn policy_for<'r>(route: &'r Route, message: &Message) -> Option<&'r SequencePolicy> {
    let policy = route.sequence.as_ref()?;
    if route.action != RouteAction::Deliver || message.header(resubmit_headers::COUNT).is_some() {
        return None;
    }
    message.key.as_ref().filter(|k| !k.is_empty())?;
    Some(policy)
}

/// The gate of a message its lane is about to run; `None` when shutdown's abort came during a
/// store outage. `resolution` is what a given-up gap made of it, if that is how it came back.
pub(super) async fn gate<D: SequenceStore>(
    sequencer: &Sequencer,
    dedup: Option<&Dedup<D>>,
    metrics: &SourceMetrics,
    route: &Route,
    message: &Message,
    resolution: Option<Resolution>,
    abort: &CancellationToken,
) -> Option<Gate> {
    let (Some(policy), Some(dedup)) = (policy_for(route, message), dedup) else {
        return Some(Gate::Free);
    };
    let seq = match policy.sequence_of(message) {
        Ok(seq) => seq,
        Err(e) => return Some(Gate::Unreadable(e.to_string())),
    };
    let key: Bytes = message.key.clone().unwrap_or_default();
    let id = SequenceId {
        source: message.coordinates.source_name().to_owned(),
        key,
    };
    let ticket = |kind| {
        Some(Gate::Run(Ticket {
            id: id.clone(),
            seq,
            kind,
        }))
    };
    let start = policy.start(seq);
    let expected = match resolution {
        Some(Resolution::Expire { missing }) => return ticket(TicketKind::Expired { missing }),
        Some(Resolution::Skip { .. }) => {
            // Another replica may have filled the gap meanwhile: ask the store, not memory.
            let expected = sequencer
                .expected(dedup, metrics, &id, start, true, abort)
                .await?;
            if seq > expected && !sequencer.raise(dedup, metrics, &id, seq, abort).await {
                return None;
            }
            expected.max(seq)
        }
        Some(Resolution::Follow) | None => {
            let known = sequencer
                .expected(dedup, metrics, &id, start, false, abort)
                .await?;
            if seq > known {
                // Before it waits: another replica may have moved the key since it was read.
                sequencer
                    .expected(dedup, metrics, &id, start, true, abort)
                    .await?
            } else {
                known
            }
        }
    };
    match place(seq, expected) {
        Place::Next => ticket(TicketKind::Next),
        Place::Behind => ticket(TicketKind::Behind { expected }),
        Place::Ahead => Some(Gate::Wait { id, seq }),
    }
}

#[cfg(test)]
mod tests;
