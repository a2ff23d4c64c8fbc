//! The counts at the end, from the app's ledger and the dead-letter queue alone, and the
//! evidence behind every count that should be zero.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::broker::DeadRecord;
use super::faults::{Fault, FaultLog};
use super::ledger::Request;
use super::workload::Kind;

/// How many examples of each non-zero count the report prints.
const EXAMPLES: usize = 10;
/// How long after a sidecar died a request it had written may still reach the app's handler
/// (it sat in the socket): the app applies it after the death, and it is still the window.
const IN_THE_SOCKET: Duration = Duration::from_millis(200);

/// What the run produced, to be counted.
pub struct Outcome<'a> {
    /// Broker name.
    pub broker: &'static str,
    /// Every key the producer had.
    pub keys: &'a [String],
    /// Messages the broker confirmed.
    pub published: usize,
    /// Every request the app answered.
    pub requests: &'a [Request],
    /// Every dead letter read back.
    pub dead: &'a [DeadRecord],
    /// The fault log.
    pub faults: &'a FaultLog,
    /// Sidecars started (the first one included).
    pub sidecars: u32,
    /// Messages left in the source after the final stop.
    pub left_in_source: u64,
    /// How the last sidecar ended on SIGTERM.
    pub exit: String,
    /// How long the faults ran.
    pub chaos: Duration,
    /// How long the drain took.
    pub drain: Duration,
    /// How the drain ended: settled, or stalled.
    pub drained: String,
}

/// The counts. All but `applied_once` and `twice_in_window` should be zero.
#[derive(Default)]
pub struct Counts {
    /// Keys applied exactly once.
    pub applied_once: usize,
    /// Keys neither applied nor in the dead-letter queue.
    pub lost: usize,
    /// Keys applied more than once, each repeat after a sidecar death and under a higher fence.
    pub twice_in_window: usize,
    /// Keys applied more than once otherwise.
    pub twice_outside: usize,
    /// Poison keys with no dead letter.
    pub poison_missing: usize,
    /// Healthy or transient keys with a dead letter.
    pub healthy_in_dlq: usize,
    /// Keys with more than one dead letter.
    pub dead_twice: usize,
    /// Of those, keys with one published copy dead-lettered more than once.
    pub dead_twice_same_copy: usize,
    /// Of those, keys whose every repeat came after a sidecar died or its broker connection
    /// broke, under a higher fence: the window between the broker storing a dead letter and
    /// the store recording it (its confirm lost with the connection, or the sidecar dead before
    /// the record), which RabbitMQ and Kafka cannot close (see the README's guarantees).
    pub dead_twice_in_window: usize,
    /// Dead letters without an `outrigger-dlq-key`.
    pub dead_without_key: usize,
}

/// The counts and the printed report.
pub struct Report {
    /// The counts.
    pub counts: Counts,
    /// The table and the evidence.
    pub text: String,
}

