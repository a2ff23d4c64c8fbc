//! `outrigger-bench`: N messages through RabbitMQ into a stub app, raw consumer vs the sidecar.
//!
//! One process publishes, runs the stub app and the raw consumer, and spawns the release
//! `outrigger` binary; see `run` for the phases and `report` for what is printed.

mod broker;
mod cpu;
mod payload;
mod raw;
mod record;
mod report;
mod run;
mod sidecar;
mod store;
mod stub;

use std::process::ExitCode;

use clap::Parser;

/// Throughput, latency and peak memory of the sidecar, against a raw consume → POST → ack loop.
#[derive(Debug, Parser)]
#[command(name = "outrigger-bench", version)]
pub struct Args {
    /// Messages in each throughput run (a backlog consumed as fast as possible).
    #[arg(long, default_value_t = 50_000)]
    pub messages: usize,
    /// Body size in bytes (at least 16: sequence number and publish time).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..))]
    pub size: u32,
    /// Unacked deliveries per consumer; the sidecar's `backpressure.max_in_flight`.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Messages in each latency run, published at `--rate`.
    #[arg(long, default_value_t = 2_000)]
    pub paced_messages: usize,
    /// Publish rate of the latency runs, messages per second.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// RabbitMQ.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// Redis, for the sidecar's dedup records.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.messages >= 2, "--messages must be at least 2");
    anyhow::ensure!(
        args.paced_messages >= 1,
        "--paced-messages must be at least 1"
    );
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be positive"
    );
    let report = run::run(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
