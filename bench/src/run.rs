//! The phases: raw baseline then sidecar, each a throughput backlog followed by a paced stream.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use crate::broker::{Batch, Broker};
use crate::payload::Clock;
use crate::raw::RawConsumer;
use crate::record::{Recorder, Summary};
use crate::report::{Report, Side};
use crate::sidecar::{self, PolicySpec, Sidecar, SETTLED};
use crate::stub::Stub;
use crate::{cpu, store, Args};

/// How long the sidecar may take to drain after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(40);
/// How long acks may trail the last arrival at the stub app.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// What the sidecar side measured.
struct SidecarRun {
    side: Side,
    peak_rss: u64,
    startup_ms: f64,
    stub_cpu_us: f64,
}

/// Names unique to this run.
struct Names {
    raw_queue: String,
    sidecar_queue: String,
    namespace: String,
}

/// Runs both sides and cleans up the queues and dedup records, whatever happened.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let binary = sidecar::binary()?;
    let clock = Clock::start();
    let stub = Stub::start(clock).await?;
    let broker = Broker::connect(&args.amqp_url).await?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let names = Names {
        raw_queue: format!("outrigger-bench-{tag}-raw"),
        sidecar_queue: format!("outrigger-bench-{tag}-sidecar"),
        namespace: format!("outrigger-bench-{tag}"),
    };

    let result = async {
        let raw = run_raw(args, &broker, &stub, &names.raw_queue, clock).await?;
        let run = run_sidecar(args, &binary, &broker, &stub, &names, clock).await?;
        Ok::<_, anyhow::Error>(Report {
            messages: args.messages,
            size: args.size,
            prefetch: args.prefetch,
            paced_messages: args.paced_messages,
            rate: args.rate,
            raw,
            sidecar: run.side,
            sidecar_peak_rss: run.peak_rss,
            sidecar_startup_ms: run.startup_ms,
            stub_cpu_us: run.stub_cpu_us,
        })
    }
    .await;

    eprintln!("cleaning up queues and dedup records");
    broker.delete(&names.raw_queue).await;
    broker.delete(&names.sidecar_queue).await;
    broker.delete(&format!("{}.dlq", names.sidecar_queue)).await;
    broker.close().await;
    if let Err(error) = store::purge_namespace(&args.redis_url, &names.namespace).await {
        eprintln!(
            "warning: dedup records under {} remain: {error:#}",
            names.namespace
        );
    }
    result
}

async fn run_raw(
    args: &Args,
    broker: &Broker,
    stub: &Stub,
    queue: &str,
    clock: Clock,
) -> anyhow::Result<Side> {
    broker.declare(queue).await?;
    publish_backlog(args, broker, queue, clock).await?;

    eprintln!("raw: consuming the backlog");
    let recorder = stub.begin(args.messages);
    let cpu_before = cpu::used(None);
    let consumer = RawConsumer::start(&args.amqp_url, queue, args.prefetch, &stub.url()).await?;
    let throughput = wait_arrivals(&recorder, backlog_limit(args.messages), || Ok(())).await?;
    let cpu_us = cpu::per_message(cpu::used(None) - cpu_before, args.messages);
    wait_until("raw: acks", || {
        std::future::ready(consumer.acked() >= args.messages)
    })
    .await?;

    eprintln!(
        "raw: {} messages at {:.0} msg/s",
        args.paced_messages, args.rate
    );
    let recorder = stub.begin(args.paced_messages);
    broker
        .publish_paced(&paced_batch(args, queue), args.rate, clock)
        .await?;
    let paced = wait_arrivals(&recorder, SETTLE_LIMIT, || Ok(())).await?;
    let total = args.messages + args.paced_messages;
    wait_until("raw: acks", || {
        std::future::ready(consumer.acked() >= total)
    })
    .await?;
    consumer.stop().await;
    Ok(Side {
        throughput,
        paced,
        cpu_us,
    })
}

async fn run_sidecar(
    args: &Args,
    binary: &std::path::Path,
    broker: &Broker,
    stub: &Stub,
    names: &Names,
    clock: Clock,
) -> anyhow::Result<SidecarRun> {
    let queue = names.sidecar_queue.as_str();
    broker.declare(queue).await?;
    publish_backlog(args, broker, queue, clock).await?;

    eprintln!("sidecar: consuming the backlog");
    let recorder = stub.begin(args.messages);
    let app_url = stub.url();
    let spec = PolicySpec {
        amqp_url: &args.amqp_url,
        queue,
        app_url: &app_url,
        redis_url: &args.redis_url,
        namespace: &names.namespace,
        prefetch: args.prefetch,
        admin: sidecar::free_port()?,
    };
    let spawned = clock.now_ns();
    let stub_cpu_before = cpu::used(None);
    let mut sidecar = Sidecar::start(binary, &spec)?;
    let pid = sidecar.pid();
    let throughput = wait_arrivals(&recorder, backlog_limit(args.messages), || {
        sidecar.check_alive()
    })
    .await?;
    let cpu_us = cpu::per_message(cpu::used(pid), args.messages);
    let stub_cpu_us = cpu::per_message(cpu::used(None) - stub_cpu_before, args.messages);
    let startup_ms = throughput.first_ns.saturating_sub(spawned) as f64 / 1e6;
    let settled = args.messages as f64;
    let running = &sidecar;
    wait_until("sidecar: acks", || async move {
        running.metric(SETTLED).await >= settled
    })
    .await?;

    eprintln!(
        "sidecar: {} messages at {:.0} msg/s",
        args.paced_messages, args.rate
    );
    let recorder = stub.begin(args.paced_messages);
    broker
        .publish_paced(&paced_batch(args, queue), args.rate, clock)
        .await?;
    let paced = wait_arrivals(&recorder, SETTLE_LIMIT, || sidecar.check_alive()).await?;
    let settled = (args.messages + args.paced_messages) as f64;
    let running = &sidecar;
    wait_until("sidecar: acks", || async move {
        running.metric(SETTLED).await >= settled
    })
    .await?;
    let peak_rss = sidecar.peak_rss()?;
    sidecar.stop(STOP_GRACE).await?;
    Ok(SidecarRun {
        side: Side {
            throughput,
            paced,
            cpu_us,
        },
        peak_rss,
        startup_ms,
        stub_cpu_us,
    })
}

async fn publish_backlog(
    args: &Args,
    broker: &Broker,
    queue: &str,
    clock: Clock,
) -> anyhow::Result<()> {
    eprintln!("publishing {} messages to {queue}", args.messages);
    let batch = Batch {
        queue,
        id_prefix: format!("{queue}-backlog"),
        messages: args.messages,
        size: args.size as usize,
    };
    broker.publish_backlog(&batch, clock).await
}

fn paced_batch<'a>(args: &Args, queue: &'a str) -> Batch<'a> {
    Batch {
        queue,
        id_prefix: format!("{queue}-paced"),
        messages: args.paced_messages,
        size: args.size as usize,
    }
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
