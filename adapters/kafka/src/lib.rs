//! Kafka source for Outrigger, on rdkafka (librdkafka).
//!
//! Consumes topics in a consumer group and commits only what the pipeline settled. Offsets are
//! stored by hand (`enable.auto.offset.store=false`) and only up to each partition's watermark,
//! the first record not settled yet, so a slow or failing record never lets a commit pass it;
//! the stored watermark is auto-committed every `commit_interval` and committed synchronously
//! when a partition is revoked or the source stops.
//!
//! # What users see
//! - Messages: payload, key and headers byte for byte (a null value or header value is empty);
//!   `content_type` from a `content-type` header; `message_id` is `<topic>/<partition>@<offset>`,
//!   stable across re-reads, so the default dedup key works; `redelivered` is always false.
//! - Settlement: `Ack` settles the offset. `Requeue`, or dropping the acker, leaves it
//!   unsettled: the partition commits nothing past it until the next rebalance or restart,
//!   when the record is read again (with everything after it: at least once). `DeadLetter`
//!   writes the original record plus the `outrigger-dlq-*` headers to the dead-letter topic
//!   with an idempotent `acks=all` producer and settles only once that write is confirmed.
//! - Backpressure: records count as in flight from when the source takes them from librdkafka
//!   to settlement. At `max_in_flight` or `max_buffered_bytes` every partition pauses; at
//!   `max_in_flight_per_partition` that partition does. They resume at 80% of the limit that
//!   paused them, the partitions with records sharing what came free. Each partition's records
//!   come in a queue of their own, and pausing is leaving that queue unread: librdkafka stops
//!   fetching the partition once about 1 MiB of it is prefetched, and nothing fetched is thrown
//!   away (librdkafka's own pause would drop the prefetch and refetch it).
//! - Dead letters back: [`KafkaDeadLetters`] lists, resubmits and purges the dead-letter
//!   topics for `outrigger dlq` and the admin API. A topic keeps its records, so what was done
//!   to each is written as a marker to the compacted `<topic>.handled` beside it, and a list
//!   hides handled records unless asked; a resubmitted copy is the original again plus the
//!   `outrigger-resubmitted-*` mark, confirmed before the record counts as handled.
//! - Rebalances: a revoked partition stops handing out records, waits up to `revoke_timeout`
//!   for its in-flight ones, commits its watermark, then forgets them; their later settlements
//!   succeed and change nothing. Assigned partitions start fresh.
//! - Health: up once the cluster answered; down while librdkafka reports all brokers down
//!   (it reconnects by itself). Fatal consumer errors and refused authorization end `recv`
//!   with [`SourceError::Rejected`](outrigger_core::SourceError::Rejected).
//!
//! # Layout
//! - `config`: [`KafkaSettings`], what to consume and the limits; `properties`: the librdkafka
//!   settings derived from it.
//! - `source`: [`KafkaSource`], connect, `recv`, stop.
//! - `acker`: [`KafkaAcker`], settlement of one record.
//! - `poll`: the thread that reads the consumer and the partition queues; `wake`: what wakes it.
//! - `state`: the bookkeeping shared by every part of a source; `context`: the group
//!   consumer's librdkafka callbacks. `rebalance`: assign and revoke; `stats`: [`KafkaStats`].
//! - `partition`: one partition's bookkeeping and the ticket of a record; `watermark`: its
//!   commit watermark; `backpressure`: limits with hysteresis.
//! - `record`: a fetched record as a core message; `logging`: librdkafka's logs in `tracing`.
//! - `dead_letter`: the dead-letter write; `retry`: the retry-copy write; `publish`: the
//!   confirmed copy both make.
//! - `dlq`: [`KafkaDeadLetters`] and its [`KafkaPass`], the dead-letter topics read
//!   back, with their handled markers and resubmitted copies.
//! - `topics`: topic checks and dead-letter topic creation at connect.
//!
//! Who uses whom (`use crate::`): `state` and `context` know each other; every other arrow
//! points to a module earlier in this list.
//! - `config`, `backpressure`, `watermark`, `wake`, `logging`: nothing of the crate.
//! - `partition` → `backpressure`, `watermark`; `record` → `partition`.
//! - `publish` → `logging`, `record`; `dead_letter`, `retry` → `publish`, `partition`,
//!   `record`, `logging` (`retry` → `config` too).
//! - `properties` → `config`; `topics` → `properties`, `dead_letter`, `logging`, `config`;
//!   `dlq` → `properties`, `record`, `logging`, `config`.
//! - `state` ⇄ `context`; `state` → `partition`, `record`, `dead_letter`, `retry`, `wake`,
//!   `backpressure`; `context` → `logging`.
//! - `acker`, `poll`, `rebalance`, `stats` → `state`, `partition` (and `record`, `context`);
//!   `source` and `broker` → what they assemble.

mod acker;
mod backpressure;
mod broker;
mod config;
mod context;
mod dead_letter;
mod dlq;
mod logging;
mod partition;
mod poll;
mod properties;
mod publish;
mod rebalance;
mod record;
mod retry;
mod source;
mod state;
mod stats;
mod topics;
mod wake;
mod watermark;

pub use acker::KafkaAcker;
pub use backpressure::RESUME_PERCENT;
pub use broker::Kafka;
pub use config::{
    KafkaConfig, KafkaSettings, StartFrom, DEFAULT_COMMIT_INTERVAL, DEFAULT_PREFETCH_PER_PARTITION,
    DEFAULT_REVOKE_TIMEOUT, RESERVED_PROPERTIES,
};
pub use dlq::{record_id, KafkaDeadLetters, KafkaPass, MARKER_TOPIC_SUFFIX};
pub use record::CONTENT_TYPE_HEADER;
pub use source::KafkaSource;
pub use stats::{KafkaStats, PartitionStats};
