//! `outrigger run`: assembles the sidecar from a valid config and runs it until shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use outrigger_amqp::{AmqpConfig as AmqpAdapterConfig, AmqpSource};
use outrigger_core::{DedupStore, SourceError};
use outrigger_policies::Classifier;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::{self, AdminState, StoreProbe};
use crate::config::{Config, OnStoreError, SourceConfig};
use crate::delivery::{DeliverySettings, HeaderPlan, HttpDelivery};
use crate::metrics::{Metrics, SourceMetrics};
use crate::pipeline::{self, Dedup, Pipeline, StoreFailureMode, ThrottleGate};
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
            match connect_amqp(settings, &shutdown).await? {
                Some(source) => {
                    use outrigger_core::Source as _;
                    *admin_state.source.write() = Some(source.health());
                    info!(queue = %amqp.queue, "Consuming.");
                    pipeline::run(pipeline, source, shutdown.clone()).await
                }
                None => Ok(()),
            }
        }
        SourceConfig::Memory(_) => {
            anyhow::bail!(
                "the memory source only exists inside `outrigger demo`; use [source.amqp]"
            )
        }
    };
    shutdown.cancel();
    let _ = admin_task.await;
    result.context("the broker refused the consumer")?;
    info!("Stopped.");
    Ok(())
}

/// Connects, retrying while the broker is unreachable. `None` when shutdown came first.
async fn connect_amqp(
    settings: AmqpAdapterConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<AmqpSource>> {
    let mut wait = Duration::from_millis(200);
    loop {
        match AmqpSource::connect(settings.clone()).await {
            Ok(source) => return Ok(Some(source)),
            Err(e @ SourceError::Rejected(_)) => return Err(e).context("connecting to RabbitMQ"),
            Err(e) => warn!(error = %e, "RabbitMQ unreachable; retrying."),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// Builds the pipeline from the policy.
pub fn build_pipeline<D: DedupStore>(
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
        max_in_flight: usize::from(config.backpressure.max_in_flight),
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
