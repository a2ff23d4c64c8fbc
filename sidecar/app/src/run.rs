//! `outrigger run`: assembles the sidecar from a valid config and runs it until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use outrigger_amqp::{AmqpConfig as AmqpAdapterConfig, AmqpSource};
use outrigger_core::{DedupStore, ParkingStore, Source, SourceError};
use outrigger_kafka::{
    KafkaConfig as KafkaAdapterConfig, KafkaSource, KafkaStats, StartFrom as KafkaStart,
};
use outrigger_policies::Classifier;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, AdminState, StoreProbe};
use crate::config::{
    Config, OnStoreError, ParkedAfterDeadLetter, RetryMode, SourceConfig, StartFrom,
};
use crate::delivery::{DeliverySettings, HeaderPlan, HttpDelivery};
use crate::metrics::{Metrics, SourceMetrics};
use crate::pipeline::{self, Dedup, Pipeline, RetryQueue, StoreFailureMode, ThrottleGate};
use crate::store::Store;

/// Runs the sidecar described by `config` until `shutdown` is cancelled, then drains.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let source_name = config.source.name().to_owned();
    let store = if config.dedup.enabled {
        Some(
            Store::open(&config)
                .await
                .context("opening the dedup store")?,
        )
    } else {
        None
    };

    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        source: Default::default(),
        store: store.clone().map(store_probe),
        app: app_authority(&config),
        token: config.admin.token.clone(),
        dlq: Some(crate::dlq::api::DlqApi::new(&config, &metrics)),
    });
    let listener = admin::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", config.admin.listen))?;
    info!(address = %config.admin.listen, "Admin listener ready.");
    let admin_task = tokio::spawn(admin::serve(
        listener,
        admin_state.clone(),
        shutdown.clone(),
    ));

    let pipeline = Arc::new(build_pipeline(&config, store, metrics.source(&source_name)));
    let result = match &config.source {
        SourceConfig::Amqp(amqp) => {
            let settings = AmqpAdapterConfig {
                url: amqp.url.clone(),
                queue: amqp.queue.clone(),
                prefetch: config.backpressure.max_in_flight,
                consumer_tag: amqp.consumer_tag.clone(),
                dead_letter_queue: config.dead_letter.destination(&config.source),
                declare_dead_letter_queue: config.dead_letter.declare,
            };
            let connect = || AmqpSource::connect(settings.clone());
            match connect_with_retry("RabbitMQ", connect, &shutdown).await? {
                Some(source) => consume(pipeline, source, &admin_state, &shutdown).await,
                None => Ok(()),
            }
        }
        SourceConfig::Kafka(kafka) => {
            let settings = KafkaAdapterConfig {
                bootstrap_servers: kafka.bootstrap_servers.clone(),
                topics: kafka.topics.clone(),
                group_id: kafka.group_id.clone(),
                start_from: match kafka.start_from {
                    StartFrom::Earliest => KafkaStart::Earliest,
                    StartFrom::Latest => KafkaStart::Latest,
                },
                properties: kafka.properties.clone(),
                dead_letter_topic: config.dead_letter.destination.clone(),
                max_in_flight: usize::from(config.backpressure.max_in_flight),
                max_in_flight_per_partition: usize::from(
                    config.backpressure.max_in_flight_per_partition,
                ),
                max_buffered_bytes: config.backpressure.max_buffered_bytes.as_u64(),
                commit_interval: kafka.commit_interval,
                revoke_timeout: kafka.revoke_timeout,
                retry_tiers: match config.retry.mode {
                    RetryMode::Queue => config.retry.tiers.clone(),
                    RetryMode::InPlace => Vec::new(),
                },
            };
            let connect = || KafkaSource::connect(settings.clone());
            match connect_with_retry("Kafka", connect, &shutdown).await? {
                Some(source) => {
                    let parking = (config.retry.mode == RetryMode::Queue)
                        .then(|| pipeline.dedup.as_ref().map(|d| d.store.clone()))
                        .flatten();
                    let exporter = tokio::spawn(export_partition_stats(
                        source.stats(),
                        parking,
                        kafka.topics.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                    ));
                    let result = consume(pipeline, source, &admin_state, &shutdown).await;
                    exporter.abort();
                    result
                }
                None => Ok(()),
            }
        }
        SourceConfig::Memory(_) => {
            anyhow::bail!(
                "the memory source only exists inside `outrigger demo`; use [source.amqp] or [source.kafka]"
            )
        }
    };
    shutdown.cancel();
    let _ = admin_task.await;
    result.context("the broker refused the consumer")?;
    info!("Stopped.");
    Ok(())
}

