//! [`RedisStore`]: the connection and the calls.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use outrigger_core::{
    ChainId, Claim, Completion, DedupStore, ParkingStore, Release, SequenceId, SequenceStore,
    StoreError,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterConfig;
use redis::cluster_routing::Slot;
use redis::RedisError;

use crate::client;
use crate::config::RedisStoreConfig;
use crate::connection::Connection;
use crate::error::store_error;
use crate::keys::Keys;
use crate::scripts::{
    decode_claim, decode_complete, decode_release, decode_revive, decode_swap_chain, release_arg,
    Scripts,
};

/// Reconnection attempts inside one connection round. Few, because every store call is bounded
/// by the configured timeout anyway and the next call starts a new round; a long internal
/// backoff would only delay noticing that Redis came back.
const CONNECT_RETRIES: usize = 1;
const CONNECT_RETRY_MIN_DELAY: Duration = Duration::from_millis(50);
const CONNECT_RETRY_MAX_DELAY: Duration = Duration::from_secs(1);

/// A dedup store in Redis (standalone or a Redis Cluster), shared by every replica of a
/// service; it keeps the parked-key chains of retry queues too.
///
/// Cheap to share behind an `Arc`; calls run concurrently over one multiplexed connection (one
/// per node of a cluster) that reconnects on its own.
pub struct RedisStore {
    connection: Connection,
    /// Whether `connection` is a cluster's: batches are split by slot.
    cluster: bool,
    scripts: Scripts,
    namespace: String,
    keys: Keys,
    lease_ms: u64,
    ttl_ms: u64,
    timeout: Duration,
}

