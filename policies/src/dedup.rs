//! The dedup protocol as a pure state machine: the reference every [`DedupStore`] implements.
//!
//! A store keeps one [`DedupRecord`] per key and applies [`DedupRecord::claim`],
//! [`DedupRecord::complete`] and [`DedupRecord::release`] to it atomically. Each transition
//! takes the stored record (`None` when there is none or it expired) and returns a [`Step`]: the
//! answer for the caller and the record to write back, if anything changed. The embedded store
//! runs these functions inside a write transaction; the Redis store runs the same rules as Lua
//! scripts, and its tests check it answers like this model.
//!
//! [`DedupStore`]: outrigger_core::DedupStore

use std::time::Duration;

use outrigger_core::{Claim, Completion, Release};

/// Where a key stands in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DedupState {
    /// A holder is working on the key until `lease_until_ms`.
    Claimed,
    /// The last holder gave the key up; the next claim starts a new attempt.
    Released,
    /// The key was handled successfully; it is never claimed again while the record lives.
    Done,
    /// The key's message was dead-lettered (generation `generation`); only a newer
    /// resubmission claims it again, after [`DedupRecord::revive`].
    DeadLettered,
}

/// What a dedup store keeps per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupRecord {
    /// Where the key stands.
    pub state: DedupState,
    /// The last fence handed out for this key.
    pub fence: u64,
    /// Attempts spent: claims, minus refunds, since the last reset.
    pub attempts: u32,
    /// When the current lease ends, in milliseconds since the Unix epoch (meaningful only while
    /// `state` is [`DedupState::Claimed`]).
    pub lease_until_ms: u64,
    /// The resubmission count of the copy that was dead-lettered (meaningful only while
    /// `state` is [`DedupState::DeadLettered`]).
    pub generation: u32,
}

/// The result of one transition: the caller's answer and the record to store, if it changed.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step<T> {
    /// What the store returns to the caller.
    pub answer: T,
    /// The record to write back; `None` means the stored record stays as it is.
    pub write: Option<DedupRecord>,
}

impl<T> Step<T> {
    fn unchanged(answer: T) -> Self {
        Step {
            answer,
            write: None,
        }
    }
}

impl DedupRecord {
    /// Claims a key for one attempt at `now_ms` (milliseconds since the Unix epoch).
    ///
    /// A done key answers [`Claim::Done`]; a key under a live lease answers [`Claim::Busy`] with
    /// the time left. Otherwise (no record, released, or a lease that ran out) the caller gets
    /// the next fence and the lease, and the attempt is counted.
    pub fn claim(current: Option<&DedupRecord>, now_ms: u64, lease: Duration) -> Step<Claim> {
        let (fence, attempts) = match current {
            Some(record) if record.state == DedupState::Done => {
                return Step::unchanged(Claim::Done);
            }
            Some(record) if record.state == DedupState::DeadLettered => {
                return Step::unchanged(Claim::DeadLettered {
                    generation: record.generation,
                });
            }
            Some(record)
                if record.state == DedupState::Claimed && record.lease_until_ms > now_ms =>
            {
                let retry_in = Duration::from_millis(record.lease_until_ms - now_ms);
                return Step::unchanged(Claim::Busy { retry_in });
            }
            Some(record) => (record.fence, record.attempts),
            None => (0, 0),
        };
        // Saturating: a u64 fence cannot run out in practice, and wrapping to 0 would let a
        // stale holder win the compare-and-set.
        let record = DedupRecord {
            state: DedupState::Claimed,
            fence: fence.saturating_add(1),
            attempts: attempts.saturating_add(1),
            lease_until_ms: now_ms.saturating_add(millis(lease)),
            generation: 0,
        };
        Step {
            answer: Claim::Acquired {
                fence: record.fence,
                attempt: record.attempts,
            },
            write: Some(record),
        }
    }

