//! The report as a table for people: a column per raw consumer, then one per sidecar run, and
//! after a row the target the issue holds it to, with each run's verdict.

use std::fmt::Write;

use super::{
    Report, Side, SidecarResult, KEY_CPU_TARGET_US, RATIO_TARGET, RSS_TARGET_MB, STORE_CALLS_TARGET,
};
use crate::metrics::Breakdown;
use crate::record::Summary;
use crate::sidecar::Ordering;

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut table = Table {
            report: self,
            out: String::new(),
        };
        table.heading();
        table.throughput();
        table.latency();
        table.resources();
        table.breakdown();
        table.redeliveries();
        table.out
    }

    /// The raw consumers' columns: heading and figures.
    fn raw_columns(&self) -> Vec<(&'static str, &Side)> {
        let ordered = self.raw_ordered.as_ref().map(|side| ("raw ordered", side));
        std::iter::once(("raw", &self.raw)).chain(ordered).collect()
    }

    /// A cell per raw consumer.
    fn raw_cells(&self, cell: impl Fn(&Side) -> String) -> Vec<String> {
        self.raw_columns()
            .into_iter()
            .map(|(_, s)| cell(s))
            .collect()
    }

    /// Empty cells under the raw consumers, for figures only the sidecar has.
    fn no_raw_cells(&self) -> Vec<String> {
        vec![String::new(); self.raw_columns().len()]
    }

    /// A cell per sidecar run.
    fn sidecar_cells(&self, cell: impl Fn(&SidecarResult) -> String) -> Vec<String> {
        self.sidecars.iter().map(cell).collect()
    }

    /// `   (<target>: <verdicts>)`: whether each sidecar run that `held` picks meets the target
    /// (`ok`), named by its column unless it is the only run; `   (<target>)` if none is held.
    fn target(
        &self,
        target: &str,
        held: impl Fn(&SidecarResult) -> bool,
        ok: impl Fn(&SidecarResult) -> bool,
    ) -> String {
        let verdict = |s: &SidecarResult| if ok(s) { "met" } else { "NOT met" };
        let held: Vec<&SidecarResult> = self.sidecars.iter().filter(|s| held(s)).collect();
        let verdicts = match (self.sidecars.len(), held.as_slice()) {
            (_, []) => return format!("   ({target})"),
            (1, [only]) => verdict(only).to_owned(),
            (_, many) => many
                .iter()
                .map(|s| format!("{} {}", s.label, verdict(s)))
                .collect::<Vec<_>>()
                .join(", "),
        };
        format!("   ({target}: {verdicts})")
    }
}

/// Width of the row labels.
const LABEL_WIDTH: usize = 24;
/// Width of each column.
const COLUMN_WIDTH: usize = 12;

/// A table being written, a group of rows at a time.
struct Table<'a> {
    report: &'a Report,
    out: String,
}

