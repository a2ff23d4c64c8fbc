//! What the stub app saw in one phase: per message, when it was sent and when it arrived.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Arrival and publish times per sequence number; the first arrival of each message counts.
pub struct Recorder {
    /// Receive time + 1 (0: not yet), nanoseconds on the shared clock.
    received: Vec<AtomicU64>,
    sent: Vec<AtomicU64>,
    distinct: AtomicUsize,
    repeats: AtomicUsize,
}

/// A finished phase, reduced to the figures the report needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Requests for a message already received (redeliveries).
    pub repeats: usize,
    /// Messages per second from the first arrival to the last.
    pub rate: f64,
    /// Median publish → arrival, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile publish → arrival, milliseconds.
    pub p99_ms: f64,
    /// First arrival, nanoseconds on the shared clock.
    pub first_ns: u64,
}

impl Recorder {
    /// Room for sequence numbers `0..messages`.
    pub fn new(messages: usize) -> Self {
        Self {
            received: (0..messages).map(|_| AtomicU64::new(0)).collect(),
            sent: (0..messages).map(|_| AtomicU64::new(0)).collect(),
            distinct: AtomicUsize::new(0),
            repeats: AtomicUsize::new(0),
        }
    }

    /// Message `seq`, published at `sent`, arrived at `received`.
    pub fn record(&self, seq: u64, sent: u64, received: u64) {
        let Some(slot) = usize::try_from(seq).ok().and_then(|i| self.received.get(i)) else {
            return;
        };
        let stamp = received.saturating_add(1);
        if slot
            .compare_exchange(0, stamp, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.sent[seq as usize].store(sent, Ordering::Release);
            self.distinct.fetch_add(1, Ordering::AcqRel);
        } else {
            self.repeats.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Distinct messages received so far.
    pub fn count(&self) -> usize {
        self.distinct.load(Ordering::Acquire)
    }

    /// Whether every expected message arrived.
    pub fn complete(&self) -> bool {
        self.count() >= self.received.len()
    }

    /// Rate and latency percentiles over what arrived.
    pub fn summary(&self) -> Summary {
        let mut latencies = Vec::with_capacity(self.received.len());
        let (mut first, mut last) = (u64::MAX, 0);
        for (received, sent) in self.received.iter().zip(&self.sent) {
            let received = received.load(Ordering::Acquire);
            if received == 0 {
                continue;
            }
            let received = received - 1;
            first = first.min(received);
            last = last.max(received);
            latencies.push(received.saturating_sub(sent.load(Ordering::Acquire)));
        }
        latencies.sort_unstable();
        let messages = latencies.len();
        let span = last.saturating_sub(first) as f64 / 1e9;
        let rate = if messages > 1 && span > 0.0 {
            (messages - 1) as f64 / span
        } else {
            0.0
        };
        Summary {
            repeats: self.repeats.load(Ordering::Relaxed),
            rate,
            p50_ms: percentile(&latencies, 0.50) / 1e6,
            p99_ms: percentile(&latencies, 0.99) / 1e6,
            first_ns: if messages == 0 { 0 } else { first },
        }
    }
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(values: &[u64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7], 0.99), 7.0);
    }

    #[test]
    fn repeats_do_not_count_twice() {
        let recorder = Recorder::new(3);
        recorder.record(0, 0, 1_000_000);
        recorder.record(1, 0, 2_000_000);
        recorder.record(1, 0, 9_000_000);
        recorder.record(2, 1_000_000, 3_000_000);
        recorder.record(99, 0, 0);
        assert!(recorder.complete());
        let summary = recorder.summary();
        assert_eq!(summary.repeats, 1);
        assert_eq!(summary.rate, 1000.0);
        assert_eq!(summary.p50_ms, 2.0);
    }
}