/// Counts `outcome`.
pub fn count(outcome: &Outcome<'_>) -> Report {
    let mut applications: HashMap<&str, Vec<&Request>> = HashMap::new();
    for r in outcome.requests.iter().filter(|r| r.applied()) {
        applications.entry(&r.key).or_default().push(r);
    }
    let mut dead: HashMap<&str, Vec<&DeadRecord>> = HashMap::new();
    let mut c = Counts::default();
    for d in outcome.dead {
        match &d.key {
            Some(key) => dead.entry(key).or_default().push(d),
            None => c.dead_without_key += 1,
        }
    }
    let times = |which: fn(&Fault) -> bool| -> Vec<Instant> {
        outcome
            .faults
            .entries()
            .into_iter()
            .filter(|(_, f)| which(f))
            .map(|(at, _)| at)
            .collect()
    };
    let deaths = times(Fault::is_sidecar_death);
    let dead_letter_windows = times(Fault::opens_dead_letter_window);

    let mut evidence: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut note = |what: &'static str, line: String| {
        let list = evidence.entry(what).or_default();
        if list.len() < EXAMPLES {
            list.push(line);
        }
    };
    let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
    for key in outcome.keys {
        let kind = Kind::of(key);
        *kinds.entry(kind).or_default() += 1;
        let applied = applications
            .get(key.as_str())
            .map_or(&[][..], Vec::as_slice);
        let dead_letters = dead.get(key.as_str()).map_or(&[][..], Vec::as_slice);
        match applied.len() {
            0 if dead_letters.is_empty() => {
                c.lost += 1;
                note("lost", describe(outcome, key, applied, dead_letters));
            }
            0 => {}
            1 => c.applied_once += 1,
            _ if in_window(applied, &deaths) => {
                c.twice_in_window += 1;
                note(
                    "applied twice in the crash window",
                    describe(outcome, key, applied, dead_letters),
                );
            }
            _ => {
                c.twice_outside += 1;
                note(
                    "applied twice outside the window",
                    describe(outcome, key, applied, dead_letters),
                );
            }
        }
        if kind == Kind::Poison && dead_letters.is_empty() {
            c.poison_missing += 1;
            note(
                "poison missing from the DLQ",
                describe(outcome, key, applied, dead_letters),
            );
        }
        if kind != Kind::Poison && !dead_letters.is_empty() {
            c.healthy_in_dlq += 1;
            note(
                "healthy keys in the DLQ",
                describe(outcome, key, applied, dead_letters),
            );
        }
        if dead_letters.len() > 1 {
            c.dead_twice += 1;
            // The refusals each dead letter came from, by its attempt number (a refusal whose
            // dead letter never got written, its connection cut, has none).
            let written: Vec<&str> = dead_letters.iter().map(|d| d.attempts.as_str()).collect();
            let refused: Vec<&Request> = outcome
                .requests
                .iter()
                .filter(|r| r.key == *key && !r.applied())
                .filter(|r| written.contains(&r.attempt.to_string().as_str()))
                .collect();
            if refused.len() == dead_letters.len() && in_window(&refused, &dead_letter_windows) {
                c.dead_twice_in_window += 1;
            }
            let mut copies: Vec<Option<u32>> = dead_letters.iter().map(|d| d.copy).collect();
            copies.sort();
            let before = copies.len();
            copies.dedup();
            if copies.len() < before {
                c.dead_twice_same_copy += 1;
            }
            note(
                "dead letters written twice",
                describe(outcome, key, applied, dead_letters),
            );
        }
    }
    let text = table(outcome, &c, &kinds, &evidence);
    Report { counts: c, text }
}

/// A key's repeats are all in the documented window: each came after a sidecar died (after
/// the application before it, or [`IN_THE_SOCKET`] before it) and under a higher fence than
/// that application.
fn in_window(applied: &[&Request], deaths: &[Instant]) -> bool {
    applied.windows(2).all(|w| {
        let (first, again) = (w[0], w[1]);
        let fenced = matches!((first.fence, again.fence), (Some(a), Some(b)) if b > a);
        let after = first.at.checked_sub(IN_THE_SOCKET).unwrap_or(first.at);
        fenced && deaths.iter().any(|d| after < *d && *d < again.at)
    })
}

/// One key's story: its requests and dead letters, and the faults around them.
fn describe(o: &Outcome<'_>, key: &str, applied: &[&Request], dead: &[&DeadRecord]) -> String {
    let mut s = format!(
        "{key}: applied {}x, {} dead letter(s)",
        applied.len(),
        dead.len()
    );
    let requests: Vec<&Request> = o.requests.iter().filter(|r| r.key == key).collect();
    for r in &requests {
        let _ = write!(
            s,
            "\n      t={:.3}s status={} fence={:?} attempt={} copy={:?}",
            o.faults.secs(r.at),
            r.status,
            r.fence,
            r.attempt,
            r.copy
        );
    }
    for d in dead {
        let _ = write!(
            s,
            "\n      dead letter: copy={:?} class={} attempts={} source={}",
            d.copy, d.class, d.attempts, d.source
        );
    }
    if let (Some(first), Some(last)) = (requests.first(), requests.last()) {
        let from = first
            .at
            .checked_sub(Duration::from_secs(2))
            .unwrap_or(first.at);
        let to = last.at + Duration::from_secs(2);
        for (at, fault) in o.faults.entries() {
            if from <= at && at <= to {
                let _ = write!(s, "\n      t={:.3}s {fault}", o.faults.secs(at));
            }
        }
    }
    s
}

