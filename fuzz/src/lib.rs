//! Fuzz targets for what Outrigger reads from outside: the policy file and its environment
//! overrides, broker headers (retry trails, dead-letter context, source coordinates), key
//! templates over arbitrary messages, and the app's replies (status ranges, `Retry-After`).
//!
//! Each target is a plain `run(&[u8])` that panics when a property breaks, so libFuzzer
//! (`fuzz_targets/`, through `cargo fuzz`) and the workspace's `tests/fuzz_regressions.rs`
//! (replaying `seeds/` and `regressions/`) run the same code.
//!
//! # Layout
//! - [`input`]: how a target reads its bytes: fields split at NUL bytes, or numbers and
//!   strings taken off the front.
//! - [`config`]: `outrigger::config::load_str` with environment overrides.
//! - [`headers`]: arbitrary headers read as a trail, a dead-letter context, a source and a
//!   dead-letter record.
//! - [`trail`], [`dead_letter`], [`coordinates`]: values built from bytes, written and read
//!   back.
//! - [`key`]: key templates parsed, then extracted from arbitrary messages.
//! - [`classify`]: status ranges, `Retry-After` and the classifier over arbitrary replies.

pub mod classify;
pub mod config;
pub mod coordinates;
pub mod dead_letter;
pub mod headers;
pub mod input;
pub mod key;
pub mod trail;

/// A target: one input in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary, its `seeds/` and its `regressions/` folders.
pub const TARGETS: [(&str, Target); 7] = [
    ("config", config::run),
    ("headers", headers::run),
    ("trail", trail::run),
    ("dead_letter", dead_letter::run),
    ("coordinates", coordinates::run),
    ("key", key::run),
    ("classify", classify::run),
];
