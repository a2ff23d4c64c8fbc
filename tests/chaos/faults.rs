//! The faults, each on a timer of its own, and the log of when each happened: the counts tell
//! the documented crash window from a real double by these times.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outrigger_testkit::app_port::AppPort;
use outrigger_testkit::redis_server::RedisServer;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::broker::ChaosBroker;
use crate::support::{Policy, Sidecar, OUTRIGGER};

/// One fault, or the end of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Sidecar number `n` was SIGKILLed and reaped (logged after it was gone).
    SidecarKilled(u32),
    /// Sidecar number `n` exited on its own.
    SidecarExited(u32, String),
    /// Sidecar number `n` was started.
    SidecarStarted(u32),
    /// The dedup Redis was SIGKILLed.
    StoreKilled,
    /// It answers again, its append-only file loaded.
    StoreBack,
    /// The sidecar's broker connections were cut.
    BrokerCut,
    /// The app closed its port: connections refused.
    AppDown,
    /// The app listens again.
    AppUp,
}

impl Fault {
    /// Whether a sidecar died here (killed or crashed): what opens the crash window.
    pub fn is_sidecar_death(&self) -> bool {
        matches!(self, Fault::SidecarKilled(_) | Fault::SidecarExited(..))
    }

    /// Whether the sidecar could have lost a dead letter's confirm here: it died, or its
    /// broker connection broke (the dead letter may be stored, its confirm never arrives).
    pub fn opens_dead_letter_window(&self) -> bool {
        self.is_sidecar_death() || matches!(self, Fault::BrokerCut)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::SidecarKilled(n) => write!(f, "sidecar #{n} SIGKILLed"),
            Fault::SidecarExited(n, status) => write!(f, "sidecar #{n} exited by itself: {status}"),
            Fault::SidecarStarted(n) => write!(f, "sidecar #{n} started"),
            Fault::StoreKilled => write!(f, "dedup Redis SIGKILLed"),
            Fault::StoreBack => write!(f, "dedup Redis back"),
            Fault::BrokerCut => write!(f, "broker connections cut"),
            Fault::AppDown => write!(f, "app refusing connections"),
            Fault::AppUp => write!(f, "app listening again"),
        }
    }
}

/// When each fault happened.
#[derive(Clone)]
pub struct FaultLog {
    /// The start of the run, which times in the report count from.
    pub start: Instant,
    entries: Arc<Mutex<Vec<(Instant, Fault)>>>,
}

impl FaultLog {
    /// An empty log starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            entries: Arc::default(),
        }
    }

    /// Logs `fault` as happening now.
    pub fn log(&self, fault: Fault) {
        self.entries.lock().push((Instant::now(), fault));
    }

    /// Everything logged, in order.
    pub fn entries(&self) -> Vec<(Instant, Fault)> {
        self.entries.lock().clone()
    }

    /// How many entries match.
    pub fn count(&self, what: impl Fn(&Fault) -> bool) -> usize {
        self.entries.lock().iter().filter(|(_, f)| what(f)).count()
    }

    /// Seconds since the start, for printing.
    pub fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }
}

/// How often a fault comes and how long it lasts.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The mean time between two faults; each wait is drawn within ±40% of it.
    pub every: Duration,
    /// How long the fault lasts (the app or the store away), ±40%.
    pub lasting: Duration,
}

impl Schedule {
    fn next(&self, rng: &mut StdRng) -> Duration {
        self.every.mul_f64(rng.random_range(0.6..1.4))
    }

    fn length(&self, rng: &mut StdRng) -> Duration {
        self.lasting.mul_f64(rng.random_range(0.6..1.4))
    }
}

/// The timers of one run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// SIGKILL of the sidecar, restarted at once with the same policy.
    pub kill: Schedule,
    /// SIGKILL of the dedup Redis, restarted on its port and directory after `lasting`.
    pub store: Schedule,
    /// Cuts of the sidecar's broker connections.
    pub cut: Schedule,
    /// The app away (refusing connections) for `lasting`.
    pub app: Schedule,
}

/// The sidecar of the run: one process at a time, each incarnation's log kept in the run's
/// directory.
pub struct Fleet {
    current: Option<Sidecar>,
    policy: Policy,
    logs: PathBuf,
    started: u32,
    log: FaultLog,
}

impl Fleet {
    /// Starts the first sidecar.
    pub fn start(policy: Policy, logs: PathBuf, log: FaultLog) -> Self {
        let mut fleet = Self {
            current: None,
            policy,
            logs,
            started: 0,
            log,
        };
        fleet.start_next();
        fleet
    }

    fn start_next(&mut self) {
        self.started += 1;
        self.current = Some(Sidecar::start(OUTRIGGER, self.policy.clone()));
        self.log.log(Fault::SidecarStarted(self.started));
    }

