//! A message's place in its key's chain, and the chain's rules around one message: what it
//! does when it meets the chain, and which changes to the chain go before and after its
//! settlement at the broker. Pure: the pipeline reads and writes the chain in the store.

use std::time::SystemTime;

use outrigger_core::{Coordinates, Trail};

use super::{Arrival, Chain, Finish, Turn};

/// What a message is to its key's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Taken from the source with nothing parked for its key: runs as usual.
    Free,
    /// A copy whose turn it is.
    Head,
    /// Written back to a retry queue to wait for its turn.
    Parked,
    /// Dead-lettered because of its chain (it follows its head, or redoes an interrupted write).
    Doomed,
}

/// What a message does when it meets its chain, besides running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Meeting {
    /// Its turn: deliver it as usual.
    Run,
    /// Not its turn: write it to a retry queue with this trail, no attempt spent.
    Park(Trail),
    /// A copy read again after its message was settled: settle it without delivery.
    Stale,
    /// Its chain sends it to the dead-letter queue, for this reason.
    DeadLetter(String),
}

/// A message taken from the source meets its chain: `arrival` is what the chain said.
pub fn arrive(arrival: Arrival, origin: &Coordinates, now: SystemTime) -> (Role, Meeting) {
    match arrival {
        Arrival::Free => (Role::Free, Meeting::Run),
        Arrival::Park { tier, hop } => (
            Role::Parked,
            Meeting::Park(Trail {
                origin: origin.clone(),
                hop,
                attempts: 0,
                tier: tier.unwrap_or(0),
                first_seen: now,
                first_failure: None,
                due: None,
            }),
        ),
    }
}

/// A copy read from a retry queue meets its chain: `turn` is what the chain said.
pub fn take_turn(turn: Turn, trail: &Trail) -> (Role, Meeting) {
    match turn {
        Turn::Run => (Role::Head, Meeting::Run),
        Turn::Stale => (Role::Free, Meeting::Stale),
        Turn::Wait { tier } => (
            Role::Parked,
            Meeting::Park(Trail {
                tier: tier.unwrap_or(trail.tier),
                due: None,
                ..trail.clone()
            }),
        ),
        Turn::Follow { head } => (
            Role::Doomed,
            Meeting::DeadLetter(format!(
                "parked behind {head}, which was dead-lettered (retry.parked_after_dead_letter = \"dead_letter\")"
            )),
        ),
        Turn::Redo { reason } => (Role::Doomed, Meeting::DeadLetter(reason)),
    }
}

/// How a message is settled at the broker, as far as its chain cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settling<'a> {
    /// Acked: delivered, dropped, a duplicate or stale.
    Ack,
    /// Dead-lettered for this reason.
    DeadLetter(&'a str),
    /// Written to the retry queue of `tier` as copy `hop`.
    Retry {
        /// The tier.
        tier: usize,
        /// The copy's hop.
        hop: u32,
    },
    /// Handed back unsettled.
    Requeue,
}

/// A change to a chain, made around a settlement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainStep {
    /// The message's outcome is final: it leaves the chain.
    Finish(Finish),
    /// It failed into the retry queue of `tier` as copy `hop`.
    Failed {
        /// The tier.
        tier: usize,
        /// The copy's hop.
        hop: u32,
    },
    /// Its dead letter is written: forget it.
    Cleared,
}

impl ChainStep {
    /// Applies the step to `chain` for the message `entry`.
    pub fn apply(&self, chain: &mut Chain, entry: &str) {
        match self {
            ChainStep::Finish(how) => chain.finish(entry, how.clone()),
            ChainStep::Failed { tier, hop } => chain.failed(entry, *tier, *hop),
            ChainStep::Cleared => chain.cleared(entry),
        }
    }
}

/// The chain steps around a settlement: one recorded before the broker settles, one after.
/// What must survive a crash in between goes first: a head's final outcome (so a copy read
/// again is recognised), a dead letter's reason (so an interrupted write is redone), a new
/// chain (so its head's copy is not taken for stale). A head moves on only once its new copy
/// is written, and a dead letter is forgotten only once written. `follow`: the policy sends
/// a dead-lettered head's followers after it.
pub fn around(
    role: Role,
    settling: Settling<'_>,
    follow: bool,
) -> (Option<ChainStep>, Option<ChainStep>) {
    match (role, settling) {
        (Role::Head, Settling::Ack) => (Some(ChainStep::Finish(Finish::Done)), None),
        (Role::Head | Role::Doomed, Settling::DeadLetter(reason)) => (
            Some(ChainStep::Finish(Finish::DeadLettered {
                reason: reason.to_owned(),
                follow: follow && role == Role::Head,
            })),
            Some(ChainStep::Cleared),
        ),
        (Role::Free, Settling::Retry { tier, hop }) => {
            (Some(ChainStep::Failed { tier, hop }), None)
        }
        (Role::Head, Settling::Retry { tier, hop }) => {
            (None, Some(ChainStep::Failed { tier, hop }))
        }
        _ => (None, None),
    }
}
