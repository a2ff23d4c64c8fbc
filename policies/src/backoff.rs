//! How long to wait before the next attempt: constant, linear or exponential, capped, jittered.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The shape of the delay curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// Every retry waits `initial`.
    Constant,
    /// Retry `n` waits `initial * n`.
    Linear,
    /// Retry `n` waits `initial * multiplier^(n-1)`.
    Exponential,
}

/// A capped, jittered backoff curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The shape of the curve.
    pub kind: BackoffKind,
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// No delay exceeds this, jitter included.
    pub max: Duration,
    /// Growth factor per attempt for [`BackoffKind::Exponential`]; values below 1 count as 1.
    pub multiplier: f64,
    /// Fraction of the delay that is randomised away, `0.0..=1.0`: the delay is drawn uniformly
    /// from `[base * (1 - jitter), base]`, so replicas that failed together do not retry together.
    pub jitter: f64,
}

impl Backoff {
    /// The delay before the next attempt, without jitter. `attempt` counts the attempts spent
    /// so far, from 1 (0 is treated as 1). Never exceeds `max`, never panics.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        let uncapped = match self.kind {
            BackoffKind::Constant => self.initial,
            BackoffKind::Linear => self.initial.saturating_mul(attempt),
            BackoffKind::Exponential => {
                // A multiplier below 1 (or NaN) would make later retries come faster, which is
                // never what a retry policy means; a config check should reject it, and here it
                // degrades to a constant curve.
                let multiplier = if self.multiplier >= 1.0 {
                    self.multiplier
                } else {
                    1.0
                };
                let factor = multiplier.powf(f64::from(attempt - 1));
                // Overflow (or an infinite factor) only means "more than max".
                Duration::try_from_secs_f64(self.initial.as_secs_f64() * factor)
                    .unwrap_or(Duration::MAX)
            }
        };
        uncapped.min(self.max)
    }

    /// The jittered delay before the next attempt: uniform in `[base * (1 - jitter), base]`
    /// where `base` is [`Backoff::base_delay`].
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        // Work in whole nanoseconds so both bounds are exact (f64 seconds lose precision on long
        // delays, which could push a delay past `max`).
        let hi = base.as_nanos();
        let spread = ((hi as f64) * jitter) as u128;
        let lo = hi - spread.min(hi);
        if lo == hi {
            return base;
        }
        from_nanos(rng.random_range(lo..=hi))
    }
}

/// A `Duration` from a nanosecond count that came from a `Duration`, so it fits.
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn backoff(kind: BackoffKind) -> Backoff {
        Backoff {
            kind,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    #[test]
    fn constant_waits_initial() {
        let b = backoff(BackoffKind::Constant);
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(50), Duration::from_millis(100));
    }

    #[test]
    fn linear_grows_by_initial() {
        let b = backoff(BackoffKind::Linear);
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(3), Duration::from_millis(300));
        assert_eq!(b.base_delay(1000), Duration::from_secs(10));
    }

    #[test]
    fn exponential_doubles_then_caps() {
        let b = backoff(BackoffKind::Exponential);
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(2), Duration::from_millis(200));
        assert_eq!(b.base_delay(4), Duration::from_millis(800));
        assert_eq!(b.base_delay(8), Duration::from_secs(10));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn attempt_zero_counts_as_first() {
        let b = backoff(BackoffKind::Linear);
        assert_eq!(b.base_delay(0), b.base_delay(1));
    }

    #[test]
    fn huge_values_do_not_panic() {
        let b = Backoff {
            kind: BackoffKind::Exponential,
            initial: Duration::MAX,
            max: Duration::MAX,
            multiplier: f64::MAX,
            jitter: 1.0,
        };
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(b.base_delay(u32::MAX), Duration::MAX);
        assert!(b.delay(u32::MAX, &mut rng) <= Duration::MAX);
        let linear = Backoff {
            kind: BackoffKind::Linear,
            ..b
        };
        assert_eq!(linear.base_delay(u32::MAX), Duration::MAX);
    }

    #[test]
    fn multiplier_below_one_does_not_shrink() {
        let b = Backoff {
            multiplier: 0.5,
            ..backoff(BackoffKind::Exponential)
        };
        assert_eq!(b.base_delay(5), Duration::from_millis(100));
    }

    #[test]
    fn no_jitter_is_exact() {
        let b = backoff(BackoffKind::Exponential);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.delay(3, &mut rng), Duration::from_millis(400));
    }

    #[test]
    fn kind_names_are_lowercase() {
        let k: BackoffKind = serde_json::from_str("\"exponential\"").unwrap();
        assert_eq!(k, BackoffKind::Exponential);
        assert_eq!(
            serde_json::to_string(&BackoffKind::Linear).unwrap(),
            "\"linear\""
        );
        assert!(serde_json::from_str::<BackoffKind>("\"Exponential\"").is_err());
    }

    fn any_backoff() -> impl Strategy<Value = Backoff> {
        (
            prop_oneof![
                Just(BackoffKind::Constant),
                Just(BackoffKind::Linear),
                Just(BackoffKind::Exponential)
            ],
            0u64..=u64::MAX / 2,
            0u64..=u64::MAX / 2,
            1.0f64..16.0,
            0.0f64..=1.0,
        )
            .prop_map(|(kind, initial, max, multiplier, jitter)| Backoff {
                kind,
                initial: Duration::from_nanos(initial),
                max: Duration::from_nanos(max),
                multiplier,
                jitter,
            })
    }

    proptest! {
        #[test]
        fn base_delay_is_monotone_and_capped(
            b in any_backoff(),
            a in prop_oneof![1u32..64, 1u32..u32::MAX],
        ) {
            let this = b.base_delay(a);
            let next = b.base_delay(a + 1);
            prop_assert!(this <= next, "{this:?} > {next:?} at attempt {a}");
            prop_assert!(next <= b.max);
        }

        #[test]
        fn delay_stays_within_jitter_bounds(b in any_backoff(), a in 1u32..64, seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let base = b.base_delay(a);
            let d = b.delay(a, &mut rng);
            let spread = (base.as_nanos() as f64 * b.jitter) as u128;
            prop_assert!(d <= base);
            prop_assert!(d.as_nanos() >= base.as_nanos() - spread.min(base.as_nanos()));
        }
    }
}
