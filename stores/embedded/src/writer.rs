//! The writer thread: it owns the redb file and commits queued operations in batches.
//!
//! Each commit waits for the disk (fsync), and that wait, not the work inside the transaction,
//! is what an operation costs. So when the thread becomes free it takes every operation queued
//! by then, applies them in order in one write transaction (each reads the records as the
//! earlier ones left them, exactly as if it had a transaction of its own), commits once, and
//! only then answers them all. With many messages in flight one fsync covers many operations;
//! an operation alone costs what it did with its own transaction.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outrigger_core::{ChainId, Claim, Completion, Release, SequenceId, StoreError};
use outrigger_policies::dedup::{DedupRecord, Step};
use redb::Database;
use tokio::sync::{mpsc, oneshot};

use crate::chains::Chains;
use crate::error::{disk, unavailable};
use crate::sequences::Sequences;
use crate::table::{decode, Tables};

/// Most operations in one transaction: bounds how long the first of them waits for the last
/// to be applied before its commit.
pub(crate) const MAX_BATCH: usize = 256;
/// Expired records a batch removes per record it writes. More than one, so pruning outpaces
/// the at most one new expiry a write creates; few, so a batch stays short.
const PRUNE_PER_WRITE: usize = 8;
/// Expired records removed per transaction when the store opens.
const PRUNE_ON_OPEN_BATCH: usize = 10_000;

/// One operation of the protocol, or on a parked-key chain.
#[derive(Debug)]
pub(crate) enum Op {
    Claim {
        key: String,
    },
    Complete {
        key: String,
        fence: u64,
    },
    Release {
        key: String,
        fence: u64,
        how: Release,
    },
    DeadLettered {
        key: String,
        fence: u64,
        generation: u32,
    },
    Revive {
        key: String,
        generation: u32,
    },
    /// Checks a write transaction opens; answered with the rest of its batch.
    Ping,
    LoadChain {
        chain: ChainId,
    },
    SwapChain {
        chain: ChainId,
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
        parked: bool,
    },
    ParkedChains {
        group: String,
    },
    LoadSequence {
        id: SequenceId,
    },
    AdvanceSequence {
        id: SequenceId,
        next: u64,
    },
}

/// The answer to an [`Op`], of the same kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Claim(Claim),
    Complete(Completion),
    Release(bool),
    Ping,
    LoadChain(Option<Vec<u8>>),
    SwapChain(bool),
    ParkedChains(u64),
    Sequence(Option<u64>),
}

/// An operation and where its answer goes once its transaction has committed.
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// The store file and the protocol timings; lives on the writer thread.
pub(crate) struct Writer {
    db: Database,
    lease: Duration,
    ttl: Duration,
}

impl Writer {
    /// Opens (or creates) the file at `path` and drops the records that expired while it was
    /// closed. Blocking.
    pub(crate) fn open(path: &Path, lease: Duration, ttl: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|err| unavailable(format!("create directory {}: {err}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|err| {
            unavailable(format!(
                "open {}: {}",
                path.display(),
                redb::Error::from(err)
            ))
        })?;
        let writer = Writer { db, lease, ttl };
        writer.prune_all(now_ms()).map_err(disk)?;
        Ok(writer)
    }

    /// Answers `requests` batch by batch until every sender is gone and the queue is empty.
    pub(crate) fn run(self, mut requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while requests.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
            let (ops, replies): (Vec<Op>, Vec<_>) = batch
                .drain(..)
                .map(|request| (request.op, request.reply))
                .unzip();
            let answers = self
                .write_batch(&ops, now_ms)
                .unwrap_or_else(|err| vec![Err(disk(err)); ops.len()]);
            for (reply, answer) in replies.into_iter().zip(answers) {
                // A caller that stopped waiting still had its operation applied, as it would
                // have with a transaction of its own; nobody is left to tell.
                let _ = reply.send(answer);
            }
        }
    }

    /// Applies `ops` in order in one write transaction and commits it; returns one answer per
    /// op. `clock` gives the time (ms), read once the transaction holds redb's write lock.
    ///
    /// An op whose record cannot be decoded gets its own error and writes nothing; any other
    /// failure aborts the transaction, which fails the whole batch: nothing was written.
    pub(crate) fn write_batch(
        &self,
        ops: &[Op],
        clock: impl FnOnce() -> u64,
    ) -> Result<Vec<Result<Answer, StoreError>>, redb::Error> {
        let txn = self.db.begin_write()?;
        let (answers, writes) = {
            let mut batch = Batch {
                tables: Tables::open(&txn)?,
                chains: Chains::open(&txn)?,
                sequences: Sequences::open(&txn)?,
                now: clock(),
                lease: self.lease,
                ttl: self.ttl,
                writes: 0,
                chain_writes: 0,
            };
            let answers = ops
                .iter()
                .map(|op| batch.apply(op))
                .collect::<Result<Vec<_>, _>>()?;
            if batch.writes > 0 {
                let limit = batch.writes * PRUNE_PER_WRITE;
                batch.tables.prune(batch.now, limit)?;
                batch.sequences.prune(batch.now, limit)?;
            }
            (answers, batch.writes + batch.chain_writes)
        };
        if writes == 0 {
            // Every answer rests on records an earlier batch committed before answering, so
            // there is nothing to make durable: skip the fsync.
            txn.abort()?;
        } else {
            // The answers go out only once the batch is on disk: callers ack the broker on them.
            txn.commit()?;
        }
        Ok(answers)
    }

    /// Removes every expired record, in batches so no transaction grows without bound.
    fn prune_all(&self, now: u64) -> Result<(), redb::Error> {
        loop {
            let txn = self.db.begin_write()?;
            let removed = Tables::open(&txn)?.prune(now, PRUNE_ON_OPEN_BATCH)?;
            let positions = Sequences::open(&txn)?.prune(now, PRUNE_ON_OPEN_BATCH)?;
            txn.commit()?;
            if removed < PRUNE_ON_OPEN_BATCH && positions < PRUNE_ON_OPEN_BATCH {
                return Ok(());
            }
        }
    }
}

