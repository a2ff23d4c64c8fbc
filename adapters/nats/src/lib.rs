//! NATS JetStream source for Outrigger, on async-nats.
//!
//! Consumes one stream through a durable pull consumer with explicit acks. It pulls in
//! batches no larger than what may still be unsettled, and acks a message only once its
//! outcome is durable, waiting for the server to confirm the ack. While a message is
//! unsettled (queued, delivered, retried in place) it is reported in progress (`+WPI`) every
//! third of `ack_wait`, so JetStream never hands it to another consumer behind the sidecar's
//! back; once a sidecar dies, its messages go to the survivors after `ack_wait`. Works with
//! nats-server 2.9 and later.
//!
//! # What users see
//! - Messages: payload byte for byte; headers as NATS carries them (text, one line each,
//!   sorted by name: the client does not keep their order); `key` is the `key_header`
//!   (`outrigger-key`) value, else the subject; `message_id` is `<stream>@<sequence>`, the
//!   same on every redelivery; `content_type` from `Content-Type`; `deliveries` is
//!   JetStream's delivery count, so attempts count every hand-out, crashes included.
//! - Settlement: `Ack` is `+ACK`, `Requeue` (and a dropped acker) `-NAK`, both confirmed by
//!   the server. `DeadLetter` publishes the original payload and headers plus the
//!   `outrigger-dlq-*` context to the dead-letter subject, waits for JetStream's publish ack,
//!   then sends `+TERM` (without a reason, which nats-server 2.9 does not read: the reason is
//!   in the dead letter). A failed publish leaves the original unacked, still in progress.
//! - Retries: in place, `redeliver` (a nak with the delay), or retry mode `queue`: a failing
//!   message (or one parked behind it) is copied to `<stream>.retry.<n>` in the retry stream
//!   `<stream>_retry` (created at connect, file storage) with its trail, and acked once
//!   JetStream confirms the copy (a second copy after a lost ack is dropped, by its
//!   `Nats-Msg-Id`); a failed copy leaves the original unacked. A second durable consumer,
//!   `<consumer>-retry`, reads the copies into the same deliveries: one read before it is due
//!   is naked with the time left (JetStream waits, the sidecar holds nothing and spends no
//!   attempt), then handed out as its origin (its coordinates, `message_id`, subject, key and
//!   headers, `deliveries` unknown so the waiting naks count no attempt).
//! - Dead letters back: [`NatsDeadLetters`] lists, resubmits and purges the dead-letter
//!   stream for `outrigger dlq` and the admin API; ids are stream sequences.
//! - Connection: user/password, token, `.creds` (read again at each reconnect, so a renewed
//!   file is used) or NKey seed file, TLS with a CA and a client certificate; reconnects with
//!   backoff (100ms doubling to 5s), logged once while it lasts.
//!
//! # Layout
//! - `config`: [`NatsConfig`] (`[source.nats]`) and its validation; [`NatsSettings`], what a
//!   source runs with. `broker`: [`Nats`], the broker seam.
//! - `connection`: connect options, reconnect events, health; `creds`: a `.creds` file, read
//!   again at each connect.
//! - `setup`: the stream, the consumer, the dead-letter stream and (retry mode `queue`) the
//!   retry stream and its consumer, found or created. `retry`: a retry copy and its way back.
//! - `source`: [`NatsSource`]; `pull`: the pull loop; `shared`: what they and the ackers share.
//! - `acker`: [`NatsAcker`], settlement of one delivery; `ack`: confirmed acks.
//! - `headers`: NATS headers and messages as core ones; `dead_letter`: the headers of a dead
//!   letter.
//! - `dlq`: [`NatsDeadLetters`] and its [`NatsPass`]; `stored`: a stored message read back
//!   with every header ([`StoredMessage`]); `stats`: consumer info as gauges.

mod ack;
mod acker;
mod broker;
mod config;
mod connection;
mod creds;
mod dead_letter;
mod dlq;
mod headers;
mod pull;
mod retry;
mod setup;
mod shared;
mod source;
mod stats;
mod stored;

pub use acker::NatsAcker;
pub use broker::Nats;
pub use config::{
    NatsConfig, NatsSettings, StartFrom, TlsConfig, DEFAULT_ACK_WAIT, DEFAULT_KEY_HEADER,
    DEFAULT_PREFETCH, MIN_ACK_WAIT,
};
pub use dead_letter::{ORIGINAL_PREFIX, SUBJECT as DEAD_LETTER_SUBJECT_HEADER};
pub use dlq::{NatsDeadLetters, NatsPass};
pub use source::NatsSource;
pub use stats::ConsumerStats;
pub use stored::{first_at_or_after as stored_message, StoredMessage};
