//! The broker adapter contract: a [`Source`] yields [`Delivery`]s, an [`Acker`] settles each one.
//!
//! Every adapter keeps the same semantics: a delivery is settled exactly once; an acker dropped
//! unsettled hands its message back to the broker (requeue); a dead-letter settlement acks the
//! original only after the broker confirmed the dead-letter write.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Problem;
use crate::dead_letter::DeadLetter;
use crate::message::Message;
use crate::retry::Trail;
use crate::stats::StatsProbe;

/// A message with the handle that settles it at the broker.
#[must_use = "a delivery must be settled; dropping its acker requeues the message"]
#[derive(Debug)]
pub struct Delivery<A> {
    /// The message.
    pub message: Message,
    /// The handle that settles it; consumed by [`Acker::settle`].
    pub acker: A,
}

/// How a delivery ends at the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Done (delivered, skipped as a duplicate, or dropped by policy): remove it from the broker.
    Ack,
    /// Give it back to the broker unsettled, to be delivered again (shutdown, lost claim).
    Requeue,
    /// Publish it to a dead-letter destination with this context, confirmed, then ack it.
    /// Once the dead letter is confirmed, an ack lost with its connection is no failure: the
    /// broker hands the original out again, and the dedup record of the dead letter settles
    /// that copy.
    DeadLetter {
        /// Why and how it failed.
        context: DeadLetter,
        /// Where it goes: a destination a route names (one of
        /// [`SourceContext::route_dead_letters`](crate::SourceContext::route_dead_letters),
        /// which the adapter declared and checked at connect), or `None` for the source's
        /// own (`dead_letter.destination`, else `<name>.dlq`).
        destination: Option<String>,
    },
    /// Write a copy carrying this trail to the retry queue of its tier, confirmed, then ack
    /// it (retry mode `queue`). Adapters without retry queues refuse it with
    /// [`SourceError::Rejected`].
    Retry(Trail),
    /// Give it back to the broker to be delivered again once `delay` has passed, the attempt
    /// spent (retry mode `redeliver`: JetStream's nak with a delay). Adapters without delayed
    /// redelivery refuse it with [`SourceError::Rejected`].
    Redeliver(std::time::Duration),
}

impl Settlement {
    /// A dead letter to the source's own destination.
    pub fn dead_letter(context: DeadLetter) -> Self {
        Settlement::DeadLetter {
            context,
            destination: None,
        }
    }
}

/// A settlement the broker did not take; the handle comes back so the caller can try again.
#[derive(Debug)]
pub struct Unsettled<A> {
    /// The handle, still owning the message at the broker.
    pub acker: A,
    /// The settlement that failed.
    pub settlement: Settlement,
    /// Why it failed.
    pub error: SourceError,
}

/// Settles one delivery at its broker.
pub trait Acker: Send + 'static + Sized {
    /// Applies the settlement. On failure nothing was acked, and the handle is returned.
    fn settle(
        self,
        settlement: Settlement,
    ) -> impl Future<Output = Result<(), Box<Unsettled<Self>>>> + Send;
}

/// A stream of deliveries from one broker consumer.
pub trait Source: Send + 'static {
    /// The settlement handle this source hands out.
    type Acker: Acker;

    /// Waits for the next delivery. `Ok(None)` means the source is finished (stopped, or a
    /// finite in-process queue drained). Errors are broker-level; the adapter reconnects on the
    /// next call when it can.
    fn recv(
        &mut self,
    ) -> impl Future<Output = Result<Option<Delivery<Self::Acker>>, SourceError>> + Send;

    /// Stops fetching new messages; ackers already handed out stay usable.
    fn stop(&mut self) -> impl Future<Output = ()> + Send;

    /// A flag the adapter keeps up to date: true while connected to its broker.
    fn health(&self) -> HealthFlag;

    /// A handle on the per-partition numbers behind the lag and partition gauges; readable
    /// from another task while the source runs, and after it stopped.
    fn stats(&self) -> StatsProbe {
        StatsProbe::none()
    }
}

/// A shared, cheaply cloned up/down flag for readiness probes.
#[derive(Clone, Debug, Default)]
pub struct HealthFlag(Arc<AtomicBool>);

impl HealthFlag {
    /// A flag starting in the given state.
    pub fn new(up: bool) -> Self {
        Self(Arc::new(AtomicBool::new(up)))
    }

    /// Marks the component up or down.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }

    /// True while the component is up.
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A broker-level failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The broker could not be reached or the connection broke; retrying may help.
    #[error("broker connection failed: {0}")]
    Connection(String),
    /// The broker refused or did not confirm a publish (dead letter, retry record).
    #[error("broker did not confirm the publish: {0}")]
    Publish(String),
    /// The broker rejected the configuration (missing queue, access refused); retrying won't help.
    #[error("broker rejected the request: {0}")]
    Rejected(String),
    /// The source's configuration is invalid: the problems `outrigger check` reports too.
    #[error("invalid source configuration: {}", list(.0))]
    Config(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    let all: Vec<String> = problems.iter().map(Problem::to_string).collect();
    all.join("; ")
}

impl SourceError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SourceError::Rejected(_) | SourceError::Config(_))
    }
}
