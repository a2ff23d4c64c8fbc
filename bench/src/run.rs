//! The phases every broker goes through: the raw consumer, then the sidecar under each policy;
//! each a throughput backlog followed by a paced stream for latency.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use crate::metrics::{Breakdown, SETTLED};
use crate::payload::Clock;
use crate::record::{Recorder, Summary};
use crate::report::{Report, Side, SidecarResult};
use crate::sidecar::{self, PolicySpec, Sidecar};
use crate::stub::Stub;
use crate::{amqp, cpu, kafka, nats, redis_streams, store, Args};

/// How long the sidecar may take to drain after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(40);
/// How long acks may trail the last arrival at the stub app.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// What every broker's runs share: the arguments, the sidecar binary, the stub app and its
/// clock, and a tag that makes this run's queue, topic and namespace names unique.
pub struct Bench<'a> {
    /// The command line.
    pub args: &'a Args,
    /// The release `outrigger` binary.
    pub binary: PathBuf,
    /// The app every consumer delivers to.
    pub stub: Stub,
    /// The time base of publishers and stub app.
    pub clock: Clock,
    /// Eight hex digits, new each run.
    pub tag: String,
}

/// The sizes of one broker's runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Messages in each throughput backlog.
    pub messages: usize,
    /// Messages in each paced latency run.
    pub paced_messages: usize,
    /// Publish rate of the paced runs, messages per second.
    pub rate: f64,
    /// The broker's process, when the bench started it: its CPU is measured too.
    pub broker_pid: Option<u32>,
}

/// Runs the brokers `--broker` selects, in turn; each cleans up after itself.
pub async fn run(args: &Args) -> anyhow::Result<Vec<Report>> {
    let clock = Clock::start();
    let bench = Bench {
        args,
        binary: sidecar::binary()?,
        stub: Stub::start(clock).await?,
        clock,
        tag: format!("{:08x}", rand::random::<u32>()),
    };
    let mut reports = Vec::new();
    if args.broker.amqp() {
        reports.push(amqp::run(&bench).await?);
    }
    if args.broker.kafka() {
        reports.push(kafka::run(&bench).await?);
    }
    if args.broker.redis_streams() {
        reports.push(redis_streams::run(&bench).await?);
    }
    if args.broker.nats() {
        reports.push(nats::run(&bench).await?);
    }
    Ok(reports)
}

