//! The RabbitMQ [`Source`]: consumes one queue, reconnecting with backoff when the broker goes.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicNackOptions};
use lapin::types::ShortString;
use lapin::BasicProperties;
use outrigger_core::{
    Coordinates, Delivery, Episode, HealthFlag, Message, PartitionStats, Source, SourceError,
    StatsProbe,
};
use tracing::{debug, info, warn};

use crate::acker::{AmqpAcker, Original};
use crate::acks::Acks;
use crate::config::AmqpSettings;
use crate::headers;
use crate::retry::{copy, RetryQueues};
use crate::session::{Names, Session};
use outrigger_core::ReconnectDelay;

/// How long `stop` waits for the broker to confirm the cancel and for the deliveries it had
/// already pushed to be handed back. Past it, those come back when the channel closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Consumes one RabbitMQ queue with manual acks and a bounded prefetch.
///
/// On a broken connection or channel, [`Source::recv`] marks the source down and reconnects
/// with backoff (100ms doubling to 5s) until it can deliver again. Ackers of the old channel
/// then fail to settle; the broker redelivers their messages on its own.
pub struct AmqpSource {
    config: AmqpSettings,
    names: Names,
    /// Retry mode `queue`: the delay queues, declared at every connect.
    retry: Option<Arc<RetryQueues>>,
    session: Option<Session>,
    /// The live session's acks, for the stats probe: what is handed out and not settled.
    current: Arc<parking_lot::Mutex<Option<Acks>>>,
    health: HealthFlag,
    backoff: ReconnectDelay,
    /// Reconnect attempts that failed, logged once with a count.
    reconnecting: Episode,
    stopped: bool,
}

impl AmqpSource {
    /// Connects, checks that the source queue exists (else [`SourceError::Rejected`]), checks or
    /// declares the dead-letter queue and, in retry mode `queue`, the delay queues (one
    /// declared otherwise is [`SourceError::Rejected`]), and starts consuming.
    pub async fn connect(config: AmqpSettings) -> Result<Self, SourceError> {
        let names = Names::parse(&config)?;
        let retry = RetryQueues::new(&config)?.map(Arc::new);
        let health = HealthFlag::new(false);
        let session = Session::open(&config, &names, retry.as_deref(), &health).await?;
        let current = Arc::new(parking_lot::Mutex::new(Some(session.acks.clone())));
        Ok(Self {
            config,
            names,
            retry,
            session: Some(session),
            current,
            health,
            backoff: ReconnectDelay::default(),
            reconnecting: Episode::new(
                "RabbitMQ unreachable; reconnecting with backoff.",
                "Reconnected to RabbitMQ.",
            ),
            stopped: false,
        })
    }

    /// Opens a new session, waiting out the backoff first. Returns only on success or on an
    /// error no retry can fix (a deleted queue, revoked access).
    async fn reconnect(&mut self) -> Result<(), SourceError> {
        loop {
            if let Some(delay) = self.backoff.delay() {
                tokio::time::sleep(delay).await;
            }
            let retry = self.retry.as_deref();
            match Session::open(&self.config, &self.names, retry, &self.health).await {
                Ok(session) => {
                    if !self.reconnecting.is_active() {
                        info!(queue = %self.config.queue, "Reconnected to RabbitMQ.");
                    }
                    self.reconnecting.recovered();
                    *self.current.lock() = Some(session.acks.clone());
                    self.session = Some(session);
                    return Ok(());
                }
                Err(error) => {
                    self.backoff.failed();
                    if !error.is_retryable() {
                        return Err(error);
                    }
                    self.reconnecting.failed(&error);
                }
            }
        }
    }

    /// Forgets a session that can no longer deliver. Its ackers keep its channels until settled.
    fn lose_session(&mut self) {
        self.backoff.failed();
        self.health.set(false);
        self.session = None;
    }
}

impl Source for AmqpSource {
    type Acker = AmqpAcker;

    async fn recv(&mut self) -> Result<Option<Delivery<AmqpAcker>>, SourceError> {
        loop {
            if self.stopped {
                return Ok(None);
            }
            let Some(session) = self.session.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match session.consumer.next().await {
                Some(Ok(delivery)) => {
                    // Reset only here: a session that opens and dies at once, again and
                    // again, must not turn the reconnect loop into a busy loop.
                    self.backoff.reset();
                    let queue = self.config.queue.clone();
                    let dead_letter_queue = self.names.dead_letter_queue.clone();
                    return Ok(Some(to_delivery(
                        queue,
                        dead_letter_queue,
                        self.retry.clone(),
                        session,
                        delivery,
                    )));
                }
                Some(Err(error)) => {
                    warn!(queue = %self.config.queue, %error, "RabbitMQ consumer failed; reconnecting.");
                    self.lose_session();
                }
                None => {
                    // Not our cancel (that sets `stopped`): the broker's, e.g. the queue was
                    // deleted or its node went away.
                    warn!(queue = %self.config.queue, "RabbitMQ cancelled the consumer; reconnecting.");
                    self.lose_session();
                }
            }
        }
    }

