//! Prometheus metrics: one explicit registry, names and label keys as constants here.
//!
//! Labels are bounded: `source` (the configured queue/topic name), `outcome`, `class`. Never keys
//! or ids.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Metric names, all `outrigger_`, base units, `_total` for counters.
pub mod names {
    /// Messages taken from the broker.
    pub const CONSUMED: &str = "outrigger_messages_consumed_total";
    /// Messages the broker handed out again (marked redelivered, or counted more than once).
    pub const REDELIVERED: &str = "outrigger_redelivered_total";
    /// Messages acked at the broker, by final outcome.
    pub const SETTLED: &str = "outrigger_messages_settled_total";
    /// Messages the app handled successfully.
    pub const DELIVERED: &str = "outrigger_messages_delivered_total";
    /// Duplicates acked without delivery.
    pub const DUPLICATES: &str = "outrigger_duplicates_skipped_total";
    /// Delivery attempts, by app response class.
    pub const ATTEMPTS: &str = "outrigger_delivery_attempts_total";
    /// Retries scheduled after a transient failure.
    pub const RETRIED: &str = "outrigger_retries_total";
    /// Throttle responses (429/503 or `outrigger-action: throttle`).
    pub const THROTTLED: &str = "outrigger_throttled_total";
    /// Messages parked in the dead-letter destination, by failure class.
    pub const DEAD_LETTERED: &str = "outrigger_dead_lettered_total";
    /// Messages dropped by policy.
    pub const DROPPED: &str = "outrigger_dropped_total";
    /// Messages delivered without dedup because no key could be made (`dedup.on_missing_key`).
    pub const WITHOUT_KEY: &str = "outrigger_delivered_without_key_total";
    /// Dedup store calls that failed.
    pub const STORE_ERRORS: &str = "outrigger_dedup_store_errors_total";
    /// Claim and completion calls made to the dedup store (each may carry many messages).
    pub const STORE_CALLS: &str = "outrigger_dedup_store_calls_total";
    /// Dead-letter publishes the broker did not confirm (the original stays unacked).
    pub const DLQ_FAILURES: &str = "outrigger_dead_letter_publish_failures_total";
    /// Completions refused because a newer claim superseded the lease.
    pub const FENCED: &str = "outrigger_dedup_fenced_total";
    /// Messages taken from the broker and not yet settled.
    pub const IN_FLIGHT: &str = "outrigger_in_flight_messages";
    /// Messages waiting behind another one of their ordering lane.
    pub const ORDERING_WAITING: &str = "outrigger_ordering_waiting_messages";
    /// Messages waiting for a predecessor in the reorder buffer (`ordering.sequence`).
    pub const REORDER_WAITING: &str = "outrigger_reorder_waiting_messages";
    /// Gaps in a key's sequence given up (timed out, or the buffer was full), by what
    /// `ordering.on_gap` did with the messages behind them (`on_gap`: deliver, dead_letter).
    pub const SEQUENCE_GAPS: &str = "outrigger_sequence_gaps_total";
    /// Messages whose sequence their key had already passed, without a dedup record: come
    /// after their gap was given up, or sent again under another id. Dead-lettered.
    pub const SEQUENCE_BEHIND: &str = "outrigger_sequence_behind_total";
    /// Payload bytes of messages in flight.
    pub const BUFFERED_BYTES: &str = "outrigger_buffered_bytes";
    /// Time from request start to the end of the app's response body.
    pub const DELIVERY_DURATION: &str = "outrigger_delivery_duration_seconds";
    /// Time a message spends in each stage of its life besides the delivery itself: waiting
    /// for its ordering lane, claiming its key, recording its completion, settling it at the
    /// broker.
    pub const STAGE_DURATION: &str = "outrigger_stage_duration_seconds";
    /// 1 while the broker connection is up.
    pub const SOURCE_UP: &str = "outrigger_source_up";
    /// Deliveries to the app allowed at once.
    pub const CONCURRENCY_LIMIT: &str = "outrigger_concurrency_limit";
    /// Messages between the committed watermark and the partition's end.
    pub const CONSUMER_LAG: &str = "outrigger_consumer_lag_messages";
    /// The next offset the sidecar will commit (everything below is settled).
    pub const WATERMARK: &str = "outrigger_partition_watermark_offset";
    /// Messages of the partition taken and not yet settled.
    pub const PARTITION_IN_FLIGHT: &str = "outrigger_partition_in_flight_messages";
    /// 1 while fetching from the partition is paused by backpressure.
    pub const PARTITION_PAUSED: &str = "outrigger_partition_paused";
    /// 1 while the partition's commit waits on a dead-letter write that keeps failing.
    pub const PARTITION_STALLED: &str = "outrigger_partition_stalled";
    /// Keys of the partition with messages parked behind a retry (retry mode `queue`).
    pub const PARKED_KEYS: &str = "outrigger_parked_keys";
    /// Messages handed to this consumer and not settled, as the broker counts them (Redis
    /// Streams' pending entries, JetStream's ack-pending).
    pub const PENDING: &str = "outrigger_pending_messages";
    /// Messages deleted or trimmed from their stream while pending (Redis Streams).
    pub const DELETED_WHILE_PENDING: &str = "outrigger_deleted_while_pending_total";
    /// 1 for the state the circuit breaker in front of the app is in (`state`), 0 for the others.
    pub const BREAKER_STATE: &str = "outrigger_breaker_state";
    /// Moves of the circuit breaker, by the state moved to.
    pub const BREAKER_TRANSITIONS: &str = "outrigger_breaker_transitions_total";
    /// Dead letters resubmitted through the admin API, confirmed by the broker.
    pub const DLQ_RESUBMITTED: &str = "outrigger_dlq_resubmitted_total";
    /// Dead letters purged through the admin API.
    pub const DLQ_PURGED: &str = "outrigger_dlq_purged_total";
    /// Re-reads of the policy file while running, by result: `applied`, `unchanged`,
    /// `invalid` (it failed validation), `refused` (it changes what needs a restart).
    pub const RELOADS: &str = "outrigger_policy_reloads_total";
    /// 1, labelled with the hash of the policy file in force (`hash`: the first 12 hex digits
    /// of its SHA-256), so that replicas running different policies stand out.
    pub const POLICY_INFO: &str = "outrigger_policy_info";
}

