//! Outcomes the app saw that the store has not: recorded first when the store is back.
//!
//! When the dedup store is unreachable, a key the app already handled cannot be marked done.
//! Its lease may run out meanwhile, and a copy of the same key (a redelivery, a producer's
//! duplicate) would then claim it afresh and deliver it again. So while any outcome waits to
//! be recorded, this sidecar makes no new claim: the first thing the store hears when it comes
//! back is what was already delivered.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The keys whose outcome waits for the store, shared by every worker.
#[derive(Debug)]
pub struct Unrecorded {
    keys: Mutex<HashMap<String, usize>>,
    /// How many outcomes wait; claims wait while it is above 0.
    waiting: watch::Sender<usize>,
}

impl Default for Unrecorded {
    fn default() -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            waiting: watch::channel(0).0,
        }
    }
}

/// One outcome waiting for the store; recorded (or given up) when dropped.
#[must_use = "the outcome counts as waiting until this is dropped"]
pub struct Waiting<'a> {
    set: &'a Unrecorded,
    key: String,
}

impl Unrecorded {
    /// Notes that the outcome of `key` could not be recorded yet.
    pub fn wait_for(&self, key: &str) -> Waiting<'_> {
        *self.keys.lock().entry(key.to_owned()).or_default() += 1;
        self.waiting.send_modify(|n| *n += 1);
        Waiting {
            set: self,
            key: key.to_owned(),
        }
    }

    /// How many outcomes wait for the store.
    pub fn len(&self) -> usize {
        *self.waiting.borrow()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until no outcome waits for the store; false when `abort` came first.
    pub async fn settled(&self, abort: &CancellationToken) -> bool {
        let mut waiting = self.waiting.subscribe();
        tokio::select! {
            biased;
            _ = abort.cancelled() => false,
            done = waiting.wait_for(|n| *n == 0) => done.is_ok(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut keys = self.set.keys.lock();
        if let Some(n) = keys.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                keys.remove(&self.key);
            }
        }
        drop(keys);
        self.set.waiting.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn claims_wait_until_every_unrecorded_outcome_is_recorded() {
        let set = Unrecorded::default();
        let abort = CancellationToken::new();
        assert!(set.settled(&abort).await);
        let a = set.wait_for("k");
        let b = set.wait_for("j");
        assert_eq!(set.len(), 2);
        let early = tokio::time::timeout(Duration::from_millis(50), set.settled(&abort)).await;
        assert!(early.is_err(), "a claim waits while outcomes wait");
        drop(a);
        drop(b);
        assert!(set.is_empty());
        assert!(set.settled(&abort).await);
        let _c = set.wait_for("k");
        abort.cancel();
        assert!(!set.settled(&abort).await, "shutdown ends the wait");
    }
}
