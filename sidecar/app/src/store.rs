//! The dedup stores this build knows, as one closed set.

use std::sync::Arc;

use bytes::Bytes;
use outrigger_core::{
    ChainId, Claim, Completion, DedupStore, ParkingStore, Release, SequenceId, SequenceStore,
    StoreError,
};
use outrigger_embedded::{EmbeddedStore, EmbeddedStoreConfig};
use outrigger_redis::RedisStore;

use crate::config::{Config, StoreKind};

/// A configured dedup store.
pub enum Store {
    /// Shared Redis (standalone); boxed, being several times the size of the other.
    Redis(Box<RedisStore>),
    /// Local disk, single replica.
    Embedded(EmbeddedStore),
}

impl Store {
    /// Opens the store the policy names. Redis is connected lazily, so the sidecar starts (and
    /// pauses) while Redis is down.
    pub async fn open(config: &Config) -> Result<Arc<Store>, StoreError> {
        let dedup = &config.dedup;
        let store = match dedup.store {
            StoreKind::Redis => Store::Redis(Box::new(
                RedisStore::connect(dedup.redis_store(&config.source)).await?,
            )),
            StoreKind::Embedded => Store::Embedded(EmbeddedStore::open(EmbeddedStoreConfig {
                path: dedup.embedded.path.clone(),
                lease: dedup.lease,
                ttl: dedup.ttl,
            })?),
        };
        Ok(Arc::new(store))
    }
}

impl DedupStore for Store {
    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        match self {
            Store::Redis(s) => s.claim(key).await,
            Store::Embedded(s) => s.claim(key).await,
        }
    }

    async fn claim_many(&self, keys: &[&str]) -> Result<Vec<Claim>, StoreError> {
        match self {
            Store::Redis(s) => s.claim_many(keys).await,
            Store::Embedded(s) => s.claim_many(keys).await,
        }
    }

    async fn complete_many(&self, claims: &[(&str, u64)]) -> Result<Vec<Completion>, StoreError> {
        match self {
            Store::Redis(s) => s.complete_many(claims).await,
            Store::Embedded(s) => s.complete_many(claims).await,
        }
    }

    async fn complete(&self, key: &str, fence: u64) -> Result<Completion, StoreError> {
        match self {
            Store::Redis(s) => s.complete(key, fence).await,
            Store::Embedded(s) => s.complete(key, fence).await,
        }
    }

    async fn release(&self, key: &str, fence: u64, how: Release) -> Result<bool, StoreError> {
        match self {
            Store::Redis(s) => s.release(key, fence, how).await,
            Store::Embedded(s) => s.release(key, fence, how).await,
        }
    }

    async fn dead_lettered(
        &self,
        key: &str,
        fence: u64,
        generation: u32,
    ) -> Result<Completion, StoreError> {
        match self {
            Store::Redis(s) => s.dead_lettered(key, fence, generation).await,
            Store::Embedded(s) => s.dead_lettered(key, fence, generation).await,
        }
    }

    async fn revive(&self, key: &str, generation: u32) -> Result<bool, StoreError> {
        match self {
            Store::Redis(s) => s.revive(key, generation).await,
            Store::Embedded(s) => s.revive(key, generation).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Redis(s) => s.ping().await,
            Store::Embedded(s) => s.ping().await,
        }
    }
}

impl ParkingStore for Store {
    async fn load_chain(&self, chain: &ChainId) -> Result<Option<Bytes>, StoreError> {
        match self {
            Store::Redis(s) => s.load_chain(chain).await,
            Store::Embedded(s) => s.load_chain(chain).await,
        }
    }

    async fn swap_chain(
        &self,
        chain: &ChainId,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
        parked: bool,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(s) => s.swap_chain(chain, old, new, parked).await,
            Store::Embedded(s) => s.swap_chain(chain, old, new, parked).await,
        }
    }

    async fn parked_chains(&self, group: &str) -> Result<u64, StoreError> {
        match self {
            Store::Redis(s) => s.parked_chains(group).await,
            Store::Embedded(s) => s.parked_chains(group).await,
        }
    }
}

impl SequenceStore for Store {
    async fn next_sequence(&self, id: &SequenceId) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Redis(s) => s.next_sequence(id).await,
            Store::Embedded(s) => s.next_sequence(id).await,
        }
    }

    async fn advance_sequence(&self, id: &SequenceId, next: u64) -> Result<u64, StoreError> {
        match self {
            Store::Redis(s) => s.advance_sequence(id, next).await,
            Store::Embedded(s) => s.advance_sequence(id, next).await,
        }
    }
}
