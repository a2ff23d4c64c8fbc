//! What every part of a policy file shares: key paths, the problems a validation finds, and
//! deserializers for human durations and sizes.
//!
//! Each adapter owns its `[source.<broker>]` table (a serde struct) and validates it with
//! [`Problems`], naming each problem by the [`KeyPath`] of the settings involved. The app's
//! loader maps every path back to where it was written, so `outrigger check` reports it with
//! its line and column, exactly as `outrigger run` would refuse it.

pub mod checks;
pub mod de;
mod path;

use std::fmt;
use std::time::Duration;

pub use path::{KeyPath, Seg};

/// One semantic problem of a policy: the settings involved (the first one the user wrote is
/// the one blamed) and what is wrong, in a sentence that says what would be right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The settings involved, most to blame first; at least one.
    pub paths: Vec<KeyPath>,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.paths.first() {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Collects the problems of one validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// A problem with the settings at these dotted paths (`source.kafka.group_id`).
    pub fn at(&mut self, paths: &[&str], message: impl Into<String>) {
        let paths = paths.iter().map(|p| KeyPath::parse(p)).collect();
        self.at_paths(paths, message);
    }

    /// A problem with the settings at these paths.
    pub fn at_paths(&mut self, paths: Vec<KeyPath>, message: impl Into<String>) {
        self.0.push(Problem {
            paths,
            message: message.into(),
        });
    }

    /// A duration that must not be zero.
    pub fn positive(&mut self, path: &str, d: Duration) {
        if d.is_zero() {
            self.at(&[path], "must be longer than 0s");
        }
    }

    /// Text that, when set, must not be blank; `hint` says what to write instead.
    pub fn not_empty(&mut self, path: &str, s: Option<&str>, hint: &str) {
        if s.is_some_and(|s| s.trim().is_empty()) {
            self.at(&[path], format!("must not be empty; {hint}"));
        }
    }

    /// Adds every problem of another validation.
    pub fn extend(&mut self, other: impl IntoIterator<Item = Problem>) {
        self.0.extend(other);
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems found, in the order they were found.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_collect_in_order_and_name_their_first_path() {
        let mut p = Problems::default();
        p.positive("a.b", Duration::ZERO);
        p.positive("a.c", Duration::from_secs(1));
        p.not_empty("a.d", Some(" "), "name it");
        p.not_empty("a.e", None, "unused");
        let all = p.into_vec();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].to_string(), "a.b: must be longer than 0s");
        assert_eq!(all[1].to_string(), "a.d: must not be empty; name it");
    }
}
