//! The policy loader: `outrigger::config::load_str` over any text and any overrides.
//!
//! Input: the TOML text, then NUL-separated environment variables `NAME=value`; a name
//! without the `OUTRIGGER__` prefix gets it, so the fuzzer spends its time on overrides that
//! apply (`RETRY__MAX_ATTEMPTS=x` is `OUTRIGGER__RETRY__MAX_ATTEMPTS=x`).
//!
//! Properties: no panic; the same input gives the same answer; every error points inside
//! the text or names one of the variables, unless it is about a section missing altogether;
//! an accepted policy can be summarised, warned about, and compares equal to itself.

use outrigger::config::{load_str, ConfigErrors, ENV_PREFIX};

use super::input::{fields, text};

/// Where errors say the policy came from.
const ORIGIN: &str = "fuzz.toml";

/// Runs one input.
pub fn run(data: &[u8]) {
    let parts = fields(data);
    let toml = text(parts[0]);
    let env: Vec<(String, String)> = parts[1..].iter().map(|p| var(p)).collect();
    let loaded = load_str(&toml, ORIGIN, env.clone());
    assert_eq!(
        loaded,
        load_str(&toml, ORIGIN, env.clone()),
        "loading the same policy twice gave different answers"
    );
    match loaded {
        Ok(config) => {
            let _ = config.summary();
            let _ = config.warnings();
            let _ = config.source_context();
            assert!(config.changed_sections(&config).is_empty());
        }
        Err(errors) => check_errors(&toml, &env, &errors),
    }
}

/// One override from `NAME=value`, the prefix added when it is missing.
fn var(field: &[u8]) -> (String, String) {
    let (name, value) = match field.iter().position(|&b| b == b'=') {
        Some(at) => (&field[..at], &field[at + 1..]),
        None => (field, &[][..]),
    };
    let name = text(name);
    let name = if name.starts_with(ENV_PREFIX) {
        name
    } else {
        format!("{ENV_PREFIX}{name}")
    };
    (name, text(value))
}

fn check_errors(toml: &str, env: &[(String, String)], errors: &ConfigErrors) {
    assert!(!errors.errors.is_empty(), "an error without a problem");
    for e in &errors.errors {
        let shown = e.to_string();
        assert_eq!(e.origin, ORIGIN, "{shown}");
        if let Some((line, column)) = e.location {
            assert!(
                inside(toml, line, column),
                "{line}:{column} is outside the text: {shown}"
            );
        }
        if let Some(var) = &e.env_var {
            assert!(
                env.iter().any(|(name, _)| name == var),
                "names a variable that was not set: {shown}"
            );
        }
        // A section that is not there has no line to point at: `[source]` missing.
        let placeless = e.path == "source" && e.message.starts_with("missing [source]");
        assert!(
            e.location.is_some() || e.env_var.is_some() || placeless,
            "points nowhere: {shown}"
        );
    }
}

/// Whether 1-based `line`:`column` (in characters) is in `text` or just past a line's end.
fn inside(text: &str, line: usize, column: usize) -> bool {
    // `split` keeps the empty line after a final newline, where an error at the end points.
    text.split('\n')
        .nth(line.wrapping_sub(1))
        .is_some_and(|l| (1..=l.chars().count() + 1).contains(&column))
}