/// The tables and time of one batch's transaction.
struct Batch<'txn> {
    tables: Tables<'txn>,
    chains: Chains<'txn>,
    sequences: Sequences<'txn>,
    now: u64,
    lease: Duration,
    ttl: Duration,
    /// Dedup records written so far; each may add an expiry, which pruning makes up for.
    writes: usize,
    /// Chains swapped so far; they never expire.
    chain_writes: usize,
}

impl Batch<'_> {
    /// Applies `op`. The outer error fails the whole batch, the inner one only this op.
    fn apply(&mut self, op: &Op) -> Result<Result<Answer, StoreError>, redb::Error> {
        let (now, lease) = (self.now, self.lease);
        Ok(match op {
            Op::Claim { key } => self
                .transition(key, |current| DedupRecord::claim(current, now, lease))?
                .map(Answer::Claim),
            Op::Complete { key, fence } => self
                .transition(key, |current| DedupRecord::complete(current, *fence))?
                .map(Answer::Complete),
            Op::Release { key, fence, how } => self
                .transition(key, |current| DedupRecord::release(current, *fence, *how))?
                .map(Answer::Release),
            Op::DeadLettered {
                key,
                fence,
                generation,
            } => self
                .transition(key, |current| {
                    DedupRecord::dead_lettered(current, *fence, *generation)
                })?
                .map(Answer::Complete),
            Op::Revive { key, generation } => self
                .transition(key, |current| DedupRecord::revive(current, *generation))?
                .map(Answer::Release),
            Op::Ping => Ok(Answer::Ping),
            Op::LoadChain { chain } => Ok(Answer::LoadChain(self.chains.load(chain)?)),
            Op::SwapChain {
                chain,
                old,
                new,
                parked,
            } => {
                let swapped = self
                    .chains
                    .swap(chain, old.as_deref(), new.as_deref(), *parked)?;
                self.chain_writes += usize::from(swapped);
                Ok(Answer::SwapChain(swapped))
            }
            Op::ParkedChains { group } => Ok(Answer::ParkedChains(self.chains.parked(group)?)),
            Op::LoadSequence { id } => Ok(Answer::Sequence(self.sequences.load(id, self.now)?)),
            Op::AdvanceSequence { id, next } => {
                let expires = self.now.saturating_add(millis(self.ttl));
                let stored = self.sequences.advance(id, *next, self.now, expires)?;
                // Like a dedup record's, its expiry is made up for by pruning.
                self.writes += 1;
                Ok(Answer::Sequence(Some(stored)))
            }
        })
    }

    /// Applies one transition to `key`, on the records as the batch's earlier ops left them.
    fn transition<T>(
        &mut self,
        key: &str,
        apply: impl FnOnce(Option<&DedupRecord>) -> Step<T>,
    ) -> Result<Result<T, StoreError>, redb::Error> {
        let stored = match self.tables.get(key)?.map(decode).transpose() {
            Ok(stored) => stored,
            Err(err) => return Ok(Err(err)),
        };
        // An expired record counts as absent even before pruning removes it.
        let live = stored.filter(|&(_, expires_at)| expires_at > self.now);
        let step = apply(live.as_ref().map(|(record, _)| record));
        if let Some(record) = step.write {
            let replaced_expiry = stored.map(|(_, expires_at)| expires_at);
            let expires_at = record.expires_at_ms(self.now, self.ttl);
            self.tables.put(key, &record, replaced_expiry, expires_at)?;
            self.writes += 1;
        }
        Ok(Ok(step.answer))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock milliseconds since the Unix epoch: records outlive the process.
fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
