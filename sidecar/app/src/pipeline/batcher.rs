//! Claims and completions of concurrent messages share store round trips.
//!
//! Every worker hands its claim or completion to one task, which sends what has gathered as
//! one call to the store ([`DedupStore::claim_many`], [`DedupStore::complete_many`]) and
//! hands each caller its own answer. Nothing waits to fill a batch: a call goes out as soon as
//! the previous one returned, with whatever came meanwhile, so an idle sidecar pays one round
//! trip per operation and a busy one a fraction of one per message.
//!
//! Requests are taken in the order they were made, and within a batch completions go before
//! claims: a claim made after a completion of the same key (the next message of a lane, once
//! the app answered) sees the key done.

use std::sync::Arc;

use outrigger_core::{Claim, Completion, DedupStore, StoreError};
use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};

/// The most operations one store call carries: a bound on the script's run time in Redis,
/// which serves no one else meanwhile.
const MAX_BATCH: usize = 128;

enum Request {
    Claim(String, oneshot::Sender<Result<Claim, StoreError>>),
    Complete(String, u64, oneshot::Sender<Result<Completion, StoreError>>),
}

/// The handle workers send claims and completions through.
#[derive(Clone)]
pub struct Batcher {
    requests: mpsc::UnboundedSender<Request>,
}

impl Batcher {
    /// Starts the task that talks to `store`; `calls` counts its store calls. The task ends
    /// when the last handle is dropped.
    pub fn start<D: DedupStore>(store: Arc<D>, calls: IntCounter) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(serve(store, queue, calls));
        Self { requests }
    }

    /// Queues the claim of `key` now, in a call shared with whatever else is under way, and
    /// returns its answer to await.
    pub fn claim(
        &self,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Claim, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .requests
            .send(Request::Claim(key.to_owned(), reply))
            .map_err(|_| stopped());
        async move {
            queued?;
            answer.await.map_err(|_| stopped())?
        }
    }

    /// Queues the completion of `key` by `fence` now, in order with every later request, and
    /// returns its answer to await.
    pub fn complete(
        &self,
        key: &str,
        fence: u64,
    ) -> impl std::future::Future<Output = Result<Completion, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .requests
            .send(Request::Complete(key.to_owned(), fence, reply))
            .map_err(|_| stopped());
        async move {
            queued?;
            answer.await.map_err(|_| stopped())?
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's batching task stopped".to_owned())
}

async fn serve<D: DedupStore>(
    store: Arc<D>,
    mut queue: mpsc::UnboundedReceiver<Request>,
    calls: IntCounter,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut completions = Vec::new();
        let mut claims = Vec::new();
        for request in batch.drain(..) {
            match request {
                Request::Complete(key, fence, reply) => completions.push((key, fence, reply)),
                Request::Claim(key, reply) => claims.push((key, reply)),
            }
        }
        if !completions.is_empty() {
            calls.inc();
            let args: Vec<(&str, u64)> = completions
                .iter()
                .map(|(k, f, _)| (k.as_str(), *f))
                .collect();
            let answers = store.complete_many(&args).await;
            reply_each(completions.into_iter().map(|(_, _, r)| r), answers);
        }
        if !claims.is_empty() {
            calls.inc();
            let keys: Vec<&str> = claims.iter().map(|(k, _)| k.as_str()).collect();
            let answers = store.claim_many(&keys).await;
            reply_each(claims.into_iter().map(|(_, r)| r), answers);
        }
    }
}

/// Each caller its answer, or every caller the failure.
fn reply_each<T>(
    replies: impl Iterator<Item = oneshot::Sender<Result<T, StoreError>>>,
    answers: Result<Vec<T>, StoreError>,
) {
    match answers {
        Ok(answers) => {
            for (reply, answer) in replies.zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_embedded::{EmbeddedStore, EmbeddedStoreConfig};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_share_calls_and_answer_each_caller() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            EmbeddedStore::open(EmbeddedStoreConfig {
                path: dir.path().join("d.redb"),
                lease: Duration::from_secs(30),
                ttl: Duration::from_secs(60),
            })
            .unwrap(),
        );
        let calls = IntCounter::new("calls", "calls").unwrap();
        let batcher = Batcher::start(store, calls.clone());
        let claims: Vec<_> = (0..200)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.claim(&format!("k-{}", i % 100)).await.unwrap() })
            })
            .collect();
        let mut acquired = 0;
        for c in claims {
            if matches!(c.await.unwrap(), Claim::Acquired { .. }) {
                acquired += 1;
            }
        }
        assert_eq!(acquired, 100, "each key once");
        assert!(
            calls.get() < 200,
            "claims shared calls ({} calls)",
            calls.get()
        );
        // A completion queued before a claim of the same key is seen by it.
        let done = batcher.complete("k-0", 1);
        let after = batcher.claim("k-0");
        assert_eq!(done.await.unwrap(), Completion::Completed);
        assert_eq!(after.await.unwrap(), Claim::Done);
    }
}
