//! The results of one broker: a table for people, JSON for scripts.

use std::fmt::Write;

use serde_json::json;

use crate::record::Summary;

/// Targets from the issue.
const RATIO_TARGET: f64 = 0.9;
const RSS_TARGET_MB: f64 = 40.0;

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
    /// The column heading: `sidecar`, or the Kafka ordering mode.
    pub label: &'static str,
    /// What it measured.
    pub side: Side,
    /// The sidecar's VmHWM, bytes.
    pub peak_rss: u64,
    /// Spawn to first delivery at the stub app, milliseconds.
    pub startup_ms: f64,
    /// CPU per message of the stub app (the bench process) during the throughput run.
    pub stub_cpu_us: f64,
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
    /// The raw consumer.
    pub raw: Side,
    /// The sidecar, once per policy.
    pub sidecars: Vec<SidecarResult>,
}

impl Report {
    /// Sidecar msgs/s over raw msgs/s.
    pub fn ratio(&self, sidecar: &SidecarResult) -> f64 {
        sidecar.side.throughput.rate / self.raw.throughput.rate
    }

    /// The stub app's CPU per message, averaged over the sidecar runs: what the bench process
    /// spends besides the raw consumer itself.
    fn stub_cpu_us(&self) -> f64 {
        let runs = self.sidecars.len().max(1) as f64;
        self.sidecars.iter().map(|s| s.stub_cpu_us).sum::<f64>() / runs
    }

    /// The human-readable table: a column for raw, one for each sidecar run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nOutrigger bench, {}: {} messages x {} B, in flight {}; latency: {} messages at {} msg/s",
            self.setup, self.messages, self.size, self.prefetch, self.paced_messages, self.rate
        );
        let row = |out: &mut String, label: &str, raw: String, cells: Vec<String>, note: String| {
            let _ = write!(out, "{label:<24}{raw:>12}");
            for cell in cells {
                let _ = write!(out, "{cell:>12}");
            }
            let _ = writeln!(out, "{note}");
        };
        let each = |f: &dyn Fn(&SidecarResult) -> String| self.sidecars.iter().map(f).collect();
        let verdicts = |ok: &dyn Fn(&SidecarResult) -> bool| {
            let verdict = |s: &SidecarResult| if ok(s) { "met" } else { "NOT met" };
            match self.sidecars.as_slice() {
                [one] => verdict(one).to_owned(),
                many => many
                    .iter()
                    .map(|s| format!("{} {}", s.label, verdict(s)))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        };

        row(
            &mut out,
            "",
            "raw".into(),
            each(&|s| s.label.into()),
            String::new(),
        );
        row(
            &mut out,
            "throughput (msg/s)",
            format!("{:.0}", self.raw.throughput.rate),
            each(&|s| format!("{:.0}", s.side.throughput.rate)),
            String::new(),
        );
        row(
            &mut out,
            "ratio to raw",
            String::new(),
            each(&|s| format!("{:.3}", self.ratio(s))),
            format!(
                "   (target >= {RATIO_TARGET}: {})",
                verdicts(&|s| self.ratio(s) >= RATIO_TARGET)
            ),
        );
        for (label, pick) in [
            (
                "latency p50 (ms)",
                (|s: &Summary| s.p50_ms) as fn(&Summary) -> f64,
            ),
            ("latency p99 (ms)", |s: &Summary| s.p99_ms),
        ] {
            row(
                &mut out,
                label,
                format!("{:.2}", pick(&self.raw.paced)),
                each(&|s| format!("{:.2}", pick(&s.side.paced))),
                String::new(),
            );
        }
        row(
            &mut out,
            "sidecar peak RSS (MB)",
            String::new(),
            each(&|s| format!("{:.1}", s.rss_mb())),
            format!(
                "   (VmHWM; target <= {RSS_TARGET_MB} MB: {})",
                verdicts(&|s| s.rss_mb() <= RSS_TARGET_MB)
            ),
        );
        row(
            &mut out,
            "CPU per message (us)",
            // Both are estimates from one process; noise may put raw below zero.
            format!("{:.0}", (self.raw.cpu_us - self.stub_cpu_us()).max(0.0)),
            each(&|s| format!("{:.0}", s.side.cpu_us)),
            format!(
                "   (raw minus the stub app's {:.0} us; sidecar process alone)",
                self.stub_cpu_us()
            ),
        );
        if let Some(raw) = self.raw.broker_cpu_us {
            let cpu = |s: &Side| format!("{:.0}", s.broker_cpu_us.unwrap_or(f64::NAN));
            row(
                &mut out,
                "broker CPU per msg (us)",
                format!("{raw:.0}"),
                each(&|s| cpu(&s.side)),
                "   (the broker process, same runs)".into(),
            );
        }
        row(
            &mut out,
            "start-up (ms)",
            String::new(),
            each(&|s| format!("{:.0}", s.startup_ms)),
            "   (spawn to first delivery)".into(),
        );
        let repeats = |s: &Side| s.throughput.repeats + s.paced.repeats;
        row(
            &mut out,
            "redeliveries seen",
            repeats(&self.raw).to_string(),
            each(&|s| repeats(&s.side).to_string()),
            String::new(),
        );
        let _ = writeln!(
            out,
            "throughput: first to last arrival at the stub app; latency: publish to arrival."
        );
        out
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
                value["ratio"] = json!(self.ratio(s));
                value["peak_rss_mb"] = json!(s.rss_mb());
                value["startup_ms"] = json!(s.startup_ms);
                value["stub_cpu_us_per_msg"] = json!(s.stub_cpu_us);
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
        if let Some((partitions, keys)) = self.partitions_keys {
            report["partitions"] = json!(partitions);
            report["keys"] = json!(keys);
        }
        report
    }
}