impl RedisStore {
    /// Creates the store without waiting for Redis: the connection is made on the first call
    /// and remade after a failure, so the sidecar starts (and reports not ready) while Redis is
    /// down. Fails only on a config that can never work, as [`StoreError::Protocol`] saying
    /// what [`RedisStoreConfig::problems`] says (a malformed URL, a namespace with `:`, a TLS
    /// file that cannot be read). Must run inside a Tokio runtime.
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, StoreError> {
        let client = client::build(&config).map_err(|problems| {
            let lines: Vec<String> = problems.into_iter().map(|p| p.to_string()).collect();
            StoreError::Protocol(format!("invalid redis config: {}", lines.join("; ")))
        })?;
        let cluster = config.is_cluster();
        let connection = match client {
            client::Client::Standalone(client) => {
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout))
                    .set_number_of_retries(CONNECT_RETRIES)
                    .set_min_delay(CONNECT_RETRY_MIN_DELAY)
                    .set_max_delay(CONNECT_RETRY_MAX_DELAY);
                let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
                    .map_err(|err| {
                        StoreError::Protocol(format!("redis connection setup: {err}"))
                    })?;
                Connection::Standalone(manager)
            }
            // Connects in the background and finds the slots' nodes when first used; a node
            // that moved a slot (MOVED) or is moving it (ASK) is followed.
            client::Client::Cluster(client) => Connection::Cluster(
                client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(config.timeout)
                        .set_response_timeout(config.timeout),
                ),
            ),
        };
        Ok(RedisStore {
            connection,
            scripts: Scripts::new(),
            keys: Keys::new(&config.namespace, cluster),
            cluster,
            namespace: config.namespace,
            lease_ms: millis(config.lease),
            ttl_ms: millis(config.ttl),
            timeout: config.timeout,
        })
    }

    /// The positions of `records` in groups one script may touch together: all of them on a
    /// standalone server, one group per hash slot on a cluster (where a script's keys must
    /// share a slot), in the order of their first record.
    fn by_slot(&self, records: &[String]) -> Vec<Vec<usize>> {
        if !self.cluster {
            return vec![(0..records.len()).collect()];
        }
        let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let slot = Slot::for_key(record);
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, group)) => group.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// Runs one Redis call under the store's timeout, so a Redis that is down, slow or
    /// unreachable costs a caller at most `timeout`.
    async fn bounded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                tracing::debug!(op, error = %err, "Dedup store call failed.");
                Err(store_error(err))
            }
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis {op} timed out after {:?}",
                self.timeout
            ))),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection's Debug would print the client's URL, credentials included.
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .field("lease_ms", &self.lease_ms)
            .field("ttl_ms", &self.ttl_ms)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DedupStore for RedisStore {
    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.claim.key(self.keys.dedup(key));
        invocation.arg(self.lease_ms).arg(self.ttl_ms);
        let reply: Vec<i64> = self
            .bounded("claim", invocation.invoke_async(&mut connection))
            .await?;
        decode_claim(&reply)
    }

    async fn claim_many(&self, keys: &[&str]) -> Result<Vec<Claim>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<String> = keys.iter().map(|k| self.keys.dedup(k)).collect();
        let groups = self.by_slot(&records);
        let calls = groups.iter().map(|group| {
            let mut connection = self.connection.clone();
            let mut invocation = self.scripts.claim_many.prepare_invoke();
            for &i in group {
                invocation.key(&records[i]);
            }
            invocation.arg(self.lease_ms).arg(self.ttl_ms);
            // Each group under the timeout of its own: a node that does not answer costs
            // its own group, not the answers the others gave.
            async move {
                let call = invocation.invoke_async(&mut connection);
                self.bounded("claim", call).await
            }
        });
        let replies = join_all(calls).await;
        let (answers, failure) = scatter(keys.len(), &groups, replies, "claim");
        let claims: Vec<Option<Claim>> = answers
            .iter()
            .map(|a| a.as_deref().and_then(|a| decode_claim(a).ok()))
            .collect();
        let Some(failure) = failure else {
            return answers
                .iter()
                .map(|a| decode_claim(a.as_deref().expect("every group answered")))
                .collect();
        };
        // Only a cluster splits a batch, so only there can part of it have been claimed when
        // another part failed: those claims are handed back (no attempt spent), or each would
        // hold its key for a lease while the caller retries the batch.
        let refunds = (keys.iter().zip(&claims)).filter_map(|(key, claim)| match claim {
            Some(Claim::Acquired { fence, .. }) => Some(self.release(key, *fence, Release::Refund)),
            _ => None,
        });
        join_all(refunds).await;
        Err(failure)
    }

    async fn complete_many(&self, claims: &[(&str, u64)]) -> Result<Vec<Completion>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<String> = claims.iter().map(|(k, _)| self.keys.dedup(k)).collect();
        let groups = self.by_slot(&records);
        let calls = groups.iter().map(|group| {
            let mut connection = self.connection.clone();
            let mut invocation = self.scripts.complete_many.prepare_invoke();
            for &i in group {
                invocation.key(&records[i]).arg(claims[i].1);
            }
            invocation.arg(self.ttl_ms);
            // Each group under the timeout of its own: a node that does not answer costs
            // its own group, not the answers the others gave.
            async move {
                let call = invocation.invoke_async(&mut connection);
                self.bounded("complete", call).await
            }
        });
        let replies = join_all(calls).await;
        // A completion repeated with its fence answers `Completed` again: a batch that failed
        // part-way is simply tried again.
        match scatter(claims.len(), &groups, replies, "complete") {
            (answers, None) => answers
                .iter()
                .map(|a| decode_complete(a.as_deref().expect("every group answered")))
                .collect(),
            (_, Some(failure)) => Err(failure),
        }
    }

    async fn complete(&self, key: &str, fence: u64) -> Result<Completion, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.complete.key(self.keys.dedup(key));
        invocation.arg(fence).arg(self.ttl_ms);
        let reply: Vec<i64> = self
            .bounded("complete", invocation.invoke_async(&mut connection))
            .await?;
        decode_complete(&reply)
    }

    async fn release(&self, key: &str, fence: u64, how: Release) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.release.key(self.keys.dedup(key));
        invocation.arg(fence).arg(release_arg(how)).arg(self.ttl_ms);
        let reply: i64 = self
            .bounded("release", invocation.invoke_async(&mut connection))
            .await?;
        decode_release(reply)
    }

    async fn dead_lettered(
        &self,
        key: &str,
        fence: u64,
        generation: u32,
    ) -> Result<Completion, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.dead_lettered.key(self.keys.dedup(key));
        invocation.arg(fence).arg(generation).arg(self.ttl_ms);
        let reply: Vec<i64> = self
            .bounded("dead_lettered", invocation.invoke_async(&mut connection))
            .await?;
        // The same replies as a completion.
        decode_complete(&reply)
    }

    async fn revive(&self, key: &str, generation: u32) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.revive.key(self.keys.dedup(key));
        invocation.arg(generation).arg(self.ttl_ms);
        let reply: i64 = self
            .bounded("revive", invocation.invoke_async(&mut connection))
            .await?;
        decode_revive(reply)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let reply: String = self
            .bounded("ping", redis::cmd("PING").query_async(&mut connection))
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Protocol(format!("PING replied {reply:?}")))
        }
    }
}

