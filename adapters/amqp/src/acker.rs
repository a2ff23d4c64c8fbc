//! Settles one RabbitMQ delivery: ack, requeue, or a confirmed publish (a dead letter, a retry
//! copy) then ack.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use lapin::options::BasicNackOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};
use outrigger_core::{Acker, Coordinates, DeadLetter, Settlement, SourceError, Trail, Unsettled};
use tracing::debug;

use crate::acks::Acks;
use crate::dead_letter;
use crate::publisher::Publisher;
use crate::retry::{copy, RetryQueues};

/// The handle of one RabbitMQ delivery. Dropped unsettled, it requeues the message.
#[must_use = "dropping an acker unsettled requeues its message"]
pub struct AmqpAcker {
    acker: lapin::Acker,
    delivery_tag: u64,
    /// The channel's acks, where this one may share a multiple ack with others.
    acks: Acks,
    /// Keeps the delivery's channel open until it is settled: closing it would requeue the
    /// message behind our back, and the ack would then fail.
    channel: Channel,
    publisher: Arc<Publisher>,
    dead_letter_queue: ShortString,
    coordinates: Coordinates,
    /// The original properties, body and routing key (a retry copy's, as they were before
    /// its first copy), republished as they are on dead-lettering and in retry copies.
    original: Original,
    /// Retry mode `queue`: the delay queues.
    retry: Option<Arc<RetryQueues>>,
    /// The dead letter or retry copy is confirmed: a settlement tried again only acks.
    published: bool,
    settled: bool,
}

/// A delivery as the producer sent it, for the copies the acker writes.
#[derive(Debug)]
pub(crate) struct Original {
    pub(crate) properties: BasicProperties,
    pub(crate) payload: Bytes,
    pub(crate) routing_key: ShortString,
}

impl AmqpAcker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        acker: lapin::Acker,
        delivery_tag: u64,
        acks: Acks,
        channel: Channel,
        publisher: Arc<Publisher>,
        dead_letter_queue: ShortString,
        coordinates: Coordinates,
        original: Original,
        retry: Option<Arc<RetryQueues>>,
    ) -> Self {
        Self {
            acker,
            delivery_tag,
            acks,
            channel,
            publisher,
            dead_letter_queue,
            coordinates,
            original,
            retry,
            published: false,
            settled: false,
        }
    }

    async fn ack(&self) -> Result<(), SourceError> {
        // lapin's own acker would say when its channel closed under the delivery; ask it
        // before the coalesced ack goes out on that channel.
        if !self.acker.usable() {
            return self.settled_or_lost(false);
        }
        self.acks
            .ack(self.delivery_tag)
            .await
            .map_err(|e| SourceError::Connection(format!("acking {}: {e}", self.coordinates)))
    }

    async fn requeue(&self) -> Result<(), SourceError> {
        self.acks.forget(self.delivery_tag);
        let done = self
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .map_err(|e| {
                SourceError::Connection(format!("requeueing {}: {e}", self.coordinates))
            })?;
        self.settled_or_lost(done)
    }

    /// Publishes the dead letter to `destination` (a queue a route names, declared at
    /// connect), else to the source's dead-letter queue, then acks.
    async fn dead_letter(
        &mut self,
        dead_letter: &DeadLetter,
        destination: Option<&str>,
    ) -> Result<(), SourceError> {
        if !self.published {
            let queue = match destination {
                Some(queue) => ShortString::try_new(queue).map_err(|e| {
                    SourceError::Rejected(format!("dead-letter queue name {queue:?}: {e}"))
                })?,
                None => self.dead_letter_queue.clone(),
            };
            let properties = dead_letter::properties(
                &self.original.properties,
                dead_letter.context_headers(&self.coordinates),
                &self.publisher.user(),
            );
            self.publisher
                .publish_to_queue(&queue, &self.original.payload, properties)
                .await?;
            self.published = true;
        }
        match self.ack().await {
            // The dead letter is confirmed and the channel is gone: the broker hands the
            // original out again, and the dedup record of its dead letter (written once this
            // returns) settles that copy without delivering or dead-lettering it again.
            Err(error) if !self.acker.usable() => {
                debug!(coordinates = %self.coordinates, %error, "Dead letter confirmed, the original's channel closed before its ack; it comes back as already dead-lettered.");
                Ok(())
            }
            acked => acked,
        }
    }

    /// Publishes the retry copy to the delay queue of its tier, confirmed, then acks.
    async fn retry(&mut self, trail: &Trail) -> Result<(), SourceError> {
        if !self.published {
            let Some(retry) = &self.retry else {
                return Err(SourceError::Rejected(
                    "this RabbitMQ source has no delay queues (retry_tiers is empty)".to_owned(),
                ));
            };
            let (queue, delay) = retry.tier(trail.tier)?;
            let trail = Trail {
                due: Some(copy::due(*delay)),
                ..trail.clone()
            };
            let properties = copy::properties(
                &self.original.properties,
                self.original.routing_key.as_str(),
                &trail,
                &self.publisher.user(),
            );
            self.publisher
                .publish_to_queue(queue, &self.original.payload, properties)
                .await?;
            self.published = true;
        }
        match self.ack().await {
            // The copy is confirmed and the channel is gone: the broker hands the original out
            // again, which its chain knows (the same name, the same hop) or dedup settles.
            Err(error) if !self.acker.usable() => {
                debug!(coordinates = %self.coordinates, %error, "Retry copy confirmed, the original's channel closed before its ack; it comes back and is recognised.");
                Ok(())
            }
            acked => acked,
        }
    }

    /// lapin answers `false` when the channel closed under the delivery; the broker then
    /// requeues it on its own.
    fn settled_or_lost(&self, done: bool) -> Result<(), SourceError> {
        if done {
            Ok(())
        } else {
            Err(SourceError::Connection(format!(
                "the channel of {} closed; the broker will redeliver it",
                self.coordinates
            )))
        }
    }
}

impl Acker for AmqpAcker {
    /// `DeadLetter` and `Retry` publish with confirms, then ack; a failed publish or ack
    /// returns the handle, and a try again after a confirmed publish only acks.
    async fn settle(mut self, settlement: Settlement) -> Result<(), Box<Unsettled<Self>>> {
        let result = match &settlement {
            Settlement::Ack => self.ack().await,
            Settlement::Requeue => self.requeue().await,
            Settlement::DeadLetter {
                context,
                destination,
            } => self.dead_letter(context, destination.as_deref()).await,
            Settlement::Retry(trail) => self.retry(trail).await,
            Settlement::Redeliver(_) => Err(SourceError::Rejected(
                "RabbitMQ has no delayed redelivery; use retry mode \"in_place\"".to_owned(),
            )),
        };
        match result {
            Ok(()) => {
                self.settled = true;
                Ok(())
            }
            Err(error) => Err(Box::new(Unsettled {
                acker: self,
                settlement,
                error,
            })),
        }
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        if self.settled || !self.acker.usable() {
            return;
        }
        // Without a runtime (process teardown) nothing can be sent; the broker requeues the
        // message when the channel closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let acker = self.acker.clone();
        let channel = self.channel.clone();
        let coordinates = self.coordinates.clone();
        self.acks.forget(self.delivery_tag);
        runtime.spawn(async move {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            if let Err(error) = acker.nack(requeue).await {
                debug!(%coordinates, %error, "Could not requeue a dropped delivery; the broker will on channel close.");
            }
            drop(channel);
        });
    }
}

impl fmt::Debug for AmqpAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpAcker")
            .field("coordinates", &self.coordinates)
            .field("dead_letter_queue", &self.dead_letter_queue.as_str())
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}
