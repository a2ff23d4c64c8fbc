//! Parked-key chains on the embedded store across restarts. The contract every store keeps is
//! in `contract.rs`.

use std::time::Duration;

use outrigger_core::{DedupStore, ParkingStore};
use outrigger_embedded::{EmbeddedStore, EmbeddedStoreConfig};
use outrigger_testkit::store::parking::chain;
use tempfile::TempDir;

/// Shorter than the tests: chains must outlive every dedup record.
const TTL: Duration = Duration::from_millis(100);

fn open(dir: &TempDir) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedStoreConfig {
        path: dir.path().join("dedup.redb"),
        lease: TTL,
        ttl: TTL,
    })
    .expect("store opens")
}

#[tokio::test]
async fn chains_and_counts_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let (parked, idle, gone) = (
        chain("orders/0", b"\x00parked"),
        chain("orders/0", b"idle"),
        chain("orders/1", b"gone"),
    );
    {
        let store = open(&dir);
        assert_eq!(
            store.swap_chain(&parked, None, Some(b"p1"), true).await,
            Ok(true)
        );
        assert_eq!(
            store.swap_chain(&idle, None, Some(b""), false).await,
            Ok(true)
        );
        assert_eq!(
            store.swap_chain(&gone, None, Some(b"g"), true).await,
            Ok(true)
        );
        assert_eq!(
            store.swap_chain(&gone, Some(b"g"), None, true).await,
            Ok(true)
        );
        // A dedup write, so that the reopened store has a record to prune.
        store.claim("k").await.unwrap();
        // The last handle goes here, and with it the file.
    }
    // Opening prunes every expired dedup record; chains never expire.
    tokio::time::sleep(2 * TTL).await;

    let store = open(&dir);
    assert_eq!(
        store.load_chain(&parked).await.unwrap().as_deref(),
        Some(&b"p1"[..])
    );
    assert_eq!(
        store.load_chain(&idle).await.unwrap().as_deref(),
        Some(&b""[..])
    );
    assert_eq!(store.load_chain(&gone).await, Ok(None));
    assert_eq!(store.parked_chains("orders/0").await, Ok(1));
    assert_eq!(store.parked_chains("orders/1").await, Ok(0));

    // The chain carries on from the value it had, and the count with it.
    assert_eq!(
        store
            .swap_chain(&parked, Some(b"p1"), Some(b"p2"), true)
            .await,
        Ok(true)
    );
    assert_eq!(
        store.swap_chain(&parked, Some(b"p2"), None, false).await,
        Ok(true)
    );
    assert_eq!(store.parked_chains("orders/0").await, Ok(0));
}
