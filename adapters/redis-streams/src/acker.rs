//! Settles one entry: `XACK`, a dead letter and its `XACK` in one step, or a requeue.
//!
//! - `Ack`: `XACK`, tried again when the connection broke under it (acknowledging twice is
//!   harmless). The consumer keeps its pending entries across reconnects, so an acker handed
//!   out before a broken connection still settles after it.
//! - `DeadLetter`: the dead letter (the entry's fields, then the context) is written and the
//!   entry acknowledged by one script; a failed write leaves the entry pending, and the handle
//!   comes back with [`SourceError::Publish`].
//! - `Retry` (retry mode `queue`): a copy (the entry's fields, then the trail, due after the
//!   tier's delay) is written to the tier's retry stream and the entry acknowledged by one
//!   script, both or neither; a failed write leaves the entry pending and comes back with
//!   [`SourceError::Publish`].
//! - `Requeue`: the entry is handed out again by the same source, its delivery count
//!   unchanged (a requeue is the sidecar's doing: shutdown, a lost claim, not an attempt).
//!   Once the source is stopped, it stays pending for the next consumer of this name, its
//!   count set back by one so that the next read counts this hand-out only once.
//! - Dropped unsettled: handed out again, its delivery count up by one (something went wrong
//!   during it); after stop, left pending for the next consumer.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use outrigger_core::{Acker, Coordinates, DeadLetter, Settlement, SourceError, Trail, Unsettled};
use tracing::debug;

use crate::dead_letter::{self, Target, Written};
use crate::error::source_error;
use crate::retry;
use crate::shared::{Held, Shared};

/// The handle of one entry. Dropped unsettled, it hands the entry out again.
#[must_use = "dropping an acker unsettled hands its entry out again"]
pub struct RedisStreamsAcker {
    shared: Arc<Shared>,
    held: Arc<Held>,
    /// The hand-outs so far, this one included.
    deliveries: u32,
    settled: bool,
}

impl RedisStreamsAcker {
    pub(crate) fn new(shared: Arc<Shared>, held: Arc<Held>, deliveries: u32) -> Self {
        Self {
            shared,
            held,
            deliveries,
            settled: false,
        }
    }

    fn stream(&self) -> &str {
        self.shared.stream(self.held.stream)
    }

    /// Where the entry is: a retry copy's place in its retry stream.
    fn coordinates(&self) -> Coordinates {
        Coordinates::RedisStream {
            stream: self.stream().to_owned(),
            id: self.held.id.clone(),
        }
    }

    /// What the entry stands for: a retry copy's origin, else the entry.
    fn origin(&self) -> Coordinates {
        self.held
            .trail
            .as_ref()
            .map_or_else(|| self.coordinates(), |t| t.origin.clone())
    }

    async fn ack(&self) -> Result<(), SourceError> {
        let s = &self.shared.settings;
        let mut cmd = redis::cmd("XACK");
        cmd.arg(self.stream()).arg(&s.group).arg(&self.held.id);
        let _: i64 = self
            .shared
            .redis
            .query_again(&cmd)
            .await
            .map_err(|e| source_error(&format!("acknowledging {}", self.coordinates()), &e))?;
        Ok(())
    }

    /// Writes the dead letter to `destination` (a stream a route names, checked at connect),
    /// else to the source stream's dead-letter stream, and acknowledges the entry.
    async fn dead_letter(
        &self,
        context: &DeadLetter,
        destination: Option<&str>,
    ) -> Result<(), SourceError> {
        let s = &self.shared.settings;
        let fields = dead_letter::fields(&self.held.fields, context, &self.origin());
        let target = Target {
            dead_letters: destination.unwrap_or(&self.shared.dead_letters[self.held.stream]),
            stream: self.stream(),
            group: &s.group,
            id: &self.held.id,
            create: s.declare_dead_letters,
        };
        let written = dead_letter::write(&self.shared.redis, &target, true, &fields).await;
        self.shared
            .ledger
            .set_stalled(self.held.stream, written.is_err());
        if let Ok(Written::Settled) = written {
            debug!(source = %self.coordinates(), "The entry was settled already; no dead letter written.");
        }
        written.map(|_| ())
    }

