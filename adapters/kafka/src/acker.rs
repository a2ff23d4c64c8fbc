//! Settles one Kafka record: marks its offset settled, or writes its dead letter first.
//!
//! Kafka has no per-record ack: a settled record only lets its partition's watermark, and so
//! the committed offset, move past it. A requeued or dropped record stays unsettled and holds
//! the watermark: nothing after it is committed in this session, and the record is read again
//! after the next rebalance or restart.

use std::fmt;
use std::sync::Arc;

use outrigger_core::{Acker, Coordinates, DeadLetter, Settlement, SourceError, Trail, Unsettled};
use tracing::debug;

use crate::partition::{Ticket, TopicPartition};
use crate::record::Original;
use crate::state::Shared;

/// The handle of one Kafka record. Dropped unsettled, it leaves the record uncommitted.
#[must_use = "dropping an acker unsettled leaves its record uncommitted, to be read again"]
pub struct KafkaAcker {
    shared: Arc<Shared>,
    ticket: Ticket,
    coordinates: Coordinates,
    /// The record as fetched, written byte for byte on dead-lettering.
    original: Original,
    done: bool,
}

impl KafkaAcker {
    pub(crate) fn new(
        shared: Arc<Shared>,
        ticket: Ticket,
        coordinates: Coordinates,
        original: Original,
    ) -> Self {
        Self {
            shared,
            ticket,
            coordinates,
            original,
            done: false,
        }
    }

    /// Writes the dead letter, unless the partition moved to another assignment since the
    /// record was fetched: the record is then read again by its new owner, who settles it.
    async fn dead_letter(
        &self,
        dead_letter: &DeadLetter,
        destination: Option<&str>,
    ) -> Result<(), SourceError> {
        if !self.shared.is_current(&self.ticket) {
            debug!(coordinates = %self.coordinates, "Dead letter of a revoked partition skipped; its new owner reads the record again.");
            return Ok(());
        }
        self.shared
            .dead_letters
            .write(
                &self.origin(),
                &self.coordinates,
                &self.original,
                dead_letter.context_headers(&self.coordinates),
                destination,
            )
            .await
    }
}

impl KafkaAcker {
    /// The partition the record first came from: its own, or for a retry copy the origin's.
    fn origin(&self) -> TopicPartition {
        match &self.coordinates {
            Coordinates::Kafka {
                topic, partition, ..
            } => TopicPartition {
                topic: topic.clone(),
                partition: *partition,
            },
            _ => self.ticket.tp.clone(),
        }
    }

    /// Writes the retry copy, even when the partition moved to another assignment meanwhile:
    /// the pipeline records in the key's chain that this copy exists, and a second copy (its
    /// new owner reads the record again) costs an attempt at most, where a missing one would
    /// strand the chain.
    async fn retry(&self, trail: &Trail) -> Result<(), SourceError> {
        let Some(retry) = &self.shared.retry else {
            return Err(SourceError::Rejected(
                "this Kafka source has no retry topics (retry_tiers is empty)".to_owned(),
            ));
        };
        retry.write(&self.origin(), &self.original, trail).await
    }
}

impl Acker for KafkaAcker {
    /// `Ack` and a confirmed `DeadLetter` settle the offset; `Requeue` leaves it unsettled.
    /// A settlement after the partition was revoked (and maybe assigned again) changes nothing
    /// and succeeds. A failed dead-letter write returns the handle with
    /// [`SourceError::Publish`]; the offset stays unsettled and the partition's stats show
    /// `stalled_on_dead_letter` until a retry succeeds.
    async fn settle(mut self, settlement: Settlement) -> Result<(), Box<Unsettled<Self>>> {
        let settled = match &settlement {
            Settlement::Ack => Ok(true),
            Settlement::Requeue => Ok(false),
            Settlement::DeadLetter {
                context,
                destination,
            } => self
                .dead_letter(context, destination.as_deref())
                .await
                .map(|()| true),
            Settlement::Retry(trail) => self.retry(trail).await.map(|()| true),
            Settlement::Redeliver(_) => Err(SourceError::Rejected(
                "Kafka has no delayed redelivery; use retry mode \"queue\" or \"in_place\""
                    .to_owned(),
            )),
        };
        match settled {
            Ok(settled) => {
                self.done = true;
                self.shared.finish(&self.ticket, settled);
                Ok(())
            }
            Err(error) => {
                self.shared.dead_letter_failed(&self.ticket);
                Err(Box::new(Unsettled {
                    acker: self,
                    settlement,
                    error,
                }))
            }
        }
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        if !self.done {
            self.shared.finish(&self.ticket, false);
        }
    }
}

impl fmt::Debug for KafkaAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaAcker")
            .field("coordinates", &self.coordinates)
            .field("generation", &self.ticket.generation)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
