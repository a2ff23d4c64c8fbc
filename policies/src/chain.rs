//! Parked-key chains: per-key order through non-blocking retries (retry mode `queue`).
//!
//! When a message of key K fails and goes to a retry queue, K's later messages must not
//! overtake it. They are *parked*: each is written to a retry queue too, without spending an
//! attempt, and K's chain records them in arrival order. Only the chain's head may run; a
//! parked message read from a retry queue before its turn is written back behind the head
//! (to the head's tier, so it comes round after it). When the head's outcome is final, the
//! next message becomes head, or, when the head was dead-lettered and the policy says so,
//! every parked message follows it to the dead-letter queue.
//!
//! Copies can be read twice (a crash before a commit) and run anywhere in a consumer group, so
//! the chain also says which copies are live: each copy carries a *hop*, which grows every time
//! the head fails into a retry queue, and a copy of the head older than the newest hop the
//! chain knows of is stale. A head's dead letter is recorded here before it is written, so a
//! copy read again after a crash in between writes it again instead of being taken as stale.
//!
//! The chain is a value the pipeline reads, changes with these rules and writes back by
//! compare-and-set (`outrigger_core::ParkingStore`); every store keeps it the same way.

pub mod link;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// One key's parked messages, by entry id (the origin coordinates of each message).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Parked messages in arrival order; the first is the head, the only one that may run.
    entries: VecDeque<String>,
    /// The newest hop of the head known here; `None` while any copy of it may run (it just
    /// became head, and its copy was written while it was parked).
    head_hop: Option<u32>,
    /// The retry tier the head's live copy waits in, for followers to queue behind it.
    head_tier: Option<usize>,
    /// Set when a head was dead-lettered and the policy sends the rest after it: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    follows: Option<String>,
    /// Entries whose dead letter is recorded but not confirmed written yet, with its reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    dying: BTreeMap<String, String>,
}

/// What a message taken from the source itself (not a retry copy) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The key has nothing parked: run it as usual.
    Free,
    /// It is parked behind the head: write it to a retry queue with this hop, to the head's
    /// tier when known (else the first).
    Park {
        /// The head's tier, if known.
        tier: Option<usize>,
        /// The hop its copy carries.
        hop: u32,
    },
}

/// What a copy read from a retry queue does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Turn {
    /// It is the head and live: deliver it.
    Run,
    /// An older copy, or one whose message is finished: settle it without delivery.
    Stale,
    /// Its turn has not come: write it back to the head's tier (else the tier it came from).
    Wait {
        /// The head's tier, if known.
        tier: Option<usize>,
    },
    /// The head it waited for was dead-lettered and the policy sends it after it.
    Follow {
        /// The id of that head.
        head: String,
    },
    /// Its dead letter was recorded and may not have been written: write it (again).
    Redo {
        /// The recorded reason.
        reason: String,
    },
}

/// How a message left its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Delivered, skipped as a duplicate, or dropped: the next may run.
    Done,
    /// About to be written to the dead-letter queue for this reason. With `follow`, a head
    /// takes the rest of the chain with it.
    DeadLettered {
        /// Why; written again if the write is interrupted.
        reason: String,
        /// Whether the messages parked behind it follow it.
        follow: bool,
    },
}

impl Chain {
    /// Reads a stored chain.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a chain serializes")
    }

    /// Whether messages are parked (the key counts as parked).
    pub fn is_parked(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Whether nothing is left to keep: the stored value can be deleted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.dying.is_empty()
    }

    /// Parked messages, head first.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(String::as_str)
    }

    /// A message of this key taken from the source: free when nothing is parked, else parked
    /// at the end (or where it already is, when it is read again after a crash).
    pub fn arrive(&mut self, entry: &str) -> Arrival {
        match self.position(entry) {
            _ if self.entries.is_empty() => Arrival::Free,
            Some(0) => Arrival::Park {
                tier: self.head_tier,
                hop: self.head_hop.unwrap_or(0),
            },
            Some(_) => Arrival::Park {
                tier: self.head_tier,
                hop: 0,
            },
            None => {
                self.entries.push_back(entry.to_owned());
                Arrival::Park {
                    tier: self.head_tier,
                    hop: 0,
                }
            }
        }
    }

    /// A copy with `hop` read from a retry queue.
    pub fn turn(&self, entry: &str, hop: u32) -> Turn {
        if let Some(reason) = self.dying.get(entry) {
            return Turn::Redo {
                reason: reason.clone(),
            };
        }
        match self.position(entry) {
            None => Turn::Stale,
            Some(_) if self.follows.is_some() => Turn::Follow {
                head: self.follows.clone().unwrap_or_default(),
            },
            Some(0) if self.head_hop.is_none_or(|live| hop >= live) => Turn::Run,
            Some(0) => Turn::Stale,
            Some(_) => Turn::Wait {
                tier: self.head_tier,
            },
        }
    }

    /// The message failed and its copy with `hop` goes to `tier`: it heads a new chain, or
    /// moves the head it is on; a message not in a non-empty chain joins it at the end.
    ///
    /// When the message came from the source, record this *before* writing the copy: a copy
    /// read before its chain exists would be taken as stale. When it came from a retry queue,
    /// record it *after*: the old copy, read again after a crash in between, must still run,
    /// and a new copy read early runs anyway (its hop is not older than the chain's).
    pub fn failed(&mut self, entry: &str, tier: usize, hop: u32) {
        match self.position(entry) {
            Some(0) => {
                if self.head_hop.is_none_or(|live| hop >= live) {
                    self.head_hop = Some(hop);
                    self.head_tier = Some(tier);
                }
            }
            Some(_) => {}
            None if self.entries.is_empty() => {
                self.entries.push_back(entry.to_owned());
                self.head_hop = Some(hop);
                self.head_tier = Some(tier);
            }
            None => self.entries.push_back(entry.to_owned()),
        }
    }

    /// The message's outcome is final: it leaves the chain (record this before it is acked).
    pub fn finish(&mut self, entry: &str, how: Finish) {
        let Some(at) = self.position(entry) else {
            return;
        };
        self.entries.remove(at);
        if at == 0 {
            self.head_hop = None;
            self.head_tier = None;
        }
        if let Finish::DeadLettered { reason, follow } = how {
            self.dying.insert(entry.to_owned(), reason);
            if follow && at == 0 && self.follows.is_none() {
                self.follows = Some(entry.to_owned());
            }
        }
        if self.entries.is_empty() {
            self.follows = None;
        }
    }

    /// The dead letter of `entry` is written and its copy settled: forget it.
    pub fn cleared(&mut self, entry: &str) {
        self.dying.remove(entry);
    }

    fn position(&self, entry: &str) -> Option<usize> {
        self.entries.iter().position(|e| e == entry)
    }
}

#[cfg(test)]
mod tests;
