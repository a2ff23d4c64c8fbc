//! Outrigger's core: the types every part of the sidecar speaks.
//!
//! A broker adapter turns broker records into [`Message`]s wrapped in a [`Delivery`], and turns a
//! [`Settlement`] back into broker calls (ack, requeue, dead-letter publish). A dedup store keeps
//! the claim/complete/release protocol behind [`DedupStore`]. The app's HTTP reply is a [`Reply`].
//! Nothing here talks to a broker, a store or the network: types and traits only.
//!
//! # Layout
//! - [`message`]: a broker record, its headers and where it came from.
//! - [`reply`]: what the application answered (or why it did not).
//! - [`action`]: the closed set of fates a classifier can pick.
//! - [`dead_letter`]: the failure context attached to a dead letter.
//! - [`dead_letters`]: dead letters read back, and the [`DeadLetterQueue`] operators work on.
//! - [`source`]: the adapter traits, [`Source`] and [`Acker`].
//! - [`dedup`]: the dedup store trait and its protocol types.
//! - [`retry`]: retry queues: the trail a copy carries and the settlement that writes it.
//! - [`parking`]: the store of parked-key chains, for retry queues that keep per-key order.

pub mod action;
pub mod dead_letter;
pub mod dead_letters;
pub mod dedup;
pub mod message;
pub mod parking;
pub mod reply;
pub mod retry;
pub mod source;

pub use action::{Action, ParseActionError};
pub use dead_letter::{ContextError, DeadLetter};
pub use dead_letters::{
    content_id, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Handled, HandledAction,
    Resubmission, Scope,
};
pub use dedup::{Claim, Completion, DedupStore, Release, StoreError};
pub use message::{Coordinates, Header, Message, ParseCoordinatesError};
pub use parking::{ChainId, ParkingStore};
pub use reply::{Reply, Response, TransportError, TransportErrorKind};
pub use retry::{Trail, TrailError};
pub use source::{Acker, Delivery, HealthFlag, Settlement, Source, SourceError, Unsettled};
