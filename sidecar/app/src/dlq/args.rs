//! The `outrigger dlq` command line.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Subcommand};

use super::filter::{self, Filter, KeyPattern, StatusFilter};

/// `outrigger dlq`: the dead letters of the source a policy file configures.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// What to do with them.
    #[command(subcommand)]
    pub command: DlqCommand,
}

impl DlqArgs {
    /// The policy file every subcommand reads.
    pub fn config(&self) -> &std::path::Path {
        match &self.command {
            DlqCommand::List { config, .. }
            | DlqCommand::Show { config, .. }
            | DlqCommand::Resubmit { config, .. }
            | DlqCommand::Purge { config, .. } => config,
        }
    }

    /// Which dead-letter destination every subcommand works on.
    pub fn target(&self) -> &TargetArgs {
        match &self.command {
            DlqCommand::List { target, .. }
            | DlqCommand::Show { target, .. }
            | DlqCommand::Resubmit { target, .. }
            | DlqCommand::Purge { target, .. } => target,
        }
    }
}

/// Which dead-letter destination to work on: the policy's (`dead_letter.destination`, else
/// `<source>.dlq`) unless one of these names another the policy uses.
#[derive(Clone, Debug, Default, Args)]
pub struct TargetArgs {
    /// The dead letters of this route: the destination its `[routes.dead_letter]` names (the
    /// policy's when it names none).
    #[arg(long, value_name = "NAME", conflicts_with = "destination")]
    pub route: Option<String>,
    /// The dead letters in this destination (queue, topic, stream or subject): the policy's
    /// or one a route names.
    #[arg(long, value_name = "NAME")]
    pub destination: Option<String>,
}

/// The `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: id, time, source, key, status, attempts, reason.
    List {
        /// The TOML policy file of the sidecar whose dead letters these are.
        #[arg(long, short, env = "OUTRIGGER_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Which dead-letter destination.
        #[command(flatten)]
        target: TargetArgs,
        /// Which ones.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Also records already resubmitted or purged (on Kafka, whose topics keep them).
        #[arg(long)]
        all: bool,
    },
    /// Print one dead letter: failure context, headers and payload.
    Show {
        /// The record's id, as `list` prints it.
        id: String,
        /// The TOML policy file.
        #[arg(long, short, env = "OUTRIGGER_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Which dead-letter destination.
        #[command(flatten)]
        target: TargetArgs,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters again to the queue or topic they failed on (or `--to`), with
    /// their original payload, key and headers and a resubmission mark; each leaves the
    /// dead-letter queue (on Kafka: is marked resubmitted) once the broker confirmed its copy.
    Resubmit {
        /// Records by id; with filters, only those that also match.
        ids: Vec<String>,
        /// The TOML policy file.
        #[arg(long, short, env = "OUTRIGGER_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Which dead-letter destination.
        #[command(flatten)]
        target: TargetArgs,
        /// Which ones.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Publish to this queue or topic instead of each record's own source.
        #[arg(long, value_name = "QUEUE")]
        to: Option<String>,
        /// Show what would be sent, send nothing, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many messages per second.
        #[arg(long, value_name = "N", value_parser = filter::parse_rate)]
        rate: Option<f64>,
        /// Who resubmits, for the mark on each message (default: user@host).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Delete dead letters for good (on Kafka: mark them purged). Asks first on a terminal.
    Purge {
        /// Records by id; with filters, only those that also match.
        ids: Vec<String>,
        /// The TOML policy file.
        #[arg(long, short, env = "OUTRIGGER_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Which dead-letter destination.
        #[command(flatten)]
        target: TargetArgs,
        /// Which ones.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Do not ask for confirmation (required when not on a terminal).
        #[arg(long, short)]
        yes: bool,
        /// Show what would be purged, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who purges (default: user@host).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// The filters every selecting subcommand takes.
#[derive(Debug, Default, Args)]
pub struct FilterArgs {
    /// Dead-lettered at or after: a UTC time (2024-05-01T12:00:00Z, 2024-05-01) or a
    /// duration ago (2h).
    #[arg(long, value_name = "TIME", value_parser = filter::parse_time)]
    pub since: Option<SystemTime>,
    /// Dead-lettered at or before: a UTC time or a duration ago.
    #[arg(long, value_name = "TIME", value_parser = filter::parse_time)]
    pub until: Option<SystemTime>,
    /// Reason text (case-insensitive), or a failure class: 4xx, 5xx, timeout, connection,
    /// decode.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The app's last HTTP status: 400, 4xx, or none (it never answered). Or where the
    /// record stands: pending, handled, resubmitted, purged (Kafka keeps handled records and
    /// lists them with these or --all).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<StatusFilter>,
    /// Idempotency key; `order-*` matches a prefix.
    #[arg(long, value_name = "KEY")]
    pub key: Option<KeyPattern>,
    /// The queue or topic the message failed on.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
}

impl From<FilterArgs> for Filter {
    fn from(a: FilterArgs) -> Self {
        Filter {
            since: a.since,
            until: a.until,
            reason: a.reason,
            status: a.status,
            key: a.key,
            source: a.source,
        }
    }
}
