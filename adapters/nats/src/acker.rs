//! Settles one JetStream delivery: a confirmed ack, a nak, or a confirmed dead-letter publish
//! then `+TERM`. While it is unsettled, its in-progress task keeps JetStream from handing the
//! message to anyone else.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use async_nats::header::HeaderMap;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use outrigger_core::{Acker, Coordinates, DeadLetter, Settlement, SourceError, Trail, Unsettled};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;
use tracing::debug;

use crate::ack;
use crate::dead_letter;
use crate::retry;
use crate::shared::Shared;

/// The handle of one JetStream delivery. Dropped unsettled, it naks the message, which
/// JetStream then hands out again at once.
#[must_use = "dropping an acker unsettled naks its message"]
pub struct NatsAcker {
    shared: Arc<Shared>,
    /// The message's ack subject.
    reply: String,
    /// Where this delivery is stored, which names its retry copy.
    own: String,
    /// The subject it was published on, and the original headers and payload, published as
    /// they are on dead-lettering.
    subject: String,
    headers: Option<HeaderMap>,
    payload: Bytes,
    coordinates: Coordinates,
    /// Sends in-progress every third of `ack_wait` until the acker settles or drops.
    progress: AbortHandle,
    /// Its place among the messages that may be unsettled.
    _permit: OwnedSemaphorePermit,
    /// The dead letter is in its stream: a retried settlement only terminates the original.
    dead_letter_written: bool,
    /// Counted among the failing dead-letter writes (the `stalled` stat).
    dead_letter_failing: bool,
    settled: bool,
}

/// What a delivery is made of, as the pull loop takes it apart.
pub(crate) struct Parts {
    pub(crate) reply: String,
    /// Where this delivery is stored (`<stream>@<sequence>`; a retry copy's own place).
    pub(crate) own: String,
    pub(crate) subject: String,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) payload: Bytes,
    pub(crate) coordinates: Coordinates,
    pub(crate) permit: OwnedSemaphorePermit,
}

impl NatsAcker {
    /// Takes charge of a delivery: counts its bytes and starts its in-progress task.
    pub(crate) fn new(shared: Arc<Shared>, parts: Parts) -> Self {
        shared
            .bytes
            .fetch_add(parts.payload.len() as u64, Ordering::AcqRel);
        let progress = tokio::spawn(keep_in_progress(shared.clone(), parts.reply.clone()));
        Self {
            shared,
            reply: parts.reply,
            own: parts.own,
            subject: parts.subject,
            headers: parts.headers,
            payload: parts.payload,
            coordinates: parts.coordinates,
            progress: progress.abort_handle(),
            _permit: parts.permit,
            dead_letter_written: false,
            dead_letter_failing: false,
            settled: false,
        }
    }

    async fn ack(&self, kind: AckKind) -> Result<(), SourceError> {
        ack::confirmed(&self.shared.client, &self.reply, kind)
            .await
            .map_err(|e| match e {
                SourceError::Connection(why) => {
                    SourceError::Connection(format!("{}: {why}", self.coordinates))
                }
                other => other,
            })
    }

    async fn dead_letter(
        &mut self,
        context: &DeadLetter,
        destination: Option<&str>,
    ) -> Result<(), SourceError> {
        if !self.dead_letter_written {
            let result = self.publish_dead_letter(context, destination).await;
            self.failing(result.is_err());
            result?;
            self.dead_letter_written = true;
        }
        // The dead letter is safe; if the term is lost, JetStream hands the original out again
        // and it may be dead-lettered twice, which beats losing it.
        self.ack(AckKind::Term).await
    }

    /// Publishes to `destination` (a subject a route names, whose stream connect made sure
    /// of), else to the source's dead-letter subject.
    async fn publish_dead_letter(
        &self,
        context: &DeadLetter,
        destination: Option<&str>,
    ) -> Result<(), SourceError> {
        let target = destination.unwrap_or(&self.shared.dead_letter_subject);
        let headers = dead_letter::headers(
            self.headers.as_ref(),
            &self.subject,
            context,
            &self.coordinates,
        )
        .map_err(|e| SourceError::Publish(format!("dead letter of {}: {e}", self.coordinates)))?;
        let confirmation = self.publish(target, headers, "dead letter").await?;
        debug!(
            coordinates = %self.coordinates,
            stream = %confirmation.stream,
            sequence = confirmation.sequence,
            "Dead letter stored."
        );
        Ok(())
    }

