//! Outrigger's policies as pure logic over the core types: no broker, no store, no network.
//!
//! The pipeline asks these modules what to do; it never decides by itself. Each module is one
//! policy and is tested on its own, with property tests for the state machines.
//!
//! # Layout
//! - [`attempt`]: the fate of a message, one attempt at a time: the state machine the
//!   pipeline executes.
//! - [`dedup`]: the claim/complete/release protocol as a state machine every store follows.
//! - [`backoff`]: the delay curve between attempts (constant, linear, exponential; cap, jitter).
//! - [`retry`]: whether a failed message gets another attempt, and when.
//! - [`classify`]: the app's reply to an [`Action`](outrigger_core::Action): the app's
//!   `outrigger-action` header, then user rules, then the defaults.
//! - [`concurrency`]: adaptive concurrency toward the app (Vegas: the queue from the latency).
//! - [`key`]: idempotency-key templates over headers, JSON payload fields and broker ids.
//! - [`ordering`]: which messages keep their order, and the per-lane queues that enforce it.
//! - [`route`]: which route a message takes, by glob patterns over its source, type, headers.
//! - [`chain`]: parked-key chains, which keep per-key order through retry queues, and
//!   ([`chain::link`]) a message's place in one.

pub mod attempt;
pub mod backoff;
pub mod chain;
pub mod classify;
pub mod concurrency;
pub mod dedup;
pub mod key;
pub mod ordering;
pub mod retry;
pub mod route;
pub mod sequence;

pub use attempt::{AttemptPolicy, Attempts, Done, Next, RetryTiers, Tried, Wait};
pub use backoff::{Backoff, BackoffKind};
pub use chain::{Arrival, Chain, Finish, Turn};
pub use classify::{
    Classifier, HeaderMatch, Matched, ParseStatusError, Rule, StatusRange, Verdict,
};
pub use concurrency::{AdaptiveLimit, Bounds, Sample};
pub use dedup::{DedupRecord, DedupState, Step};
pub use key::{KeyError, KeyPolicy, KeyTemplate, Keyed, MissingKey, ParseKeyTemplateError};
pub use ordering::{Lane, Lanes, OrderingMode};
pub use retry::{Exhausted, RetryDecision, RetryPolicy};
pub use route::{MessageMatch, Pattern};
pub use sequence::{OnGap, Place, Reorder, Resolution, SequenceError, SequencePolicy};
