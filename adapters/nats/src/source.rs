//! The NATS [`Source`]: binds (or creates) the stream, the durable pull consumer and the
//! dead-letter stream, runs the pull loop, and stops it cleanly.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{Acker, Delivery, HealthFlag, Settlement, Source, SourceError, StatsProbe};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::acker::NatsAcker;
use crate::config::NatsSettings;
use crate::connection;
use crate::pull::{Pull, Requests};
use crate::shared::Shared;
use crate::{setup, stats};

/// How long `stop` waits for the pull loop to end: its open request expires within 5s.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumes one JetStream stream through a durable pull consumer.
///
/// The client reconnects by itself (100ms doubling to 5s); the health flag is down meanwhile.
/// Ackers handed out before a reconnect still settle: an ack subject is not tied to a
/// connection.
pub struct NatsSource {
    shared: Arc<Shared>,
    health: HealthFlag,
    deliveries: mpsc::Receiver<Delivery<NatsAcker>>,
    failure: Arc<Mutex<Option<SourceError>>>,
    stop: CancellationToken,
    pulls: Vec<JoinHandle<()>>,
    stats: JoinHandle<()>,
    stopped: bool,
}

impl NatsSource {
    /// Connects, binds or creates the stream, the consumer and the dead-letter stream (see
    /// [`NatsConfig`](crate::NatsConfig)), and starts pulling.
    pub async fn connect(settings: NatsSettings) -> Result<Self, SourceError> {
        let config = &settings.config;
        let connection = connection::connect(config, "source").await?;
        let js = connection.jetstream.clone();
        let stream = setup::stream(&js, config).await?;
        let consumer = setup::consumer(&stream, &settings).await?;
        setup::dead_letter_stream(&js, &settings, settings.declare_dead_letters).await?;
        setup::route_dead_letter_streams(&js, &settings).await?;
        let info = consumer.cached_info().clone();
        let retry = if settings.retry_tiers.is_empty() {
            None
        } else {
            Some(setup::retry_consumer(&js, &settings, info.config.ack_wait).await?)
        };
        let shared = Arc::new(Shared {
            client: connection.client.clone(),
            jetstream: js,
            stream: config.stream.clone(),
            dead_letter_subject: settings.dead_letter_subject.clone(),
            retry_stream: retry.as_ref().map(|_| config.retry_stream_name()),
            retry_subjects: (0..settings.retry_tiers.len())
                .map(|tier| config.retry_subject(tier))
                .collect(),
            retry_tiers: settings.retry_tiers.clone(),
            progress_every: NatsSettings::progress_every(info.config.ack_wait),
            permits: Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            bytes: AtomicU64::new(0),
            max_bytes: settings.max_buffered_bytes,
            room: Notify::new(),
            dead_letters_failing: AtomicUsize::new(0),
            consumer_info: Mutex::new(Some(info.clone())),
        });
        let requests = Requests::within(
            settings.prefetch,
            info.config.max_batch,
            info.config.max_expires,
        );
        if requests.max_batch < settings.prefetch || !info.config.max_expires.is_zero() {
            debug!(
                max_batch = requests.max_batch,
                expires = ?requests.expires,
                "Pull requests kept within the consumer's limits."
            );
        }
        let (out, deliveries) = mpsc::channel(settings.max_in_flight);
        let failure = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let pull_of = |stream: &str, consumer: &str| Pull {
            shared: shared.clone(),
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            requests,
            key_header: config.key_header.clone(),
            reconnected: connection.reconnected.clone(),
            out: out.clone(),
            failure: failure.clone(),
            stop: stop.clone(),
        };
        // The retry consumer's copies come into the same deliveries as the source's.
        let mut pulls = vec![tokio::spawn(pull_of(&info.stream_name, &info.name).run())];
        if let Some(retry) = &retry {
            let retry = retry.cached_info();
            pulls.push(tokio::spawn(pull_of(&retry.stream_name, &retry.name).run()));
        }
        drop(out);
        let stats = tokio::spawn(stats::refresh(consumer, shared.clone(), stop.clone()));
        info!(
            stream = %config.stream,
            consumer = %config.consumer,
            ack_wait = %humantime::format_duration(info.config.ack_wait),
            "Consuming from NATS JetStream."
        );
        Ok(Self {
            shared,
            health: connection.health,
            deliveries,
            failure,
            stop,
            pulls,
            stats,
            stopped: false,
        })
    }
}

impl NatsSource {
    /// The consumer as JetStream last described it (refreshed every 2s): lag, unacked and
    /// redelivered messages over every sidecar sharing it.
    pub fn consumer_stats(&self) -> Option<crate::ConsumerStats> {
        stats::consumer_stats(&self.shared)
    }
}

impl Source for NatsSource {
    type Acker = NatsAcker;

    async fn recv(&mut self) -> Result<Option<Delivery<NatsAcker>>, SourceError> {
        if self.stopped {
            return Ok(None);
        }
        match self.deliveries.recv().await {
            Some(delivery) => Ok(Some(delivery)),
            None => match self.failure.lock().take() {
                Some(error) => Err(error),
                None => Ok(None),
            },
        }
    }

    /// Stops pulling and naks what was pulled but not handed out, so JetStream hands it to the
    /// next consumer at once. Ackers handed out stay usable.
    async fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.stop.cancel();
        let pulls = futures_util::future::join_all(std::mem::take(&mut self.pulls));
        if tokio::time::timeout(STOP_TIMEOUT, pulls).await.is_err() {
            debug!("The NATS pull loops did not end in time.");
        }
        self.deliveries.close();
        let mut naks = Vec::new();
        while let Ok(delivery) = self.deliveries.try_recv() {
            naks.push(delivery.acker.settle(Settlement::Requeue));
        }
        for result in futures_util::future::join_all(naks).await {
            if let Err(unsettled) = result {
                debug!(error = %unsettled.error, "Could not hand a pulled message back; JetStream redelivers it after ack_wait.");
            }
        }
    }

    fn health(&self) -> HealthFlag {
        self.health.clone()
    }

    fn stats(&self) -> StatsProbe {
        stats::probe(self.shared.clone())
    }
}

impl Drop for NatsSource {
    fn drop(&mut self) {
        self.stop.cancel();
        self.stats.abort();
    }
}

impl std::fmt::Debug for NatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSource")
            .field("stream", &self.shared.stream)
            .field("in_flight", &self.shared.in_flight())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}
