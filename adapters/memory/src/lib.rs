//! The in-process memory broker: the default of `outrigger demo` and the test double for
//! pipeline logic.
//!
//! It keeps the semantics every adapter promises: a delivery is settled exactly once; an acker
//! dropped unsettled requeues its message (marked redelivered, at the front of the queue); a
//! dead letter is written to the dead-letter queue before the original is acked, and a failed
//! dead-letter write (see [`MemoryBroker::set_fail_dead_letters`]) acks nothing.
//!
//! Unlike a real broker, a memory queue is finite: [`Source::recv`](outrigger_core::Source::recv)
//! returns `None` once the queue holds no ready and no unacknowledged message, so a run over a
//! pre-filled queue ends when every message is settled.
//!
//! # Layout
//! - `config`: [`MemoryConfig`] (`[source.memory]`) and [`Memory`], the broker seam.
//! - [`broker`]: the shared queues, publishing and inspection.
//! - [`source`]: the [`Source`](outrigger_core::Source) and [`Acker`](outrigger_core::Acker)
//!   over one queue.

pub mod broker;
mod config;
pub mod source;

pub use broker::{MemoryBroker, Outgoing};
pub use config::{Memory, MemoryConfig, IN_PROCESS_ONLY};
pub use source::{MemoryAcker, MemorySource};
