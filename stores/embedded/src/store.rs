//! [`EmbeddedStore`]: the handle callers share, and the queue to the writer thread.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use outrigger_core::{
    ChainId, Claim, Completion, DedupStore, ParkingStore, Release, SequenceId, SequenceStore,
    StoreError,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::EmbeddedStoreConfig;
use crate::error::unavailable;
use crate::writer::{Answer, Op, Request, Writer, MAX_BATCH};

/// Operations waiting for the writer: room for the next batches behind the one committing.
/// Bounded, so a stalled disk makes callers wait instead of growing memory.
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

/// A dedup store in a local redb file, for a service with a single replica; it keeps the
/// parked-key chains of retry queues too.
///
/// One thread owns the file and runs every operation; operations that queue up while it waits
/// for the disk share the next transaction and its fsync. Each answer comes only once the
/// transaction holding its operation has committed.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Fields drop in declaration order: the last handle closes the queue, which ends the
    // writer's loop, before `_writer` waits for the thread. Held only for that drop.
    requests: mpsc::Sender<Request>,
    _writer: WriterThread,
    path: PathBuf,
    lease: Duration,
    ttl: Duration,
}

/// Waits, when dropped, for the writer thread to answer what is queued and close the file, so
/// the file can be opened again as soon as the last handle is gone.
struct WriterThread(Option<JoinHandle<()>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            // A panic there already failed every caller it had queued; nothing to add here.
            let _ = thread.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file, drops the records that expired while it was closed,
    /// and starts the thread that writes to it.
    ///
    /// Blocking: call it at startup, or from `spawn_blocking`. Fails with
    /// [`StoreError::Unavailable`] when the file cannot be opened, for instance because another
    /// process holds it. Dropping the last clone briefly blocks: it waits for the writer to
    /// finish what is still queued (only operations whose callers gave up) and close the file.
    pub fn open(config: EmbeddedStoreConfig) -> Result<Self, StoreError> {
        let writer = Writer::open(&config.path, config.lease, config.ttl)?;
        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("dedup-writer".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|err| unavailable(format!("start the writer thread: {err}")))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                requests,
                _writer: WriterThread(Some(thread)),
                path: config.path,
                lease: config.lease,
                ttl: config.ttl,
            }),
        })
    }

    /// Queues every op before waiting for any, so the writer takes them into one transaction
    /// (one fsync), and returns their answers in order.
    async fn call_all(&self, ops: Vec<Op>) -> Result<Vec<Answer>, StoreError> {
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            let (reply, answer) = oneshot::channel();
            self.inner
                .requests
                .send(Request { op, reply })
                .await
                .map_err(|_| writer_stopped())?;
            answers.push(answer);
        }
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answer.await.map_err(|_| writer_stopped())??);
        }
        Ok(out)
    }

    /// Queues `op` and waits until the transaction holding it has committed.
    async fn call(&self, op: Op) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request { op, reply })
            .await
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

/// The writer thread is gone: it panicked, so the store answers nothing more.
fn writer_stopped() -> StoreError {
    unavailable("the writer thread stopped")
}

