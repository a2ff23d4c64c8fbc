//! `outrigger run`: assembles the sidecar from a valid config and runs it until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use outrigger_core::{Broker, Episode, HealthFlag, ParkingStore, Source, SourceError, StatsProbe};
use outrigger_policies::{AttemptPolicy, KeyPolicy, MissingKey, RetryTiers};
use prometheus::IntGauge;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admin::{self, AdminState, StoreProbe};
use crate::brokers::WithBroker;
use crate::config::{
    Config, OnMissingKey, OnStoreError, ParkedAfterDeadLetter, RetryMode, RouteAction,
    DEFAULT_ROUTE,
};
use crate::delivery::{Batching, DeliverySettings, HeaderPlan, HttpDelivery};
use crate::metrics::{Metrics, SourceMetrics};
use crate::pipeline::{
    self, AppConcurrency, Batcher, Breaker, BreakerSettings, Dedup, Pipeline, Probe, Route,
    RouteTable, Routes, Sequencer, StoreFailureMode, Unrecorded,
};
use crate::reload::Reloader;
use crate::store::Store;

/// Why `run` stopped before consuming: the policy cannot run (exit 64), or something it needs
/// failed (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A config problem only `run` could find: what `check` names too, or a source that only
    /// exists inside `outrigger demo`.
    #[error("{0}")]
    Config(String),
    /// The store, the listener or the broker failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Where the policy came from, for reloading it while running.
pub struct Reload {
    /// SIGHUP, installed before anything else ran (its default would end the process).
    pub hangups: tokio::signal::unix::Signal,
    /// The policy file.
    pub path: std::path::PathBuf,
}

/// Runs the sidecar described by `config` until `shutdown` is cancelled, then drains. With
/// `reload`, SIGHUP (and `reload.watch`) re-read the policy file meanwhile.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reload: Option<Reload>,
) -> Result<(), RunError> {
    if config.source.capabilities().in_process_only {
        return Err(RunError::Config(in_process_only(&config)));
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let metrics = Metrics::new();
    let source_name = config.source.name();
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
        breaker: Default::default(),
        token: config.admin.token.clone(),
        dlq: Some(crate::dlq::api::DlqApi::new(&config, &metrics)),
    });
    let listener = admin::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", config.admin.listen))?;
    let bound = listener.local_addr().unwrap_or(config.admin.listen);
    info!(address = %bound, "Admin listener ready.");
    let admin_task = tokio::spawn(admin::serve(
        listener,
        admin_state.clone(),
        shutdown.clone(),
    ));

    let pipeline = Arc::new(build_pipeline(&config, store, metrics.source(&source_name)));
    *admin_state.breaker.write() = Some(pipeline.breaker.clone());
    if let Some(Reload { hangups, path }) = reload {
        let reloader = Reloader::new(path, config.clone(), pipeline.clone(), metrics.reloads());
        tokio::spawn(reloader.serve(hangups, shutdown.clone()));
    }
    let consume = Consume {
        config: &config,
        pipeline,
        admin: &admin_state,
        metrics: &metrics,
        shutdown: &shutdown,
    };
    let result = config.source.with_broker(consume).await;
    shutdown.cancel();
    let _ = admin_task.await;
    match result {
        Err(SourceError::Config(problems)) => {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(RunError::Config(all.join("\n")));
        }
        other => other.context("the broker refused the consumer")?,
    }
    info!("Stopped.");
    Ok(())
}

/// Why `run` refuses a source that exists only inside this process.
pub fn in_process_only(config: &Config) -> String {
    format!(
        "[source.{}] only exists inside `outrigger demo`; `outrigger run` consumes from a broker: \
         configure one of {}",
        config.source.kind(),
        crate::brokers::SourceConfig::broker_tables()
    )
}

/// Connects the policy's broker and runs the pipeline over it, with its health on `/readyz`
/// and its partitions on `/metrics`.
struct Consume<'a> {
    config: &'a Config,
    pipeline: Arc<Pipeline<Store>>,
    admin: &'a AdminState,
    metrics: &'a Metrics,
    shutdown: &'a CancellationToken,
}