/// Label keys.
pub mod labels {
    /// The configured source name (queue, topic, stream).
    pub const SOURCE: &str = "source";
    /// A settled message's outcome: delivered, duplicate, dead_lettered, dropped.
    pub const OUTCOME: &str = "outcome";
    /// The route a message took (bounded: `default` and the names of `[[routes]]`).
    pub const ROUTE: &str = "route";
    /// A bounded failure or response class: 2xx, 4xx, 5xx, timeout, connection, decode.
    pub const CLASS: &str = "class";
    /// A Kafka topic (bounded: the configured topics).
    pub const TOPIC: &str = "topic";
    /// A partition number (bounded by the topic's partition count).
    pub const PARTITION: &str = "partition";
    /// A circuit breaker state: closed, open, half_open.
    pub const STATE: &str = "state";
    /// The state a circuit breaker moved to.
    pub const TO: &str = "to";
    /// A stage of a message's life: lane, claim, complete, settle.
    pub const STAGE: &str = "stage";
    /// What became of a policy reload.
    pub const RESULT: &str = "result";
    /// A policy file's hash.
    pub const HASH: &str = "hash";
    /// What `ordering.on_gap` did: deliver, dead_letter.
    pub const ON_GAP: &str = "on_gap";
}

/// `metric`, registered in `registry`.
fn registered<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// Per-partition gauges of partitioned sources (Kafka), refreshed from the adapter's view.
#[derive(Clone)]
pub struct PartitionGauges {
    /// Consumer lag.
    pub lag: IntGaugeVec,
    /// Commit watermark.
    pub watermark: IntGaugeVec,
    /// In-flight messages.
    pub in_flight: IntGaugeVec,
    /// Paused by backpressure.
    pub paused: IntGaugeVec,
    /// Commit stalled on a failing dead-letter write.
    pub stalled: IntGaugeVec,
    /// Keys with parked messages (retry mode `queue`).
    pub parked_keys: IntGaugeVec,
    /// Pending at the broker, as it counts them.
    pub pending: IntGaugeVec,
    /// Deleted while pending, since start.
    pub deleted_while_pending: IntCounterVec,
}

