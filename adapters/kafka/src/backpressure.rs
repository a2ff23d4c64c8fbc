//! When to pause fetching and when to resume: the in-flight limits with hysteresis.
//!
//! A gate closes when its count reaches the limit and opens again only once the count is back at
//! or below [`RESUME_PERCENT`] of it. Resuming at the limit itself would wake the poll thread
//! for one record on every settle while the app is saturated; the gap lets it take a batch.

/// Percent of a limit that in-flight counts must drain to before fetching resumes.
pub const RESUME_PERCENT: u64 = 80;

/// The count at or below which a gate closed at `limit` opens again.
pub(crate) fn resume_at(limit: u64) -> u64 {
    limit.saturating_mul(RESUME_PERCENT) / 100
}

/// The three limits of [`KafkaSettings`](crate::KafkaSettings), as the accounting uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Records handed out and not settled, over all partitions.
    pub(crate) max_in_flight: usize,
    /// The same, per partition.
    pub(crate) max_in_flight_per_partition: usize,
    /// Payload bytes of records handed out and not settled.
    pub(crate) max_buffered_bytes: u64,
}

impl Limits {
    /// Whether the global gate must close: too many records or bytes outstanding.
    pub(crate) fn global_full(&self, in_flight: usize, bytes: u64) -> bool {
        in_flight >= self.max_in_flight || bytes >= self.max_buffered_bytes
    }

    /// Whether a closed global gate may open: both counts drained far enough.
    pub(crate) fn global_drained(&self, in_flight: usize, bytes: u64) -> bool {
        in_flight as u64 <= resume_at(self.max_in_flight as u64)
            && bytes <= resume_at(self.max_buffered_bytes)
    }

    /// Whether a partition's own gate must close.
    pub(crate) fn partition_full(&self, in_flight: usize) -> bool {
        in_flight >= self.max_in_flight_per_partition
    }

    /// Whether a partition's closed gate may open.
    pub(crate) fn partition_drained(&self, in_flight: usize) -> bool {
        in_flight as u64 <= resume_at(self.max_in_flight_per_partition as u64)
    }
}

/// An open/closed flag that only changes at the thresholds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Gate {
    closed: bool,
}

impl Gate {
    /// True while fetching is held back by this gate.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closes when `full`, opens when `drained`, else stays; returns whether it changed.
    pub(crate) fn update(&mut self, full: bool, drained: bool) -> bool {
        let closed = if self.closed { !drained } else { full };
        std::mem::replace(&mut self.closed, closed) != closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_in_flight: 10,
        max_in_flight_per_partition: 2,
        max_buffered_bytes: 1_000,
    };

    #[test]
    fn resume_threshold_is_eighty_percent_rounded_down() {
        assert_eq!(resume_at(10), 8);
        assert_eq!(resume_at(2), 1);
        assert_eq!(
            resume_at(1),
            0,
            "a limit of one resumes when nothing is out"
        );
        assert_eq!(resume_at(u64::MAX), u64::MAX / 100);
    }

    #[test]
    fn the_global_gate_closes_at_either_limit_and_opens_when_both_drained() {
        assert!(!LIMITS.global_full(9, 999));
        assert!(LIMITS.global_full(10, 0));
        assert!(LIMITS.global_full(0, 1_000));
        assert!(!LIMITS.global_drained(9, 0));
        assert!(!LIMITS.global_drained(0, 801));
        assert!(LIMITS.global_drained(8, 800));
    }

    #[test]
    fn a_gate_does_not_flap_between_the_thresholds() {
        let mut gate = Gate::default();
        let mut step = |n: usize| {
            gate.update(LIMITS.global_full(n, 0), LIMITS.global_drained(n, 0));
            gate.is_closed()
        };
        assert!(!step(9));
        assert!(step(10), "closes at the limit");
        assert!(step(9), "stays closed just below it");
        assert!(!step(8), "opens at 80%");
        assert!(!step(9), "stays open below the limit");
    }

    #[test]
    fn a_partition_limit_of_two_resumes_after_one_settles() {
        let mut gate = Gate::default();
        assert!(!gate.update(LIMITS.partition_full(1), LIMITS.partition_drained(1)));
        assert!(gate.update(LIMITS.partition_full(2), LIMITS.partition_drained(2)));
        assert!(gate.is_closed());
        assert!(gate.update(LIMITS.partition_full(1), LIMITS.partition_drained(1)));
        assert!(!gate.is_closed());
    }
}