impl WithBroker for Consume<'_> {
    type Output = Result<(), SourceError>;

    async fn with<B: Broker>(self, config: &B::Config) -> Result<(), SourceError> {
        let context = self.config.source_context();
        let connect = || B::connect(config, &context);
        let Some(source) = connect_with_retry(B::KIND, connect, self.shutdown).await? else {
            return Ok(());
        };
        *self.admin.source.write() = Some(source.health());
        let parking = (self.config.retry.mode == RetryMode::Queue)
            .then(|| self.pipeline.dedup.as_ref().map(|d| d.store.clone()))
            .flatten();
        let exporter = tokio::spawn(export_partition_stats(
            source.stats(),
            (source.health(), self.pipeline.metrics.source_up.clone()),
            parking,
            self.config.source.names(),
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
        info!("Consuming.");
        let result = pipeline::run(self.pipeline, source, self.shutdown.clone()).await;
        exporter.abort();
        result
    }
}

/// Connects, retrying while the broker is unreachable. `None` when shutdown came first; an
/// error when the broker refused (missing queue or topic, access denied) or the config is
/// invalid.
async fn connect_with_retry<S, F, Fut>(
    broker: &str,
    connect: F,
    shutdown: &CancellationToken,
) -> Result<Option<S>, SourceError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<S, SourceError>>,
{
    let mut wait = Duration::from_millis(200);
    let unreachable = Episode::new(
        "The broker is unreachable; connecting with backoff.",
        "Connected to the broker.",
    );
    loop {
        match connect().await {
            Ok(source) => {
                unreachable.recovered();
                return Ok(Some(source));
            }
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => unreachable.failed(&format!("{broker}: {e}")),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// Copies the source's per-partition view into gauges, once a second, with the parked keys
/// of each source partition (retry mode `queue`) from `parking`, and its connection state
/// into `outrigger_source_up`.
async fn export_partition_stats<D: ParkingStore>(
    stats: StatsProbe,
    (health, up): (HealthFlag, IntGauge),
    parking: Option<Arc<D>>,
    sources: Vec<String>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        up.set(i64::from(health.is_up()));
        let partitions = stats.read().await;
        let mut parked = Vec::new();
        if let Some(store) = &parking {
            for p in partitions.iter().filter(|p| sources.contains(&p.source)) {
                let group = outrigger_core::partition_name(&p.source, &p.partition);
                if let Ok(count) = store.parked_chains(&group).await {
                    parked.push((p.source.clone(), p.partition.clone(), count));
                }
            }
        }
        metrics.partitions.reset();
        for (source, partition, count) in parked {
            metrics
                .partitions
                .parked_keys
                .with_label_values(&[source.as_str(), partition.as_str()])
                .set(count as i64);
        }
        for p in &partitions {
            let labels = [p.source.as_str(), p.partition.as_str()];
            let g = &metrics.partitions;
            if let Some(watermark) = p.watermark {
                g.watermark.with_label_values(&labels).set(watermark);
            }
            if let Some(lag) = p.lag {
                g.lag.with_label_values(&labels).set(lag);
            }
            if let Some(pending) = p.pending {
                g.pending
                    .with_label_values(&labels)
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
            if p.deleted_while_pending > 0 {
                g.deleted_up_to(&labels, p.deleted_while_pending);
            }
            g.in_flight
                .with_label_values(&labels)
                .set(p.in_flight as i64);
            g.paused.with_label_values(&labels).set(i64::from(p.paused));
            g.stalled
                .with_label_values(&labels)
                .set(i64::from(p.stalled));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The routes of `config`: each `[[routes]]` entry with what it matches, tried in order, and
/// the top-level policy for the messages none takes.
pub fn routes(config: &Config) -> Routes {
    let routes = config
        .routes
        .iter()
        .map(|r| {
            let mut route = route(&r.name, &r.effective(config), r.action);
            route.dead_letter = r.dead_letter.destination.clone();
            (r.matching.matcher(), route)
        })
        .collect();
    Routes::new(routes, route(DEFAULT_ROUTE, config, config.default_action))
}

/// The route named `name` whose policy is `config`'s delivery, dedup key, classification,
/// retry and ordering settings.
fn route(name: &str, config: &Config, action: RouteAction) -> Route {
    let delivery = &config.delivery;
    let ce_source = delivery.ce_source.clone().unwrap_or_else(|| {
        format!(
            "/outrigger/{}/{}",
            config.source.kind(),
            config.source.name()
        )
    });
    Route {
        name: name.to_owned(),
        action,
        delivery: HttpDelivery::new(DeliverySettings {
            url: delivery.url.clone(),
            timeout: delivery.timeout,
            connect_timeout: delivery.connect_timeout,
            max_connections: usize::from(delivery.max_connections),
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
            batch: delivery.batch.as_ref().map(|b| Batching {
                max_events: usize::from(b.max_events),
                max_bytes: usize::try_from(b.max_bytes.as_u64()).unwrap_or(usize::MAX),
                max_wait: b.max_wait,
                concurrency: config.backpressure.concurrency(),
            }),
        }),
        keys: KeyPolicy {
            template: config.dedup.key.clone(),
            fallback: config.dedup.fallback_key.clone(),
            missing: match config.dedup.on_missing_key {
                OnMissingKey::DeadLetter => MissingKey::DeadLetter,
                OnMissingKey::Deliver => MissingKey::Deliver,
            },
        },
        max_message_size: delivery.max_message_size.as_u64(),
        classifier: config.classify.classifier(),
        attempts: AttemptPolicy {
            retry: config.retry.policy(),
            queue: (config.retry.mode == RetryMode::Queue).then(|| RetryTiers {
                tiers: config.retry.tiers.clone(),
                dead_letter_parked: config.retry.parked_after_dead_letter
                    == ParkedAfterDeadLetter::DeadLetter,
            }),
            redeliver: config.retry.mode == RetryMode::Redeliver,
            app_faults: config.breaker.enabled,
        },
        ordering: config.ordering.mode(&config.source),
        sequence: config.ordering.sequence_policy(),
        throttle: Default::default(),
        dead_letter: None,
    }
}

/// Builds the pipeline from the policy.
pub fn build_pipeline<D: outrigger_core::DedupStore>(
    config: &Config,
    store: Option<Arc<D>>,
    metrics: SourceMetrics,
) -> Pipeline<D> {
    let on_failure = match config.dedup.on_store_error {
        OnStoreError::Pause => StoreFailureMode::Pause,
        OnStoreError::Deliver => StoreFailureMode::Deliver,
    };
    let b = &config.breaker;
    let breaker = Breaker::new(
        BreakerSettings {
            enabled: b.enabled,
            failures: b.failures,
            unavailable: b.unavailable,
            probe: match &b.probe_url {
                Some(url) => Probe::Http(url.clone()),
                None => Probe::Connect(app_authority(config)),
            },
            probe_interval: b.probe_interval,
            probe_max: b.probe_max,
        },
        metrics.breaker(),
    );
    Pipeline {
        routes: RouteTable::new(routes(config)),
        dedup: store.map(|store| Dedup {
            batcher: Batcher::start(store.clone(), metrics.store_calls.clone()),
            store,
            on_failure,
            unrecorded: Unrecorded::default(),
            lease: config.dedup.lease,
            down: match on_failure {
                StoreFailureMode::Pause => Episode::new(
                    "Dedup store unreachable; holding messages until it is back.",
                    "Dedup store reachable again.",
                ),
                StoreFailureMode::Deliver => Episode::new(
                    "Dedup store unreachable; delivering without dedup as configured.",
                    "Dedup store reachable again; deduplicating.",
                ),
            },
        }),
        max_in_flight: usize::from(config.backpressure.max_in_flight),
        max_in_flight_per_key: config.backpressure.max_in_flight_per_key.map(usize::from),
        max_waiting: config
            .ordering
            .max_waiting(config.backpressure.max_in_flight),
        sequencer: Sequencer::default(),
        concurrency: match config.backpressure.adaptive_bounds() {
            Some(bounds) => AppConcurrency::adaptive(bounds, metrics.concurrency_limit.clone()),
            None => AppConcurrency::fixed(
                config.backpressure.concurrency(),
                metrics.concurrency_limit.clone(),
            ),
        },
        breaker: Arc::new(breaker),
        grace_period: config.shutdown.grace_period,
        metrics,
    }
}

fn store_probe(store: Arc<Store>) -> StoreProbe {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            outrigger_core::DedupStore::ping(&*store)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// `host:port` of the app URL, for the readiness TCP check.
fn app_authority(config: &Config) -> String {
    let url = &config.delivery.url;
    let host = url.host().unwrap_or("127.0.0.1");
    let port = url.port_u16().unwrap_or(80);
    format!("{host}:{port}")
}
