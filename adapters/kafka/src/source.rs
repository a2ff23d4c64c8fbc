//! The Kafka [`Source`]: joins the group, hands out what the poll thread fetched, and leaves
//! the group cleanly on stop.

use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{Delivery, HealthFlag, Source, SourceError, StatsProbe};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureProducer;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::acker::KafkaAcker;
use crate::backpressure::Limits;
use crate::config::KafkaSettings;
use crate::context::{Consumer, Context};
use crate::dead_letter::DeadLetters;
use crate::logging::LogContext;
use crate::retry::RetryTopics;
use crate::state::{Buffered, Shared};
use crate::stats::KafkaStats;
use crate::{poll, properties, topics};

/// How long `stop` waits, beyond the revoke timeout, for the final commit and the group leave.
const CLOSE_GRACE: Duration = Duration::from_secs(30);

/// Consumes topics in a consumer group, committing only what the pipeline settled.
///
/// A dedicated thread polls the consumer and serves its rebalance callbacks; `recv` takes what
/// it fetched. Records are counted in flight from the moment the thread takes them from
/// librdkafka until they settle, and it stops taking them at the limits of [`KafkaSettings`].
pub struct KafkaSource {
    shared: Arc<Shared>,
    health: HealthFlag,
    /// Signalled by the poll thread once the consumer has left the group.
    closed: Option<oneshot::Receiver<()>>,
    revoke_timeout: Duration,
    stopped: bool,
}

impl KafkaSource {
    /// Validates the config, checks that every source topic exists (else
    /// [`SourceError::Rejected`] naming it), creates missing dead-letter topics (with the
    /// source topic's partition count; Rejected when creation fails), and subscribes.
    ///
    /// Fails with [`SourceError::Connection`] when no broker answers within 10s.
    pub async fn connect(config: KafkaSettings) -> Result<Self, SourceError> {
        let routes = topics::prepare(&config).await?;
        let producer: FutureProducer<LogContext> =
            FutureProducer::from_config_and_context(&properties::producer(&config), LogContext)
                .map_err(|e| {
                    SourceError::Rejected(format!("creating the dead-letter producer: {e}"))
                })?;
        let limits = Limits {
            max_in_flight: config.max_in_flight,
            max_in_flight_per_partition: config.max_in_flight_per_partition,
            max_buffered_bytes: config.max_buffered_bytes,
        };
        // The metadata answered: the cluster is reachable.
        let health = HealthFlag::new(true);
        let shared = Arc::new(Shared::new(
            limits,
            config.revoke_timeout,
            health.clone(),
            DeadLetters {
                producer: producer.clone(),
                routes: routes.dead_letter,
                named: routes.named,
            },
            (!config.retry_tiers.is_empty()).then(|| RetryTopics {
                producer,
                tiers: config.retry_tiers.clone(),
                partitions: routes.retry,
            }),
        ));
        let context = Context {
            shared: shared.clone(),
        };
        let mut consumer =
            Consumer::from_config_and_context(&properties::consumer(&config), context)
                .map_err(|e| SourceError::Rejected(format!("creating the Kafka consumer: {e}")))?;
        let wake = shared.wake.clone();
        consumer.set_nonempty_callback(move || wake.notify());
        let retry_topics = config.retry_topics();
        let topics: Vec<&str> = config
            .topics
            .iter()
            .map(String::as_str)
            .chain(retry_topics.iter().map(|(_, retry)| retry.as_str()))
            .collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| SourceError::Rejected(format!("subscribing to {topics:?}: {e}")))?;
        let consumer = Arc::new(consumer);
        shared.state.lock().consumer = Some(consumer.clone());
        let (closed_tx, closed) = oneshot::channel();
        if let Err(error) = poll::spawn(consumer, shared.clone(), closed_tx) {
            shared.state.lock().consumer = None;
            return Err(error);
        }
        info!(topics = ?config.topics, group = config.group_id, "Consuming from Kafka.");
        Ok(Self {
            shared,
            health,
            closed: Some(closed),
            revoke_timeout: config.revoke_timeout,
            stopped: false,
        })
    }

    /// A handle on the per-partition numbers, for `/metrics`; it stays readable after stop.
    pub fn stats(&self) -> KafkaStats {
        KafkaStats {
            shared: self.shared.clone(),
        }
    }
}

impl Source for KafkaSource {
    type Acker = KafkaAcker;

    async fn recv(&mut self) -> Result<Option<Delivery<KafkaAcker>>, SourceError> {
        loop {
            if self.stopped {
                return Ok(None);
            }
            {
                let mut st = self.shared.state.lock();
                if let Some(error) = &st.failure {
                    return Err(error.clone());
                }
                if let Some(Buffered {
                    ticket,
                    message,
                    original,
                }) = st.buffer.pop_front()
                {
                    let coordinates = message.coordinates.clone();
                    let acker = KafkaAcker::new(self.shared.clone(), ticket, coordinates, original);
                    return Ok(Some(Delivery { message, acker }));
                }
            }
            // A notification sent while nobody waited is kept, so none is lost in between.
            self.shared.ready.notified().await;
        }
    }

    /// Stops handing out records, lets in-flight ones settle for up to the revoke timeout,
    /// commits every partition's watermark and leaves the group. Ackers stay usable until the
    /// group is left; afterwards their settlements change nothing.
    async fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.shared.begin_stop();
        let Some(closed) = self.closed.take() else {
            return;
        };
        if tokio::time::timeout(self.revoke_timeout + CLOSE_GRACE, closed)
            .await
            .is_err()
        {
            warn!("The Kafka consumer did not leave its group in time.");
        }
        self.health.set(false);
    }

    fn health(&self) -> HealthFlag {
        self.health.clone()
    }

    fn stats(&self) -> StatsProbe {
        let stats = KafkaSource::stats(self);
        StatsProbe::new(move || {
            let partitions = stats.partitions();
            Box::pin(async move { partitions.into_iter().map(Into::into).collect() })
        })
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Without stop: the poll thread still commits and leaves the group, unobserved.
        if !self.stopped {
            self.shared.begin_stop();
        }
    }
}
