use redb::{ReadableDatabase, ReadableTableMetadata};
use tempfile::TempDir;

use super::*;
use crate::table::{EXPIRY, RECORDS};

fn open(dir: &TempDir, ttl: Duration) -> Writer {
    Writer::open(&dir.path().join("dedup.redb"), ttl, ttl).unwrap()
}

fn claim(key: &str) -> Op {
    Op::Claim {
        key: key.to_owned(),
    }
}

fn chain(key: &[u8]) -> ChainId {
    ChainId {
        group: "g".to_owned(),
        key: key.to_vec().into(),
    }
}

fn swap(key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>, parked: bool) -> Op {
    Op::SwapChain {
        chain: chain(key),
        old: old.map(<[u8]>::to_vec),
        new: new.map(<[u8]>::to_vec),
        parked,
    }
}

fn load(key: &[u8]) -> Op {
    Op::LoadChain { chain: chain(key) }
}

/// Runs `ops` as one batch at `now` and returns the answers.
fn batch_at(writer: &Writer, now: u64, ops: &[Op]) -> Vec<Result<Answer, StoreError>> {
    writer.write_batch(ops, || now).unwrap()
}

/// (records, expiry index entries) on disk.
fn rows(writer: &Writer) -> (u64, u64) {
    let txn = writer.db.begin_read().unwrap();
    let records = txn.open_table(RECORDS).unwrap().len().unwrap();
    let expiry = txn.open_table(EXPIRY).unwrap().len().unwrap();
    (records, expiry)
}

#[test]
fn ops_in_one_batch_see_each_others_writes() {
    let dir = TempDir::new().unwrap();
    let writer = open(&dir, Duration::from_secs(60));
    let now = now_ms();
    let answers = batch_at(
        &writer,
        now,
        &[
            claim("k"),
            claim("k"),
            Op::Complete {
                key: "k".to_owned(),
                fence: 1,
            },
            claim("k"),
            claim("other"),
            Op::Ping,
        ],
    );
    assert_eq!(
        answers,
        [
            Ok(Answer::Claim(Claim::Acquired {
                fence: 1,
                attempt: 1
            })),
            Ok(Answer::Claim(Claim::Busy {
                retry_in: Duration::from_secs(60)
            })),
            Ok(Answer::Complete(Completion::Completed)),
            Ok(Answer::Claim(Claim::Done)),
            Ok(Answer::Claim(Claim::Acquired {
                fence: 1,
                attempt: 1
            })),
            Ok(Answer::Ping),
        ]
    );
    // The batch committed: a later one reads what it wrote.
    assert_eq!(
        batch_at(&writer, now, &[claim("k")]),
        [Ok(Answer::Claim(Claim::Done))]
    );
}

#[test]
fn rewriting_a_key_moves_its_expiry_entry() {
    let release = Op::Release {
        key: "k".to_owned(),
        fence: 1,
        how: Release::Retry,
    };
    let missing = Op::Complete {
        key: "missing".to_owned(),
        fence: 1,
    };
    // Answers that write nothing leave the tables alone.
    let ops = [claim("k"), release, claim("k"), claim("k"), missing];
    // Each op in its own transaction, then all of them in one.
    for batch_size in [1, ops.len()] {
        let dir = TempDir::new().unwrap();
        let writer = open(&dir, Duration::from_secs(60));
        let now = now_ms();
        let answers: Vec<_> = ops
            .chunks(batch_size)
            .flat_map(|batch| batch_at(&writer, now, batch))
            .collect();
        assert_eq!(answers[1], Ok(Answer::Release(true)), "{batch_size}");
        assert_eq!(rows(&writer), (1, 1), "{batch_size}");
    }
}

