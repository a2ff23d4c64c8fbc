//! One chaos run, whatever the broker: start everything, publish while the faults run, stop
//! the faults, drain, count, print, assert.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outrigger_testkit::app_port::AppPort;
use outrigger_testkit::redis_server::RedisServer;

use super::broker::{ChaosBroker, DeadRecord};
use super::faults::{Chaos, FaultLog, Fleet, Plan, Schedule};
use super::ledger::Ledger;
use super::report::{self, Outcome};
use super::workload::{Event, Workload};
use crate::support::{unique, Policy};

/// A CI run publishes for about this long, so that every fault comes a few times meanwhile.
const CI_PUBLISHING: Duration = Duration::from_secs(60);
/// The publishing rate of a larger run (messages per second), unless set.
const MAX_RATE: usize = 400;
/// The faults go on until this share of the keys has an outcome; the rest drains in peace.
const FAULTY_SHARE: f64 = 0.95;
/// How often the producer sends a batch.
const TICK: Duration = Duration::from_millis(50);
/// A run where nothing moves for this long has stopped: it ends and is counted.
const STALL: Duration = Duration::from_secs(60);

/// How big a run is: `OUTRIGGER_CHAOS_MESSAGES` keys (default: the broker's
/// [`ChaosBroker::CI_KEYS`]) published at `OUTRIGGER_CHAOS_RATE` messages a second, from
/// `OUTRIGGER_CHAOS_SEED`.
struct Size {
    keys: usize,
    rate: usize,
    seed: u64,
}

impl Size {
    fn from_env(ci_keys: usize) -> Self {
        let var = |name: &str| {
            std::env::var(name).ok().map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|e| panic!("{name}={v}: {e}"))
            })
        };
        let keys = var("OUTRIGGER_CHAOS_MESSAGES").map_or(ci_keys, |v| v as usize);
        let default_rate =
            ((keys as f64 * 1.1 / CI_PUBLISHING.as_secs_f64()) as usize).clamp(20, MAX_RATE);
        let seed = var("OUTRIGGER_CHAOS_SEED").unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
        Self {
            keys,
            rate: var("OUTRIGGER_CHAOS_RATE").map_or(default_rate, |v| v as usize),
            seed,
        }
    }
}

/// The fault timers for a broker whose restarted sidecar takes `takeover` to be back at work.
fn plan(takeover: Duration) -> Plan {
    Plan {
        kill: Schedule {
            every: (takeover * 5 / 2).max(Duration::from_secs(6)),
            lasting: Duration::ZERO,
        },
        // Away for about the lease: some outages outlast the claims the sidecar holds.
        store: Schedule {
            every: Duration::from_secs(25),
            lasting: Duration::from_secs(3),
        },
        cut: Schedule {
            every: Duration::from_secs(8),
            lasting: Duration::ZERO,
        },
        app: Schedule {
            every: Duration::from_secs(12),
            lasting: Duration::from_secs(3),
        },
    }
}

/// What every broker's sidecar runs with besides its `[source]`: the run's own Redis with a
/// short lease (a killed sidecar's claims free up in seconds), in-place retries with short
/// backoffs and attempts enough for the transient keys, the breaker at its defaults, dead
/// letters to the broker's default destination.
///
/// `OUTRIGGER_CHAOS_RETRY=queue` runs retry mode `queue` instead (tiers of 200 ms and 1 s), on
/// a broker that has retry queues.
fn chaos_policy(policy: Policy, store: &RedisServer) -> Policy {
    let policy = policy
        .set("dedup.redis.url", store.url())
        .set("dedup.redis.timeout", "500ms")
        .set("dedup.lease", "3s")
        .set("delivery.timeout", "2s")
        .set("retry.max_attempts", 20)
        .set("retry.initial", "20ms")
        .set("retry.max", "200ms")
        .set("log.level", "info");
    match std::env::var("OUTRIGGER_CHAOS_RETRY").as_deref() {
        Ok("queue") => policy
            .set("retry.mode", "queue")
            .set("retry.tiers", toml_edit::Array::from_iter(["200ms", "1s"])),
        Ok("in_place") | Err(_) => policy.set("retry.mode", "in_place"),
        Ok(other) => panic!("OUTRIGGER_CHAOS_RETRY={other}: in_place or queue"),
    }
}