    /// Marks the key done if `fence` is the current claim.
    ///
    /// Only the fence is compared, not the lease: a holder whose lease ran out but whom nobody
    /// superseded did the work, and recording it saves a second delivery. Completing again with
    /// the fence that completed the key answers [`Completion::Completed`] without a write, so a
    /// caller that lost the store's reply to its first completion can safely retry it.
    pub fn complete(current: Option<&DedupRecord>, fence: u64) -> Step<Completion> {
        let Some(record) = current else {
            return Step::unchanged(Completion::Fenced { current: 0 });
        };
        match record.state {
            DedupState::Claimed if record.fence == fence => Step {
                answer: Completion::Completed,
                write: Some(DedupRecord {
                    state: DedupState::Done,
                    ..*record
                }),
            },
            DedupState::Done if record.fence == fence => Step::unchanged(Completion::Completed),
            _ => Step::unchanged(Completion::Fenced {
                current: record.fence,
            }),
        }
    }

    /// Gives up the claim `fence`; answers false (and changes nothing) when it is not the
    /// current claim.
    pub fn release(current: Option<&DedupRecord>, fence: u64, how: Release) -> Step<bool> {
        let Some(record) = current.filter(|r| r.state == DedupState::Claimed && r.fence == fence)
        else {
            return Step::unchanged(false);
        };
        let attempts = match how {
            Release::Retry => record.attempts,
            Release::Refund => record.attempts.saturating_sub(1),
            Release::Reset => 0,
        };
        Step {
            answer: true,
            write: Some(DedupRecord {
                state: DedupState::Released,
                attempts,
                ..*record
            }),
        }
    }

    /// Records the key as dead-lettered by the claim `fence`, as resubmission `generation`, once
    /// its dead letter is confirmed. Like [`complete`](Self::complete): only the current claim
    /// may, and doing it again with the same fence answers [`Completion::Completed`] unchanged.
    /// Attempts start over, for a resubmission to begin at attempt 1.
    pub fn dead_lettered(
        current: Option<&DedupRecord>,
        fence: u64,
        generation: u32,
    ) -> Step<Completion> {
        let Some(record) = current else {
            return Step::unchanged(Completion::Fenced { current: 0 });
        };
        match record.state {
            DedupState::Claimed if record.fence == fence => Step {
                answer: Completion::Completed,
                write: Some(DedupRecord {
                    state: DedupState::DeadLettered,
                    attempts: 0,
                    generation,
                    ..*record
                }),
            },
            DedupState::DeadLettered if record.fence == fence => {
                Step::unchanged(Completion::Completed)
            }
            _ => Step::unchanged(Completion::Fenced {
                current: record.fence,
            }),
        }
    }

    /// Makes a key dead-lettered as a generation older than `generation` claimable again: a
    /// resubmitted copy. Answers false, changing nothing, for any other key.
    pub fn revive(current: Option<&DedupRecord>, generation: u32) -> Step<bool> {
        match current {
            Some(record)
                if record.state == DedupState::DeadLettered && record.generation < generation =>
            {
                Step {
                    answer: true,
                    write: Some(DedupRecord {
                        state: DedupState::Released,
                        attempts: 0,
                        generation: 0,
                        ..*record
                    }),
                }
            }
            _ => Step::unchanged(false),
        }
    }

    /// When a record written at `now_ms` may be forgotten, for a store whose record TTL is `ttl`.
    ///
    /// A live claim is kept at least until its lease ends even when the TTL is shorter: if the
    /// record vanished first, the next claim would start again at fence 1 and a live holder's
    /// fence would become valid for someone else.
    pub fn expires_at_ms(&self, now_ms: u64, ttl: Duration) -> u64 {
        let expires = now_ms.saturating_add(millis(ttl));
        match self.state {
            DedupState::Claimed => expires.max(self.lease_until_ms),
            DedupState::Released | DedupState::Done | DedupState::DeadLettered => expires,
        }
    }
}

/// A duration in whole milliseconds, saturating (leases and TTLs are far below `u64::MAX` ms).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
