//! The dead-letter streams as an operator works on them: list, resubmit and purge.
//!
//! - Reading: a pass reads each dead-letter stream in turn with `XRANGE`, in pages, up to the
//!   last entry it had when the pass opened, so a pass ends even while the sidecar keeps
//!   dead-lettering. Reading changes nothing.
//! - Ids: a record's id is its entry id in the dead-letter stream (`1700000000000-0`), stable
//!   for as long as the record is there. A source whose streams dead-letter into several
//!   streams qualifies it with the stream, `<dead-letter stream>@<entry id>`, because entry
//!   ids repeat across streams.
//! - Resubmit: one script adds the copy to the target stream (`XADD`) and deletes the record
//!   (`XDEL`), and only while the record is still there. A run killed at any point has either
//!   done both or neither; a rerun, or a second operator, finds the record gone and adds
//!   nothing. The copy is the record's fields as they were (the entry's own, in order), the
//!   `outrigger-dlq-*` context off, the `outrigger-resubmitted-*` mark on; the pipeline
//!   deduplicates it under the original's key, which the mark carries.
//! - Purge: `XDEL`. Gone records are gone: [`Scope::include_handled`] has nothing more to show.
//! - A tombstone (an entry deleted from its stream while pending) has nothing to resubmit; it
//!   can only be purged.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use outrigger_core::dead_letter::headers::is_context;
use outrigger_core::dlq::resubmit_headers::is_mark;
use outrigger_core::{
    Coordinates, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Resubmission, Scope,
    SourceError,
};
use redis::Value;

use crate::client::{flat, Redis};
use crate::config::RedisStreamsSettings;
use crate::error::{odd_reply, publish_error, source_error};
use crate::groups::kind;
use crate::mapping::{fields_of, Mapping};
use crate::reply::{self, Entry};

/// Records one `XRANGE` reads.
const PAGE: usize = 100;

/// The dead-letter streams of one source.
#[derive(Debug)]
pub struct RedisStreamsDeadLetters {
    settings: RedisStreamsSettings,
    /// Each dead-letter stream once, in the order of the source streams.
    streams: Vec<String>,
    /// The streams, comma-separated: what [`DeadLetterQueue::name`] shows.
    name: String,
}

impl RedisStreamsDeadLetters {
    /// The dead-letter streams of `settings`' source streams. Connects only when a pass opens.
    pub fn new(settings: RedisStreamsSettings) -> Result<Self, SourceError> {
        let streams = settings.dead_letter_streams();
        let name = streams.join(", ");
        Ok(Self {
            settings,
            streams,
            name,
        })
    }
}

impl DeadLetterQueue for RedisStreamsDeadLetters {
    type Pass = RedisStreamsPass;

    fn name(&self) -> &str {
        &self.name
    }

    /// The first source stream: where records go back to when they do not name their origin.
    fn source(&self) -> &str {
        self.settings.streams.first().map_or("", String::as_str)
    }

    async fn open(&self, _scope: Scope) -> Result<RedisStreamsPass, SourceError> {
        let redis = Redis::connect(&self.settings.url, self.settings.timeout).await?;
        let mut streams = Vec::with_capacity(self.streams.len());
        for stream in &self.streams {
            match kind(&redis, stream).await?.as_str() {
                "stream" => {}
                "none" => {
                    return Err(SourceError::Rejected(format!(
                        "dead-letter stream {stream:?} does not exist (the sidecar creates it \
                         when it first connects)"
                    )))
                }
                other => {
                    return Err(SourceError::Rejected(format!(
                        "key {stream:?} holds a {other}, not a dead-letter stream"
                    )))
                }
            }
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(stream).arg("+").arg("-").arg("COUNT").arg(1);
            let last: Value = redis
                .query_again(&cmd)
                .await
                .map_err(|e| source_error(&format!("reading {stream}"), &e))?;
            let last = reply::entries(last).map_err(|e| odd_reply("XREVRANGE", e))?;
            streams.push(Stream {
                name: stream.clone(),
                end: last.into_iter().next().map(|e| e.id),
                after: None,
            });
        }
        Ok(RedisStreamsPass {
            redis,
            mapping: Mapping::new(&self.settings),
            qualify: streams.len() > 1,
            streams,
            current: 0,
            page: VecDeque::new(),
            held: HashSet::new(),
            fallback: self.source().to_owned(),
        })
    }
}

/// One dead-letter stream of a pass.
#[derive(Debug)]
struct Stream {
    name: String,
    /// Its last entry when the pass opened; `None`: it was empty.
    end: Option<String>,
    /// The last entry read so far.
    after: Option<String>,
}

/// One pass over the dead-letter streams of a source; see the module docs.
pub struct RedisStreamsPass {
    redis: Redis,
    mapping: Mapping,
    /// Ids name their stream.
    qualify: bool,
    streams: Vec<Stream>,
    /// The stream being read.
    current: usize,
    /// Records read and not handed out yet.
    page: VecDeque<Entry>,
    /// Records handed out and not resubmitted or purged: (stream, entry id).
    held: HashSet<(String, String)>,
    /// Where records without an origin go back to: the first source stream.
    fallback: String,
}