/// Runs the pipeline over a connected source, with its health visible on `/readyz`.
async fn consume<S: Source, D: DedupStore + ParkingStore>(
    pipeline: Arc<Pipeline<D>>,
    source: S,
    admin: &AdminState,
    shutdown: &CancellationToken,
) -> Result<(), SourceError> {
    *admin.source.write() = Some(source.health());
    info!("Consuming.");
    pipeline::run(pipeline, source, shutdown.clone()).await
}

/// Connects, retrying while the broker is unreachable. `None` when shutdown came first; an
/// error when the broker refused (missing queue or topic, access denied).
async fn connect_with_retry<S, F, Fut>(
    broker: &str,
    connect: F,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<S>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S, SourceError>>,
{
    let mut wait = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(source) => return Ok(Some(source)),
            Err(e @ SourceError::Rejected(_)) => {
                return Err(e).with_context(|| format!("connecting to {broker}"))
            }
            Err(e) => warn!(error = %e, broker, "Broker unreachable; retrying."),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// Copies the Kafka adapter's per-partition view into gauges, once a second, with the parked
/// keys of each source partition (retry mode `queue`) from `parking`.
async fn export_partition_stats<D: ParkingStore>(
    stats: KafkaStats,
    parking: Option<Arc<D>>,
    sources: Vec<String>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        let partitions = stats.partitions();
        let mut parked = Vec::new();
        if let Some(store) = &parking {
            for p in partitions.iter().filter(|p| sources.contains(&p.topic)) {
                let group = pipeline::partition_group(&p.topic, p.partition);
                if let Ok(count) = store.parked_chains(&group).await {
                    parked.push((p.topic.clone(), p.partition, count));
                }
            }
        }
        metrics.partitions.reset();
        for (topic, partition, count) in parked {
            metrics
                .partitions
                .parked_keys
                .with_label_values(&[topic.as_str(), &partition.to_string()])
                .set(count as i64);
        }
        for p in &partitions {
            let labels = [p.topic.as_str(), &p.partition.to_string()];
            let g = &metrics.partitions;
            g.watermark.with_label_values(&labels).set(p.watermark);
            if let Some(high) = p.high_watermark {
                g.lag
                    .with_label_values(&labels)
                    .set((high - p.watermark).max(0));
            }
            g.in_flight
                .with_label_values(&labels)
                .set(p.in_flight as i64);
            g.paused.with_label_values(&labels).set(i64::from(p.paused));
            g.stalled
                .with_label_values(&labels)
                .set(i64::from(p.stalled_on_dead_letter));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Builds the pipeline from the policy.
pub fn build_pipeline<D: DedupStore + ParkingStore>(
    config: &Config,
    store: Option<Arc<D>>,
    metrics: SourceMetrics,
) -> Pipeline<D> {
    let on_failure = match config.dedup.on_store_error {
        OnStoreError::Pause => StoreFailureMode::Pause,
        OnStoreError::Deliver => StoreFailureMode::Deliver,
    };
    let delivery = &config.delivery;
    let ce_source = delivery.ce_source.clone().unwrap_or_else(|| {
        format!(
            "/outrigger/{}/{}",
            config.source.kind(),
            config.source.name()
        )
    });
    Pipeline {
        key: config.dedup.key.clone(),
        dedup: store.map(|store| Dedup { store, on_failure }),
        delivery: HttpDelivery::new(DeliverySettings {
            url: delivery.url.clone(),
            timeout: delivery.timeout,
            excerpt: delivery.response_excerpt.as_u64() as usize,
            http2: delivery.http2,
            headers: HeaderPlan {
                forward: delivery
                    .forward_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                ce_source,
                ce_type: delivery.ce_type.clone(),
            },
        }),
        classifier: Classifier::new(config.classify.rules.iter().map(|r| r.to_rule()).collect()),
        retry: config.retry.policy(),
        retry_queue: (config.retry.mode == RetryMode::Queue).then(|| RetryQueue {
            tiers: config.retry.tiers.clone(),
            dead_letter_parked: config.retry.parked_after_dead_letter
                == ParkedAfterDeadLetter::DeadLetter,
        }),
        max_in_flight: usize::from(config.backpressure.max_in_flight),
        ordering: config.ordering.mode(&config.source),
        grace_period: config.shutdown.grace_period,
        throttle: ThrottleGate::default(),
        metrics,
    }
}

fn store_probe(store: Arc<Store>) -> StoreProbe {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    })
}

/// `host:port` of the app URL, for the readiness TCP check.
fn app_authority(config: &Config) -> String {
    let url = &config.delivery.url;
    let host = url.host().unwrap_or("127.0.0.1");
    let port = url.port_u16().unwrap_or(80);
    format!("{host}:{port}")
}
