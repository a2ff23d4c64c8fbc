//! [`EmbeddedStore`]: transactions and pruning.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outrigger_core::{Claim, Completion, DedupStore, Release, StoreError};
use outrigger_policies::dedup::{DedupRecord, Step};
use redb::{Database, ReadableDatabase, ReadableTable, Table};
use tokio::sync::Mutex;

use crate::config::EmbeddedStoreConfig;
use crate::table::{decode, encode, Stored, EXPIRY, RECORDS};

/// Expired records each write also removes. More than one, so pruning outpaces the at most one
/// new expiry a write creates; few, so a write stays short.
const PRUNE_PER_WRITE: usize = 8;
/// Expired records removed per transaction when the store opens.
const PRUNE_ON_OPEN_BATCH: usize = 10_000;

/// A dedup store in a local redb file, for a service with a single replica.
///
/// redb runs one write transaction at a time, which makes each operation atomic; calls run on
/// Tokio's blocking pool because every write waits for its commit to reach the disk.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// Lets one call at a time onto the blocking pool: the others would only wait there for
    /// redb's write lock, each holding a blocking thread.
    writer: Mutex<()>,
    path: PathBuf,
    lease: Duration,
    ttl: Duration,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file and drops the records that expired while it was closed.
    ///
    /// Blocking: call it at startup, or from `spawn_blocking`. Fails with
    /// [`StoreError::Unavailable`] when the file cannot be opened, for instance because another
    /// process holds it.
    pub fn open(config: EmbeddedStoreConfig) -> Result<Self, StoreError> {
        let path = config.path;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|err| unavailable(format!("create directory {}: {err}", dir.display())))?;
        }
        let db = Database::create(&path).map_err(|err| {
            unavailable(format!(
                "open {}: {}",
                path.display(),
                redb::Error::from(err)
            ))
        })?;
        let inner = Inner {
            db,
            writer: Mutex::new(()),
            path,
            lease: config.lease,
            ttl: config.ttl,
        };
        inner.prune_all(now_ms())?;
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
        })
    }

    /// Runs one transition of the protocol on `key` in a write transaction.
    async fn transition<T, F>(&self, key: &str, apply: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Option<&DedupRecord>, u64) -> Step<T> + Send + 'static,
    {
        let _writer = self.inner.writer.lock().await;
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || inner.transition(&key, now_ms, apply))
            .await
            .map_err(|err| unavailable(format!("store task failed: {err}")))?
    }
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
        let lease = self.inner.lease;
        self.transition(key, move |current, now| {
            DedupRecord::claim(current, now, lease)
        })
        .await
    }

    async fn complete(&self, key: &str, fence: u64) -> Result<Completion, StoreError> {
        self.transition(key, move |current, _| DedupRecord::complete(current, fence))
            .await
    }

    async fn release(&self, key: &str, fence: u64, how: Release) -> Result<bool, StoreError> {
        self.transition(key, move |current, _| {
            DedupRecord::release(current, fence, how)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let txn = inner.db.begin_read().map_err(disk)?;
            txn.open_table(RECORDS).map(drop).map_err(disk)
        })
        .await
        .map_err(|err| unavailable(format!("store task failed: {err}")))?
    }
}

impl Inner {
    /// Applies one transition to `key`, committing any write. `clock` gives the time (ms) and
    /// is read once the write lock is held, so a wait for the lock cannot make the time stale.
    fn transition<T>(
        &self,
        key: &str,
        clock: impl FnOnce() -> u64,
        apply: impl FnOnce(Option<&DedupRecord>, u64) -> Step<T>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write().map_err(disk)?;
        let now = clock();
        let answer = {
            let mut records = txn.open_table(RECORDS).map_err(disk)?;
            let stored = match records.get(key).map_err(disk)? {
                Some(guard) => Some(decode(guard.value())?),
                None => None,
            };
            // An expired record counts as absent even before pruning removes it.
            let live = stored.filter(|&(_, expires_at)| expires_at > now);
            let step = apply(live.as_ref().map(|(record, _)| record), now);
            let Some(record) = step.write else {
                drop(records);
                txn.abort().map_err(disk)?;
                return Ok(step.answer);
            };
            let mut expiry = txn.open_table(EXPIRY).map_err(disk)?;
            if let Some((_, old_expiry)) = stored {
                expiry.remove((old_expiry, key)).map_err(disk)?;
            }
            let expires_at = record.expires_at_ms(now, self.ttl);
            records
                .insert(key, encode(&record, expires_at))
                .map_err(disk)?;
            expiry.insert((expires_at, key), ()).map_err(disk)?;
            prune(&mut records, &mut expiry, now, PRUNE_PER_WRITE).map_err(disk)?;
            step.answer
        };
        // The answer goes out only once the record is on disk: the caller acks the broker on it.
        txn.commit().map_err(disk)?;
        Ok(answer)
    }

