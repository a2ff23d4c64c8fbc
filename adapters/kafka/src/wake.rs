//! What wakes the poll thread: a queue it reads became non-empty, a settlement opened a gate,
//! or the source stops.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A wake while the thread is busy is kept for its next wait.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pending: Mutex<bool>,
    signal: Condvar,
}

impl Wake {
    /// Called from librdkafka's threads too: it only sets a flag.
    pub(crate) fn notify(&self) {
        *self.pending.lock() = true;
        self.signal.notify_one();
    }

    /// Returns at the first wake since the last wait, or after `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) {
        let mut pending = self.pending.lock();
        if !*pending {
            self.signal.wait_for(&mut pending, timeout);
        }
        *pending = false;
    }
}
