//! The dead-letter stream as an operator works on it: list, resubmit and purge on JetStream.
//!
//! A stream keeps its messages and can delete one by its sequence, so a pass reads the
//! dead-letter subject from the stream's first sequence up to its last sequence as the pass
//! found it (later dead letters wait for the next pass), with `STREAM.MSG.GET` (no consumer,
//! nothing redelivered, every reader sees the same). A record's id is its stream sequence.
//!
//! Resubmit publishes the copy to the subject the original was published on (or `--to`),
//! waits for JetStream's publish ack, and only then deletes the record; purge deletes it.
//! The copy has the original payload and headers, the context off, the resubmission mark on,
//! and two changes: JetStream's publish conditions (`Nats-Expected-*`) stay off, and its
//! `Nats-Msg-Id` is `outrigger-resubmit:<dead-letter stream>:<sequence>`. The original's own
//! id would make the source stream drop the copy as a duplicate of the original inside its
//! duplicate window; this one makes it drop the copy of a rerun instead. A run killed
//! between the publish ack and the delete leaves the record, and running again publishes it
//! again: inside the source stream's duplicate window (2 minutes by default) JetStream drops
//! that copy and the record is deleted; past it, the copy is delivered and deduplicated under
//! its `outrigger-resubmitted-key`.

use std::collections::{HashMap, HashSet};

use async_nats::jetstream::stream::Stream;
use outrigger_core::dlq::resubmit_headers;
use outrigger_core::{
    Coordinates, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Header, Resubmission, Scope,
    SourceError,
};
use tracing::debug;

use crate::config::NatsSettings;
use crate::connection::{self, Connection};
use crate::dead_letter::{self, SUBJECT};
use crate::headers::{self, Position, MSG_ID};
use crate::{setup, stored};

/// The dead-letter stream of one NATS source.
#[derive(Debug)]
pub struct NatsDeadLetters {
    settings: NatsSettings,
}

impl NatsDeadLetters {
    /// The dead letters on `settings.dead_letter_subject`, in whichever stream captures it.
    /// Connects only when a pass opens.
    pub fn new(settings: NatsSettings) -> Self {
        Self { settings }
    }
}

impl DeadLetterQueue for NatsDeadLetters {
    type Pass = NatsPass;

    fn name(&self) -> &str {
        &self.settings.dead_letter_subject
    }

    fn source(&self) -> &str {
        &self.settings.config.stream
    }

    async fn open(&self, _scope: Scope) -> Result<NatsPass, SourceError> {
        let connection = connection::connect(&self.settings.config, "dlq").await?;
        let name = setup::dead_letter_stream(&connection.jetstream, &self.settings, false).await?;
        let stream = connection.jetstream.get_stream(&name).await.map_err(|e| {
            setup::api_error(&format!("opening the dead-letter stream {name:?}"), &e)
        })?;
        let state = stream.cached_info().state.clone();
        Ok(NatsPass {
            connection,
            stream,
            name,
            subject: self.settings.dead_letter_subject.clone(),
            key_header: self.settings.config.key_header.clone(),
            next: state.first_sequence.max(1),
            last: state.last_sequence,
            settled: HashSet::new(),
            subjects: HashMap::new(),
        })
    }
}

/// One pass over a dead-letter stream; see the module docs.
pub struct NatsPass {
    connection: Connection,
    stream: Stream,
    /// The dead-letter stream's name.
    name: String,
    subject: String,
    key_header: String,
    /// The sequence to read from next.
    next: u64,
    /// The stream's last sequence when the pass began.
    last: u64,
    /// Records this pass resubmitted or purged.
    settled: HashSet<u64>,
    /// The subject each record's original was published on, where its dead letter says.
    subjects: HashMap<u64, String>,
}

impl NatsPass {
    /// The sequence of a record of this pass not settled yet.
    fn sequence(&self, record: &DeadLetterRecord) -> Result<u64, SourceError> {
        match &record.message.coordinates {
            Coordinates::Nats { stream, sequence }
                if *stream == self.name && !self.settled.contains(sequence) =>
            {
                Ok(*sequence)
            }
            Coordinates::Nats { sequence, .. } if self.settled.contains(sequence) => {
                Err(SourceError::Rejected(format!(
                    "record {} was already handled in this pass",
                    record.id
                )))
            }
            other => Err(SourceError::Rejected(format!(
                "record {} ({other}) is not in the dead-letter stream {:?}",
                record.id, self.name
            ))),
        }
    }