    /// SIGKILL, then a new one with the same policy.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut sidecar) = self.current.take() {
            sidecar.kill();
            self.log.log(Fault::SidecarKilled(self.started));
            self.keep_log(&sidecar);
        }
        self.start_next();
    }

    /// A sidecar that exited by itself is logged and replaced.
    pub fn replace_if_exited(&mut self) {
        let Some(sidecar) = self.current.as_mut() else {
            return;
        };
        if let Some(status) = sidecar.wait_exit(Duration::ZERO) {
            self.log
                .log(Fault::SidecarExited(self.started, status.to_string()));
            let sidecar = self.current.take().unwrap();
            self.keep_log(&sidecar);
            self.start_next();
        }
    }

    /// The running sidecar.
    pub fn current(&self) -> &Sidecar {
        self.current.as_ref().expect("a sidecar runs")
    }

    /// SIGTERM, and the exit status within `limit` (`None`: it did not exit).
    pub fn stop(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut sidecar = self.current.take()?;
        sidecar.sigterm();
        let status = sidecar.wait_exit(limit);
        self.keep_log(&sidecar);
        status
    }

    /// How many sidecars were started.
    pub fn started(&self) -> u32 {
        self.started
    }

    fn keep_log(&self, sidecar: &Sidecar) {
        let path = self.logs.join(format!("sidecar-{:03}.log", self.started));
        let _ = std::fs::write(path, sidecar.logs());
    }
}

/// The running fault timers; [`Chaos::stop`] ends them and hands back what they drove.
pub struct Chaos {
    stop: CancellationToken,
    fleet: JoinHandle<Fleet>,
    store: JoinHandle<RedisServer>,
    app: JoinHandle<AppPort>,
    cut: JoinHandle<()>,
}

impl Chaos {
    /// Starts every timer of `plan`, drawing waits from `seed`.
    pub fn start<B: ChaosBroker>(
        plan: Plan,
        seed: u64,
        log: &FaultLog,
        fleet: Fleet,
        store: RedisServer,
        app: AppPort,
        broker: Arc<B>,
    ) -> Self {
        let stop = CancellationToken::new();
        let rng = |n: u64| StdRng::seed_from_u64(seed.wrapping_add(n));
        Self {
            fleet: tokio::spawn(kill_sidecars(plan.kill, rng(1), fleet, stop.clone())),
            store: tokio::spawn(kill_store(
                plan.store,
                rng(2),
                store,
                log.clone(),
                stop.clone(),
            )),
            app: tokio::spawn(close_app(plan.app, rng(3), app, log.clone(), stop.clone())),
            cut: tokio::spawn(cut_broker(
                plan.cut,
                rng(4),
                broker,
                log.clone(),
                stop.clone(),
            )),
            stop,
        }
    }

    /// Ends every fault: the store and the app are back, a sidecar runs.
    pub async fn stop(self) -> (Fleet, RedisServer, AppPort) {
        self.stop.cancel();
        let _ = self.cut.await;
        (
            self.fleet.await.expect("the kill timer"),
            self.store.await.expect("the store timer"),
            self.app.await.expect("the app timer"),
        )
    }
}

/// Waits `wait`, or less when stopped; true when it was stopped.
async fn stopped_within(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

async fn kill_sidecars(
    plan: Schedule,
    mut rng: StdRng,
    mut fleet: Fleet,
    stop: CancellationToken,
) -> Fleet {
    let mut next = Instant::now() + plan.next(&mut rng);
    while !stopped_within(&stop, Duration::from_millis(100)).await {
        fleet.replace_if_exited();
        if Instant::now() >= next {
            fleet.kill_and_restart();
            next = Instant::now() + plan.next(&mut rng);
        }
    }
    fleet.replace_if_exited();
    fleet
}

async fn kill_store(
    plan: Schedule,
    mut rng: StdRng,
    mut store: RedisServer,
    log: FaultLog,
    stop: CancellationToken,
) -> RedisServer {
    while !stopped_within(&stop, plan.next(&mut rng)).await {
        store.kill();
        log.log(Fault::StoreKilled);
        let stopped = stopped_within(&stop, plan.length(&mut rng)).await;
        store.restart().await;
        log.log(Fault::StoreBack);
        if stopped {
            break;
        }
    }
    store
}

async fn close_app(
    plan: Schedule,
    mut rng: StdRng,
    mut app: AppPort,
    log: FaultLog,
    stop: CancellationToken,
) -> AppPort {
    while !stopped_within(&stop, plan.next(&mut rng)).await {
        log.log(Fault::AppDown);
        app.close().await;
        let stopped = stopped_within(&stop, plan.length(&mut rng)).await;
        app.open().await;
        log.log(Fault::AppUp);
        if stopped {
            break;
        }
    }
    app
}

async fn cut_broker<B: ChaosBroker>(
    plan: Schedule,
    mut rng: StdRng,
    broker: Arc<B>,
    log: FaultLog,
    stop: CancellationToken,
) {
    while !stopped_within(&stop, plan.next(&mut rng)).await {
        broker.cut();
        log.log(Fault::BrokerCut);
    }
}
