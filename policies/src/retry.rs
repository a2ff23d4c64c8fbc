//! Whether a failed attempt gets another one, and after how long.

use std::time::Duration;

use rand::Rng;

use crate::backoff::Backoff;

/// The retry budget of a message: attempts, age, and the backoff between attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts allowed in total, the first delivery included.
    pub max_attempts: u32,
    /// No retry is scheduled to start after the message is this old; `None` means no limit.
    pub max_age: Option<Duration>,
    /// The delay between attempts when the app gave no `Retry-After`.
    pub backoff: Backoff,
}

/// What happens after a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// The budget is spent: the message goes to the dead-letter destination.
    Exhausted(Exhausted),
}

/// Which part of the budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exhausted {
    /// `max_attempts` attempts were spent.
    Attempts,
    /// The next attempt would start after `max_age`.
    Age,
}

impl Exhausted {
    /// A human sentence for the dead letter's reason.
    pub fn describe(self) -> &'static str {
        match self {
            Exhausted::Attempts => "retry attempts exhausted",
            Exhausted::Age => "retry age limit reached",
        }
    }
}

impl RetryPolicy {
    /// Decides after a retryable failure. `attempt` counts the attempts spent so far (from 1),
    /// `age` is how long ago the message was first consumed, `retry_after` is the app's
    /// `Retry-After`, if it sent one.
    ///
    /// The app's `Retry-After` wins over the backoff and is not capped by the backoff's `max`:
    /// retrying sooner than the app asked would only earn another refusal. It is still bounded
    /// by `max_age`: a retry that would start after the age limit exhausts the budget instead.
    pub fn decide(
        &self,
        attempt: u32,
        age: Duration,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> RetryDecision {
        if attempt >= self.max_attempts {
            return RetryDecision::Exhausted(Exhausted::Attempts);
        }
        let delay = retry_after.unwrap_or_else(|| self.backoff.delay(attempt, rng));
        if let Some(max_age) = self.max_age {
            if age.saturating_add(delay) > max_age {
                return RetryDecision::Exhausted(Exhausted::Age);
            }
        }
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::BackoffKind;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy(max_attempts: u32, max_age: Option<Duration>) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            max_age,
            backoff: Backoff {
                kind: BackoffKind::Exponential,
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.0,
            },
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(3)
    }

    #[test]
    fn retries_with_backoff_until_attempts_are_spent() {
        let p = policy(3, None);
        let d = |a| p.decide(a, Duration::ZERO, None, &mut rng());
        assert_eq!(d(1), RetryDecision::RetryAfter(Duration::from_secs(1)));
        assert_eq!(d(2), RetryDecision::RetryAfter(Duration::from_secs(2)));
        assert_eq!(d(3), RetryDecision::Exhausted(Exhausted::Attempts));
        assert_eq!(d(9), RetryDecision::Exhausted(Exhausted::Attempts));
    }

    #[test]
    fn single_attempt_never_retries() {
        let p = policy(1, None);
        assert_eq!(
            p.decide(1, Duration::ZERO, None, &mut rng()),
            RetryDecision::Exhausted(Exhausted::Attempts)
        );
    }

    #[test]
    fn retry_after_wins_over_backoff_and_its_cap() {
        let p = policy(5, None);
        let asked = Duration::from_secs(120);
        assert_eq!(
            p.decide(1, Duration::ZERO, Some(asked), &mut rng()),
            RetryDecision::RetryAfter(asked)
        );
        assert_eq!(
            p.decide(1, Duration::ZERO, Some(Duration::ZERO), &mut rng()),
            RetryDecision::RetryAfter(Duration::ZERO)
        );
    }

    #[test]
    fn age_limit_counts_the_next_delay() {
        let p = policy(10, Some(Duration::from_secs(60)));
        // 58s old, next backoff 1s: the retry starts at 59s, inside the limit.
        assert_eq!(
            p.decide(1, Duration::from_secs(58), None, &mut rng()),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
        // 58s old, next backoff 4s: it would start at 62s.
        assert_eq!(
            p.decide(3, Duration::from_secs(58), None, &mut rng()),
            RetryDecision::Exhausted(Exhausted::Age)
        );
        // Exactly at the limit is still allowed.
        assert_eq!(
            p.decide(1, Duration::from_secs(59), None, &mut rng()),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
    }

    #[test]
    fn age_limit_bounds_retry_after_too() {
        let p = policy(10, Some(Duration::from_secs(60)));
        assert_eq!(
            p.decide(
                1,
                Duration::from_secs(10),
                Some(Duration::from_secs(51)),
                &mut rng()
            ),
            RetryDecision::Exhausted(Exhausted::Age)
        );
    }

    #[test]
    fn attempts_are_checked_before_age() {
        let p = policy(2, Some(Duration::from_secs(1)));
        assert_eq!(
            p.decide(2, Duration::from_secs(5), None, &mut rng()),
            RetryDecision::Exhausted(Exhausted::Attempts)
        );
    }

    #[test]
    fn huge_ages_do_not_overflow() {
        let p = policy(10, Some(Duration::MAX));
        assert_eq!(
            p.decide(1, Duration::MAX, None, &mut rng()),
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
    }
}
