//! Redis Streams source for Outrigger, on the `redis` crate.
//!
//! Consumes one or more streams as one consumer of a consumer group (`XREADGROUP`), and
//! acknowledges an entry (`XACK`) only once its outcome is durable. Works on Redis 7.0 and
//! later (6.2 without lag figures and deleted-entry reports); uses no Redis 8 command
//! (`XACKDEL`, `XREADGROUP ... CLAIM`, `XNACK`), so nothing depends on the server's version.
//!
//! # What users see
//! - Messages: the `payload_field` (default `payload`) is the payload, the `key_field`
//!   (default `key`) the key, every other field a header, in entry order, byte for byte;
//!   `content_type` from a `content-type` field; `message_id` is `<stream>@<entry id>`, the
//!   same on every redelivery, so the default `{message_id}` dedup key works; `timestamp` the
//!   time in the entry id. See `mapping`.
//! - Attempts: `deliveries` is Redis's count of hand-outs of the entry (its pending list's
//!   delivery count), so attempts that died with a sidecar count, and an entry past
//!   `retry.max_attempts` is dead-lettered rather than handed out forever.
//! - Restarts: a consumer first reads its own pending entries (what it was handed and never
//!   settled), then new ones. Its name defaults to the pod's hostname; a Deployment's pods get
//!   new names on restart, so their entries come back through a peer's claim (below), a
//!   StatefulSet's at once.
//! - Crashed peers: every half `claim_idle`, entries idle longer than `claim_idle` on any
//!   consumer are taken over (`XAUTOCLAIM`, paged by its cursor). This sidecar's own entries
//!   are claimed again for itself every quarter of `claim_idle` (`XCLAIM ... JUSTID`, never one
//!   a peer holds by then), so however slow a delivery is, no peer takes it while the sidecar
//!   runs.
//! - Deleted while pending: an entry trimmed or `XDEL`'d before it was settled (Redis reports
//!   it in `XAUTOCLAIM`'s deleted ids, or without fields in a pending read) is counted
//!   ([`RedisStreamsSource::deleted_while_pending`]), logged at WARN once per batch, and
//!   dead-lettered as a tombstone (class `deleted`, the entry's coordinates, no fields).
//! - Settlement: `Ack` is `XACK`. `DeadLetter` writes the entry's fields plus the
//!   `outrigger-dlq-*` context to `<stream>.dlq` (or `dead_letter.destination`) and
//!   acknowledges the entry in one script: both or neither, and a retry writes nothing twice.
//!   A failed write leaves the entry pending. `Requeue` hands the entry out again at once, its
//!   delivery count unchanged; a dropped acker does too, counted as one more hand-out.
//! - Retry mode `queue`: a failing entry (and a later one of its key parked behind it) is
//!   copied to `<stream>.retry.<n>`, one stream per tier of each source stream, created with
//!   the group (`MKSTREAM`) at connect; the copy is the entry's fields byte for byte and in
//!   order, then the `outrigger-retry-*` trail, due the tier's delay from now. The write and
//!   the `XACK` of the entry are one script: both or neither, and a retry after a lost reply
//!   writes no second copy. The group reads the retry streams with the source streams; a copy
//!   read before it is due waits, pending on this consumer and kept from peers like any held
//!   entry but taking no backpressure permit, and its retry stream is read no further until it
//!   is due. Once due it is handed out as its origin again (coordinates, `message_id`, dead
//!   letters are the original's). A killed sidecar's waiting copies come back through the
//!   pending read or a peer's claim; reads of a copy that waits count no hand-out (its count is
//!   set back), so waiting spends none of its attempts. A retry stream may not be a source or dead-letter stream
//!   (refused by `validate`). Standalone Redis only, like the rest of the source: the script
//!   touches two keys, which Redis Cluster would need in one hash slot.
//! - Backpressure: an entry counts from the read that hands it to this consumer to its
//!   settlement (a retry copy that waits for its time from when it is handed out); reads ask for no more than `max_in_flight` and `max_buffered_bytes` leave room
//!   for (`backpressure.prefetch`, default `max_in_flight`, caps one read).
//! - Stop: no read after it; entries read and not handed out stay pending for the next consumer
//!   of this name, their delivery count set back by one.
//! - Reconnects: a broken connection marks the source down, and it reconnects with backoff
//!   (100ms doubling to 5s), logged once while it lasts; entries handed out before still settle
//!   after it (a consumer's pending list outlives its connections).
//! - Stats: per stream (retry streams too), the group's lag (`XINFO GROUPS`) and this
//!   consumer's pending entries (`XPENDING`), with what the source holds.
//! - Dead letters back: [`RedisStreamsDeadLetters`] lists, resubmits and purges the dead-letter
//!   streams for `outrigger dlq` and the admin API; a resubmission adds the copy and deletes
//!   the record in one script, so no run ever adds two.
//!
//! # Layout
//! - `config`: [`RedisStreamsConfig`] (`[source.redis_streams]`) and its validation;
//!   [`RedisStreamsSettings`], what a source runs with. `broker`: [`RedisStreams`], the seam.
//! - `source`: [`RedisStreamsSource`], connect, `recv`, stop; `reader`: the task that reads
//!   pending, claimed and new entries (`reader::waiting`: retry copies not due yet); `keeper`:
//!   the task that keeps held entries this consumer's; `ledger`: what is held; `shared`: what
//!   they share.
//! - `acker`: [`RedisStreamsAcker`], settlement of one entry; `dead_letter`: dead letters and
//!   tombstones; `retry`: retry copies.
//! - `dlq`: [`RedisStreamsDeadLetters`] and its [`RedisStreamsPass`].
//! - `mapping`: entries as messages; `reply`: the commands' replies; `scripts`: the Lua
//!   scripts; `client`: the connections; `groups`: groups and streams checked or created at
//!   connect; `stats`; `error`.

mod acker;
mod broker;
mod client;
mod config;
mod dead_letter;
mod dlq;
mod error;
mod groups;
mod keeper;
mod ledger;
mod mapping;
mod reader;
mod reply;
mod retry;
mod scripts;
mod shared;
mod source;
mod stats;

pub use acker::RedisStreamsAcker;
pub use broker::RedisStreams;
pub use config::{
    default_consumer, RedisStreamsConfig, RedisStreamsSettings, StartFrom, DEFAULT_BLOCK,
    DEFAULT_CLAIM_IDLE, DEFAULT_KEY_FIELD, DEFAULT_PAYLOAD_FIELD, DEFAULT_TIMEOUT, MIN_CLAIM_IDLE,
};
pub use dead_letter::DELETED_CLASS;
pub use dlq::{RedisStreamsDeadLetters, RedisStreamsPass};
pub use mapping::{message_id, CONTENT_TYPE_FIELD};
pub use source::RedisStreamsSource;
