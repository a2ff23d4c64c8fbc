//! The dedup and parking contract against a real Redis at 127.0.0.1:6379, each case in a
//! namespace of its own, deleted afterwards.

mod common;

use std::sync::Arc;

use outrigger_redis::RedisStore;
use outrigger_testkit::{Lifetimes, StoreFixture};

struct RedisContract {
    namespace: String,
    store: Arc<RedisStore>,
}

impl StoreFixture for RedisContract {
    type Store = RedisStore;

    async fn open(lifetimes: Lifetimes) -> Self {
        let namespace = common::namespace();
        let config = common::config_with(&namespace, lifetimes);
        let store = RedisStore::connect(config)
            .await
            .expect("store config is valid");
        Self {
            namespace,
            store: Arc::new(store),
        }
    }

    fn store(&self) -> Arc<RedisStore> {
        Arc::clone(&self.store)
    }

    /// Chains have no TTL: nothing else would delete them.
    async fn clean_up(self) {
        common::cleanup(&self.namespace).await;
    }
}

outrigger_testkit::store_contract!(RedisContract);
