//! Claims made while a message waits for its lane, so its turn starts with the store's answer
//! in hand.
//!
//! A message queued behind another of its lane (its partition, its key) would otherwise claim
//! its key only once its turn comes, paying a store round trip between the predecessor's
//! answer and its own POST. Its claim is sent as soon as it is queued instead, through the
//! [`Batcher`](super::Batcher), so the claims of a lane's whole queue share one store call and
//! are answered while the head is delivered.
//!
//! A claim made early is the same claim, made sooner: same lease, fence and attempt. What
//! changes is how long it is held before the delivery starts, so it is used only while enough
//! of its lease is left for a whole delivery ([`PreClaim::take`]); an older one is given back
//! and the key claimed afresh. One that is never used (shutdown, a turn that ends before
//! claiming) is given back with its attempt refunded when it is dropped, and any answer but
//! "acquired" (a duplicate, a key busy elsewhere, a store error) is left to the ordinary claim,
//! which knows what to do with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outrigger_core::{Claim, DedupStore, Release, StoreError};
use tokio::task::JoinHandle;
use tracing::debug;

use super::Dedup;

/// A claim of a waiting message's key, made before its turn.
pub(super) struct PreClaim<D: DedupStore> {
    key: String,
    made: Instant,
    /// The store's answer; `None` once taken.
    answer: Option<JoinHandle<Result<Claim, StoreError>>>,
    store: Arc<D>,
}

impl<D: DedupStore> PreClaim<D> {
    /// Claims `key` now, in a store call shared with the other claims under way. `None` while
    /// outcomes wait to be recorded: no new claim is made then (see `Unrecorded`).
    pub(super) fn start(dedup: &Dedup<D>, key: String) -> Option<Self> {
        if !dedup.unrecorded.is_empty() {
            return None;
        }
        let answer = tokio::spawn(dedup.batcher.claim(&key));
        Some(Self {
            key,
            made: Instant::now(),
            answer: Some(answer),
            store: dedup.store.clone(),
        })
    }

    /// The key it claims.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The claim's fence and attempt, when the key was acquired and at most `max_age` ago;
    /// otherwise `None`, and a claim acquired too long ago is given back first (its attempt
    /// refunded) so that a fresh claim of the key is not refused as busy.
    pub(super) async fn take(mut self, max_age: Duration) -> Option<(u64, u32)> {
        let answer = self.answer.take()?.await.ok()?;
        match answer {
            Ok(Claim::Acquired { fence, attempt }) if self.made.elapsed() <= max_age => {
                Some((fence, attempt))
            }
            Ok(Claim::Acquired { fence, .. }) => {
                refund(&*self.store, &self.key, fence).await;
                None
            }
            _ => None,
        }
    }
}

impl<D: DedupStore> Drop for PreClaim<D> {
    fn drop(&mut self) {
        let Some(answer) = self.answer.take() else {
            return;
        };
        let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
        // Outside a runtime (its shutdown) the lease runs out on its own instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(Claim::Acquired { fence, .. })) = answer.await {
                    refund(&*store, &key, fence).await;
                }
            });
        }
    }
}

/// Gives a claim back without spending its attempt; a failure only means the lease runs out.
async fn refund<D: DedupStore>(store: &D, key: &str, fence: u64) {
    if let Err(e) = store.release(key, fence, Release::Refund).await {
        debug!(error = %e, "Giving back an early claim failed; its lease will expire instead.");
    }
}

/// How old an early claim may be when its turn comes: half of what the lease leaves beyond one
/// delivery, so the delivery and the completion after it end well inside the lease.
pub(super) fn max_age(lease: Duration, delivery_timeout: Duration) -> Duration {
    lease.saturating_sub(delivery_timeout) / 2
}

#[cfg(test)]
mod tests;
