//! The dead-letter topics as an operator works on them: list, resubmit and purge on Kafka.
//!
//! A Kafka topic is an append-only log: a dead letter cannot be taken out of it. So a pass
//! reads, and what was done is written down beside it.
//!
//! - Reading: a pass reads every partition of each dead-letter topic, in partition order, from
//!   its first record to its end, with an assign-only consumer (no group membership, nothing
//!   committed). Dead letters written after the pass read a partition wait for the next pass,
//!   so a pass ends even while the sidecar keeps dead-lettering. A record's id is its
//!   position, `<topic>/<partition>@<offset>`: stable for as long as the topic keeps the
//!   record.
//! - Handled markers: each dead-letter topic has a compacted marker topic,
//!   `<topic>.handled`, whose records are keyed by dead-letter id (see `markers`). A pass
//!   reads every marker first and hides the dead letters already resubmitted or purged unless
//!   [`Scope::include_handled`] asks for them, with [`DeadLetterRecord::handled`] saying how,
//!   when and by whom. The marker topic is created (one partition, `cleanup.policy=compact`)
//!   the first time a pass writes to it; reading never creates anything.
//! - Resubmit: writes a `resubmitting` marker, publishes the copy (see `copy`) to the
//!   record's origin topic (or `--to`) and waits for the broker's confirmation, then writes a
//!   `resubmitted` marker; only then is the record settled. A run stopped between the two
//!   markers leaves the record listed, and a rerun publishes it again: the copy carries the
//!   original payload and headers, hence its idempotency key, and dedup delivers it once. A
//!   record marked `resubmitted` is never published again: a second identical run sends
//!   nothing.
//! - Purge: writes a `purged` marker.
//!
//! Why markers around the copy rather than a transaction: Kafka transactions would publish the
//! copy and the marker atomically, but not every Kafka-protocol broker has them (tansu 0.6.0
//! refuses `EndTxn`), and a run that dies mid-transaction leaves the source partition
//! unreadable to `read_committed` consumers until the transaction times out. Dedup already
//! makes a repeated copy harmless.
//!
//! Limits an operator should know:
//! - The copy goes back to the partition it failed on when it returns to its origin topic, so
//!   it queues behind what that partition holds now. With `--to`, the producer's partitioner
//!   places it by key.
//! - Dedup recognises the copy by the idempotency key of the original, which the mark carries
//!   (`outrigger-resubmitted-key`): the copy's own position would make a new one.
//! - Two operators resubmitting the same records at the same time may both publish them;
//!   dedup delivers each once.
//!
//! # Layout
//! - `reader`: a topic read partition by partition to its end, without a group.
//! - `markers`: the handled markers and their topic; `writer`: confirmed copies and markers.
//! - `copy`: the record a resubmission publishes.

mod copy;
mod markers;
mod reader;
mod writer;

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use outrigger_core::{
    Coordinates, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Resubmission, Scope,
    SourceError,
};

use crate::config::KafkaSettings;
use copy::Nulls;
use markers::{marker_topic, Handling, Marker, Markers};
use reader::Reader;
use writer::Writer;

pub use markers::MARKER_TOPIC_SUFFIX;

/// The id of the record at this position of a dead-letter topic.
pub fn record_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}@{offset}")
}

/// The dead-letter topics of one Kafka source.
#[derive(Debug)]
pub struct KafkaDeadLetters {
    config: KafkaSettings,
    /// Each dead-letter topic once, in the order of the source topics.
    topics: Vec<String>,
    /// The topics, comma-separated: what [`DeadLetterQueue::name`] shows.
    name: String,
}

impl KafkaDeadLetters {
    /// The dead-letter topics of `config`'s source topics (`config.dead_letter_topic`, or
    /// `<topic>.dlq` each). Checks the settings; connects only when a pass opens.
    pub fn new(config: KafkaSettings) -> Result<Self, SourceError> {
        let mut topics: Vec<String> = Vec::new();
        for source in &config.topics {
            let topic = config.dead_letter_topic_for(source);
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        let name = topics.join(", ");
        Ok(Self {
            config,
            topics,
            name,
        })
    }

    /// The dead-letter topics, each once.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }
}

impl DeadLetterQueue for KafkaDeadLetters {
    type Pass = KafkaPass;

