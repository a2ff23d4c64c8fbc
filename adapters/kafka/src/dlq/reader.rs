//! Reading a topic as it stands: every partition from its first record to its end, without
//! joining a consumer group or committing anything.
//!
//! Partitions are read one after the other, in partition order, so two passes over the same
//! records see them in the same order. A partition ends where the reader catches up with it:
//! records written later wait for the next reader, so reading ends even while a sidecar keeps
//! writing (it reads far faster than dead letters come). One client serves one topic:
//! librdkafka reports the end of a partition by its number alone, which is unambiguous only
//! within a topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use outrigger_core::SourceError;
use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaSettings;
use crate::logging::LogContext;
use crate::properties;
use crate::record::{self, Fetched};

/// How long a metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a read may wait for the next record of a partition, or its end. Either comes with
/// the next fetch, so only a broker that stopped answering takes this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Prefetch per partition, in KiB: one partition is read at a time, and a pass handles one
/// record at a time, so a little is enough.
const PREFETCH_KIB: u64 = 4096;

/// How long the broker may hold a fetch that finds nothing new. A reader stops at the end it
/// knows, so a fetch that waits only delays the next partition; librdkafka's 500ms default
/// would add that to every partition read.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// The reader's client: an assign-only consumer, with librdkafka's logs in `tracing`.
type Client = StreamConsumer<ReadContext>;

/// The reader's librdkafka context: logs as the adapter's other clients log.
struct ReadContext;

impl ClientContext for ReadContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        LogContext.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        LogContext.error(error, reason);
    }
}

impl ConsumerContext for ReadContext {}

/// The group id of the readers. librdkafka wants one even to assign partitions by hand; the
/// readers never join the group nor commit to it.
const READER_GROUP: &str = "outrigger-dlq-reader";

/// A client that reads by offset: no group membership, no commits, and an end-of-partition
/// event when a read reaches the end.
fn client(config: &KafkaSettings) -> Result<Arc<Client>, SourceError> {
    let mut c = properties::admin(config);
    c.set("group.id", READER_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // A partition whose oldest records were deleted meanwhile starts at the new oldest.
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", PREFETCH_KIB.to_string())
        .set("fetch.wait.max.ms", FETCH_WAIT.as_millis().to_string());
    Client::from_config_and_context(&c, ReadContext)
        .map(Arc::new)
        .map_err(|e| SourceError::Rejected(format!("invalid Kafka client settings: {e}")))
}

/// Every topic of the cluster with its partition count. All topics rather than only ours: a
/// metadata request naming a missing topic would make some brokers create it.
pub(super) async fn topics(config: &KafkaSettings) -> Result<HashMap<String, i32>, SourceError> {
    let client = client(config)?;
    let metadata = blocking(move || {
        client.fetch_metadata(None, REQUEST_TIMEOUT).map(|m| {
            m.topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
                .collect::<HashMap<_, _>>()
        })
    })
    .await?;
    metadata.map_err(|e| {
        SourceError::Connection(format!(
            "fetching Kafka metadata from {}: {e}",
            config.bootstrap_servers
        ))
    })
}

/// The offsets of one partition a reader handed out: `low..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    low: i64,
    end: i64,
}

impl Span {
    /// Whether the reader handed out the record at this offset.
    pub(super) fn holds(&self, offset: i64) -> bool {
        (self.low..self.end).contains(&offset)
    }
}

/// Reads one topic, partition after partition, each to its end.
pub(super) struct Reader {
    client: Arc<Client>,
    topic: String,
    /// What was handed out of each partition, by partition number.
    read: Vec<Option<Span>>,
    /// The partition being read; the partition count once every one was.
    current: usize,
    /// Whether the current partition is assigned to the client yet.
    assigned: bool,
}

impl Reader {
    /// A reader of `topic`'s `partitions` partitions on a client of its own; it connects when
    /// it first reads.
    pub(super) fn open(
        config: &KafkaSettings,
        topic: &str,
        partitions: i32,
    ) -> Result<Self, SourceError> {
        Ok(Self {
            client: client(config)?,
            topic: topic.to_owned(),
            read: vec![None; usize::try_from(partitions).unwrap_or_default()],
            current: 0,
            assigned: false,
        })
    }

    /// The topic read.
    pub(super) fn topic(&self) -> &str {
        &self.topic
    }

    /// What the reader handed out of a partition, when it handed out any.
    pub(super) fn span(&self, partition: i32) -> Option<&Span> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.read.get(p))
            .and_then(Option::as_ref)
    }

    /// The next record, or `None` once every partition was read to its end.
    ///
    /// The end is where the broker's fetch says the partition ends when the reader gets
    /// there (librdkafka's end-of-partition event), not the high watermark a ListOffsets
    /// request reports beforehand: tansu 0.6.0 answers that with the first offset of the last
    /// record batch plus one, which leaves out the rest of a batch of several records.
    pub(super) async fn next(&mut self) -> Result<Option<Fetched>, SourceError> {
        loop {
            if self.current >= self.read.len() {
                return Ok(None);
            }
            let partition = self.current as i32;
            if !self.assigned {
                let mut list = TopicPartitionList::new();
                list.add_partition_offset(&self.topic, partition, Offset::Beginning)
                    .and_then(|()| self.client.assign(&list))
                    .map_err(|e| read_error(&format!("reading {}", self.topic), e))?;
                self.assigned = true;
            }
            let received = tokio::time::timeout(IDLE_TIMEOUT, self.client.recv())
                .await
                .map_err(|_| {
                    SourceError::Connection(format!(
                        "neither a record nor the end of {}/{partition} came within \
                         {IDLE_TIMEOUT:?}",
                        self.topic
                    ))
                })?;
            match received {
                Ok(message) => {
                    // Left over from the partition read before.
                    if message.partition() != partition || message.topic() != self.topic {
                        continue;
                    }
                    let offset = message.offset();
                    let span = &mut self.read[self.current];
                    *span = Some(match *span {
                        None => Span {
                            low: offset,
                            end: offset + 1,
                        },
                        Some(Span { low, .. }) => Span {
                            low,
                            end: offset + 1,
                        },
                    });
                    return Ok(Some(record::fetched(&message)));
                }
                Err(KafkaError::PartitionEOF(p)) if p == partition => {
                    self.current += 1;
                    self.assigned = false;
                }
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => {
                    let what = format!("reading {}/{partition}", self.topic);
                    return Err(read_error(&what, e));
                }
            }
        }
    }

    /// Closes the client off the async runtime: librdkafka's close waits for its threads.
    pub(super) async fn close(self) {
        let client = self.client;
        let _ = tokio::task::spawn_blocking(move || drop(client)).await;
    }
}

/// Runs one of librdkafka's blocking calls off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SourceError::Connection(format!("a Kafka request failed to run: {e}")))
}

/// A read that failed: refused for good (authorization, a missing topic) or worth retrying.
fn read_error(what: &str, e: KafkaError) -> SourceError {
    let refused = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
        )
    );
    if refused {
        SourceError::Rejected(format!("{what}: {e}"))
    } else {
        SourceError::Connection(format!("{what}: {e}"))
    }
}