    async fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let cancel = async {
            let tag = session.consumer.tag();
            if let Err(error) = session
                .consume
                .basic_cancel(tag, BasicCancelOptions::default())
                .await
            {
                debug!(%error, "Cancelling the RabbitMQ consumer failed.");
            }
            // Deliveries pushed before the cancel took effect wait in the consumer's buffer,
            // which ends once the cancel is confirmed: hand them back now, not at channel close.
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            while let Some(item) = session.consumer.next().await {
                if let Ok(delivery) = item {
                    let _ = delivery.acker.nack(requeue).await;
                }
            }
        };
        if tokio::time::timeout(STOP_TIMEOUT, cancel).await.is_err() {
            debug!(queue = %self.config.queue, "RabbitMQ did not confirm the consumer cancel in time.");
        }
    }

    fn health(&self) -> HealthFlag {
        self.health.clone()
    }

    /// The queue as one partition: its deliveries not settled yet, held back when they reach
    /// the prefetch (RabbitMQ then stops pushing); the parked keys of retry mode `queue` are
    /// counted against it.
    fn stats(&self) -> StatsProbe {
        let queue = self.config.queue.clone();
        let prefetch = usize::from(self.config.prefetch);
        let current = self.current.clone();
        StatsProbe::new(move || {
            let in_flight = current.lock().as_ref().map_or(0, Acks::unsettled);
            let stats = PartitionStats {
                source: queue.clone(),
                in_flight,
                paused: in_flight >= prefetch,
                ..PartitionStats::default()
            };
            Box::pin(async move { vec![stats] })
        })
    }
}

/// The core's view of a lapin delivery, with the acker that settles it.
///
/// A retry copy (one carrying a trail; it came back from a delay queue) becomes its origin
/// again: its trail goes into [`Message::trail`], its coordinates are the origin's, and the
/// message, the dead letter and the next copy see the original's properties, headers and
/// routing key (see `retry::copy`). A copy whose trail cannot be read is handed out as a
/// message of its own, with a warning. In retry mode `queue` any other message is named by a
/// digest of its content, the same at every redelivery (see `copy::origin`).
fn to_delivery(
    queue: String,
    dead_letter_queue: ShortString,
    retry: Option<Arc<RetryQueues>>,
    session: &Session,
    delivery: lapin::message::Delivery,
) -> Delivery<AmqpAcker> {
    let lapin::message::Delivery {
        delivery_tag,
        routing_key,
        redelivered,
        properties,
        data,
        acker,
        ..
    } = delivery;
    let payload = Bytes::from(data);
    // Counted from the delivery as it came: a copy's redeliveries are the copy's.
    let deliveries = delivery_count(&properties);
    let (coordinates, trail, original) = match copy::read(&properties) {
        Some(Ok(copy)) => (
            copy.trail.origin.clone(),
            Some(copy.trail),
            Original {
                properties: copy.properties,
                payload,
                routing_key: copy.routing_key,
            },
        ),
        found => {
            if let Some(Err(error)) = found {
                warn!(%error, queue, delivery_tag, "Unreadable retry trail; delivering the message as it is.");
            }
            let coordinates = match &retry {
                Some(_) => copy::origin(&queue, routing_key.as_str(), &properties, &payload),
                None => Coordinates::Amqp {
                    queue,
                    delivery_tag,
                },
            };
            let original = Original {
                properties,
                payload,
                routing_key,
            };
            (coordinates, None, original)
        }
    };
    let mut message = to_message(
        coordinates.clone(),
        &original.routing_key,
        redelivered,
        &original.properties,
        original.payload.clone(),
    );
    message.deliveries = deliveries;
    message.trail = trail;
    session.acks.delivered(delivery_tag);
    let acker = AmqpAcker::new(
        acker,
        delivery_tag,
        session.acks.clone(),
        session.consume.clone(),
        session.publisher.clone(),
        dead_letter_queue,
        coordinates,
        original,
        retry,
    );
    Delivery { message, acker }
}

/// A quorum queue counts the earlier deliveries of a message in `x-delivery-count`.
fn delivery_count(properties: &BasicProperties) -> Option<u32> {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count"))
        .and_then(headers::as_count)
        .map(|earlier| earlier.saturating_add(1))
}

/// The core's view of an AMQP message.
pub(crate) fn to_message(
    coordinates: Coordinates,
    routing_key: &ShortString,
    redelivered: bool,
    properties: &BasicProperties,
    payload: Bytes,
) -> Message {
    Message {
        payload,
        headers: properties
            .headers()
            .as_ref()
            .map(headers::from_table)
            .unwrap_or_default(),
        key: (!routing_key.as_str().is_empty())
            .then(|| Bytes::copy_from_slice(routing_key.as_str().as_bytes())),
        message_id: properties.message_id().as_ref().map(|s| s.to_string()),
        content_type: properties.content_type().as_ref().map(|s| s.to_string()),
        timestamp: properties
            .timestamp()
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
        coordinates,
        redelivered,
        deliveries: delivery_count(properties),
        trail: None,
    }
}