    /// Deletes the record at `sequence`; one already gone is refused.
    async fn delete(&mut self, sequence: u64) -> Result<(), SourceError> {
        match self.stream.delete_message(sequence).await {
            Ok(true) => {
                self.settled.insert(sequence);
                Ok(())
            }
            Ok(false) => Err(SourceError::Rejected(format!(
                "dead letter {sequence} is not in {:?} any more",
                self.name
            ))),
            Err(e) if e.to_string().contains("no message found") => Err(SourceError::Rejected(
                format!("dead letter {sequence} is not in {:?} any more", self.name),
            )),
            Err(e) => Err(setup::api_error(
                &format!("deleting dead letter {sequence}"),
                &e,
            )),
        }
    }
}

impl DeadLetterPass for NatsPass {
    async fn next(&mut self) -> Result<Option<DeadLetterRecord>, SourceError> {
        if self.next > self.last {
            return Ok(None);
        }
        let found = stored::first_at_or_after(
            &self.connection.client,
            &self.name,
            self.next,
            &self.subject,
        )
        .await?;
        let Some(raw) = found.filter(|raw| raw.sequence <= self.last) else {
            self.next = self.last + 1;
            return Ok(None);
        };
        self.next = raw.sequence + 1;
        let position = Position {
            stream: self.name.clone(),
            sequence: raw.sequence,
            delivered: 1,
            published: raw.time,
        };
        let subject = raw.subject.to_string();
        let mut message = headers::to_message(
            &subject,
            raw.headers,
            raw.payload,
            &position,
            &self.key_header,
        );
        message.headers = dead_letter::restore(message.headers);
        message.redelivered = false;
        message.deliveries = None;
        // Keyed as the original was: by its key header, else the subject it was published on.
        if let Some(original) = message.header_str(SUBJECT).map(str::to_owned) {
            if message.header(&self.key_header).is_none() {
                message.key = Some(bytes::Bytes::from(original.clone()));
            }
            self.subjects.insert(raw.sequence, original);
        }
        Ok(Some(DeadLetterRecord::from_message(
            raw.sequence.to_string(),
            message,
        )))
    }

    async fn resubmit(
        &mut self,
        record: &DeadLetterRecord,
        how: &Resubmission,
    ) -> Result<(), SourceError> {
        let sequence = self.sequence(record)?;
        let target = match &how.to {
            Some(to) => to.clone(),
            None => self.subjects.get(&sequence).cloned().ok_or_else(|| {
                SourceError::Rejected(format!(
                    "dead letter {sequence} does not say which subject it came from \
                     ({SUBJECT}); resubmit it with --to SUBJECT"
                ))
            })?,
        };
        if let Err(why) = crate::config::subject_name(&target, false) {
            return Err(SourceError::Rejected(format!("subject {target:?}: {why}")));
        }
        if target == self.subject {
            return Err(SourceError::Rejected(format!(
                "cannot resubmit into the dead-letter subject {target:?} itself"
            )));
        }
        let copy: Vec<Header> = record
            .message
            .headers
            .iter()
            .filter(|h| !resubmit_headers::is_mark(&h.name) && !dead_letter::is_control(&h.name))
            .cloned()
            .collect();
        let mut map = headers::to_map(&copy).map_err(SourceError::Rejected)?;
        for (name, value) in how.mark(record) {
            headers::append(&mut map, name, &headers::one_line(&value))
                .map_err(SourceError::Rejected)?;
        }
        let id = format!("outrigger-resubmit:{}:{sequence}", self.name);
        headers::append(&mut map, MSG_ID, &id).map_err(SourceError::Rejected)?;
        let failed = |e: &dyn std::fmt::Display| {
            SourceError::Publish(format!("resubmitting to {target}: {e}"))
        };
        let ack = self
            .connection
            .jetstream
            .publish_with_headers(target.clone(), map, record.message.payload.clone())
            .await
            .map_err(|e| failed(&e))?
            .await
            .map_err(|e| failed(&e))?;
        if ack.stream == self.name {
            return Err(SourceError::Rejected(format!(
                "{target:?} is captured by the dead-letter stream itself"
            )));
        }
        if ack.duplicate {
            debug!(
                sequence,
                "The copy of an earlier run is in the source stream already."
            );
        }
        // Acked: the copy is safe, the record may go. If this delete is lost, a rerun
        // publishes again; see the module docs for why that is delivered once.
        self.delete(sequence).await
    }

    async fn purge(&mut self, record: &DeadLetterRecord, _by: &str) -> Result<(), SourceError> {
        let sequence = self.sequence(record)?;
        self.delete(sequence).await
    }

    async fn finish(self) -> Result<(), SourceError> {
        // Nothing is held: records not handled stay where they are.
        Ok(())
    }
}

impl std::fmt::Debug for NatsPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPass")
            .field("stream", &self.name)
            .field("subject", &self.subject)
            .field("next", &self.next)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}
