//! The dead-letter queue as an operator works on it: list, resubmit and purge on RabbitMQ.
//!
//! A pass is one connection with two channels. On the first it takes records with
//! `basic.get` and does not ack them: RabbitMQ hides them from every other reader meanwhile,
//! and hands them back if the tool dies. It takes at most as many as the queue held when the
//! pass began, so a pass ends even while the sidecar keeps dead-lettering. Resubmit publishes
//! the copy on the second channel, a confirm channel, with `mandatory` set, and acks the
//! record only once the broker confirmed that a queue took the copy; purge acks it. Finishing
//! closes the channel, which returns every record not acked to the queue, in its place.
//!
//! Ids are the [`content_id`] of the record as stored (the failure context included, so two
//! failures of one message differ; `x-delivery-count` left out, because a quorum queue bumps
//! it on every hand-back). Byte-identical records share it and get `-2`, `-3` in queue order.
//!
//! Limits an operator should know:
//! - RabbitMQ's `consumer_timeout` (30 minutes by default) covers `basic.get` deliveries too.
//!   A pass that holds records longer (a slow `--rate` over a large selection) has its
//!   channel closed: the records it had not settled go back to the queue, the pass fails, and
//!   running it again carries on.
//! - A quorum dead-letter queue on RabbitMQ before 4.3 counts every hand-back as a delivery,
//!   and past its `delivery-limit` drops the record. The sidecar declares a classic queue;
//!   give a quorum one no delivery limit.
//! - AMQP has one routing key per publish: the copy goes through the default exchange,
//!   routed by the target queue's name. The original's idempotency key travels in the mark
//!   (`outrigger-resubmitted-key`), so dedup still knows the copy when its key came from the
//!   routing key.

mod resubmit;

use std::collections::HashMap;

use bytes::Bytes;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use outrigger_core::{
    content_id, Coordinates, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Resubmission,
    Scope, SourceError,
};
use tracing::debug;

use crate::config::AmqpSettings;
use crate::error::{classify, is_not_found};
use crate::publisher::Publisher;
use crate::session::{connect, Names};
use crate::source::to_message;
use resubmit::DELIVERY_COUNT;

/// The dead-letter queue of one RabbitMQ source.
#[derive(Debug)]
pub struct AmqpDeadLetters {
    config: AmqpSettings,
    names: Names,
}

impl AmqpDeadLetters {
    /// The dead-letter queue `config.dead_letter_queue`, whose records go back to
    /// `config.queue` unless they name another origin. Checks the names; connects only when a
    /// pass opens.
    pub fn new(config: AmqpSettings) -> Result<Self, SourceError> {
        let names = Names::parse(&config)?;
        Ok(Self { config, names })
    }
}

impl DeadLetterQueue for AmqpDeadLetters {
    type Pass = AmqpPass;

    fn name(&self) -> &str {
        &self.config.dead_letter_queue
    }

    fn source(&self) -> &str {
        &self.config.queue
    }

    async fn open(&self, _scope: Scope) -> Result<AmqpPass, SourceError> {
        let queue = self.names.dead_letter_queue.clone();
        let connection = connect(&self.names.uri).await?;
        // A failed passive declare closes its channel: it gets one of its own.
        let probe = connection
            .create_channel()
            .await
            .map_err(|e| classify("opening a channel", &e))?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = probe
            .queue_declare(queue.clone(), passive, FieldTable::default())
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    SourceError::Rejected(format!(
                        "dead-letter queue {:?} does not exist",
                        queue.as_str()
                    ))
                } else {
                    classify("checking the dead-letter queue", &e)
                }
            })?;
        let _ = probe.close(200, "OK".into()).await;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| classify("opening the read channel", &e))?;
        let publisher = Publisher::open(connection).await?;
        Ok(AmqpPass {
            channel,
            user: publisher.user(),
            publisher,
            queue,
            fallback: self.config.queue.clone(),
            remaining: declared.message_count(),
            held: HashMap::new(),
            ids: HashMap::new(),
        })
    }
}