    fn name(&self) -> &str {
        &self.name
    }

    /// The first source topic: where records go back to when they do not name their origin.
    fn source(&self) -> &str {
        self.config.topics.first().map_or("", String::as_str)
    }

    async fn open(&self, scope: Scope) -> Result<KafkaPass, SourceError> {
        let existing = reader::topics(&self.config).await?;
        let mut partitions = Vec::with_capacity(self.topics.len());
        for topic in &self.topics {
            match existing.get(topic) {
                Some(&n) => partitions.push(n),
                None => {
                    return Err(SourceError::Rejected(format!(
                        "dead-letter topic {topic:?} does not exist (the sidecar creates it when \
                         it first connects)"
                    )))
                }
            }
        }
        // Every marker first: a record is hidden or not as it is handed out.
        let mut markers = Markers::default();
        for topic in &self.topics {
            let marker = marker_topic(topic);
            let Some(&n) = existing.get(&marker) else {
                continue;
            };
            let mut reader = Reader::open(&self.config, &marker, n)?;
            let read = async {
                while let Some(record) = reader.next().await? {
                    markers.read(&record);
                }
                Ok::<_, SourceError>(())
            }
            .await;
            reader.close().await;
            read?;
        }
        let marker_topics: HashSet<String> = self
            .topics
            .iter()
            .map(|t| marker_topic(t))
            .filter(|t| existing.contains_key(t))
            .collect();
        let readers = self
            .topics
            .iter()
            .zip(partitions)
            .map(|(topic, n)| Reader::open(&self.config, topic, n))
            .collect::<Result<_, _>>()?;
        Ok(KafkaPass {
            config: self.config.clone(),
            scope,
            readers,
            reading: 0,
            markers,
            writer: Writer::new(self.config.clone(), marker_topics),
            existing,
            nulls: HashMap::new(),
            fallback: self.source().to_owned(),
        })
    }
}

/// One pass over the dead-letter topics of a Kafka source; see the module docs.
pub struct KafkaPass {
    config: KafkaSettings,
    scope: Scope,
    /// One reader per dead-letter topic, read in turn.
    readers: Vec<Reader>,
    /// The reader being read.
    reading: usize,
    /// The last marker of every dead letter, updated as this pass writes more.
    markers: Markers,
    /// Every topic of the cluster when the pass opened, with its partition count.
    existing: HashMap<String, i32>,
    /// Records handed out that had a null value or header value, by id.
    nulls: HashMap<String, Nulls>,
    /// Where records without an origin go back to: the first source topic.
    fallback: String,
    /// Copies and markers.
    writer: Writer,
}

impl KafkaPass {
    /// The dead-letter topic of a record this pass read and may settle: one not resubmitted or
    /// purged already, so that nothing is sent twice by accident, even when the pass was asked
    /// to hand out handled records.
    fn unhandled<'r>(&self, record: &'r DeadLetterRecord) -> Result<&'r str, SourceError> {
        let Coordinates::Kafka {
            topic,
            partition,
            offset,
        } = &record.message.coordinates
        else {
            return Err(not_read(record));
        };
        let read = self
            .readers
            .iter()
            .find(|r| r.topic() == topic)
            .and_then(|r| r.span(*partition))
            .is_some_and(|span| span.holds(*offset));
        if !read || record.id != record_id(topic, *partition, *offset) {
            return Err(not_read(record));
        }
        match self.markers.get(&record.id) {
            Some(marker) if marker.handled().is_some() => Err(SourceError::Rejected(format!(
                "record {} was already {} by {} at {}",
                record.id,
                marker.action.as_str(),
                marker.by,
                marker.at
            ))),
            _ => Ok(topic),
        }
    }

    /// Writes `marker` for `record` and remembers it.
    async fn mark(
        &mut self,
        dead_letter_topic: &str,
        record: &DeadLetterRecord,
        marker: Marker,
    ) -> Result<(), SourceError> {
        self.writer
            .mark(dead_letter_topic, &record.id, &marker)
            .await?;
        self.markers.set(&record.id, marker);
        Ok(())
    }

    /// Where the copy of `record` goes, refused when that is a dead-letter or marker topic or
    /// a topic that does not exist.
    async fn target(
        &mut self,
        record: &DeadLetterRecord,
        how: &Resubmission,
    ) -> Result<String, SourceError> {
        let target = how.target(record, &self.fallback).to_owned();
        let target = target.as_str();
        let own = self
            .readers
            .iter()
            .any(|r| r.topic() == target || marker_topic(r.topic()) == target);
        if own {
            return Err(SourceError::Rejected(format!(
                "cannot resubmit into the dead-letter topic {target:?} itself or its markers"
            )));
        }
        if !self.existing.contains_key(target) {
            // Created since the pass opened, perhaps.
            self.existing.extend(reader::topics(&self.config).await?);
            if !self.existing.contains_key(target) {
                return Err(SourceError::Rejected(format!(
                    "topic {target:?} to resubmit to does not exist"
                )));
            }
        }
        Ok(target.to_owned())
    }
}

