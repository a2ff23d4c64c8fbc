//! What the source, its pull loop and every acker share.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

/// One source's connection and bookkeeping.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) jetstream: async_nats::jetstream::Context,
    /// The stream consumed, for stats.
    pub(crate) stream: String,
    /// Where dead letters are published.
    pub(crate) dead_letter_subject: String,
    /// Retry mode `queue`: the stream holding the retry copies; `None` otherwise.
    pub(crate) retry_stream: Option<String>,
    /// The subject of each retry tier, and its delay.
    pub(crate) retry_subjects: Vec<String>,
    pub(crate) retry_tiers: Vec<Duration>,
    /// How often an unsettled message is reported in progress.
    pub(crate) progress_every: Duration,
    /// One permit per message that may be unsettled (`max_in_flight`).
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) max_in_flight: usize,
    /// Payload bytes of the messages taken and not settled.
    pub(crate) bytes: AtomicU64,
    pub(crate) max_bytes: u64,
    /// Notified whenever a message settles: the pull loop may have room again.
    pub(crate) room: Notify,
    /// Dead-letter writes that failed and have not succeeded since.
    pub(crate) dead_letters_failing: AtomicUsize,
    /// The consumer as the server last described it (for stats).
    pub(crate) consumer_info: Mutex<Option<async_nats::jetstream::consumer::Info>>,
}

impl Shared {
    /// Messages taken and not settled.
    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }

    /// Whether the byte limit holds back the next pull.
    pub(crate) fn bytes_full(&self) -> bool {
        self.bytes.load(Ordering::Acquire) >= self.max_bytes
    }
}