fn table(
    o: &Outcome<'_>,
    c: &Counts,
    kinds: &BTreeMap<Kind, usize>,
    evidence: &BTreeMap<&str, Vec<String>>,
) -> String {
    let kind = |k| kinds.get(&k).copied().unwrap_or(0);
    let faults = |what: fn(&Fault) -> bool| o.faults.count(what);
    let mut rows: Vec<(String, String)> = vec![
        (
            "published (messages, duplicates included)".into(),
            o.published.to_string(),
        ),
        (
            "distinct keys (healthy / transient / poison)".into(),
            format!(
                "{} ({} / {} / {})",
                o.keys.len(),
                kind(Kind::Healthy),
                kind(Kind::Transient),
                kind(Kind::Poison)
            ),
        ),
        (
            "requests the app answered".into(),
            o.requests.len().to_string(),
        ),
        ("dead letters in the DLQ".into(), o.dead.len().to_string()),
        ("applied once".into(), c.applied_once.to_string()),
        (
            "keys lost (neither applied nor in the DLQ)".into(),
            c.lost.to_string(),
        ),
        (
            "applied twice in the crash window".into(),
            c.twice_in_window.to_string(),
        ),
        (
            "applied twice outside it".into(),
            c.twice_outside.to_string(),
        ),
        (
            "poison missing from the DLQ".into(),
            c.poison_missing.to_string(),
        ),
        (
            "healthy keys in the DLQ".into(),
            c.healthy_in_dlq.to_string(),
        ),
        (
            "dead letters written twice (keys; same copy; in the crash window)".into(),
            format!(
                "{} ({}; {})",
                c.dead_twice, c.dead_twice_same_copy, c.dead_twice_in_window
            ),
        ),
        (
            "dead letters without a key".into(),
            c.dead_without_key.to_string(),
        ),
        (
            "left in the source at the end".into(),
            o.left_in_source.to_string(),
        ),
        (
            "faults: sidecar SIGKILLs".into(),
            faults(|f| matches!(f, Fault::SidecarKilled(_))).to_string(),
        ),
        (
            "faults: sidecar exits on its own".into(),
            faults(|f| matches!(f, Fault::SidecarExited(..))).to_string(),
        ),
        (
            "faults: dedup Redis SIGKILLs".into(),
            faults(|f| *f == Fault::StoreKilled).to_string(),
        ),
        (
            "faults: broker connection cuts".into(),
            faults(|f| *f == Fault::BrokerCut).to_string(),
        ),
        (
            "faults: app outages (connections refused)".into(),
            faults(|f| *f == Fault::AppDown).to_string(),
        ),
        ("sidecars started".into(), o.sidecars.to_string()),
        ("drain".into(), o.drained.clone()),
        ("last sidecar on SIGTERM".into(), o.exit.clone()),
        (
            "time: faults, then drain".into(),
            format!(
                "{:.0}s, {:.0}s",
                o.chaos.as_secs_f64(),
                o.drain.as_secs_f64()
            ),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = format!("chaos report: {}\n", o.broker);
    for (k, v) in rows.drain(..) {
        let _ = writeln!(s, "  {k:<width$}  {v}");
    }
    for (what, lines) in evidence {
        let _ = writeln!(s, "{what} (first {EXAMPLES}):");
        for line in lines {
            let _ = writeln!(s, "  {line}");
        }
    }
    s
}
