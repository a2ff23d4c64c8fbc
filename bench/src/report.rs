//! The results of one broker: a table for people (`table`), JSON for scripts.

mod table;

use serde_json::json;

use crate::metrics::Breakdown;
use crate::record::Summary;
use crate::sidecar::Ordering;

/// Sidecar msgs/s over its raw peer's, at least (the target).
const RATIO_TARGET: f64 = 0.9;
/// The sidecar's peak RSS, at most (the target).
const RSS_TARGET_MB: f64 = 40.0;
/// The sidecar's CPU per message in `key` ordering mode, at most (the target).
const KEY_CPU_TARGET_US: f64 = 20.0;
/// Dedup store calls per message, at most (the target): claims and completions
/// must be batched.
const STORE_CALLS_TARGET: f64 = 0.3;

/// The broker a report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// RabbitMQ.
    Amqp,
    /// Kafka.
    Kafka,
    /// Redis Streams.
    RedisStreams,
    /// NATS JetStream.
    Nats,
}

impl BrokerKind {
    /// As `--broker` spells it, and the key of the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Amqp => "amqp",
            BrokerKind::Kafka => "kafka",
            BrokerKind::RedisStreams => "redis-streams",
            BrokerKind::Nats => "nats",
        }
    }
}

/// One consumer's two phases.
#[derive(Clone, Copy, Debug)]
pub struct Side {
    /// The backlog, consumed as fast as possible.
    pub throughput: Summary,
    /// The paced stream, for latency.
    pub paced: Summary,
    /// CPU per message of the throughput run, microseconds: the bench process (raw consumer and
    /// stub app) for raw, the sidecar process for the sidecar.
    pub cpu_us: f64,
    /// The broker's CPU per message over the same run, when the bench runs the broker.
    pub broker_cpu_us: Option<f64>,
}

/// One sidecar run: a column of the report.
#[derive(Clone, Debug)]
pub struct SidecarResult {
    /// The column heading: `sidecar`, or the ordering mode.
    pub label: &'static str,
    /// The `ordering.mode` it ran under.
    pub ordering: Ordering,
    /// What it measured.
    pub side: Side,
    /// The sidecar's VmHWM, bytes.
    pub peak_rss: u64,
    /// Spawn to first delivery at the stub app, milliseconds.
    pub startup_ms: f64,
    /// CPU per message of the stub app (the bench process) during the throughput run.
    pub stub_cpu_us: f64,
    /// Where a message's time went in the throughput run.
    pub breakdown: Breakdown,
}

impl SidecarResult {
    /// Peak RSS in MB (10^6 bytes).
    pub fn rss_mb(&self) -> f64 {
        self.peak_rss as f64 / 1e6
    }
}

/// Everything measured on one broker.
#[derive(Clone, Debug)]
pub struct Report {
    /// Which broker.
    pub broker: BrokerKind,
    /// The broker and the shape of its topics, for the heading.
    pub setup: String,
    /// Messages per throughput run.
    pub messages: usize,
    /// Body size in bytes.
    pub size: u32,
    /// Prefetch (amqp) or in-flight limit of every consumer.
    pub prefetch: u16,
    /// Messages per latency run.
    pub paced_messages: usize,
    /// Publish rate of the latency runs.
    pub rate: f64,
    /// Kafka: partitions per topic and distinct keys.
    pub partitions_keys: Option<(u16, u32)>,
    /// The raw consumer, records in any order.
    pub raw: Side,
    /// Kafka: the raw consumer that keeps each partition in order, one record in flight per
    /// partition; the peer of the sidecar's `partition` mode.
    pub raw_ordered: Option<Side>,
    /// The sidecar, once per policy.
    pub sidecars: Vec<SidecarResult>,
}

impl Report {
    /// Whether `sidecar` is held against the raw ordered consumer rather than the raw one: it
    /// kept each partition in order, and the ordered peer ran.
    pub fn against_ordered(&self, sidecar: &SidecarResult) -> bool {
        sidecar.ordering == Ordering::Partition && self.raw_ordered.is_some()
    }

    /// The raw consumer `sidecar` is compared with.
    fn peer(&self, sidecar: &SidecarResult) -> &Side {
        match &self.raw_ordered {
            Some(ordered) if self.against_ordered(sidecar) => ordered,
            _ => &self.raw,
        }
    }

    /// Sidecar msgs/s over its raw peer's msgs/s.
    pub fn ratio(&self, sidecar: &SidecarResult) -> f64 {
        sidecar.side.throughput.rate / self.peer(sidecar).throughput.rate
    }

    /// The stub app's CPU per message, averaged over the sidecar runs: what the bench process
    /// spends besides the raw consumer itself.
    fn stub_cpu_us(&self) -> f64 {
        let runs = self.sidecars.len().max(1) as f64;
        self.sidecars.iter().map(|s| s.stub_cpu_us).sum::<f64>() / runs
    }

    /// The same figures as JSON.
    pub fn json(&self) -> serde_json::Value {
        let side = |s: &Side, stub_cpu_us: f64| {
            json!({
                "msgs_per_sec": s.throughput.rate,
                "p50_ms": s.paced.p50_ms,
                "p99_ms": s.paced.p99_ms,
                "redeliveries": s.throughput.repeats + s.paced.repeats,
                "cpu_us_per_msg": s.cpu_us - stub_cpu_us,
                "broker_cpu_us_per_msg": s.broker_cpu_us,
            })
        };
        let sidecars: serde_json::Map<_, _> = self
            .sidecars
            .iter()
            .map(|s| {
                let mut value = side(&s.side, 0.0);
                value["ordering"] = json!(s.ordering.as_str());
                value["ratio"] = json!(self.ratio(s));
                value["ratio_to"] = json!(if self.against_ordered(s) {
                    "raw_ordered"
                } else {
                    "raw"
                });
                value["peak_rss_mb"] = json!(s.rss_mb());
                value["startup_ms"] = json!(s.startup_ms);
                value["stub_cpu_us_per_msg"] = json!(s.stub_cpu_us);
                value["breakdown"] = s.breakdown.json();
                (s.label.to_owned(), value)
            })
            .collect();
        let mut report = json!({
            "setup": self.setup,
            "messages": self.messages,
            "size": self.size,
            "prefetch": self.prefetch,
            "paced_messages": self.paced_messages,
            "rate": self.rate,
            "raw": side(&self.raw, self.stub_cpu_us()),
            "sidecars": sidecars,
        });
        if let Some(ordered) = &self.raw_ordered {
            report["raw_ordered"] = side(ordered, self.stub_cpu_us());
        }
        if let Some((partitions, keys)) = self.partitions_keys {
            report["partitions"] = json!(partitions);
            report["keys"] = json!(keys);
        }
        report
    }
}