impl Table<'_> {
    /// One row: `raws` under the raw consumers, `sidecars` under the sidecar runs, then `note`.
    fn row(&mut self, label: &str, raws: Vec<String>, sidecars: Vec<String>, note: &str) {
        let _ = write!(self.out, "{label:<LABEL_WIDTH$}");
        // A space before each cell, so a heading as wide as the column still stands apart.
        for cell in raws.iter().chain(&sidecars) {
            let _ = write!(self.out, " {cell:>0$}", COLUMN_WIDTH - 1);
        }
        let _ = writeln!(self.out, "{note}");
    }

    /// What was run, and the column headings.
    fn heading(&mut self) {
        let r = self.report;
        let _ = writeln!(
            self.out,
            "\nOutrigger bench, {}: {} messages x {} B, in flight {}; latency: {} messages at {} msg/s",
            r.setup, r.messages, r.size, r.prefetch, r.paced_messages, r.rate
        );
        let raws = r
            .raw_columns()
            .into_iter()
            .map(|(heading, _)| heading.to_owned())
            .collect();
        self.row("", raws, r.sidecar_cells(|s| s.label.to_owned()), "");
    }

    /// Messages per second, and each sidecar run's ratio to its raw peer.
    fn throughput(&mut self) {
        let r = self.report;
        self.row(
            "throughput (msg/s)",
            r.raw_cells(|s| format!("{:.0}", s.throughput.rate)),
            r.sidecar_cells(|s| format!("{:.0}", s.side.throughput.rate)),
            "",
        );
        self.ratios("ratio to raw", false);
        if r.raw_ordered.is_some() {
            self.ratios("ratio to raw ordered", true);
        }
    }

    /// The ratios of the sidecar runs held against the raw ordered consumer (`ordered`) or
    /// against the raw one; the other runs' cells stay empty.
    fn ratios(&mut self, label: &str, ordered: bool) {
        let r = self.report;
        let held = |s: &SidecarResult| r.against_ordered(s) == ordered;
        let cells = r.sidecar_cells(|s| {
            if held(s) {
                format!("{:.3}", r.ratio(s))
            } else {
                String::new()
            }
        });
        let note = r.target(&format!("target >= {RATIO_TARGET}"), held, |s| {
            r.ratio(s) >= RATIO_TARGET
        });
        self.row(label, r.no_raw_cells(), cells, &note);
    }

    /// Publish to arrival in the paced runs.
    fn latency(&mut self) {
        let r = self.report;
        for (label, pick) in [
            (
                "latency p50 (ms)",
                (|s: &Summary| s.p50_ms) as fn(&Summary) -> f64,
            ),
            ("latency p99 (ms)", |s: &Summary| s.p99_ms),
        ] {
            self.row(
                label,
                r.raw_cells(|s| format!("{:.2}", pick(&s.paced))),
                r.sidecar_cells(|s| format!("{:.2}", pick(&s.side.paced))),
                "",
            );
        }
    }

    /// Memory, CPU and start-up.
    fn resources(&mut self) {
        let r = self.report;
        let rss_note = r.target(
            &format!("VmHWM; target <= {RSS_TARGET_MB} MB"),
            |_| true,
            |s| s.rss_mb() <= RSS_TARGET_MB,
        );
        self.row(
            "sidecar peak RSS (MB)",
            r.no_raw_cells(),
            r.sidecar_cells(|s| format!("{:.1}", s.rss_mb())),
            &rss_note,
        );
        let stub = r.stub_cpu_us();
        let cpu_note = r.target(
            &format!(
                "raw minus the stub app's {stub:.0} us; sidecar process alone; \
                 target <= {KEY_CPU_TARGET_US} us in key mode"
            ),
            |s| s.ordering == Ordering::Key,
            |s| s.side.cpu_us <= KEY_CPU_TARGET_US,
        );
        self.row(
            "CPU per message (us)",
            // Both are estimates from one process; noise may put raw below zero.
            r.raw_cells(|s| format!("{:.0}", (s.cpu_us - stub).max(0.0))),
            r.sidecar_cells(|s| format!("{:.0}", s.side.cpu_us)),
            &cpu_note,
        );
        if r.raw.broker_cpu_us.is_some() {
            let cpu = |s: &Side| format!("{:.0}", s.broker_cpu_us.unwrap_or(f64::NAN));
            self.row(
                "broker CPU per msg (us)",
                r.raw_cells(cpu),
                r.sidecar_cells(|s| cpu(&s.side)),
                "   (the broker process, same runs)",
            );
        }
        self.row(
            "start-up (ms)",
            r.no_raw_cells(),
            r.sidecar_cells(|s| format!("{:.0}", s.startup_ms)),
            "   (spawn to first delivery)",
        );
    }

    /// Where a message's time went in each sidecar throughput run, and the store's round trips.
    fn breakdown(&mut self) {
        let r = self.report;
        let cell = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.3}"));
        for (i, stage) in Breakdown::STAGES.iter().enumerate() {
            self.row(
                &format!("{stage} (ms, mean)"),
                r.no_raw_cells(),
                r.sidecar_cells(|s| cell(s.breakdown.means_ms()[i])),
                "",
            );
        }
        let calls = |s: &SidecarResult| s.breakdown.store_calls_per_message;
        let note = r.target(
            &format!("target <= {STORE_CALLS_TARGET}"),
            |_| true,
            |s| calls(s).is_some_and(|c| c <= STORE_CALLS_TARGET),
        );
        self.row(
            "store calls per message",
            r.no_raw_cells(),
            r.sidecar_cells(|s| cell(calls(s))),
            &note,
        );
    }

    /// Messages the stub app saw more than once, and what the figures mean.
    fn redeliveries(&mut self) {
        let r = self.report;
        let repeats = |s: &Side| (s.throughput.repeats + s.paced.repeats).to_string();
        self.row(
            "redeliveries seen",
            r.raw_cells(repeats),
            r.sidecar_cells(|s| repeats(&s.side)),
            "",
        );
        let _ = writeln!(
            self.out,
            "throughput: first to last arrival at the stub app; latency: publish to arrival;\n\
             stages: means over the throughput run, from the sidecar's /metrics."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BrokerKind, SidecarResult};

    fn side(rate: f64, cpu_us: f64) -> Side {
        Side {
            throughput: Summary {
                rate,
                ..Summary::default()
            },
            paced: Summary::default(),
            cpu_us,
            broker_cpu_us: None,
        }
    }

    fn sidecar(ordering: Ordering, rate: f64, cpu_us: f64, calls: f64) -> SidecarResult {
        SidecarResult {
            label: ordering.as_str(),
            ordering,
            side: side(rate, cpu_us),
            peak_rss: 30_000_000,
            startup_ms: 200.0,
            stub_cpu_us: 0.0,
            breakdown: Breakdown {
                claim_ms: Some(0.5),
                store_calls_per_message: Some(calls),
                ..Breakdown::default()
            },
        }
    }

    fn kafka_report() -> Report {
        Report {
            broker: BrokerKind::Kafka,
            setup: "Kafka".to_owned(),
            messages: 100_000,
            size: 1024,
            prefetch: 64,
            paced_messages: 2_000,
            rate: 1_000.0,
            partitions_keys: Some((4, 200)),
            raw: side(10_000.0, 10.0),
            raw_ordered: Some(side(1_000.0, 10.0)),
            sidecars: vec![
                sidecar(Ordering::Partition, 950.0, 30.0, 1.0),
                sidecar(Ordering::Key, 5_000.0, 15.0, 0.2),
            ],
        }
    }

    fn line<'t>(table: &'t str, label: &str) -> &'t str {
        table
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?} in\n{table}"))
    }

    #[test]
    fn partition_mode_is_held_against_the_raw_ordered_consumer() {
        let report = kafka_report();
        let table = report.table();
        assert!(line(&table, "                        ").contains("raw ordered"));
        assert!(line(&table, "ratio to raw ordered").contains("0.950"));
        assert!(line(&table, "ratio to raw ordered").ends_with("(target >= 0.9: partition met)"));
        let unordered = line(&table, "ratio to raw  ");
        assert!(unordered.contains("0.500") && !unordered.contains("0.095"));
        assert!(unordered.ends_with("(target >= 0.9: key NOT met)"));
        assert_eq!(
            report.json()["sidecars"]["partition"]["ratio_to"],
            "raw_ordered"
        );
    }

    #[test]
    fn rows_print_the_issue_targets() {
        let table = kafka_report().table();
        assert!(line(&table, "sidecar peak RSS").contains("target <= 40 MB: partition met"));
        assert!(line(&table, "CPU per message").ends_with("target <= 20 us in key mode: key met)"));
        assert!(line(&table, "claim (ms, mean)").contains("0.500"));
        assert!(line(&table, "lane wait (ms, mean)").contains('-'));
        assert!(line(&table, "store calls per message")
            .ends_with("(target <= 0.3: partition NOT met, key met)"));
    }
}
