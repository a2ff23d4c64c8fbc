//! The dedup and parking contract on the embedded store, each case on a file in a fresh
//! directory.

use std::sync::Arc;

use outrigger_embedded::{EmbeddedStore, EmbeddedStoreConfig};
use outrigger_testkit::{Lifetimes, StoreFixture};
use tempfile::TempDir;

struct EmbeddedContract {
    store: Arc<EmbeddedStore>,
    // Dropped after the store: the file goes with its directory.
    _dir: TempDir,
}

impl StoreFixture for EmbeddedContract {
    type Store = EmbeddedStore;

    async fn open(lifetimes: Lifetimes) -> Self {
        let dir = TempDir::new().unwrap();
        let store = EmbeddedStore::open(EmbeddedStoreConfig {
            // A directory that does not exist yet: opening creates it.
            path: dir.path().join("state").join("dedup.redb"),
            lease: lifetimes.lease,
            ttl: lifetimes.ttl,
        })
        .expect("store opens");
        Self {
            store: Arc::new(store),
            _dir: dir,
        }
    }

    fn store(&self) -> Arc<EmbeddedStore> {
        Arc::clone(&self.store)
    }
}

outrigger_testkit::store_contract!(EmbeddedContract);
