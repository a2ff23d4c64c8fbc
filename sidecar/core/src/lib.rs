//! Outrigger's core: the types every part of the sidecar speaks.
//!
//! A broker adapter implements [`Broker`]: it owns its `[source.<broker>]` table, validates it,
//! says what it can do, and turns broker records into [`Message`]s wrapped in a [`Delivery`],
//! and a [`Settlement`] back into broker calls (ack, requeue, dead-letter publish). A dedup
//! store keeps the claim/complete/release protocol behind [`DedupStore`]. The app's HTTP reply
//! is a [`Reply`]. Nothing here talks to a broker, a store or the network: types and traits
//! only.
//!
//! # Layout
//! - [`broker`]: the seam an adapter implements, [`Broker`], with its [`Capabilities`] and the
//!   [`SourceContext`] every source shares.
//! - [`config`]: key paths, validation [`Problem`]s, and deserializers for durations and sizes.
//! - [`message`]: a broker record, its headers and where it came from.
//! - [`reply`]: what the application answered (or why it did not).
//! - [`action`]: the closed set of fates a classifier can pick.
//! - [`ordering`]: the ordering scopes, [`OrderingMode`].
//! - [`dead_letter`]: the failure context attached to a dead letter.
//! - [`dlq`]: dead letters read back, and the [`DeadLetterQueue`] operators work on.
//! - [`source`]: the adapter traits, [`Source`] and [`Acker`].
//! - [`stats`]: what a source reports per partition, [`PartitionStats`].
//! - [`episode`]: a repeated failure logged once when it starts and once when it clears.
//! - [`reconnect`]: the bounded doubling delay between an adapter's reconnect attempts.
//! - [`dedup`]: the dedup store trait and its protocol types.
//! - [`retry`]: retry queues: the trail a copy carries and the settlement that writes it.
//! - [`parking`]: the store of parked-key chains, for retry queues that keep per-key order.

pub mod action;
pub mod broker;
pub mod config;
pub mod dead_letter;
pub mod dedup;
pub mod dlq;
pub mod episode;
pub mod message;
pub mod ordering;
pub mod parking;
pub mod reconnect;
pub mod reply;
pub mod retry;
pub mod sequence;
pub mod source;
pub mod stats;

pub use action::{Action, ParseActionError};
pub use broker::{
    Broker, Capabilities, Limits, NoDeadLetters, Noun, RouteDeadLetter, SourceContext, SourceName,
};
pub use config::{KeyPath, Problem, Problems};
pub use dead_letter::{ContextError, DeadLetter};
pub use dedup::{Claim, Completion, DedupStore, Release, StoreError};
pub use dlq::{
    content_id, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Handled, HandledAction,
    Resubmission, Scope,
};
pub use episode::Episode;
pub use message::{partition_name, Coordinates, Header, Message, ParseCoordinatesError};
pub use ordering::OrderingMode;
pub use parking::{ChainId, ParkingStore};
pub use reconnect::ReconnectDelay;
pub use reply::{Reply, Response, TransportError, TransportErrorKind};
pub use retry::{Trail, TrailError};
pub use sequence::{SequenceId, SequenceStore};
pub use source::{Acker, Delivery, HealthFlag, Settlement, Source, SourceError, Unsettled};
pub use stats::{PartitionStats, StatsFuture, StatsProbe};
