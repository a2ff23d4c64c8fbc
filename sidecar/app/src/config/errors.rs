//! What a configuration error says, and where it points.

use std::fmt;

/// One problem with a policy: where it is, which key, what is wrong, and the value as written.
///
/// Displays as one line a user can jump to from a terminal:
/// `policy.toml:12:11: retry.initial: invalid duration: expected a number with a unit like 250ms
/// or 30s (value: "fast")`, or, for an environment override,
/// `OUTRIGGER__RETRY__MAX_ATTEMPTS: retry.max_attempts: ... (value: "x")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the policy came from: the file path, or the name given to `load_str`.
    pub origin: String,
    /// 1-based line and column in `origin`; `None` when the problem is not in the file.
    pub location: Option<(usize, usize)>,
    /// The environment variable that set the offending value, when one did.
    pub env_var: Option<String>,
    /// The key path, like `retry.initial` or `classify.rules[2].status`; empty when the file
    /// could not be read or parsed as TOML.
    pub path: String,
    /// What is wrong, and what would be right.
    pub message: String,
    /// The offending value as written (TOML syntax, so strings are quoted).
    pub value: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env_var, self.location) {
            (Some(var), _) => write!(f, "{var}: ")?,
            (None, Some((line, column))) => write!(f, "{}:{line}:{column}: ", self.origin)?,
            (None, None) => write!(f, "{}: ", self.origin)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(value) = &self.value {
            write!(f, " (value: {value})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one policy, in file order (syntax errors alone, since nothing after
/// them can be trusted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems, at least one.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            error.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> ConfigError {
        ConfigError {
            origin: "policy.toml".into(),
            location: Some((12, 11)),
            env_var: None,
            path: "retry.initial".into(),
            message: "invalid duration: expected a number with a unit like 250ms or 30s".into(),
            value: Some("\"fast\"".into()),
        }
    }

    #[test]
    fn file_error_reads_as_one_line() {
        assert_eq!(
            error().to_string(),
            "policy.toml:12:11: retry.initial: invalid duration: expected a number with a unit \
             like 250ms or 30s (value: \"fast\")"
        );
    }

    #[test]
    fn env_error_names_the_variable() {
        let e = ConfigError {
            location: None,
            env_var: Some("OUTRIGGER__RETRY__MAX_ATTEMPTS".into()),
            path: "retry.max_attempts".into(),
            message: "bad".into(),
            value: Some("\"x\"".into()),
            ..error()
        };
        assert_eq!(
            e.to_string(),
            "OUTRIGGER__RETRY__MAX_ATTEMPTS: retry.max_attempts: bad (value: \"x\")"
        );
    }

    #[test]
    fn errors_are_one_per_line() {
        let two = ConfigErrors {
            errors: vec![error(), error()],
        };
        assert_eq!(two.to_string().lines().count(), 2);
    }
}
