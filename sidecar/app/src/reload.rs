//! SIGHUP: what config-reload tools in Kubernetes send when a policy changes. It never stops
//! the sidecar: the file is read and checked again; an invalid one is refused with every
//! error logged, a valid one is reported with the sections that differ from the policy in
//! force. Applying it live is not built yet: those changes take effect at the next restart,
//! and the log says so.

use std::path::PathBuf;

use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config};

/// Answers every SIGHUP on `hangups` until `shutdown`, checking `path` against `running`.
pub async fn on_hangup(
    mut hangups: Signal,
    path: PathBuf,
    running: Config,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangups.recv() => if got.is_none() { return },
        }
        match config::load_file(&path, std::env::vars()) {
            Err(errors) => {
                for e in &errors.errors {
                    error!(error = %e, "SIGHUP: the policy file is invalid; the running policy stays.");
                }
            }
            Ok(read) => {
                let changed = running.changed_sections(&read);
                if changed.is_empty() {
                    info!(path = %path.display(), "SIGHUP: the policy file is valid and unchanged.");
                } else {
                    warn!(
                        path = %path.display(),
                        changed = changed.join(", "),
                        "SIGHUP: the policy file is valid; its changes take effect at the next \
                         restart (live reload is not built yet)."
                    );
                }
            }
        }
    }
}
