//! Sequence reordering (`ordering.sequence`): per key, messages are delivered in the order of a
//! sequence number they carry, not in the order they arrive.
//!
//! Each key has a next expected sequence (kept in the dedup store, see
//! `outrigger_core::SequenceStore`). A message carrying it runs ([`Place::Next`]); one ahead of
//! it waits in the [`Reorder`] buffer until its predecessors are settled ([`Place::Ahead`]); one
//! behind it was settled before under another id, or came after its gap was given up
//! ([`Place::Behind`]). A gap that outlives `gap_timeout`, or a buffer that fills up, is
//! resolved by the [`OnGap`] policy ([`resolve`]). The buffer is bounded per key and in total;
//! what it holds counts in the in-flight limit, so it can never take every permit.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use outrigger_core::Message;
use serde::Deserialize;

use crate::key::{KeyError, KeyTemplate};

/// What happens to a key's waiting messages when the gap before them is given up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnGap {
    /// Deliver the waiting messages anyway, from the lowest; the missing one, should it come
    /// later, is dead-lettered as behind its key.
    #[default]
    Deliver,
    /// Dead-letter the waiting messages, with a reason naming the missing sequence.
    #[serde(alias = "dead-letter")]
    DeadLetter,
}

impl OnGap {
    /// As written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            OnGap::Deliver => "deliver",
            OnGap::DeadLetter => "dead_letter",
        }
    }
}

/// A route's sequence policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencePolicy {
    /// Where the sequence number is in a message.
    pub field: KeyTemplate,
    /// The sequence a key the store does not know starts at; `None`: at the first one seen.
    pub first: Option<u64>,
    /// How long a key's messages wait for a missing predecessor.
    pub gap_timeout: Duration,
    /// What a gap that outlived `gap_timeout` (or a full buffer) comes to.
    pub on_gap: OnGap,
    /// Messages of one key waiting at most.
    pub max_per_key: usize,
}

/// Why a message's sequence number could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The template found nothing.
    #[error("no sequence: {0}")]
    Missing(#[from] KeyError),
    /// It found something that is not a sequence number.
    #[error("the sequence {0:?} is not a whole number from 0 to 2^53")]
    NotANumber(String),
}

/// Sequences above this are refused: every store compares them exactly (Redis as Lua numbers).
pub const MAX_SEQUENCE: u64 = 1 << 53;

impl SequencePolicy {
    /// The sequence number `message` carries.
    pub fn sequence_of(&self, message: &Message) -> Result<u64, SequenceError> {
        let text = self.field.extract(message)?;
        let text = text.trim();
        text.parse::<u64>()
            .ok()
            .filter(|&n| n <= MAX_SEQUENCE)
            .ok_or_else(|| SequenceError::NotANumber(text.to_owned()))
    }

    /// The next sequence of a key the store holds nothing for, when `seq` is the first seen.
    pub fn start(&self, seq: u64) -> u64 {
        self.first.unwrap_or(seq)
    }
}

/// Where a message stands against its key's next expected sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// It is the next one: deliver it.
    Next,
    /// A predecessor is missing: it waits.
    Ahead,
    /// Its sequence was passed: settled before under another id, or its gap was given up.
    Behind,
}

/// Where `seq` stands when `expected` is next.
pub fn place(seq: u64, expected: u64) -> Place {
    match seq.cmp(&expected) {
        std::cmp::Ordering::Equal => Place::Next,
        std::cmp::Ordering::Greater => Place::Ahead,
        std::cmp::Ordering::Less => Place::Behind,
    }
}

/// What the gap policy makes of one waiting message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Deliver it as its key's next, skipping the missing `missing..seq`.
    Skip {
        /// The first missing sequence.
        missing: u64,
    },
    /// Goes through the gate again (behind a skipped one: it may be next now, or wait again).
    Follow,
    /// Dead-letter it, naming the missing sequence.
    Expire {
        /// The first missing sequence.
        missing: u64,
    },
}

