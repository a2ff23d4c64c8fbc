//! The chain tables: one value per parked-key chain, and how many chains of each group hold
//! parked messages.
//!
//! `CHAINS` maps (group, ordering key) to the chain's value and whether it holds parked
//! messages; `PARKED` keeps the number of those per group, so counting reads one row instead of
//! every chain (and value) of the group. Both change in the same transaction. Chains never
//! expire: they hold messages until the chain empties.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use outrigger_core::ChainId;

/// (group, ordering key).
type ChainKey = (&'static str, &'static [u8]);
/// (holds parked messages, value).
type ChainValue = (bool, &'static [u8]);

/// A chain's key → its value.
pub(crate) const CHAINS: TableDefinition<ChainKey, ChainValue> =
    TableDefinition::new("parking_chains_v1");
/// Group → chains of the group whose value holds parked messages; absent when none.
pub(crate) const PARKED: TableDefinition<&str, u64> = TableDefinition::new("parking_parked_v1");

/// Both tables, open in one write transaction.
pub(crate) struct Chains<'txn> {
    chains: Table<'txn, ChainKey, ChainValue>,
    parked: Table<'txn, &'static str, u64>,
}

impl<'txn> Chains<'txn> {
    /// Opens both tables; in a new file this creates them.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Chains {
            chains: txn.open_table(CHAINS)?,
            parked: txn.open_table(PARKED)?,
        })
    }

    /// The value of `chain`, as this transaction sees it.
    pub(crate) fn load(&self, chain: &ChainId) -> Result<Option<Vec<u8>>, redb::Error> {
        Ok(self.get(chain)?.map(|(_, value)| value))
    }

    /// Replaces the value of `chain` by `new` (`None` deletes it) if it is `old` (`None`:
    /// absent), and keeps the group's parked count; false, changing nothing, when it is not.
    pub(crate) fn swap(
        &mut self,
        chain: &ChainId,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
        parked: bool,
    ) -> Result<bool, redb::Error> {
        let current = self.get(chain)?;
        if current.as_ref().map(|(_, value)| value.as_slice()) != old {
            return Ok(false);
        }
        let was_parked = current.is_some_and(|(parked, _)| parked);
        let key = (chain.group.as_str(), &chain.key[..]);
        let is_parked = match new {
            Some(value) => {
                self.chains.insert(key, (parked, value))?;
                parked
            }
            None => {
                self.chains.remove(key)?;
                false
            }
        };
        match (was_parked, is_parked) {
            (false, true) => self.add_parked(&chain.group, 1)?,
            (true, false) => self.add_parked(&chain.group, -1)?,
            _ => {}
        }
        Ok(true)
    }

    /// How many chains of `group` hold parked messages.
    pub(crate) fn parked(&self, group: &str) -> Result<u64, redb::Error> {
        Ok(self.parked.get(group)?.map_or(0, |count| count.value()))
    }

    fn get(&self, chain: &ChainId) -> Result<Option<(bool, Vec<u8>)>, redb::Error> {
        let key = (chain.group.as_str(), &chain.key[..]);
        Ok(self.chains.get(key)?.map(|guard| {
            let (parked, value) = guard.value();
            (parked, value.to_vec())
        }))
    }

    fn add_parked(&mut self, group: &str, delta: i64) -> Result<(), redb::Error> {
        let count = self.parked(group)?.saturating_add_signed(delta);
        if count == 0 {
            // No row for an empty group, so groups that come and go leave nothing behind.
            self.parked.remove(group)?;
        } else {
            self.parked.insert(group, count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase, ReadableTableMetadata};
    use tempfile::TempDir;

    use super::*;

    fn chain(key: &[u8]) -> ChainId {
        ChainId {
            group: "g".to_owned(),
            key: key.to_vec().into(),
        }
    }

    #[test]
    fn an_emptied_group_leaves_no_count_row() {
        let dir = TempDir::new().unwrap();
        let db = Database::create(dir.path().join("chains.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut chains = Chains::open(&txn).unwrap();
            assert!(chains.swap(&chain(b"a"), None, Some(b"1"), true).unwrap());
            assert!(chains.swap(&chain(b"b"), None, Some(b"1"), true).unwrap());
            assert_eq!(chains.parked("g").unwrap(), 2);
            assert!(chains.swap(&chain(b"a"), Some(b"1"), None, true).unwrap());
            assert!(chains
                .swap(&chain(b"b"), Some(b"1"), Some(b"2"), false)
                .unwrap());
            assert_eq!(chains.parked("g").unwrap(), 0);
        }
        txn.commit().unwrap();

        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(PARKED).unwrap().len().unwrap(), 0);
        assert_eq!(read.open_table(CHAINS).unwrap().len().unwrap(), 1);
    }
}
