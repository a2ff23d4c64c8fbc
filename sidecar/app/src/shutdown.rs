//! Turning SIGTERM and SIGINT into a cancellation every loop listens to.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub async fn on_signal(shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop the sidecar with SIGKILL.");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping consumption and draining."),
        _ = int.recv() => info!("SIGINT: stopping consumption and draining."),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}