    /// Publishes the payload with `headers` to `target` and waits for JetStream to store it;
    /// `what` names the message in the error.
    async fn publish(
        &self,
        target: &str,
        headers: HeaderMap,
        what: &str,
    ) -> Result<PublishAck, SourceError> {
        let failed =
            |e: &dyn fmt::Display| SourceError::Publish(format!("{what} to {target}: {e}"));
        self.shared
            .jetstream
            .publish_with_headers(target.to_owned(), headers, self.payload.clone())
            .await
            .map_err(|e| failed(&e))?
            .await
            .map_err(|e| failed(&e))
    }

    /// Retry mode `queue`: publishes the copy to its tier's subject, waits for JetStream's
    /// publish ack, then acks the message. A failed publish leaves it unacked.
    async fn retry(&self, trail: &Trail) -> Result<(), SourceError> {
        let (Some(target), Some(delay)) = (
            self.shared.retry_subjects.get(trail.tier),
            self.shared.retry_tiers.get(trail.tier),
        ) else {
            return Err(SourceError::Rejected(format!(
                "retry tier {} of {} is not configured (retry mode queue)",
                trail.tier, self.coordinates
            )));
        };
        let trail = Trail {
            due: Some(SystemTime::now() + *delay),
            ..trail.clone()
        };
        let headers = retry::copy_headers(self.headers.as_ref(), &self.subject, &trail, &self.own)
            .map_err(|e| {
                SourceError::Publish(format!("retry copy of {}: {e}", self.coordinates))
            })?;
        let confirmation = self.publish(target, headers, "retry copy").await?;
        debug!(
            coordinates = %self.coordinates,
            stream = %confirmation.stream,
            sequence = confirmation.sequence,
            hop = trail.hop,
            "Retry copy stored."
        );
        self.ack(AckKind::Ack).await
    }

    /// Keeps the count of failing dead-letter writes.
    fn failing(&mut self, now: bool) {
        if now != self.dead_letter_failing {
            self.dead_letter_failing = now;
            if now {
                self.shared
                    .dead_letters_failing
                    .fetch_add(1, Ordering::AcqRel);
            } else {
                self.shared
                    .dead_letters_failing
                    .fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Reports the message in progress every third of `ack_wait`, from the moment it was pulled,
/// until the task is aborted.
async fn keep_in_progress(shared: Arc<Shared>, reply: String) {
    loop {
        tokio::time::sleep(shared.progress_every).await;
        if let Err(error) = ack::unconfirmed(&shared.client, &reply, AckKind::Progress).await {
            debug!(%error, "In-progress not sent; the next one may be.");
        }
    }
}

impl Acker for NatsAcker {
    async fn settle(mut self, settlement: Settlement) -> Result<(), Box<Unsettled<Self>>> {
        let result = match &settlement {
            Settlement::Ack => self.ack(AckKind::Ack).await,
            Settlement::Requeue => self.ack(AckKind::Nak(None)).await,
            Settlement::Redeliver(delay) => self.ack(AckKind::Nak(Some(*delay))).await,
            Settlement::DeadLetter {
                context,
                destination,
            } => self.dead_letter(context, destination.as_deref()).await,
            Settlement::Retry(trail) => self.retry(trail).await,
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

impl Drop for NatsAcker {
    fn drop(&mut self) {
        self.progress.abort();
        self.failing(false);
        self.shared
            .bytes
            .fetch_sub(self.payload.len() as u64, Ordering::AcqRel);
        self.shared.room.notify_one();
        if self.settled {
            return;
        }
        // Without a runtime (process teardown) nothing can be sent; JetStream hands the
        // message out again once ack_wait passes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.shared.client.clone();
        let reply = std::mem::take(&mut self.reply);
        let coordinates = self.coordinates.clone();
        runtime.spawn(async move {
            if let Err(error) = ack::unconfirmed(&client, &reply, AckKind::Nak(None)).await {
                debug!(%coordinates, %error, "Could not nak a dropped delivery; JetStream redelivers it after ack_wait.");
            }
        });
    }
}

impl fmt::Debug for NatsAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsAcker")
            .field("coordinates", &self.coordinates)
            .field("subject", &self.subject)
            .field("dead_letter_written", &self.dead_letter_written)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}
