//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Outrigger: a consumer-side reliability sidecar. It consumes your service's events from a
/// broker and hands your app each event once, over local HTTP, with retries and dead letters.
#[derive(Debug, Parser)]
#[command(name = "outrigger", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar with a policy file until SIGTERM.
    Run {
        /// The TOML policy file.
        #[arg(long, short, env = "OUTRIGGER_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a policy file without touching any service; report every error at once.
    Check {
        /// The TOML policy file.
        #[arg(long, short, env = "OUTRIGGER_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Also say which route a message like this one would take, and what it would get:
        /// `source=orders,type=order.refunded,header.x-tenant=acme` (each part optional).
        #[arg(long, value_name = "SAMPLE")]
        explain: Vec<String>,
    },
    /// Run thousands of events through every policy in-process: no broker, no Redis needed.
    Demo {
        /// How many distinct events to publish (duplicates come on top).
        #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
        events: u32,
        /// Seed for the event mix, so a run can be repeated.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// List, show, resubmit and purge the dead letters of the source a policy file configures.
    Dlq(Box<crate::dlq::args::DlqArgs>),
}