    /// Writes the copy carrying `trail` to the retry stream of its tier and acknowledges the
    /// entry, in one script.
    async fn retry(&self, trail: &Trail) -> Result<(), SourceError> {
        let shared = &self.shared;
        let tiers = &shared.settings.retry_tiers;
        let (Some(delay), Some(index)) = (
            tiers.get(trail.tier),
            shared.retry_stream(self.held.stream, trail.tier),
        ) else {
            return Err(SourceError::Rejected(format!(
                "no retry tier {} for {} (there are {}); is retry mode \"queue\" set?",
                trail.tier + 1,
                self.origin(),
                tiers.len()
            )));
        };
        let fields = retry::fields(&self.held.fields, trail, SystemTime::now(), *delay);
        let target = retry::Target {
            retry: shared.stream(index),
            stream: self.stream(),
            group: &shared.settings.group,
            id: &self.held.id,
        };
        let written = retry::write(&shared.redis, &target, &fields).await?;
        if written.is_none() {
            debug!(source = %self.coordinates(), "The entry was settled already; no retry copy written.");
        }
        Ok(())
    }

    /// Hands the entry back: out again at once, or (stopped) left pending, its count set back.
    async fn requeue(&self) -> Result<(), SourceError> {
        if self.shared.ledger.is_stopped() {
            let s = &self.shared.settings;
            self.shared
                .redis
                .claim_own(
                    self.stream(),
                    &s.group,
                    &s.consumer,
                    Some(self.deliveries.saturating_sub(1)),
                    std::slice::from_ref(&self.held.id),
                )
                .await?;
            self.shared.ledger.release(self.held.stream, &self.held.id);
            return Ok(());
        }
        let again = self
            .shared
            .delivery(Arc::clone(&self.held), self.deliveries, true);
        self.shared.hand_out_again(again);
        Ok(())
    }
}

impl RedisStreamsAcker {
    /// Settles nothing and hands nothing back when dropped: for a delivery that never left
    /// the source.
    pub(crate) fn forget(mut self) -> (usize, String) {
        self.settled = true;
        (self.held.stream, self.held.id.clone())
    }

    /// The hand-outs so far, this one included.
    pub(crate) fn deliveries(&self) -> u32 {
        self.deliveries
    }
}

impl Acker for RedisStreamsAcker {
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
                "Redis Streams has no delayed redelivery; use retry mode \"in_place\"".to_owned(),
            )),
        };
        match result {
            Ok(()) => {
                self.settled = true;
                if !matches!(settlement, Settlement::Requeue) {
                    self.shared.ledger.release(self.held.stream, &self.held.id);
                }
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

impl Drop for RedisStreamsAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let held = Arc::clone(&self.held);
        if shared.ledger.is_stopped() {
            // Left pending: the next consumer of this name reads it, or a peer claims it.
            shared.ledger.release(held.stream, &held.id);
            return;
        }
        // Without a runtime (process teardown) nothing can be sent; the entry stays pending.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            shared.ledger.release(held.stream, &held.id);
            return;
        };
        let deliveries = self.deliveries.saturating_add(1);
        runtime.spawn(async move {
            let s = &shared.settings;
            let stream = shared.stream(held.stream).to_owned();
            if let Err(error) = shared
                .redis
                .claim_own(
                    &stream,
                    &s.group,
                    &s.consumer,
                    Some(deliveries),
                    std::slice::from_ref(&held.id),
                )
                .await
            {
                debug!(%error, stream, id = held.id, "Could not count the hand-back of a dropped delivery.");
            }
            let again = shared.delivery(held, deliveries, true);
            shared.hand_out_again(again);
        });
    }
}

impl fmt::Debug for RedisStreamsAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamsAcker")
            .field("coordinates", &self.coordinates().to_string())
            .field("deliveries", &self.deliveries)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}
