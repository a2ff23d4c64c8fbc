//! RabbitMQ source for Outrigger, on lapin.
//!
//! Consumes one queue with manual acks and a `basic.qos` prefetch, turns each delivery into a
//! core [`Message`](outrigger_core::Message), and settles it per message: ack, nack with
//! requeue, or dead-letter. A dead letter is the original body and properties (typed headers
//! included) plus the failure context, published to the dead-letter queue on a confirm channel;
//! the original is acked only once the broker confirmed and routed that copy.
//!
//! # What users see
//! - Headers: AMQP's typed header values become bytes: strings and byte arrays as they are,
//!   numbers and booleans as their text (`42`, `true`), nested arrays and tables (RabbitMQ's
//!   `x-death`) as compact JSON. `key` is the routing key; `timestamp` the AMQP timestamp.
//! - Dead letters keep the original properties and typed headers, with three changes that keep
//!   the copy from being refused or lost: it is persistent (delivery mode 2); a per-message
//!   `expiration` moves to the [`ORIGINAL_EXPIRATION`] header; a `user-id` other than the
//!   sidecar's own moves to [`ORIGINAL_USER_ID`] (RabbitMQ refuses a foreign one).
//! - Dead letters back: [`AmqpDeadLetters`] lists, resubmits and purges the dead-letter queue
//!   for `outrigger dlq` and the admin API. A resubmitted copy is the original again (context
//!   headers off, `expiration` and `user-id` restored where possible) plus the
//!   `outrigger-resubmitted-*` mark; the record is acked only once the copy is confirmed.
//! - Retry mode `queue`: a failing message is published (confirmed) to the delay queue of its
//!   tier, then acked; RabbitMQ moves it back to the source queue once the tier's TTL is over,
//!   and it is read there as its origin, with its trail. See `retry`.
//! - Reconnects: a broken connection or channel marks the source's health flag down; `recv`
//!   reconnects with backoff (100ms doubling to 5s). Ackers of the old channel then fail with
//!   a connection error, and the broker redelivers their messages.
//!
//! # Layout
//! - `config`: [`AmqpConfig`] (`[source.amqp]`) and its validation; [`AmqpSettings`], what a
//!   source runs with. `broker`: [`Amqp`], the broker seam.
//! - `source`: [`AmqpSource`], the consumer loop, reconnects and stop.
//! - `acker`: [`AmqpAcker`], settlement of one delivery; `acks`: a channel's acks coalesced
//!   into `basic.ack(multiple)` where the delivery tags allow.
//! - `session`: one connection's queue checks, channels, consumer and health watcher.
//! - `publisher`: confirmed publishes on a channel of their own.
//! - `retry`: retry mode `queue`, the delay queues `<queue>.retry.<n>` (per-queue TTL,
//!   dead-lettering back to the source queue); `retry/copy`: the properties a retry copy
//!   carries, the original read back from them, and the digest that names a message.
//! - `dead_letter`: the properties a dead-letter copy carries.
//! - `dlq`: [`AmqpDeadLetters`] and its [`AmqpPass`], the dead-letter queue read back;
//!   `dlq/resubmit`: the properties a resubmitted copy carries.
//! - `headers`: AMQP header tables to core headers.
//! - `error`: lapin errors to [`SourceError`](outrigger_core::SourceError).

mod acker;
mod acks;
mod broker;
mod config;
mod dead_letter;
mod dlq;
mod error;
mod headers;
mod publisher;
mod retry;
mod session;
mod source;

pub use acker::AmqpAcker;
pub use broker::Amqp;
pub use config::{
    AmqpConfig, AmqpSettings, RetryQueueType, DEFAULT_CONSUMER_TAG, DEFAULT_PREFETCH,
};
pub use dead_letter::{ORIGINAL_EXPIRATION, ORIGINAL_USER_ID};
pub use dlq::{AmqpDeadLetters, AmqpPass};
pub use source::AmqpSource;
