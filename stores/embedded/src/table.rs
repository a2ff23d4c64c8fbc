//! The on-disk tables and how a record is encoded.
//!
//! `RECORDS` maps a key to its record and expiry; `EXPIRY` indexes the same keys by expiry so
//! pruning reads only what has expired instead of scanning every record. The two are always
//! written in the same transaction. Names carry a version so a future format can sit beside
//! this one.

use outrigger_core::StoreError;
use outrigger_policies::dedup::{DedupRecord, DedupState};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

/// (state, fence, attempts, lease end ms, expiry ms). A dead-lettered record keeps its
/// generation where a claimed one keeps its lease end, which only a claim has.
pub(crate) type Stored = (u8, u64, u32, u64, u64);

/// Key → record.
pub(crate) const RECORDS: TableDefinition<&str, Stored> = TableDefinition::new("dedup_records_v1");
/// (expiry ms, key) → nothing.
pub(crate) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("dedup_expiry_v1");

/// Both tables, open in one write transaction, so a record and its expiry entry change together.
pub(crate) struct Tables<'txn> {
    records: Table<'txn, &'static str, Stored>,
    expiry: Table<'txn, (u64, &'static str), ()>,
}

impl<'txn> Tables<'txn> {
    /// Opens both tables; in a new file this creates them, so later reads find them.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Tables {
            records: txn.open_table(RECORDS)?,
            expiry: txn.open_table(EXPIRY)?,
        })
    }

    /// What is stored for `key`, expired or not, as this transaction sees it.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Stored>, redb::Error> {
        Ok(self.records.get(key)?.map(|guard| guard.value()))
    }

    /// Stores `record` for `key` until `expires_at_ms`, moving the expiry entry of the record it
    /// replaces (which expired at `replaced_expiry_ms`).
    pub(crate) fn put(
        &mut self,
        key: &str,
        record: &DedupRecord,
        replaced_expiry_ms: Option<u64>,
        expires_at_ms: u64,
    ) -> Result<(), redb::Error> {
        if let Some(old) = replaced_expiry_ms {
            self.expiry.remove((old, key))?;
        }
        self.records.insert(key, encode(record, expires_at_ms))?;
        self.expiry.insert((expires_at_ms, key), ())?;
        Ok(())
    }

    /// Removes up to `limit` records that expired by `now_ms`; returns how many.
    pub(crate) fn prune(&mut self, now_ms: u64, limit: usize) -> Result<usize, redb::Error> {
        let mut expired = Vec::new();
        // Everything with expiry <= now: the smallest key of the next millisecond bounds the
        // range.
        for entry in self
            .expiry
            .range(..(now_ms.saturating_add(1), ""))?
            .take(limit)
        {
            let (index, _) = entry?;
            let (expires_at, key) = index.value();
            expired.push((expires_at, key.to_owned()));
        }
        for (expires_at, key) in &expired {
            self.expiry.remove((*expires_at, key.as_str()))?;
            self.records.remove(key.as_str())?;
        }
        Ok(expired.len())
    }
}

const CLAIMED: u8 = 1;
const RELEASED: u8 = 2;
const DONE: u8 = 3;
const DEAD_LETTERED: u8 = 4;

fn encode(record: &DedupRecord, expires_at_ms: u64) -> Stored {
    let state = match record.state {
        DedupState::Claimed => CLAIMED,
        DedupState::Released => RELEASED,
        DedupState::Done => DONE,
        DedupState::DeadLettered => DEAD_LETTERED,
    };
    let lease_or_generation = match record.state {
        DedupState::DeadLettered => u64::from(record.generation),
        _ => record.lease_until_ms,
    };
    (
        state,
        record.fence,
        record.attempts,
        lease_or_generation,
        expires_at_ms,
    )
}

/// The record and its expiry.
pub(crate) fn decode(stored: Stored) -> Result<(DedupRecord, u64), StoreError> {
    let (state, fence, attempts, lease_or_generation, expires_at_ms) = stored;
    let state = match state {
        CLAIMED => DedupState::Claimed,
        RELEASED => DedupState::Released,
        DONE => DedupState::Done,
        DEAD_LETTERED => DedupState::DeadLettered,
        other => {
            return Err(StoreError::Protocol(format!(
                "dedup record has unknown state {other}"
            )))
        }
    };
    let (lease_until_ms, generation) = match state {
        DedupState::DeadLettered => (0, u32::try_from(lease_or_generation).unwrap_or(u32::MAX)),
        _ => (lease_or_generation, 0),
    };
    let record = DedupRecord {
        state,
        fence,
        attempts,
        lease_until_ms,
        generation,
    };
    Ok((record, expires_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for state in [DedupState::Claimed, DedupState::Released, DedupState::Done] {
            let record = DedupRecord {
                state,
                fence: u64::MAX,
                attempts: 7,
                lease_until_ms: 1_700_000_000_123,
                generation: 0,
            };
            assert_eq!(decode(encode(&record, 42)), Ok((record, 42)));
        }
        let dead = DedupRecord {
            state: DedupState::DeadLettered,
            fence: 9,
            attempts: 0,
            lease_until_ms: 0,
            generation: 3,
        };
        assert_eq!(decode(encode(&dead, 42)), Ok((dead, 42)));
    }

    #[test]
    fn unknown_state_is_a_protocol_error() {
        assert!(matches!(
            decode((9, 1, 1, 0, 0)),
            Err(StoreError::Protocol(_))
        ));
    }
}