/// The fate of a key's waiting messages (in sequence order) when the gap after `expected` is
/// given up: under [`OnGap::Deliver`] the lowest skips the gap and the rest follow it; under
/// [`OnGap::DeadLetter`] every one is dead-lettered.
pub fn resolve<T>(on_gap: OnGap, expected: u64, waiting: Vec<(u64, T)>) -> Vec<(T, Resolution)> {
    let missing = expected;
    waiting
        .into_iter()
        .enumerate()
        .map(|(i, (_, item))| {
            let how = match (on_gap, i) {
                (OnGap::Deliver, 0) => Resolution::Skip { missing },
                (OnGap::Deliver, _) => Resolution::Follow,
                (OnGap::DeadLetter, _) => Resolution::Expire { missing },
            };
            (item, how)
        })
        .collect()
}

/// Messages ahead of their key's next sequence, waiting for it: per key in sequence order (two
/// copies of one sequence in arrival order), bounded per key and in total.
#[derive(Debug)]
pub struct Reorder<K, T> {
    keys: HashMap<K, Waiting<T>>,
    held: usize,
    max_total: usize,
    arrivals: u64,
}

#[derive(Debug)]
struct Waiting<T> {
    /// (sequence, arrival) → item.
    items: BTreeMap<(u64, u64), T>,
    /// When the gap before them is given up.
    deadline: Instant,
    /// How long a gap of the key is waited for.
    timeout: Duration,
}

impl<K: Hash + Eq + Clone, T> Reorder<K, T> {
    /// An empty buffer holding at most `max_total` messages.
    pub fn new(max_total: usize) -> Self {
        Self {
            keys: HashMap::new(),
            held: 0,
            max_total,
            arrivals: 0,
        }
    }

    /// Holds `item` (sequence `seq`) for `key`, whose buffer takes `max_per_key`; if this is
    /// the key's first waiting message, its gap is given up `gap_timeout` after `now`. Gives
    /// the item back when the buffer, or the key's share of it, is full.
    pub fn hold(
        &mut self,
        key: K,
        seq: u64,
        item: T,
        max_per_key: usize,
        gap_timeout: Duration,
        now: Instant,
    ) -> Result<(), T> {
        let waiting = self.keys.get(&key).map_or(0, |w| w.items.len());
        if self.held >= self.max_total || waiting >= max_per_key {
            return Err(item);
        }
        self.arrivals += 1;
        let entry = self.keys.entry(key).or_insert_with(|| Waiting {
            items: BTreeMap::new(),
            deadline: now + gap_timeout,
            timeout: gap_timeout,
        });
        entry.items.insert((seq, self.arrivals), item);
        self.held += 1;
        Ok(())
    }

    /// Takes out `key`'s messages whose turn came now that `expected` is next (those behind it
    /// too: they are settled as such), lowest first. A gap left behind them is waited for
    /// from `now`.
    pub fn ready(&mut self, key: &K, expected: u64, now: Instant) -> Vec<(u64, T)> {
        let Some(waiting) = self.keys.get_mut(key) else {
            return Vec::new();
        };
        let rest = waiting.items.split_off(&(expected.saturating_add(1), 0));
        let ready = std::mem::replace(&mut waiting.items, rest);
        if waiting.items.is_empty() {
            self.keys.remove(key);
        } else if !ready.is_empty() {
            waiting.deadline = now + waiting.timeout;
        }
        self.held -= ready.len();
        ready
            .into_iter()
            .map(|((seq, _), item)| (seq, item))
            .collect()
    }

    /// Takes out everything `key` holds, lowest first.
    pub fn take(&mut self, key: &K) -> Vec<(u64, T)> {
        let Some(waiting) = self.keys.remove(key) else {
            return Vec::new();
        };
        self.held -= waiting.items.len();
        waiting
            .items
            .into_iter()
            .map(|((seq, _), item)| (seq, item))
            .collect()
    }

    /// The earliest deadline of a gap.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.keys.values().map(|w| w.deadline).min()
    }

    /// The keys whose gap is due by `now`.
    pub fn due(&self, now: Instant) -> Vec<K> {
        self.keys
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The keys with waiting messages.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.keys.keys()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Takes every waiting message out (shutdown).
    pub fn drain(&mut self) -> Vec<T> {
        self.held = 0;
        self.keys
            .drain()
            .flat_map(|(_, w)| w.items.into_values())
            .collect()
    }
}

#[cfg(test)]
mod tests;
