//! Keeps the entries this consumer holds its own: every quarter of `claim_idle` it claims them
//! again for itself (`XCLAIM ... JUSTID`, through a script that skips any entry another
//! consumer holds by now), which starts their idle time over without counting a delivery. A
//! delivery slower than `claim_idle` is therefore never taken over by a peer while this
//! sidecar runs; once it stops refreshing (it crashed, or Redis was unreachable for three
//! refreshes in a row), a peer takes its entries after `claim_idle`.

use std::sync::Arc;

use outrigger_core::Episode;
use tracing::debug;

use crate::shared::Shared;

/// Most ids one refresh claims in one call.
const CHUNK: usize = 500;

/// Refreshes the held entries until the task is aborted (the source is dropped).
pub(crate) async fn run(shared: Arc<Shared>) {
    let failing = Episode::new(
        "Could not refresh the Redis stream entries this sidecar holds; a peer may take them \
         over after claim_idle.",
        "Refreshing the held Redis stream entries works again.",
    );
    let every = shared.settings.keep_interval();
    loop {
        tokio::time::sleep(every).await;
        match refresh(&shared).await {
            Ok(()) => failing.recovered(),
            Err(error) => failing.failed(&error),
        }
    }
}

/// One refresh of every stream's held entries.
async fn refresh(shared: &Shared) -> Result<(), outrigger_core::SourceError> {
    let s = &shared.settings;
    // Retry copies waiting for their time are held too: a peer must not take them either.
    for (index, stream) in shared.streams.iter().enumerate() {
        let ids = shared.ledger.ids(index);
        for chunk in ids.chunks(CHUNK) {
            let kept = shared
                .redis
                .claim_own(stream, &s.group, &s.consumer, None, chunk)
                .await?;
            if kept.len() < chunk.len() {
                // Settled meanwhile, deleted from the stream, or (after a long outage) taken
                // over by a peer: its settlement then changes nothing here.
                debug!(
                    stream,
                    held = chunk.len(),
                    kept = kept.len(),
                    "Some held entries are no longer pending on this consumer."
                );
            }
        }
    }
    Ok(())
}