impl Bench<'_> {
    /// The plan of a broker whose default backlog is `default_messages`.
    pub fn plan(&self, default_messages: usize, broker_pid: Option<u32>) -> Plan {
        Plan {
            messages: self.args.messages.unwrap_or(default_messages),
            paced_messages: self.args.paced_messages,
            rate: self.args.rate,
            broker_pid,
        }
    }

    /// Measures a raw consumer, `label` in the progress lines, over a backlog already
    /// published: `start` starts it, `settled` counts what it has acked or committed,
    /// `publish_paced` sends the latency run. Returns the consumer, still running, for the
    /// caller to stop.
    pub async fn measure_raw<C>(
        &self,
        plan: Plan,
        label: &str,
        start: impl Future<Output = anyhow::Result<C>>,
        settled: impl Fn(&C) -> usize,
        publish_paced: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<(Side, C)> {
        eprintln!("{label}: consuming the backlog");
        let recorder = self.stub.begin(plan.messages);
        let cpu_before = cpu::used(None);
        let broker_cpu = BrokerCpu::start(plan);
        let consumer = start.await?;
        let throughput = wait_arrivals(&recorder, backlog_limit(plan.messages), || Ok(())).await?;
        let cpu_us = cpu::per_message(cpu::used(None) - cpu_before, plan.messages);
        let broker_cpu_us = broker_cpu.per_message();
        wait_until(&format!("{label}: acks"), || {
            std::future::ready(settled(&consumer) >= plan.messages)
        })
        .await?;

        eprintln!(
            "{label}: {} messages at {:.0} msg/s",
            plan.paced_messages, plan.rate
        );
        let recorder = self.stub.begin(plan.paced_messages);
        publish_paced.await?;
        let paced = wait_arrivals(&recorder, SETTLE_LIMIT, || Ok(())).await?;
        let total = plan.messages + plan.paced_messages;
        wait_until(&format!("{label}: acks"), || {
            std::future::ready(settled(&consumer) >= total)
        })
        .await?;
        let side = Side {
            throughput,
            paced,
            cpu_us,
            broker_cpu_us,
        };
        Ok((side, consumer))
    }

    /// Measures the sidecar, run with `spec`, over a backlog already published; the column
    /// `label` of the report. `publish_paced` sends the latency run. The stage breakdown is
    /// the throughput run's alone: it is scraped before the latency run starts.
    pub async fn measure_sidecar(
        &self,
        plan: Plan,
        label: &'static str,
        spec: &PolicySpec<'_>,
        publish_paced: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<SidecarResult> {
        eprintln!("{label}: consuming the backlog");
        let recorder = self.stub.begin(plan.messages);
        let spawned = self.clock.now_ns();
        let stub_cpu_before = cpu::used(None);
        let broker_cpu = BrokerCpu::start(plan);
        let mut sidecar = Sidecar::start(&self.binary, spec)?;
        let pid = sidecar.pid();
        let throughput = wait_arrivals(&recorder, backlog_limit(plan.messages), || {
            sidecar.check_alive()
        })
        .await?;
        let cpu_us = cpu::per_message(cpu::used(pid), plan.messages);
        let stub_cpu_us = cpu::per_message(cpu::used(None) - stub_cpu_before, plan.messages);
        let broker_cpu_us = broker_cpu.per_message();
        let startup_ms = throughput.first_ns.saturating_sub(spawned) as f64 / 1e6;
        wait_settled(&sidecar, label, plan.messages).await?;
        let breakdown = Breakdown::from_scrape(&sidecar.scrape().await?);

        eprintln!(
            "{label}: {} messages at {:.0} msg/s",
            plan.paced_messages, plan.rate
        );
        let recorder = self.stub.begin(plan.paced_messages);
        publish_paced.await?;
        let paced = wait_arrivals(&recorder, SETTLE_LIMIT, || sidecar.check_alive()).await?;
        wait_settled(&sidecar, label, plan.messages + plan.paced_messages).await?;
        let peak_rss = sidecar.peak_rss()?;
        sidecar.stop(STOP_GRACE).await?;
        Ok(SidecarResult {
            label,
            ordering: spec.ordering(),
            side: Side {
                throughput,
                paced,
                cpu_us,
                broker_cpu_us,
            },
            peak_rss,
            startup_ms,
            stub_cpu_us,
            breakdown,
        })
    }

    /// Deletes the dedup records of `namespace`; what remains is only worth a warning.
    pub async fn purge(&self, namespace: &str) {
        if let Err(error) = store::purge_namespace(&self.args.redis_url, namespace).await {
            eprintln!("warning: dedup records under {namespace} remain: {error:#}");
        }
    }
}

/// The broker's CPU over a throughput run, when the bench runs the broker.
struct BrokerCpu {
    pid: Option<u32>,
    before: Duration,
    messages: usize,
}

impl BrokerCpu {
    fn start(plan: Plan) -> Self {
        Self {
            pid: plan.broker_pid,
            before: plan
                .broker_pid
                .map(|pid| cpu::used(Some(pid)))
                .unwrap_or_default(),
            messages: plan.messages,
        }
    }

    /// Microseconds per message since `start`.
    fn per_message(&self) -> Option<f64> {
        let used = cpu::used(Some(self.pid?)).saturating_sub(self.before);
        Some(cpu::per_message(used, self.messages))
    }
}

/// Waits until the sidecar counts `messages` settled.
async fn wait_settled(sidecar: &Sidecar, label: &str, messages: usize) -> anyhow::Result<()> {
    let settled = messages as f64;
    wait_until(&format!("{label}: acks"), || async move {
        sidecar.metric(SETTLED).await >= settled
    })
    .await
}

/// Generous: a minute plus 10 ms per message (100 msg/s).
fn backlog_limit(messages: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(10) * messages as u32
}

/// Waits until every message of the phase reached the stub app, printing progress.
async fn wait_arrivals(
    recorder: &Recorder,
    limit: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mut next_progress = started + Duration::from_secs(5);
    while !recorder.complete() {
        alive()?;
        let now = Instant::now();
        if now > started + limit {
            bail!(
                "only {} messages reached the stub app within {limit:?}",
                recorder.count()
            );
        }
        if now > next_progress {
            eprintln!("  {} arrived", recorder.count());
            next_progress += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(recorder.summary())
}

/// Polls `done` every 50 ms for at most [`SETTLE_LIMIT`].
async fn wait_until<F, Fut>(what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE_LIMIT;
    while !done().await {
        if Instant::now() > deadline {
            bail!("{what}: not done within {SETTLE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
