//! `outrigger-bench`: N messages through a broker into a stub app, raw consumer vs the sidecar.
//!
//! One process publishes, runs the stub app and the raw consumer, and spawns the release
//! `outrigger` binary. RabbitMQ (`amqp`), Kafka (`kafka`, on a tansu broker the bench starts),
//! Redis Streams (`redis-streams`, on the dedup Redis) and NATS JetStream (`nats`) each get
//! their own raw consumer (Kafka a second one that keeps each partition in order, the peer of
//! the sidecar's `partition` mode) and sidecar runs.
//!
//! # Layout
//! - `run`: the phases every broker goes through (raw, then each sidecar policy) and the waits.
//! - `amqp`, `kafka`, `redis_streams`, `nats`: one broker each: publishing, the raw consumer, its
//!   sidecar policies.
//! - `sidecar`: the `outrigger` child process and its policy file.
//! - `metrics`: what the bench reads from the sidecar's `/metrics`, and the stage breakdown.
//! - `app`: the raw consumers' HTTP client.
//! - `stub`, `record`, `payload`: the app the consumers deliver to and what it measures.
//! - `report`: the table and the JSON.

mod amqp;
mod app;
mod cpu;
mod kafka;
mod metrics;
mod nats;
mod payload;
mod record;
mod redis_streams;
mod report;
mod run;
mod sidecar;
mod store;
mod stub;

use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// Throughput, latency and peak memory of the sidecar, against a raw consume → POST → ack loop.
#[derive(Debug, Parser)]
#[command(name = "outrigger-bench", version)]
pub struct Args {
    /// Which broker to bench; `all` runs RabbitMQ, Kafka, Redis Streams, then NATS.
    #[arg(long, value_enum, default_value_t = BrokerChoice::All)]
    pub broker: BrokerChoice,
    /// Messages in each throughput run (a backlog consumed as fast as possible) [default:
    /// 50000 for amqp and redis-streams, 100000 for kafka, 20000 for nats].
    #[arg(long)]
    pub messages: Option<usize>,
    /// Body size in bytes (at least 16: sequence number and publish time).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..))]
    pub size: u32,
    /// Unsettled messages per consumer: the raw consumers' prefetch or concurrency, the
    /// sidecar's `backpressure.max_in_flight`.
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
    /// Kafka: partitions of each topic.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub partitions: u16,
    /// Kafka: distinct record keys, spread evenly over the partitions.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub keys: u32,
    /// Kafka: the tansu binary the bench starts a broker with (in memory, on a free port).
    #[arg(long, default_value = "tansu")]
    pub tansu: String,
    /// Kafka: use this broker (`host:port,...`) instead of starting tansu; the bench creates
    /// and deletes its own topics there.
    #[arg(long)]
    pub kafka_bootstrap: Option<String>,
    /// Kafka: a librdkafka property for the raw consumer and the sidecar's consumer alike
    /// (the sidecar gets it under `[source.kafka.properties]`); repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// NATS JetStream: the server (the bench creates and deletes its own streams there).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Redis, for the sidecar's dedup records (and the streams of `redis-streams`).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The brokers `--broker` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BrokerChoice {
    /// RabbitMQ.
    Amqp,
    /// Kafka.
    Kafka,
    /// Redis Streams.
    RedisStreams,
    /// NATS JetStream.
    Nats,
    /// RabbitMQ, Kafka, Redis Streams, then NATS JetStream.
    All,
}

impl BrokerChoice {
    /// Whether RabbitMQ is benched.
    pub fn amqp(self) -> bool {
        matches!(self, Self::Amqp | Self::All)
    }

    /// Whether Kafka is benched.
    pub fn kafka(self) -> bool {
        matches!(self, Self::Kafka | Self::All)
    }

    /// Whether NATS JetStream is benched.
    pub fn nats(self) -> bool {
        matches!(self, Self::Nats | Self::All)
    }

    /// Whether Redis Streams is benched.
    pub fn redis_streams(self) -> bool {
        matches!(self, Self::RedisStreams | Self::All)
    }
}

/// `KEY=VALUE`, split at the first `=`.
fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
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
    anyhow::ensure!(
        args.messages.is_none_or(|m| m >= 2),
        "--messages must be at least 2"
    );
    anyhow::ensure!(
        args.paced_messages >= 1,
        "--paced-messages must be at least 1"
    );
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be positive"
    );
    let reports = run::run(args).await?;
    if args.json {
        let json: serde_json::Map<_, _> = reports
            .iter()
            .map(|r| (r.broker.name().to_owned(), r.json()))
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for report in &reports {
            print!("{}", report.table());
        }
    }
    Ok(())
}
