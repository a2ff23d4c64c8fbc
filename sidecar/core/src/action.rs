//! The closed set of fates a classifier can choose for one delivery attempt.

use std::fmt;
use std::str::FromStr;

/// What to do with a message after one delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The app handled it: complete the dedup record, then ack at the broker.
    Ack,
    /// A transient failure: try again after a backoff, spending one attempt.
    Retry,
    /// The app is overloaded: slow down and try again without spending an attempt.
    Throttle,
    /// A permanent failure: park it in the dead-letter destination, then ack.
    DeadLetter,
    /// Discard it on purpose: ack without delivery or dead letter.
    Drop,
}

impl Action {
    /// Every action, in a stable order (for help texts and metric pre-registration).
    pub const ALL: [Action; 5] = [
        Action::Ack,
        Action::Retry,
        Action::Throttle,
        Action::DeadLetter,
        Action::Drop,
    ];

    /// The name used in TOML, the `outrigger-action` header and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ack => "ack",
            Action::Retry => "retry",
            Action::Throttle => "throttle",
            Action::DeadLetter => "dead-letter",
            Action::Drop => "drop",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is not one of `ack`, `retry`, `throttle`, `dead-letter`, `drop`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}: expected one of ack, retry, throttle, dead-letter, drop")]
pub struct ParseActionError(pub String);

impl FromStr for Action {
    type Err = ParseActionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        Action::ALL
            .into_iter()
            .find(|a| {
                a.as_str().eq_ignore_ascii_case(trimmed)
                    || (a == &Action::DeadLetter && trimmed.eq_ignore_ascii_case("dead_letter"))
            })
            .ok_or_else(|| ParseActionError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert_eq!("DEAD_LETTER".parse::<Action>(), Ok(Action::DeadLetter));
        assert!("later".parse::<Action>().is_err());
    }
}