impl RedisStreamsPass {
    /// Reads the next page of the current stream; false once every stream is read.
    async fn read_page(&mut self) -> Result<bool, SourceError> {
        while let Some(stream) = self.streams.get_mut(self.current) {
            let Some(end) = stream.end.clone() else {
                self.current += 1;
                continue;
            };
            let start = match &stream.after {
                Some(after) if *after == end => {
                    self.current += 1;
                    continue;
                }
                Some(after) => format!("({after}"),
                None => "-".to_owned(),
            };
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&stream.name)
                .arg(start)
                .arg(&end)
                .arg("COUNT")
                .arg(PAGE);
            let read: Value = self
                .redis
                .query_again(&cmd)
                .await
                .map_err(|e| source_error(&format!("reading {}", stream.name), &e))?;
            let entries = reply::entries(read).map_err(|e| odd_reply("XRANGE", e))?;
            let Some(last) = entries.last() else {
                self.current += 1;
                continue;
            };
            stream.after = Some(last.id.clone());
            self.page.extend(entries);
            return Ok(true);
        }
        Ok(false)
    }

    /// The dead-letter stream and entry id of a record this pass handed out and still holds.
    fn locate(&self, record: &DeadLetterRecord) -> Result<(String, String), SourceError> {
        match &record.message.coordinates {
            Coordinates::RedisStream { stream, id }
                if self.held.contains(&(stream.clone(), id.clone())) =>
            {
                Ok((stream.clone(), id.clone()))
            }
            other => Err(SourceError::Rejected(format!(
                "record {} ({other}) is not held by this pass: resubmitted or purged already, \
                 or never read by it",
                record.id
            ))),
        }
    }

    /// The fields of record `id` of `stream`, as stored.
    async fn fields(&self, stream: &str, id: &str) -> Result<Vec<(Bytes, Bytes)>, SourceError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(stream).arg(id).arg(id);
        let read: Value = self
            .redis
            .query_again(&cmd)
            .await
            .map_err(|e| source_error(&format!("reading {stream}"), &e))?;
        let entry = reply::entries(read)
            .map_err(|e| odd_reply("XRANGE", e))?
            .into_iter()
            .next()
            .ok_or_else(|| gone(id))?;
        Ok(entry.fields.unwrap_or_default())
    }
}

fn gone(id: &str) -> SourceError {
    SourceError::Rejected(format!(
        "record {id} is gone: resubmitted or purged already"
    ))
}

impl DeadLetterPass for RedisStreamsPass {
    async fn next(&mut self) -> Result<Option<DeadLetterRecord>, SourceError> {
        if self.page.is_empty() && !self.read_page().await? {
            return Ok(None);
        }
        let Some(entry) = self.page.pop_front() else {
            return Ok(None);
        };
        let stream = &self.streams[self.current].name;
        let fields = entry.fields.unwrap_or_default();
        let message = self.mapping.message(stream, &entry.id, &fields);
        let id = if self.qualify {
            format!("{stream}@{}", entry.id)
        } else {
            entry.id.clone()
        };
        self.held.insert((stream.clone(), entry.id));
        Ok(Some(DeadLetterRecord::from_message(id, message)))
    }

    async fn resubmit(
        &mut self,
        record: &DeadLetterRecord,
        how: &Resubmission,
    ) -> Result<(), SourceError> {
        let (stream, id) = self.locate(record)?;
        let target = how.target(record, &self.fallback).to_owned();
        if self.streams.iter().any(|s| s.name == target) {
            return Err(SourceError::Rejected(format!(
                "cannot resubmit into the dead-letter stream {target:?} itself"
            )));
        }
        let stored = self.fields(&stream, &id).await?;
        let mut copy = fields_of(&stored, |name| is_context(name) || is_mark(name));
        if copy.is_empty() {
            return Err(SourceError::Rejected(format!(
                "record {} is the tombstone of an entry deleted while pending: there is nothing \
                 to resubmit; purge it",
                record.id
            )));
        }
        copy.extend(
            how.mark(record)
                .into_iter()
                .map(|(name, value)| (Bytes::from_static(name.as_bytes()), Bytes::from(value))),
        );
        let values = flat(&copy);
        // Not repeated on a lost reply: a second run would find the record gone and report it
        // handled when it may not know whether this one added the copy.
        let added: Value = self
            .redis
            .invoke(false, |s| {
                let mut call = s.resubmit.key(&stream);
                call.key(&target).arg(&id).arg(values.as_slice());
                call
            })
            .await
            .map_err(|e| match e.code() {
                Some("NOSTREAM") => SourceError::Rejected(format!(
                    "cannot resubmit to {target:?}: {}",
                    e.detail().unwrap_or("not a stream")
                )),
                _ => publish_error(&format!("resubmitting to {target}"), &e),
            })?;
        self.held.remove(&(stream, id.clone()));
        match added {
            Value::Nil => Err(gone(&id)),
            _ => Ok(()),
        }
    }

    async fn purge(&mut self, record: &DeadLetterRecord, _by: &str) -> Result<(), SourceError> {
        let (stream, id) = self.locate(record)?;
        let mut cmd = redis::cmd("XDEL");
        cmd.arg(&stream).arg(&id);
        let deleted: i64 = self
            .redis
            .query_again(&cmd)
            .await
            .map_err(|e| source_error(&format!("deleting from {stream}"), &e))?;
        self.held.remove(&(stream, id.clone()));
        if deleted == 1 {
            Ok(())
        } else {
            Err(gone(&id))
        }
    }

    async fn finish(self) -> Result<(), SourceError> {
        Ok(())
    }
}

impl std::fmt::Debug for RedisStreamsPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsPass")
            .field("streams", &self.streams)
            .field("current", &self.current)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}
