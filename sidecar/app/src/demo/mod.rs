//! `outrigger demo`: the embedded default. An in-process broker, the embedded dedup store and a
//! built-in flaky app push a few thousand events through dedup, retries, throttling, drops and
//! the dead-letter queue, then the run is accounted for, message by message.

mod app;
mod events;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use outrigger_core::dead_letter::headers as dlq;
use outrigger_memory::{MemoryBroker, Outgoing};
use tokio_util::sync::CancellationToken;

use crate::config::{self, SourceConfig};
use crate::metrics::Metrics;
use crate::pipeline;
use crate::run::build_pipeline;
use crate::store::Store;

use events::{Entry, Expected, Kind, Publish};

/// How long the app goes away, once it accepted 70% of the events it will accept.
const OUTAGE: Duration = Duration::from_millis(500);

/// Where refunds go after the reload halfway through.
const REFUNDS_V2: &str = "/refunds-v2";

/// The embedded default policy.
pub const DEMO_POLICY: &str = include_str!("../../../../examples/demo.toml");

/// Knobs of a demo run.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    /// Distinct events to publish.
    pub events: u32,
    /// Seed of the event mix.
    pub seed: u64,
}

/// Runs the demo and prints its report. `Ok(true)` when every check held.
pub async fn run(options: DemoOptions) -> anyhow::Result<bool> {
    let mut config = config::load_str(DEMO_POLICY, "examples/demo.toml", std::iter::empty())
        .map_err(|e| anyhow::anyhow!("the embedded demo policy is invalid:\n{e}"))?;
    let queue = match &config.source {
        SourceConfig::Memory(m) => m.queue.clone(),
        _ => anyhow::bail!("the demo policy must use [source.memory]"),
    };
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    config.dedup.embedded.path = dir.path().join("dedup.redb");

    let shutdown = CancellationToken::new();
    let events = events::generate(options.events, options.seed);
    let accounts = (options.events / 150).max(4);
    let published = events::with_ledgers(&events, accounts, options.seed);
    let overtakes = events::overtakes(&published);
    let entries = u64::from(accounts) * events::ENTRIES;
    let mut expected = Expected::of(&events);
    expected.published += entries;
    expected.delivered += entries;
    let outage_after = (expected.delivered * 7 / 10) as usize;
    let app = app::start(shutdown.clone(), Some((outage_after, OUTAGE)))
        .await
        .context("starting the demo app")?;
    config.delivery.url = format!("http://{}/orders", app.addr).parse()?;

    let broker = MemoryBroker::new();
    for (n, p) in published.iter().enumerate() {
        let mut out = match p {
            Publish::Order(i) => {
                let e = &events[*i];
                Outgoing::new(Bytes::from(e.payload(n as u32 % 900 + 1)))
                    .header("ce-type", e.event_type())
            }
            Publish::Entry(entry) => Outgoing::new(Bytes::from(entry.payload()))
                .header("ce-type", Entry::TYPE)
                .key(entry.account.clone()),
        };
        out.content_type = Some("application/json".into());
        out.message_id = Some(format!("msg-{n}"));
        broker.publish(&queue, out);
    }
    let dlq_name = config.dead_letter.destination(&config.source);
    let source = broker.source(&queue, &dlq_name);

    let metrics = Metrics::new();
    let store = Store::open(&config)
        .await
        .context("opening the embedded dedup store")?;
    let source_metrics = metrics.source(&queue);
    let pipeline = Arc::new(build_pipeline(&config, Some(store), source_metrics.clone()));

    println!(
        "Outrigger demo: {} events ({} messages with the producer's duplicates) through the \
         in-process broker, the embedded dedup store and a flaky app.\n",
        events.len(),
        expected.published
    );
    let bar = ProgressBar::new(expected.published).with_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} settled  {elapsed}  {msg}")
            .expect("valid template"),
    );
    // The adaptive limit, every tick, for its median.
    let limits = Arc::new(parking_lot::Mutex::new(Vec::new()));
    // Halfway, the policy is reloaded: refunds go to the app's new handler from then on.
    let mut reloaded = config.clone();
    reloaded.routes[0].delivery.path = Some(REFUNDS_V2.to_owned());
    let ticker = {
        let bar = bar.clone();
        let m = source_metrics.clone();
        let pipeline = pipeline.clone();
        let half = expected.published / 2;
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut reload = Some(reloaded);
            loop {
                let settled = m.settled_count();
                limits.lock().push(m.concurrency_limit.get());
                if settled >= half {
                    if let Some(next) = reload.take() {
                        pipeline.routes.swap(crate::run::routes(&next));
                    }
                }
                bar.set_position(settled);
                bar.set_message(format!(
                    "{} in flight, {} at once to the app",
                    m.in_flight.get(),
                    m.concurrency_limit.get()
                ));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    pipeline::run(pipeline.clone(), source, shutdown.clone())
        .await
        .context("the demo pipeline failed")?;
    let took = started.elapsed();
    ticker.abort();
    bar.set_position(source_metrics.settled_count());
    bar.finish_and_clear();
    shutdown.cancel();

    let ledger = app.ledger.lock();
    let dead = broker.ready(&dlq_name);
    let (ready, unacked) = broker.depth(&queue);
    let accepted_twice = ledger.accepted.values().filter(|&&n| n > 1).count();
    let accepted_ids = ledger.accepted.len() as u64;
    let got = Expected {
        published: expected.published,
        delivered: source_metrics.delivered.get(),
        dropped: source_metrics.dropped.get(),
        dead_lettered: dead.len() as u64,
        duplicates: source_metrics.duplicates.get(),
    };
    let total = got.delivered + got.dropped + got.dead_lettered + got.duplicates;

    let count = |k: Kind| events.iter().filter(|e| e.kind == k).count();
    let dropped_by_route: u32 = events
        .iter()
        .filter(|e| e.kind == Kind::Legacy)
        .map(|e| e.copies)
        .sum();
    let accepted_refunds = events
        .iter()
        .filter(|e| e.refund && e.kind.is_accepted())
        .count() as u32;
    let at = |path: &str| ledger.by_path.get(path).copied().unwrap_or(0);
    let (orders, refunds, refunds_v2) = (at("/orders"), at("/refunds"), at(REFUNDS_V2));
    let in_sequence = ledger
        .sequences
        .values()
        .filter(|got| **got == (1..=events::ENTRIES).collect::<Vec<_>>())
        .count();
    let reasons = |class: &str| {
        dead.iter()
            .filter(|m| m.header_str(dlq::CLASS) == Some(class))
            .count()
    };
    println!("Where every message ended ({:.1}s)", took.as_secs_f64());
    println!("  delivered to the app once       {:>6}", got.delivered);
    println!("  skipped as duplicates           {:>6}", got.duplicates);
    println!(
        "  dead-lettered                   {:>6}   ({} rejected with 4xx, {} still failing after every attempt)",
        got.dead_lettered,
        reasons("4xx"),
        reasons("5xx")
    );
    println!(
        "  dropped                         {:>6}   ({} at the app's request, {} legacy by their route)",
        got.dropped,
        count(Kind::Unwanted),
        dropped_by_route
    );
    println!("  ─────────────────────────────────────");
    println!(
        "  total                           {:>6}   of {} published",
        total, expected.published
    );
    println!();
    println!("Along the way");
    println!(
        "  transient failures retried      {:>6}   ({} events failed once or twice before succeeding)",
        source_metrics.retried.get(),
        count(Kind::Transient)
    );
    println!(
        "  throttle responses              {:>6}   (429: slowed down, no attempt spent)",
        source_metrics.throttled.get()
    );
    println!();
    println!("Policies");
    println!("  route default  → /orders        {orders:>6} accepted");
    println!(
        "  route refunds  → /refunds       {refunds:>6} accepted, then {refunds_v2} at {REFUNDS_V2} after the reload halfway"
    );
    println!(
        "  route legacy   dropped          {dropped_by_route:>6} without delivery (the app saw {})",
        ledger.legacy_seen
    );
    println!(
        "  route ledger   → /ledger        {:>6} accepted in sequence order per account ({accounts} accounts, {overtakes} entries sent early)",
        at("/ledger")
    );
    let median_limit = {
        let mut limits = limits.lock().clone();
        limits.sort_unstable();
        limits.get(limits.len() / 2).copied().unwrap_or_default()
    };
    println!(
        "  concurrency to the app          {median_limit:>6}   at once (median): adaptive, for an app with {} workers (ceiling {})",
        app::WORKERS,
        config.backpressure.concurrency()
    );
    let opened = source_metrics.breaker_opened();
    println!(
        "  app outage                      {:>6}   ms of refused connections 70% through: the breaker opened {opened} time(s), no attempt spent",
        OUTAGE.as_millis()
    );
    println!();

    let sample = dead.iter().find_map(|m| {
        Some(format!(
            "{}: {}",
            m.header_str(dlq::KEY)?,
            m.header_str(dlq::REASON)?
        ))
    });
    let dead_keys: std::collections::HashSet<&str> =
        dead.iter().filter_map(|m| m.header_str(dlq::KEY)).collect();
    let checks = [
        (
            total == expected.published && got == expected,
            format!(
                "every message is accounted for: expected {}/{}/{}/{} delivered/duplicates/dead-lettered/dropped",
                expected.delivered, expected.duplicates, expected.dead_lettered, expected.dropped
            ),
        ),
        (
            accepted_twice == 0 && accepted_ids == expected.delivered,
            format!("the app accepted each of {accepted_ids} events exactly once ({accepted_twice} twice)"),
        ),
        (
            ledger.attempt_header_mismatches == 0,
            format!(
                "outrigger-attempt matched the app's own count ({} mismatches)",
                ledger.attempt_header_mismatches
            ),
        ),
        (
            dead.iter().all(|m| m.header(dlq::REASON).is_some()),
            format!(
                "every dead letter says why{}",
                sample.map(|s| format!(", e.g. {s}")).unwrap_or_default()
            ),
        ),
        (
            dead_keys.len() == dead.len(),
            format!(
                "each dead letter was written once ({} dead letters for {} events)",
                dead.len(),
                dead_keys.len()
            ),
        ),
        (
            ready == 0 && unacked == 0,
            format!("the source queue is empty ({ready} ready, {unacked} unacked)"),
        ),
        (
            reasons("connection") == 0,
            format!(
                "the app's outage was ridden out: the breaker opened {opened} time(s), {} dead \
                 letters for it",
                reasons("connection")
            ),
        ),
        (
            in_sequence == accounts as usize && at("/ledger") as u64 == entries,
            format!(
                "each account's ledger reached the app in sequence order ({in_sequence} of \
                 {accounts}, {overtakes} entries sent early waited for their predecessor)"
            ),
        ),
        (
            refunds + refunds_v2 == accepted_refunds
                && orders + accepted_refunds + at("/ledger") == accepted_ids as u32
                && ledger.legacy_seen == 0,
            format!(
                "each route's events reached its handler ({accepted_refunds} refunds, before and \
                 after the reload); no legacy event reached the app"
            ),
        ),
    ];
    println!("Checks");
    let mut ok = true;
    for (passed, text) in &checks {
        ok &= passed;
        println!("  {} {text}", if *passed { "✓" } else { "✗" });
    }
    Ok(ok)
}