impl PartitionGauges {
    fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[labels::TOPIC, labels::PARTITION])
                .expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        Self {
            lag: gauge(
                names::CONSUMER_LAG,
                "Messages between the watermark and the end.",
            ),
            watermark: gauge(names::WATERMARK, "Next offset to commit."),
            in_flight: gauge(
                names::PARTITION_IN_FLIGHT,
                "Partition messages not yet settled.",
            ),
            paused: gauge(names::PARTITION_PAUSED, "1 while fetching is paused."),
            stalled: gauge(
                names::PARTITION_STALLED,
                "1 while a dead-letter write blocks the commit.",
            ),
            parked_keys: gauge(
                names::PARKED_KEYS,
                "Keys with messages parked behind a retry.",
            ),
            pending: gauge(
                names::PENDING,
                "Messages handed to this consumer and not settled, as the broker counts them.",
            ),
            deleted_while_pending: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        names::DELETED_WHILE_PENDING,
                        "Messages deleted or trimmed from their stream while pending.",
                    ),
                    &[labels::TOPIC, labels::PARTITION],
                ),
            ),
        }
    }

    /// Raises the deleted-while-pending counter of a partition to the source's `total`.
    pub fn deleted_up_to(&self, labels: &[&str; 2], total: u64) {
        let counter = self.deleted_while_pending.with_label_values(labels);
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    /// Forgets every partition (revoked ones must not linger).
    pub fn reset(&self) {
        for g in [
            &self.lag,
            &self.watermark,
            &self.in_flight,
            &self.paused,
            &self.stalled,
            &self.parked_keys,
            &self.pending,
        ] {
            g.reset();
        }
    }
}

/// The sidecar's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Per-partition gauges (Kafka).
    pub partitions: PartitionGauges,
    consumed: IntCounterVec,
    redelivered: IntCounterVec,
    settled: IntCounterVec,
    delivered: IntCounterVec,
    duplicates: IntCounterVec,
    attempts: IntCounterVec,
    retried: IntCounterVec,
    throttled: IntCounterVec,
    dead_lettered: IntCounterVec,
    dropped: IntCounterVec,
    without_key: IntCounterVec,
    store_errors: IntCounterVec,
    store_calls: IntCounterVec,
    dlq_failures: IntCounterVec,
    fenced: IntCounterVec,
    in_flight: IntGaugeVec,
    ordering_waiting: IntGaugeVec,
    reorder_waiting: IntGaugeVec,
    sequence_gaps: IntCounterVec,
    sequence_behind: IntCounterVec,
    buffered_bytes: IntGaugeVec,
    duration: HistogramVec,
    stages: HistogramVec,
    source_up: IntGaugeVec,
    concurrency_limit: IntGaugeVec,
    dlq_resubmitted: IntCounterVec,
    dlq_purged: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    reloads: IntCounterVec,
    policy_info: IntGaugeVec,
}

/// The policy reload counter and the gauge naming the policy in force.
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
    policy_info: IntGaugeVec,
}

impl ReloadMetrics {
    /// Counts one reload that ended in `result`.
    pub fn counted(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Shows the policy with `hash` as the one in force.
    pub fn in_force(&self, hash: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[hash]).set(1);
    }
}

/// The circuit breaker's gauge and counter, for one source.
#[derive(Clone)]
pub struct BreakerMetrics {
    state: IntGaugeVec,
    transitions: IntCounterVec,
    source: String,
}

impl BreakerMetrics {
    /// Shows `now` on the state gauge.
    pub fn show(&self, now: crate::pipeline::BreakerState) {
        crate::pipeline::breaker::show(&self.state, &self.source, now);
    }