/// One pass over a RabbitMQ dead-letter queue; see the module docs.
pub struct AmqpPass {
    channel: Channel,
    publisher: Publisher,
    user: String,
    queue: ShortString,
    /// Where records without an origin go back to: the configured source queue.
    fallback: String,
    /// Records left to take before the pass ends.
    remaining: u32,
    /// The original properties of each record taken and not yet settled, by delivery tag.
    held: HashMap<u64, BasicProperties>,
    /// How many records of each content id this pass has seen.
    ids: HashMap<String, u32>,
}

impl AmqpPass {
    /// The delivery tag of a record this pass took and has not settled.
    fn tag(&self, record: &DeadLetterRecord) -> Result<u64, SourceError> {
        match &record.message.coordinates {
            Coordinates::Amqp {
                queue,
                delivery_tag,
            } if queue == self.queue.as_str() && self.held.contains_key(delivery_tag) => {
                Ok(*delivery_tag)
            }
            other => Err(SourceError::Rejected(format!(
                "record {} ({other}) is not held by this pass",
                record.id
            ))),
        }
    }

    async fn ack(&mut self, tag: u64) -> Result<(), SourceError> {
        self.channel
            .basic_ack(tag, BasicAckOptions::default())
            .await
            .map_err(|e| classify("acking a dead letter", &e))?;
        self.held.remove(&tag);
        Ok(())
    }
}

impl DeadLetterPass for AmqpPass {
    async fn next(&mut self) -> Result<Option<DeadLetterRecord>, SourceError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let got = self
            .channel
            .basic_get(self.queue.clone(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| classify("reading the dead-letter queue", &e))?;
        let Some(got) = got else {
            self.remaining = 0;
            return Ok(None);
        };
        self.remaining -= 1;
        let delivery = got.delivery;
        let coordinates = Coordinates::Amqp {
            queue: self.queue.to_string(),
            delivery_tag: delivery.delivery_tag,
        };
        let message = to_message(
            coordinates,
            &delivery.routing_key,
            delivery.redelivered,
            &delivery.properties,
            Bytes::from(delivery.data),
        );
        let mut id = content_id(&message, &[DELIVERY_COUNT]);
        let seen = self.ids.entry(id.clone()).or_default();
        *seen += 1;
        if *seen > 1 {
            id = format!("{id}-{seen}");
        }
        self.held.insert(delivery.delivery_tag, delivery.properties);
        Ok(Some(DeadLetterRecord::from_message(id, message)))
    }

    async fn resubmit(
        &mut self,
        record: &DeadLetterRecord,
        how: &Resubmission,
    ) -> Result<(), SourceError> {
        let tag = self.tag(record)?;
        let target = how.target(record, &self.fallback);
        if target == self.queue.as_str() {
            return Err(SourceError::Rejected(format!(
                "cannot resubmit into the dead-letter queue {target:?} itself"
            )));
        }
        let target = ShortString::try_new(target)
            .map_err(|e| SourceError::Rejected(format!("queue name {target:?}: {e}")))?;
        let properties = resubmit::properties(&self.held[&tag], how.mark(record), &self.user);
        self.publisher
            .publish_to_queue(&target, &record.message.payload, properties)
            .await?;
        // Confirmed: the copy is safe, the record may go. If this ack is lost the record comes
        // back and a rerun publishes it again; dedup on its key keeps that to one delivery.
        self.ack(tag).await
    }

    async fn purge(&mut self, record: &DeadLetterRecord, _by: &str) -> Result<(), SourceError> {
        let tag = self.tag(record)?;
        self.ack(tag).await
    }

    async fn finish(self) -> Result<(), SourceError> {
        // Closing after the acks, on the same channel: the broker applies them first, then
        // returns every record still held.
        if let Err(error) = self.channel.close(200, "OK".into()).await {
            debug!(%error, "Closing the dead-letter read channel failed; the broker returns its records on disconnect.");
        }
        if let Err(error) = self.publisher.connection().close(200, "OK".into()).await {
            debug!(%error, "Closing the dead-letter connection failed.");
        }
        Ok(())
    }
}

impl std::fmt::Debug for AmqpPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPass")
            .field("queue", &self.queue.as_str())
            .field("remaining", &self.remaining)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}