impl DeadLetterPass for KafkaPass {
    async fn next(&mut self) -> Result<Option<DeadLetterRecord>, SourceError> {
        loop {
            let Some(reader) = self.readers.get_mut(self.reading) else {
                return Ok(None);
            };
            let Some(fetched) = reader.next().await? else {
                self.reading += 1;
                continue;
            };
            let id = record_id(&fetched.tp.topic, fetched.tp.partition, fetched.offset);
            let handled = self.markers.get(&id).and_then(Marker::handled);
            if handled.is_some() && !self.scope.include_handled {
                continue;
            }
            if let Some(nulls) = Nulls::of(&fetched.original) {
                self.nulls.insert(id.clone(), nulls);
            }
            let mut record = DeadLetterRecord::from_message(id, fetched.message);
            record.handled = handled;
            return Ok(Some(record));
        }
    }

    async fn resubmit(
        &mut self,
        record: &DeadLetterRecord,
        how: &Resubmission,
    ) -> Result<(), SourceError> {
        let dead_letter_topic = self.unhandled(record)?;
        let target = self.target(record, how).await?;
        let marker = |action| Marker::new(action, how.at, &how.by, Some(&target));

        self.mark(dead_letter_topic, record, marker(Handling::Resubmitting))
            .await?;
        let copy = copy::copy(record, self.nulls.get(&record.id), how.mark(record));
        // Back to the partition it failed on, where the key's other records are.
        let partition = match &record.origin {
            Some(Coordinates::Kafka {
                topic, partition, ..
            }) if *topic == target => Some(*partition),
            _ => None,
        };
        let what = format!("the copy of {}", record.id);
        self.writer
            .publish(&what, &target, partition, &copy)
            .await?;
        // Confirmed: the record is settled once this marker is written. If it is not, the
        // record stays listed and a rerun publishes it again; dedup keeps that to one delivery.
        self.mark(dead_letter_topic, record, marker(Handling::Resubmitted))
            .await
    }

    async fn purge(&mut self, record: &DeadLetterRecord, by: &str) -> Result<(), SourceError> {
        let dead_letter_topic = self.unhandled(record)?;
        let marker = Marker::new(Handling::Purged, SystemTime::now(), by, None);
        self.mark(dead_letter_topic, record, marker).await
    }

    async fn finish(self) -> Result<(), SourceError> {
        for reader in self.readers {
            reader.close().await;
        }
        self.writer.close().await;
        Ok(())
    }
}

impl std::fmt::Debug for KafkaPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let topics: Vec<&str> = self.readers.iter().map(Reader::topic).collect();
        f.debug_struct("KafkaPass")
            .field("topics", &topics)
            .field("reading", &self.reading)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The refusal of a record that is not one the pass read.
fn not_read(record: &DeadLetterRecord) -> SourceError {
    SourceError::Rejected(format!(
        "record {} ({}) is not one this pass read",
        record.id, record.message.coordinates
    ))
}