impl ParkingStore for RedisStore {
    async fn load_chain(&self, chain: &ChainId) -> Result<Option<Bytes>, StoreError> {
        let mut connection = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.keys.chain(chain));
        let value: Option<Vec<u8>> = self
            .bounded("load_chain", get.query_async(&mut connection))
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn swap_chain(
        &self,
        chain: &ChainId,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
        parked: bool,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.swap_chain.key(self.keys.chain(chain));
        invocation
            .key(self.keys.parked(&chain.group))
            .arg(u8::from(old.is_some()))
            .arg(old.unwrap_or_default())
            .arg(u8::from(new.is_some()))
            .arg(new.unwrap_or_default())
            .arg(u8::from(parked));
        let reply: i64 = self
            .bounded("swap_chain", invocation.invoke_async(&mut connection))
            .await?;
        decode_swap_chain(reply)
    }

    async fn parked_chains(&self, group: &str) -> Result<u64, StoreError> {
        let mut connection = self.connection.clone();
        let mut scard = redis::cmd("SCARD");
        scard.arg(self.keys.parked(group));
        self.bounded("parked_chains", scard.query_async(&mut connection))
            .await
    }
}

impl SequenceStore for RedisStore {
    async fn next_sequence(&self, id: &SequenceId) -> Result<Option<u64>, StoreError> {
        let mut connection = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.keys.sequence(id));
        let value: Option<String> = self
            .bounded("next_sequence", get.query_async(&mut connection))
            .await?;
        value.map(|v| decode_sequence(id, &v)).transpose()
    }

    async fn advance_sequence(&self, id: &SequenceId, next: u64) -> Result<u64, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.scripts.advance_sequence.key(self.keys.sequence(id));
        invocation.arg(next).arg(self.ttl_ms);
        let stored: String = self
            .bounded("advance_sequence", invocation.invoke_async(&mut connection))
            .await?;
        decode_sequence(id, &stored)
    }
}

/// A stored sequence position.
fn decode_sequence(id: &SequenceId, value: &str) -> Result<u64, StoreError> {
    value.parse().map_err(|_| {
        StoreError::Protocol(format!("the sequence of {id} is {value:?}, not a number"))
    })
}

/// The answers of each group's script put back in the batch's order, and the first failure:
/// a group that failed or answered for a different number of keys.
fn scatter(
    len: usize,
    groups: &[Vec<usize>],
    replies: Vec<Result<Vec<Vec<i64>>, StoreError>>,
    op: &str,
) -> (Vec<Option<Vec<i64>>>, Option<StoreError>) {
    let mut answers = vec![None; len];
    let mut failure = None;
    for (group, reply) in groups.iter().zip(replies) {
        match reply {
            Ok(reply) if reply.len() == group.len() => {
                for (&i, answer) in group.iter().zip(reply) {
                    answers[i] = Some(answer);
                }
            }
            Ok(reply) => {
                failure.get_or_insert(StoreError::Protocol(format!(
                    "{op} of {} keys replied {} answers",
                    group.len(),
                    reply.len()
                )));
            }
            Err(err) => {
                failure.get_or_insert(err);
            }
        }
    }
    (answers, failure)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
