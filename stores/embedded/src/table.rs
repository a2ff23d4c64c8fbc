//! The on-disk tables and how a record is encoded.
//!
//! `RECORDS` maps a key to its record and expiry; `EXPIRY` indexes the same keys by expiry so
//! pruning reads only what has expired instead of scanning every record. The two are always
//! written in the same transaction. Names carry a version so a future format can sit beside
//! this one.

use outrigger_core::StoreError;
use outrigger_policies::dedup::{DedupRecord, DedupState};
use redb::TableDefinition;

/// (state, fence, attempts, lease end ms, expiry ms).
pub(crate) type Stored = (u8, u64, u32, u64, u64);

/// Key → record.
pub(crate) const RECORDS: TableDefinition<&str, Stored> = TableDefinition::new("dedup_records_v1");
/// (expiry ms, key) → nothing.
pub(crate) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("dedup_expiry_v1");

const CLAIMED: u8 = 1;
const RELEASED: u8 = 2;
const DONE: u8 = 3;

pub(crate) fn encode(record: &DedupRecord, expires_at_ms: u64) -> Stored {
    let state = match record.state {
        DedupState::Claimed => CLAIMED,
        DedupState::Released => RELEASED,
        DedupState::Done => DONE,
    };
    (
        state,
        record.fence,
        record.attempts,
        record.lease_until_ms,
        expires_at_ms,
    )
}

/// The record and its expiry.
pub(crate) fn decode(stored: Stored) -> Result<(DedupRecord, u64), StoreError> {
    let (state, fence, attempts, lease_until_ms, expires_at_ms) = stored;
    let state = match state {
        CLAIMED => DedupState::Claimed,
        RELEASED => DedupState::Released,
        DONE => DedupState::Done,
        other => {
            return Err(StoreError::Protocol(format!(
                "dedup record has unknown state {other}"
            )))
        }
    };
    let record = DedupRecord {
        state,
        fence,
        attempts,
        lease_until_ms,
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
            };
            assert_eq!(decode(encode(&record, 42)), Ok((record, 42)));
        }
    }

    #[test]
    fn unknown_state_is_a_protocol_error() {
        assert!(matches!(
            decode((9, 1, 1, 0, 0)),
            Err(StoreError::Protocol(_))
        ));
    }
}
