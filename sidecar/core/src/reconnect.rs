//! Bounded exponential delay between an adapter's reconnect attempts.

use std::time::Duration;

/// First delay after a failed attempt: quick enough to ride out a broker restart blip.
const FIRST: Duration = Duration::from_millis(100);
/// Longest delay: a broker that is down for minutes is retried every few seconds, no slower.
const MAX: Duration = Duration::from_secs(5);

/// Counts consecutive failures and says how long to wait before the next attempt.
#[derive(Debug, Default)]
pub struct ReconnectDelay {
    failures: u32,
}

impl ReconnectDelay {
    /// The wait before the next attempt: none until a failure, then 100ms doubling up to 5s.
    pub fn delay(&self) -> Option<Duration> {
        let doublings = self.failures.checked_sub(1)?;
        Some(
            FIRST
                .saturating_mul(2u32.saturating_pow(doublings))
                .min(MAX),
        )
    }

    /// Records a failed attempt.
    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// Records that things work again (a delivery arrived, a turn of reading worked).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_100ms_up_to_5s_and_resets() {
        let mut b = ReconnectDelay::default();
        assert_eq!(b.delay(), None);
        let mut seen = Vec::new();
        for _ in 0..40 {
            b.failed();
            seen.push(b.delay().unwrap());
        }
        assert_eq!(seen[0], Duration::from_millis(100));
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(seen[5], Duration::from_millis(3200));
        assert_eq!(seen[6], MAX);
        assert_eq!(seen[39], MAX);
        b.reset();
        assert_eq!(b.delay(), None);
    }
}