/// An answer of another kind than the operation: a bug in this crate, reported, not panicked on.
fn mismatched(op: &str, answer: Answer) -> StoreError {
    StoreError::Protocol(format!(
        "embedded dedup store answered {answer:?} to a {op}"
    ))
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("lease", &self.inner.lease)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl DedupStore for EmbeddedStore {
    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        match self
            .call(Op::Claim {
                key: key.to_owned(),
            })
            .await?
        {
            Answer::Claim(claim) => Ok(claim),
            other => Err(mismatched("claim", other)),
        }
    }

    async fn claim_many(&self, keys: &[&str]) -> Result<Vec<Claim>, StoreError> {
        let ops = keys
            .iter()
            .map(|key| Op::Claim {
                key: (*key).to_owned(),
            })
            .collect();
        self.call_all(ops)
            .await?
            .into_iter()
            .map(|answer| match answer {
                Answer::Claim(claim) => Ok(claim),
                other => Err(mismatched("claim", other)),
            })
            .collect()
    }

    async fn complete_many(&self, claims: &[(&str, u64)]) -> Result<Vec<Completion>, StoreError> {
        let ops = claims
            .iter()
            .map(|(key, fence)| Op::Complete {
                key: (*key).to_owned(),
                fence: *fence,
            })
            .collect();
        self.call_all(ops)
            .await?
            .into_iter()
            .map(|answer| match answer {
                Answer::Complete(completion) => Ok(completion),
                other => Err(mismatched("completion", other)),
            })
            .collect()
    }

    async fn complete(&self, key: &str, fence: u64) -> Result<Completion, StoreError> {
        let op = Op::Complete {
            key: key.to_owned(),
            fence,
        };
        match self.call(op).await? {
            Answer::Complete(completion) => Ok(completion),
            other => Err(mismatched("completion", other)),
        }
    }

    async fn release(&self, key: &str, fence: u64, how: Release) -> Result<bool, StoreError> {
        let op = Op::Release {
            key: key.to_owned(),
            fence,
            how,
        };
        match self.call(op).await? {
            Answer::Release(released) => Ok(released),
            other => Err(mismatched("release", other)),
        }
    }

    async fn dead_lettered(
        &self,
        key: &str,
        fence: u64,
        generation: u32,
    ) -> Result<Completion, StoreError> {
        let op = Op::DeadLettered {
            key: key.to_owned(),
            fence,
            generation,
        };
        match self.call(op).await? {
            Answer::Complete(completion) => Ok(completion),
            other => Err(mismatched("dead letter", other)),
        }
    }

    async fn revive(&self, key: &str, generation: u32) -> Result<bool, StoreError> {
        let op = Op::Revive {
            key: key.to_owned(),
            generation,
        };
        match self.call(op).await? {
            Answer::Release(revived) => Ok(revived),
            other => Err(mismatched("revive", other)),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self.call(Op::Ping).await? {
            Answer::Ping => Ok(()),
            other => Err(mismatched("ping", other)),
        }
    }
}

impl ParkingStore for EmbeddedStore {
    async fn load_chain(&self, chain: &ChainId) -> Result<Option<Bytes>, StoreError> {
        let op = Op::LoadChain {
            chain: chain.clone(),
        };
        match self.call(op).await? {
            Answer::LoadChain(value) => Ok(value.map(Bytes::from)),
            other => Err(mismatched("chain load", other)),
        }
    }

    async fn swap_chain(
        &self,
        chain: &ChainId,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
        parked: bool,
    ) -> Result<bool, StoreError> {
        let op = Op::SwapChain {
            chain: chain.clone(),
            old: old.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
            parked,
        };
        match self.call(op).await? {
            Answer::SwapChain(swapped) => Ok(swapped),
            other => Err(mismatched("chain swap", other)),
        }
    }

    async fn parked_chains(&self, group: &str) -> Result<u64, StoreError> {
        let op = Op::ParkedChains {
            group: group.to_owned(),
        };
        match self.call(op).await? {
            Answer::ParkedChains(count) => Ok(count),
            other => Err(mismatched("parked count", other)),
        }
    }
}

impl SequenceStore for EmbeddedStore {
    async fn next_sequence(&self, id: &SequenceId) -> Result<Option<u64>, StoreError> {
        match self.call(Op::LoadSequence { id: id.clone() }).await? {
            Answer::Sequence(next) => Ok(next),
            other => Err(mismatched("sequence load", other)),
        }
    }

    async fn advance_sequence(&self, id: &SequenceId, next: u64) -> Result<u64, StoreError> {
        let op = Op::AdvanceSequence {
            id: id.clone(),
            next,
        };
        match self.call(op).await? {
            Answer::Sequence(Some(stored)) => Ok(stored),
            other => Err(mismatched("sequence advance", other)),
        }
    }
}
