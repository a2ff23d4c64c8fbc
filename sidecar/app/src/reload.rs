//! Live reload: SIGHUP (what config-reload tools in Kubernetes send) and, with
//! `reload.watch`, a change of the file on disk re-read the policy while the sidecar runs.
//!
//! - A file that fails validation is refused with every error logged; the policy in force
//!   stays.
//! - A valid one that changes only what a message's route holds (`[delivery]`,
//!   `[[classify.rules]]`, the retry budget and backoff, the dedup key) is applied: the route
//!   snapshot is swapped, messages taken from then on follow it, and messages in flight finish
//!   under the route they started with (each holds its own).
//! - One that changes anything else (the source, the store, the limits, the retry queues) is
//!   refused as a whole, with the sections that need a restart named: applying half of a
//!   policy would run one nobody wrote.
//!
//! Nothing in flight is touched either way, so a reload cannot drop or repeat a message.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{self, Config};
use crate::metrics::ReloadMetrics;
use crate::pipeline::Pipeline;
use crate::run::routes;

/// What set off a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Hangup,
    Watch,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Hangup => "SIGHUP",
            Trigger::Watch => "file change",
        }
    }
}

/// What became of one reload; also the metric's `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The new routes are in force.
    Applied,
    /// The file says what is in force already.
    Unchanged,
    /// The file is unreadable or invalid.
    Invalid,
    /// The file changes what only a restart can.
    Refused,
}

impl Reloaded {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reloaded::Applied => "applied",
            Reloaded::Unchanged => "unchanged",
            Reloaded::Invalid => "invalid",
            Reloaded::Refused => "refused",
        }
    }
}

/// The policy in force and where it came from; swaps routes in `pipeline`.
pub struct Reloader<D> {
    path: PathBuf,
    running: Config,
    /// The hash of the file content last read, valid or not: a watched file is only read
    /// again for a reload once it changed.
    seen: Option<String>,
    pipeline: Arc<Pipeline<D>>,
    metrics: ReloadMetrics,
}

impl<D> Reloader<D> {
    /// The reloader of the policy `running`, read from `path`, in force in `pipeline`.
    pub fn new(
        path: PathBuf,
        running: Config,
        pipeline: Arc<Pipeline<D>>,
        metrics: ReloadMetrics,
    ) -> Self {
        let seen = std::fs::read(&path).ok().map(|text| hash(&text));
        if let Some(hash) = &seen {
            metrics.in_force(hash);
        }
        Self {
            path,
            running,
            seen,
            pipeline,
            metrics,
        }
    }

    /// Answers every SIGHUP on `hangups`, and with `reload.watch` every change of the file,
    /// until `shutdown`.
    pub async fn serve(mut self, mut hangups: Signal, shutdown: CancellationToken) {
        let watch = self.running.reload.clone();
        let mut ticks = tokio::time::interval(watch.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => match got {
                    Some(()) => Trigger::Hangup,
                    None => return,
                },
                _ = ticks.tick(), if watch.watch => Trigger::Watch,
            };
            self.reload(trigger);
        }
    }

    /// Reads the file again and applies it if it can be; `None` when a watched file had not
    /// changed.
    fn reload(&mut self, trigger: Trigger) -> Option<Reloaded> {
        let path = self.path.display().to_string();
        let why = trigger.as_str();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if trigger == Trigger::Watch => {
                // A ConfigMap update swaps a symlink; a read in between may miss the file.
                tracing::debug!(%path, error = %e, "The watched policy file could not be read.");
                return None;
            }
            Err(e) => {
                error!(%path, error = %e, "{why}: the policy file cannot be read; the running policy stays.");
                return Some(self.counted(Reloaded::Invalid));
            }
        };
        let hash = hash(text.as_bytes());
        if trigger == Trigger::Watch && self.seen.as_deref() == Some(hash.as_str()) {
            return None;
        }
        self.seen = Some(hash.clone());
        // The text hashed is the text checked: the file may change again meanwhile.
        let read = match config::load_str(&text, &path, std::env::vars()) {
            Ok(read) => read,
            Err(errors) => {
                for e in &errors.errors {
                    error!(%path, error = %e, "{why}: the policy file is invalid; the running policy stays.");
                }
                return Some(self.counted(Reloaded::Invalid));
            }
        };
        let restart = self.running.restart_only_changes(&read);
        if !restart.is_empty() {
            error!(
                %path,
                sections = restart.join(", "),
                "{why}: the policy file changes what only a restart can change; nothing of it \
                 is applied, the running policy stays. Restart the sidecar to apply it."
            );
            return Some(self.counted(Reloaded::Refused));
        }
        let changed = self.running.changed_sections(&read);
        if changed.is_empty() {
            info!(%path, "{why}: the policy file is valid and unchanged.");
            self.metrics.in_force(&hash);
            return Some(self.counted(Reloaded::Unchanged));
        }
        self.pipeline.routes.swap(routes(&read));
        self.running = read;
        self.metrics.in_force(&hash);
        info!(
            %path,
            changed = changed.join(", "),
            hash,
            "{why}: the new policy is in force for messages taken from now on; messages in \
             flight finish under the one they started with."
        );
        Some(self.counted(Reloaded::Applied))
    }

    fn counted(&self, result: Reloaded) -> Reloaded {
        self.metrics.counted(result.as_str());
        result
    }
}

/// The first 12 hex digits of the SHA-256 of a policy file: short enough for a label, long
/// enough to tell policies apart.
pub fn hash(text: &[u8]) -> String {
    let digest = Sha256::digest(text);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}
