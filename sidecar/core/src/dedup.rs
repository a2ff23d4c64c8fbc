//! The dedup store contract: claim with a lease and a fence, complete by compare-and-set on the
//! fence, release on a retryable failure.
//!
//! The fence grows with every new claim of a key, so a holder whose lease expired can be told
//! apart from the current one: its completion is refused ([`Completion::Fenced`]), and the app
//! can refuse its writes (the fence is sent as `outrigger-fence`).
//!
//! Every store keeps the same record per key, for the store's lease and TTL:
//! `state` (claimed, released, done, dead-lettered), `fence` (last fence handed out),
//! `attempts` (attempts spent, reset on dead letter), `lease_until`, and for a dead-lettered
//! key the resubmission `generation` of the copy that was dead-lettered.

use std::future::Future;
use std::time::Duration;

/// The answer to a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This caller holds the key until the lease ends. `attempt` counts this attempt, from 1,
    /// across restarts and replicas.
    Acquired {
        /// The fence token of this claim.
        fence: u64,
        /// The attempt number this claim starts.
        attempt: u32,
    },
    /// The key was already handled successfully: skip the message.
    Done,
    /// The key's message was dead-lettered, as resubmission `generation` (0: never
    /// resubmitted), and the broker confirmed the dead letter: a copy of that generation or
    /// older is settled without delivery; a newer one (a resubmitted copy) revives the key
    /// with [`DedupStore::revive`] and claims it again.
    DeadLettered {
        /// The resubmission count of the copy that was dead-lettered.
        generation: u32,
    },
    /// Another holder's lease is live: try again after this long.
    Busy {
        /// Time left on the other holder's lease.
        retry_in: Duration,
    },
}

/// The answer to a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The key is now recorded as done.
    Completed,
    /// A newer claim superseded this one; the record was not changed.
    Fenced {
        /// The fence the store holds now.
        current: u64,
    },
}

/// How a claim is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// A retryable failure: the attempt counts.
    Retry,
    /// The attempt does not count (throttled, or interrupted by shutdown).
    Refund,
    /// The message left the pipeline without success (dead letter, drop): attempts start over,
    /// so a later resubmission begins at attempt 1.
    Reset,
}

/// A key-value store that holds dedup records.
pub trait DedupStore: Send + Sync + 'static {
    /// Claims `key` for one delivery attempt.
    fn claim(&self, key: &str) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Claims several keys in one call, one round trip where the store can: per key, in
    /// order, what [`claim`](Self::claim) would answer. A failure fails them all.
    fn claim_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> impl Future<Output = Result<Vec<Claim>, StoreError>> + Send + 'a {
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.claim(key).await?);
            }
            Ok(out)
        }
    }

    /// Completes several claims `(key, fence)` in one call: per claim, in order, what
    /// [`complete`](Self::complete) would answer. A failure fails them all.
    fn complete_many<'a>(
        &'a self,
        claims: &'a [(&'a str, u64)],
    ) -> impl Future<Output = Result<Vec<Completion>, StoreError>> + Send + 'a {
        async move {
            let mut out = Vec::with_capacity(claims.len());
            for (key, fence) in claims {
                out.push(self.complete(key, *fence).await?);
            }
            Ok(out)
        }
    }

    /// Marks `key` done if `fence` is still the current claim.
    fn complete(
        &self,
        key: &str,
        fence: u64,
    ) -> impl Future<Output = Result<Completion, StoreError>> + Send;

    /// Gives up the claim `fence` on `key`; false when a newer claim superseded it.
    fn release(
        &self,
        key: &str,
        fence: u64,
        how: Release,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that the message of `key`, claimed with `fence`, was dead-lettered as
    /// resubmission `generation`, once the broker confirmed its dead letter: a copy handed out
    /// again is then recognised ([`Claim::DeadLettered`]) instead of delivered and dead-lettered
    /// a second time. Attempts start over for a resubmission. A newer claim wins, as for
    /// [`complete`](Self::complete).
    fn dead_lettered(
        &self,
        key: &str,
        fence: u64,
        generation: u32,
    ) -> impl Future<Output = Result<Completion, StoreError>> + Send;

    /// Makes a key whose message was dead-lettered as a generation older than `generation`
    /// claimable again (a resubmitted copy); false, changing nothing, for any other key.
    fn revive(
        &self,
        key: &str,
        generation: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Checks the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A dedup store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer (down, timeout, connection refused); retrying may help.
    #[error("dedup store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something the protocol does not expect.
    #[error("dedup store returned an unexpected answer: {0}")]
    Protocol(String),
}
