//! The sequence tables: the next expected sequence of each key, and its expiry.
//!
//! `SEQUENCES` maps (source, key) to the next sequence and when it expires; `SEQUENCE_EXPIRY`
//! indexes the same rows by expiry, as `EXPIRY` does the dedup records, so pruning reads only
//! what has expired. Both change in the same transaction.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use outrigger_core::SequenceId;

/// (source, key).
type SequenceKey = (&'static str, &'static [u8]);

/// (source, key) → (next sequence, expiry ms).
pub(crate) const SEQUENCES: TableDefinition<SequenceKey, (u64, u64)> =
    TableDefinition::new("sequence_next_v1");
/// (expiry ms, source, key) → nothing.
pub(crate) const SEQUENCE_EXPIRY: TableDefinition<(u64, &str, &[u8]), ()> =
    TableDefinition::new("sequence_expiry_v1");

/// Both tables, open in one write transaction.
pub(crate) struct Sequences<'txn> {
    next: Table<'txn, SequenceKey, (u64, u64)>,
    expiry: Table<'txn, (u64, &'static str, &'static [u8]), ()>,
}

impl<'txn> Sequences<'txn> {
    /// Opens both tables; in a new file this creates them.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Sequences {
            next: txn.open_table(SEQUENCES)?,
            expiry: txn.open_table(SEQUENCE_EXPIRY)?,
        })
    }

    /// The next sequence of `id` unless it expired by `now_ms`.
    pub(crate) fn load(&self, id: &SequenceId, now_ms: u64) -> Result<Option<u64>, redb::Error> {
        Ok(self
            .get(id)?
            .filter(|&(_, expires)| expires > now_ms)
            .map(|(next, _)| next))
    }

    /// Raises the next sequence of `id` to `next` (a live higher one stays) and keeps it until
    /// `expires_ms`; returns the position stored.
    pub(crate) fn advance(
        &mut self,
        id: &SequenceId,
        next: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<u64, redb::Error> {
        let current = self.get(id)?;
        let position = match current {
            Some((stored, expires)) if expires > now_ms => stored.max(next),
            _ => next,
        };
        let key = (id.source.as_str(), &id.key[..]);
        if let Some((_, old)) = current {
            self.expiry.remove((old, key.0, key.1))?;
        }
        self.next.insert(key, (position, expires_ms))?;
        self.expiry.insert((expires_ms, key.0, key.1), ())?;
        Ok(position)
    }

    /// Removes up to `limit` positions that expired by `now_ms`; returns how many.
    pub(crate) fn prune(&mut self, now_ms: u64, limit: usize) -> Result<usize, redb::Error> {
        let mut expired = Vec::new();
        for entry in self
            .expiry
            .range(..(now_ms.saturating_add(1), "", &[][..]))?
            .take(limit)
        {
            let (index, _) = entry?;
            let (expires, source, key) = index.value();
            expired.push((expires, source.to_owned(), key.to_vec()));
        }
        for (expires, source, key) in &expired {
            self.expiry
                .remove((*expires, source.as_str(), key.as_slice()))?;
            self.next.remove((source.as_str(), key.as_slice()))?;
        }
        Ok(expired.len())
    }

    fn get(&self, id: &SequenceId) -> Result<Option<(u64, u64)>, redb::Error> {
        let key = (id.source.as_str(), &id.key[..]);
        Ok(self.next.get(key)?.map(|guard| guard.value()))
    }
}
