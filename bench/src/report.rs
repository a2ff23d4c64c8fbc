//! The results: a table for people, JSON for scripts.

use std::fmt::Write;

use serde_json::json;

use crate::record::Summary;

/// Targets from the issue.
const RATIO_TARGET: f64 = 0.9;
const RSS_TARGET_MB: f64 = 40.0;

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
}

/// Everything measured in one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Messages per throughput run.
    pub messages: usize,
    /// Body size in bytes.
    pub size: u32,
    /// Prefetch of both consumers.
    pub prefetch: u16,
    /// Messages per latency run.
    pub paced_messages: usize,
    /// Publish rate of the latency runs.
    pub rate: f64,
    /// The raw consumer.
    pub raw: Side,
    /// The sidecar.
    pub sidecar: Side,
    /// The sidecar's VmHWM, bytes.
    pub sidecar_peak_rss: u64,
    /// Spawn to first delivery at the stub app, milliseconds.
    pub sidecar_startup_ms: f64,
    /// CPU per message of the stub app (the bench process) during the sidecar's throughput run.
    pub stub_cpu_us: f64,
}

impl Report {
    /// Sidecar msgs/s over raw msgs/s.
    pub fn ratio(&self) -> f64 {
        self.sidecar.throughput.rate / self.raw.throughput.rate
    }

    /// Peak RSS in MB (10^6 bytes).
    pub fn rss_mb(&self) -> f64 {
        self.sidecar_peak_rss as f64 / 1e6
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let (raw, side) = (&self.raw, &self.sidecar);
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nOutrigger bench: {} messages x {} B, prefetch {}; latency: {} messages at {} msg/s",
            self.messages, self.size, self.prefetch, self.paced_messages, self.rate
        );
        let _ = writeln!(out, "{:<24}{:>12}{:>12}", "", "raw", "sidecar");
        let _ = writeln!(
            out,
            "{:<24}{:>12.0}{:>12.0}   ratio {:.3} (target >= {RATIO_TARGET}: {})",
            "throughput (msg/s)",
            raw.throughput.rate,
            side.throughput.rate,
            self.ratio(),
            verdict(self.ratio() >= RATIO_TARGET)
        );
        for (label, pick) in [
            (
                "latency p50 (ms)",
                (|s: &Summary| s.p50_ms) as fn(&Summary) -> f64,
            ),
            ("latency p99 (ms)", |s: &Summary| s.p99_ms),
        ] {
            let _ = writeln!(
                out,
                "{label:<24}{:>12.2}{:>12.2}",
                pick(&raw.paced),
                pick(&side.paced)
            );
        }
        let _ = writeln!(
            out,
            "{:<24}{:>24.1}   (VmHWM; target <= {RSS_TARGET_MB} MB: {})",
            "sidecar peak RSS (MB)",
            self.rss_mb(),
            verdict(self.rss_mb() <= RSS_TARGET_MB)
        );
        let _ = writeln!(
            out,
            "{:<24}{:>12.0}{:>12.0}   (raw minus the stub app's {:.0} us; sidecar process alone)",
            "CPU per message (us)",
            raw.cpu_us - self.stub_cpu_us,
            side.cpu_us,
            self.stub_cpu_us
        );
        let _ = writeln!(
            out,
            "throughput: first to last arrival at the stub app; latency: publish to arrival.\n\
             sidecar start-up (spawn to first delivery): {:.0} ms; redeliveries seen: raw {}, sidecar {}",
            self.sidecar_startup_ms,
            raw.throughput.repeats + raw.paced.repeats,
            side.throughput.repeats + side.paced.repeats
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
            })
        };
        json!({
            "messages": self.messages,
            "size": self.size,
            "prefetch": self.prefetch,
            "paced_messages": self.paced_messages,
            "rate": self.rate,
            "raw": side(&self.raw, self.stub_cpu_us),
            "sidecar": side(&self.sidecar, 0.0),
            "ratio": self.ratio(),
            "sidecar_peak_rss_mb": self.rss_mb(),
            "sidecar_startup_ms": self.sidecar_startup_ms,
            "stub_cpu_us_per_msg": self.stub_cpu_us,
        })
    }
}