    /// Removes every expired record, in batches so no transaction grows without bound.
    fn prune_all(&self, now: u64) -> Result<(), StoreError> {
        loop {
            let txn = self.db.begin_write().map_err(disk)?;
            let removed = {
                // Opening the tables also creates them, so later reads find them.
                let mut records = txn.open_table(RECORDS).map_err(disk)?;
                let mut expiry = txn.open_table(EXPIRY).map_err(disk)?;
                prune(&mut records, &mut expiry, now, PRUNE_ON_OPEN_BATCH).map_err(disk)?
            };
            txn.commit().map_err(disk)?;
            if removed < PRUNE_ON_OPEN_BATCH {
                return Ok(());
            }
        }
    }
}

/// Removes up to `limit` records that expired by `now`; returns how many.
fn prune(
    records: &mut Table<&str, Stored>,
    expiry: &mut Table<(u64, &str), ()>,
    now: u64,
    limit: usize,
) -> Result<usize, redb::Error> {
    let mut expired = Vec::new();
    // Everything with expiry <= now: the smallest key of the next millisecond bounds the range.
    for entry in expiry.range(..(now.saturating_add(1), ""))?.take(limit) {
        let (index, _) = entry?;
        let (expires_at, key) = index.value();
        expired.push((expires_at, key.to_owned()));
    }
    for (expires_at, key) in &expired {
        expiry.remove((*expires_at, key.as_str()))?;
        records.remove(key.as_str())?;
    }
    Ok(expired.len())
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// A failed disk operation; the path is in the config (and the startup log), not repeated here.
fn disk(err: impl Into<redb::Error>) -> StoreError {
    unavailable(err.into())
}

fn unavailable(err: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded dedup store: {err}"))
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;
    use tempfile::TempDir;

    use super::*;

    fn open(dir: &TempDir, ttl: Duration) -> EmbeddedStore {
        EmbeddedStore::open(EmbeddedStoreConfig {
            path: dir.path().join("dedup.redb"),
            lease: ttl,
            ttl,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn rewriting_a_key_moves_its_expiry_entry() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir, Duration::from_secs(60));
        store.claim("k").await.unwrap();
        assert!(store.release("k", 1, Release::Retry).await.unwrap());
        store.claim("k").await.unwrap();
        // Answers that write nothing leave the tables alone.
        store.claim("k").await.unwrap();
        store.complete("missing", 1).await.unwrap();
        assert_eq!(rows(&store), (1, 1));
    }

    /// (records, expiry index entries) on disk.
    fn rows(store: &EmbeddedStore) -> (u64, u64) {
        let txn = store.inner.db.begin_read().unwrap();
        let records = txn.open_table(RECORDS).unwrap().len().unwrap();
        let expiry = txn.open_table(EXPIRY).unwrap().len().unwrap();
        (records, expiry)
    }

    fn claim_at(store: &EmbeddedStore, key: &str, now: u64) {
        let lease = store.inner.lease;
        store
            .inner
            .transition(
                key,
                || now,
                |current, now| DedupRecord::claim(current, now, lease),
            )
            .unwrap();
    }

    #[test]
    fn expired_records_are_pruned_by_writes_and_on_open() {
        let dir = TempDir::new().unwrap();
        let ttl = Duration::from_millis(50);
        let store = open(&dir, ttl);
        let start = now_ms();
        for key in 0..20 {
            claim_at(&store, &key.to_string(), start);
        }
        assert_eq!(rows(&store), (20, 20));

        // A write after the TTL removes a few expired records besides writing its own.
        let later = start + 51;
        claim_at(&store, "fresh", later);
        let after_one = 20 - PRUNE_PER_WRITE as u64 + 1;
        assert_eq!(rows(&store), (after_one, after_one));
        claim_at(&store, "fresh-2", later);
        let after_two = after_one - PRUNE_PER_WRITE as u64 + 1;
        assert_eq!(rows(&store), (after_two, after_two));

        // Opening removes every expired record, and only those.
        store.inner.prune_all(later).unwrap();
        assert_eq!(rows(&store), (2, 2));
        store.inner.prune_all(later + 51).unwrap();
        assert_eq!(rows(&store), (0, 0));
    }
}