/// The run's files (fault log, ledger, dead letters, every sidecar's log, the report), kept
/// when the run fails or `OUTRIGGER_CHAOS_KEEP` is set.
struct RunDir(PathBuf);

impl RunDir {
    fn new(broker: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("outrigger-chaos-{broker}")));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) {
        let _ = std::fs::write(self.0.join(name), text);
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("OUTRIGGER_CHAOS_KEEP").is_some() {
            eprintln!("chaos run files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What the harness watches while the run goes: the app's ledger, the dead letters read so
/// far, the producer's count, the fault log.
struct Watch<'a, B> {
    broker: &'a B,
    keys: &'a [String],
    events: usize,
    ledger: Ledger,
    log: FaultLog,
    published: usize,
    dead: Vec<DeadRecord>,
    dead_keys: HashSet<String>,
    last_progress: Instant,
}

impl<B: ChaosBroker> Watch<'_, B> {
    /// Reads the dead letters written since the last look.
    async fn read_dead_letters(&mut self) {
        for d in self.broker.dead_letters().await {
            if let Some(key) = &d.key {
                self.dead_keys.insert(key.clone());
            }
            self.dead.push(d);
        }
    }

    /// Keys applied or dead-lettered.
    fn resolved(&self) -> usize {
        let open: Vec<&String> = self
            .keys
            .iter()
            .filter(|k| !self.dead_keys.contains(*k))
            .collect();
        self.keys.len() - open.len() + self.ledger.applied_among(open)
    }

    /// A progress line every ten seconds.
    fn progress(&mut self) {
        if self.last_progress.elapsed() < Duration::from_secs(10) {
            return;
        }
        self.last_progress = Instant::now();
        println!(
            "  t={:>4.0}s published {}/{}, resolved {}/{} keys, {} requests, {} faults",
            self.log.start.elapsed().as_secs_f64(),
            self.published,
            self.events,
            self.resolved(),
            self.keys.len(),
            self.ledger.count(),
            self.log.entries().len(),
        );
    }
}

/// Notices a run that stopped moving: nothing more resolved, nothing more taken from the
/// broker, for [`STALL`]. The run then ends and counts what it has, rather than hang.
struct Stall {
    best: u64,
    since: Instant,
}

impl Stall {
    fn new() -> Self {
        Self {
            best: 0,
            since: Instant::now(),
        }
    }

    /// `progress` is a number that grows while work gets done.
    fn stuck(&mut self, progress: u64) -> bool {
        if progress > self.best {
            self.best = progress;
            self.since = Instant::now();
        }
        self.since.elapsed() > STALL
    }
}

/// Runs the chaos test against `B` and asserts the zeros.
pub async fn run<B: ChaosBroker>() {
    let size = Size::from_env(B::CI_KEYS);
    let workload = Workload::new(size.keys, size.seed);
    let dir = RunDir::new(B::NAME);
    println!(
        "chaos {}: {} keys, {} messages at {}/s, seed {} (OUTRIGGER_CHAOS_SEED), files in {}",
        B::NAME,
        size.keys,
        workload.events.len(),
        size.rate,
        size.seed,
        dir.path().display()
    );

    let broker = Arc::new(B::start().await);
    let store = RedisServer::start().await;
    let ledger = Ledger::default();
    let app = AppPort::serve(ledger.router()).await;
    let policy = chaos_policy(broker.policy(&app.url("/events"), &unique("chaos")), &store);
    dir.write("policy.toml", &policy.text());
    let log = FaultLog::new();
    let fleet = Fleet::start(policy, dir.path().to_owned(), log.clone());
    let plan = plan(B::TAKEOVER);
    let chaos = Chaos::start(plan, size.seed, &log, fleet, store, app, broker.clone());
    let mut watch = Watch {
        broker: &*broker,
        keys: &workload.keys,
        events: workload.events.len(),
        ledger,
        log,
        published: 0,
        dead: Vec::new(),
        dead_keys: HashSet::new(),
        last_progress: Instant::now(),
    };

    // Publishing while the faults run; then the faults go on over the backlog until most
    // keys have an outcome.
    produce(&mut watch, &workload.events, size.rate).await;
    let most = (size.keys as f64 * FAULTY_SHARE).ceil() as usize;
    let mut stall = Stall::new();
    loop {
        watch.read_dead_letters().await;
        let resolved = watch.resolved();
        if resolved >= most || stall.stuck(resolved as u64) {
            break;
        }
        watch.progress();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let chaos_took = watch.log.start.elapsed();
    let (mut fleet, store, app) = chaos.stop().await;

    // The drain, in peace: every key applied or dead-lettered, nothing left at the broker,
    // nothing in the sidecar.
    let drain_started = Instant::now();
    let mut stall = Stall::new();
    let drained = loop {
        watch.read_dead_letters().await;
        let resolved = watch.resolved();
        let backlog = broker.backlog().await;
        if resolved == size.keys
            && backlog == 0
            && fleet.current().metric("outrigger_in_flight_messages", "") == 0.0
        {
            break "settled".to_owned();
        }
        // Resolving keys and taking duplicates off the broker both count as moving.
        let taken = u64::from(u32::MAX).saturating_sub(backlog);
        if stall.stuck(resolved as u64 + taken) {
            break format!("stalled: nothing moved for {STALL:?}");
        }
        watch.progress();
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drain_took = drain_started.elapsed();
    let exit = match fleet.stop(Duration::from_secs(40)) {
        Some(status) => status.to_string(),
        None => "did not exit within 40s".to_owned(),
    };
    watch.read_dead_letters().await;
    let left_in_source = broker.left_over().await;
    dir.write("redis.log", &store.log());
    drop((store, app));

    let requests = watch.ledger.requests();
    let outcome = Outcome {
        broker: B::NAME,
        keys: &workload.keys,
        published: watch.published,
        requests: &requests,
        dead: &watch.dead,
        faults: &watch.log,
        sidecars: fleet.started(),
        left_in_source,
        exit: exit.clone(),
        chaos: chaos_took,
        drain: drain_took,
        drained,
    };
    let report = report::count(&outcome);
    println!("{}", report.text);
    dir.write("report.txt", &report.text);
    write_files(&dir, &outcome);
    drop(watch);
    if let Ok(broker) = Arc::try_unwrap(broker) {
        broker.clean_up().await;
    }

    let c = &report.counts;
    let zeros = [
        ("keys lost", c.lost),
        (
            "keys applied twice outside the crash window",
            c.twice_outside,
        ),
        ("healthy keys in the DLQ", c.healthy_in_dlq),
        ("poison keys missing from the DLQ", c.poison_missing),
        (
            "dead letters written twice outside the crash window",
            c.dead_twice - c.dead_twice_in_window,
        ),
    ];
    let failed: Vec<String> = zeros
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what}: {n}"))
        .collect();
    assert!(failed.is_empty(), "{}: {}", B::NAME, failed.join(", "));
    assert_eq!(
        exit, "exit status: 0",
        "the last sidecar exits 0 on SIGTERM"
    );
}

/// Publishes `events` at `rate` a second, a batch each [`TICK`], counting what the broker
/// confirmed.
async fn produce<B: ChaosBroker>(watch: &mut Watch<'_, B>, events: &[Event], rate: usize) {
    let batch = ((rate as f64 * TICK.as_secs_f64()).ceil() as usize).max(1);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for chunk in events.chunks(batch) {
        tick.tick().await;
        watch.broker.publish(chunk).await;
        watch.published += chunk.len();
        watch.progress();
    }
}

/// The fault log, every request and every dead letter, one per line, for a closer look.
fn write_files(dir: &RunDir, o: &Outcome<'_>) {
    let mut faults = String::new();
    for (at, fault) in o.faults.entries() {
        faults.push_str(&format!("{:.3}\t{fault}\n", o.faults.secs(at)));
    }
    dir.write("faults.tsv", &faults);
    let mut requests = String::from("t\tkey\tcopy\tstatus\tfence\tattempt\n");
    for r in o.requests {
        requests.push_str(&format!(
            "{:.3}\t{}\t{:?}\t{}\t{:?}\t{}\n",
            o.faults.secs(r.at),
            r.key,
            r.copy,
            r.status,
            r.fence,
            r.attempt
        ));
    }
    dir.write("requests.tsv", &requests);
    let mut dead = String::from("key\tcopy\tclass\tattempts\tsource\n");
    for d in o.dead {
        dead.push_str(&format!(
            "{:?}\t{:?}\t{}\t{}\t{}\n",
            d.key, d.copy, d.class, d.attempts, d.source
        ));
    }
    dir.write("dead_letters.tsv", &dead);
}