#[test]
fn an_unreadable_record_fails_only_its_own_op() {
    let dir = TempDir::new().unwrap();
    let writer = open(&dir, Duration::from_secs(60));
    let now = now_ms();
    let txn = writer.db.begin_write().unwrap();
    txn.open_table(RECORDS)
        .unwrap()
        .insert("bad", (9, 1, 1, 0, u64::MAX))
        .unwrap();
    txn.commit().unwrap();

    let answers = batch_at(&writer, now, &[claim("a"), claim("bad"), claim("b")]);
    assert!(matches!(answers[1], Err(StoreError::Protocol(_))));
    let acquired = Ok(Answer::Claim(Claim::Acquired {
        fence: 1,
        attempt: 1,
    }));
    assert_eq!((&answers[0], &answers[2]), (&acquired, &acquired));
}

#[test]
fn expired_records_are_pruned_by_writes_and_on_open() {
    let dir = TempDir::new().unwrap();
    let ttl = Duration::from_millis(50);
    let writer = open(&dir, ttl);
    let start = now_ms();
    for key in 0..30 {
        batch_at(&writer, start, &[claim(&key.to_string())]);
    }
    assert_eq!(rows(&writer), (30, 30));

    // A write after the TTL removes a few expired records besides writing its own.
    let later = start + 51;
    batch_at(&writer, later, &[claim("fresh")]);
    let after_one = 30 - PRUNE_PER_WRITE as u64 + 1;
    assert_eq!(rows(&writer), (after_one, after_one));
    // A batch prunes as much as its writes would have one by one.
    batch_at(&writer, later, &[claim("fresh-2"), claim("fresh-3")]);
    let after_two = after_one - 2 * PRUNE_PER_WRITE as u64 + 2;
    assert_eq!(rows(&writer), (after_two, after_two));
    // A batch that writes nothing prunes nothing either.
    batch_at(&writer, later, &[claim("fresh"), Op::Ping]);
    assert_eq!(rows(&writer), (after_two, after_two));

    // Opening removes every expired record, and only those.
    writer.prune_all(later).unwrap();
    assert_eq!(rows(&writer), (3, 3));
    writer.prune_all(later + 51).unwrap();
    assert_eq!(rows(&writer), (0, 0));
}

#[test]
fn chain_ops_in_one_batch_see_each_others_writes() {
    let dir = TempDir::new().unwrap();
    let writer = open(&dir, Duration::from_secs(60));
    let now = now_ms();
    let parked = || Op::ParkedChains {
        group: "g".to_owned(),
    };
    let answers = batch_at(
        &writer,
        now,
        &[
            swap(b"k", None, Some(b"v1"), true),
            swap(b"k", None, Some(b"v2"), true),
            parked(),
            // The dedup key of the same name is another thing.
            claim("k"),
            load(b"k"),
            swap(b"k", Some(b"v1"), Some(b"v2"), false),
            parked(),
            load(b"k"),
        ],
    );
    assert_eq!(
        answers,
        [
            Ok(Answer::SwapChain(true)),
            Ok(Answer::SwapChain(false)),
            Ok(Answer::ParkedChains(1)),
            Ok(Answer::Claim(Claim::Acquired {
                fence: 1,
                attempt: 1
            })),
            Ok(Answer::LoadChain(Some(b"v1".to_vec()))),
            Ok(Answer::SwapChain(true)),
            Ok(Answer::ParkedChains(0)),
            Ok(Answer::LoadChain(Some(b"v2".to_vec()))),
        ]
    );
    // Chains have no expiry entry, and their writes prune nothing.
    assert_eq!(rows(&writer), (1, 1));
}

#[test]
fn a_batch_of_chain_swaps_alone_commits() {
    let dir = TempDir::new().unwrap();
    let writer = open(&dir, Duration::from_secs(60));
    let now = now_ms();
    assert_eq!(
        batch_at(&writer, now, &[swap(b"k", None, Some(b"v"), true)]),
        [Ok(Answer::SwapChain(true))]
    );
    assert_eq!(
        batch_at(&writer, now, &[load(b"k")]),
        [Ok(Answer::LoadChain(Some(b"v".to_vec())))]
    );
}