    /// Counts a move to `to` and shows it.
    pub fn moved(&self, to: crate::pipeline::BreakerState) {
        self.transitions
            .with_label_values(&[self.source.as_str(), to.as_str()])
            .inc();
        self.show(to);
    }
}

/// The dead-letter operation counters of one source.
#[derive(Clone)]
pub struct DlqMetrics {
    /// Records resubmitted.
    pub resubmitted: IntCounter,
    /// Records purged.
    pub purged: IntCounter,
}

/// The metrics of one source, with its label already bound (cheap to clone).
#[derive(Clone)]
pub struct SourceMetrics {
    /// Messages consumed.
    pub consumed: IntCounter,
    /// Messages handed out again by the broker.
    pub redelivered: IntCounter,
    /// Handled by the app.
    pub delivered: IntCounter,
    /// Acked as duplicates.
    pub duplicates: IntCounter,
    /// Retries scheduled.
    pub retried: IntCounter,
    /// Throttle responses.
    pub throttled: IntCounter,
    /// Dropped by policy.
    pub dropped: IntCounter,
    /// Delivered without dedup: no key could be made.
    pub delivered_without_key: IntCounter,
    /// Dedup store failures.
    pub store_errors: IntCounter,
    /// Claim and completion calls to the dedup store.
    pub store_calls: IntCounter,
    /// Unconfirmed dead-letter publishes.
    pub dlq_failures: IntCounter,
    /// Fenced completions.
    pub fenced: IntCounter,
    /// In-flight messages.
    pub in_flight: IntGauge,
    /// Messages waiting in an ordering lane.
    pub ordering_waiting: IntGauge,
    /// Messages waiting for a predecessor.
    pub reorder_waiting: IntGauge,
    /// Gaps given up, under `deliver`.
    pub gaps_delivered: IntCounter,
    /// Gaps given up, under `dead_letter`.
    pub gaps_dead_lettered: IntCounter,
    /// Messages behind their key's sequence.
    pub sequence_behind: IntCounter,
    /// In-flight payload bytes.
    pub buffered_bytes: IntGauge,
    /// Delivery durations.
    pub duration: Histogram,
    /// Waiting for the ordering lane.
    pub lane_wait: Histogram,
    /// Claiming the key.
    pub claim_time: Histogram,
    /// Recording the completion.
    pub complete_time: Histogram,
    /// Settling at the broker.
    pub settle_time: Histogram,
    /// Broker connection state.
    pub source_up: IntGauge,
    /// Deliveries to the app allowed at once (moves with `backpressure.adaptive`).
    pub concurrency_limit: IntGauge,
    source: String,
    metrics: Metrics,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[labels::SOURCE]).expect("valid");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let src = &[labels::SOURCE][..];
        let src_class = &[labels::SOURCE, labels::CLASS][..];
        Metrics {
            consumed: counter(names::CONSUMED, "Messages taken from the broker.", src),
            redelivered: counter(
                names::REDELIVERED,
                "Messages the broker handed out again.",
                src,
            ),
            settled: counter(
                names::SETTLED,
                "Messages acked at the broker, by final outcome and the route they took.",
                &[labels::SOURCE, labels::OUTCOME, labels::ROUTE],
            ),
            delivered: counter(names::DELIVERED, "Messages the app handled.", src),
            duplicates: counter(names::DUPLICATES, "Duplicates acked without delivery.", src),
            attempts: counter(
                names::ATTEMPTS,
                "Delivery attempts by app response class.",
                src_class,
            ),
            retried: counter(names::RETRIED, "Retries after transient failures.", src),
            throttled: counter(names::THROTTLED, "Throttle responses from the app.", src),
            dead_lettered: counter(
                names::DEAD_LETTERED,
                "Messages parked in the dead-letter destination.",
                src_class,
            ),
            dropped: counter(names::DROPPED, "Messages dropped by policy.", src),
            without_key: counter(
                names::WITHOUT_KEY,
                "Messages delivered without dedup because no key could be made.",
                src,
            ),
            store_errors: counter(names::STORE_ERRORS, "Dedup store calls that failed.", src),
            store_calls: counter(
                names::STORE_CALLS,
                "Claim and completion calls to the dedup store, each carrying many messages.",
                src,
            ),
            dlq_failures: counter(
                names::DLQ_FAILURES,
                "Dead-letter publishes the broker did not confirm.",
                src,
            ),
            fenced: counter(
                names::FENCED,
                "Completions refused because a newer claim superseded the lease.",
                src,
            ),
            in_flight: gauge(names::IN_FLIGHT, "Messages taken and not yet settled."),
            ordering_waiting: gauge(
                names::ORDERING_WAITING,
                "Messages waiting behind another one of their ordering lane.",
            ),
            reorder_waiting: gauge(
                names::REORDER_WAITING,
                "Messages waiting for a predecessor in the reorder buffer.",
            ),
            sequence_gaps: counter(
                names::SEQUENCE_GAPS,
                "Gaps in a key's sequence given up, by what ordering.on_gap did.",
                &[labels::SOURCE, labels::ON_GAP],
            ),
            sequence_behind: counter(
                names::SEQUENCE_BEHIND,
                "Messages whose key's sequence had passed them, dead-lettered.",
                src,
            ),
            buffered_bytes: gauge(
                names::BUFFERED_BYTES,
                "Payload bytes of in-flight messages.",
            ),
            duration: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        names::DELIVERY_DURATION,
                        "Delivery request duration, seconds.",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ]),
                    &[labels::SOURCE],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(h.clone()))
                    .expect("unique metric");
                h
            },
            stages: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        names::STAGE_DURATION,
                        "Time in each stage of a message's life besides the delivery, seconds.",
                    )
                    .buckets(vec![
                        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ]),
                    &[labels::SOURCE, labels::STAGE],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(h.clone()))
                    .expect("unique metric");
                h
            },
            source_up: gauge(names::SOURCE_UP, "1 while the broker connection is up."),
            concurrency_limit: gauge(
                names::CONCURRENCY_LIMIT,
                "Deliveries to the app allowed at once (adaptive with backpressure.adaptive).",
            ),
            dlq_resubmitted: counter(
                names::DLQ_RESUBMITTED,
                "Dead letters resubmitted, confirmed by the broker.",
                src,
            ),
            dlq_purged: counter(names::DLQ_PURGED, "Dead letters purged.", src),
            breaker_state: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::BREAKER_STATE,
                        "1 for the circuit breaker's state in front of the app.",
                    ),
                    &[labels::SOURCE, labels::STATE],
                ),
            ),
            breaker_transitions: counter(
                names::BREAKER_TRANSITIONS,
                "Moves of the circuit breaker, by the state moved to.",
                &[labels::SOURCE, labels::TO],
            ),
            reloads: counter(
                names::RELOADS,
                "Re-reads of the policy file while running, by result.",
                &[labels::RESULT],
            ),
            policy_info: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::POLICY_INFO,
                        "1, labelled with the policy file's hash.",
                    ),
                    &[labels::HASH],
                ),
            ),
            partitions: PartitionGauges::new(&registry),
            registry,
        }
    }

    /// The policy reload metrics.
    pub fn reloads(&self) -> ReloadMetrics {
        ReloadMetrics {
            reloads: self.reloads.clone(),
            policy_info: self.policy_info.clone(),
        }
    }

    /// The metrics of one source.
    pub fn source(&self, source: &str) -> SourceMetrics {
        let l = &[source];
        SourceMetrics {
            consumed: self.consumed.with_label_values(l),
            redelivered: self.redelivered.with_label_values(l),
            delivered: self.delivered.with_label_values(l),
            duplicates: self.duplicates.with_label_values(l),
            retried: self.retried.with_label_values(l),
            throttled: self.throttled.with_label_values(l),
            dropped: self.dropped.with_label_values(l),
            delivered_without_key: self.without_key.with_label_values(l),
            store_errors: self.store_errors.with_label_values(l),
            store_calls: self.store_calls.with_label_values(l),
            dlq_failures: self.dlq_failures.with_label_values(l),
            fenced: self.fenced.with_label_values(l),
            in_flight: self.in_flight.with_label_values(l),
            ordering_waiting: self.ordering_waiting.with_label_values(l),
            reorder_waiting: self.reorder_waiting.with_label_values(l),
            gaps_delivered: self.sequence_gaps.with_label_values(&[source, "deliver"]),
            gaps_dead_lettered: self
                .sequence_gaps
                .with_label_values(&[source, "dead_letter"]),
            sequence_behind: self.sequence_behind.with_label_values(l),
            buffered_bytes: self.buffered_bytes.with_label_values(l),
            duration: self.duration.with_label_values(l),
            lane_wait: self.stages.with_label_values(&[source, "lane"]),
            claim_time: self.stages.with_label_values(&[source, "claim"]),
            complete_time: self.stages.with_label_values(&[source, "complete"]),
            settle_time: self.stages.with_label_values(&[source, "settle"]),
            source_up: self.source_up.with_label_values(l),
            concurrency_limit: self.concurrency_limit.with_label_values(l),
            source: source.to_owned(),
            metrics: self.clone(),
        }
    }

    /// The circuit breaker's metrics for one source.
    pub fn breaker(&self, source: &str) -> BreakerMetrics {
        BreakerMetrics {
            state: self.breaker_state.clone(),
            transitions: self.breaker_transitions.clone(),
            source: source.to_owned(),
        }
    }

    /// The dead-letter operation counters of one source.
    pub fn dlq(&self, source: &str) -> DlqMetrics {
        DlqMetrics {
            resubmitted: self.dlq_resubmitted.with_label_values(&[source]),
            purged: self.dlq_purged.with_label_values(&[source]),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceMetrics {
    /// The circuit breaker's metrics for this source.
    pub fn breaker(&self) -> BreakerMetrics {
        self.metrics.breaker(&self.source)
    }

    /// How often the circuit breaker opened.
    pub fn breaker_opened(&self) -> u64 {
        self.metrics
            .breaker_transitions
            .with_label_values(&[self.source.as_str(), "open"])
            .get()
    }

    /// Counts one delivery attempt by the app's response class.
    pub fn attempt(&self, class: &str) {
        self.metrics
            .attempts
            .with_label_values(&[self.source.as_str(), class])
            .inc();
    }

    /// Counts one message of `route` acked at the broker with this outcome.
    pub fn settled(&self, route: &str, outcome: &str) {
        self.metrics
            .settled
            .with_label_values(&[self.source.as_str(), outcome, route])
            .inc();
    }

    /// Messages settled so far, whatever their outcome.
    pub fn settled_count(&self) -> u64 {
        use prometheus::core::Collector;
        const FINAL: [&str; 4] = ["delivered", "duplicate", "dropped", "dead_lettered"];
        let label = |m: &prometheus::proto::Metric, name: &str| {
            m.get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_owned())
        };
        self.metrics
            .settled
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|m| label(m, labels::SOURCE).as_deref() == Some(self.source.as_str()))
            .filter(|m| label(m, labels::OUTCOME).is_some_and(|o| FINAL.contains(&o.as_str())))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Counts one dead letter of this failure class.
    pub fn dead_lettered(&self, class: &str) {
        self.metrics
            .dead_lettered
            .with_label_values(&[self.source.as_str(), class])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_with_bounded_labels() {
        let m = Metrics::new();
        let s = m.source("orders");
        s.consumed.inc();
        s.attempt("5xx");
        s.settled("default", "delivered");
        let text = m.render();
        assert!(text.contains("outrigger_messages_consumed_total{source=\"orders\"} 1"));
        assert!(
            text.contains("outrigger_delivery_attempts_total{class=\"5xx\",source=\"orders\"} 1")
        );
        assert!(text.contains(
            "outrigger_messages_settled_total{outcome=\"delivered\",route=\"default\",source=\"orders\"} 1"
        ));
    }
}
