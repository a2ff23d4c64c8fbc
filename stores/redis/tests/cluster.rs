//! The store on a Redis Cluster of each test's own (three primaries on free ports): the store
//! contract, batches spread over every node, a slot moving to another node mid-stream (ASK,
//! then MOVED), and a node killed and restarted mid-stream.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outrigger_core::{Claim, Completion, DedupStore, Release, StoreError};
use outrigger_redis::{RedisStore, RedisStoreConfig};
use outrigger_testkit::redis_cluster::RedisCluster;
use outrigger_testkit::{wait_until, Lifetimes, StoreFixture};

fn config(cluster: &RedisCluster, lease: Duration, timeout: Duration) -> RedisStoreConfig {
    RedisStoreConfig {
        url: "redis://127.0.0.1:1".into(),
        cluster: cluster.urls(),
        username: None,
        password: None,
        tls: None,
        namespace: common::namespace(),
        lease,
        ttl: Duration::from_secs(120),
        timeout,
    }
}

/// The Redis key of record `key` in `config`'s namespace.
fn record(config: &RedisStoreConfig, key: &str) -> String {
    format!("outrigger:dedup:{}:{key}", config.namespace)
}

struct ClusterContract {
    store: Arc<RedisStore>,
    _cluster: RedisCluster,
}

impl StoreFixture for ClusterContract {
    type Store = RedisStore;

    async fn open(lifetimes: Lifetimes) -> Self {
        let cluster = RedisCluster::start(3).await;
        let config = RedisStoreConfig {
            ttl: lifetimes.ttl,
            ..config(&cluster, lifetimes.lease, Duration::from_secs(2))
        };
        let store = RedisStore::connect(config).await.expect("a valid config");
        Self {
            store: Arc::new(store),
            _cluster: cluster,
        }
    }

    fn store(&self) -> Arc<RedisStore> {
        Arc::clone(&self.store)
    }
}

outrigger_testkit::store_contract!(ClusterContract);

#[tokio::test]
async fn a_batch_over_every_node_is_claimed_and_completed_per_key() {
    let cluster = RedisCluster::start(3).await;
    let config = config(&cluster, Duration::from_secs(30), Duration::from_secs(2));
    let keys: Vec<String> = (0..40).map(|i| format!("order-{i}")).collect();
    let mut nodes: Vec<usize> = keys
        .iter()
        .map(|k| cluster.node_of(&record(&config, k)))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes, [0, 1, 2], "the keys are spread over every node");
    let store = RedisStore::connect(config).await.unwrap();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();

    let claims = store.claim_many(&keys).await.unwrap();
    let fences: Vec<(&str, u64)> = keys
        .iter()
        .zip(&claims)
        .map(|(key, claim)| match claim {
            Claim::Acquired {
                fence: 1,
                attempt: 1,
            } => (*key, 1),
            other => panic!("{key}: {other:?}"),
        })
        .collect();
    // Each answer is its own key's, whichever node gave it: the batch's claims hold.
    for key in ["order-0", "order-7", "order-39"] {
        assert!(
            matches!(store.claim(key).await, Ok(Claim::Busy { .. })),
            "{key}"
        );
    }
    let completions = store.complete_many(&fences).await.unwrap();
    assert!(completions.iter().all(|c| *c == Completion::Completed));
    let again = store.claim_many(&keys).await.unwrap();
    assert!(again.iter().all(|c| *c == Claim::Done), "{again:?}");
}

#[tokio::test]
async fn a_slot_moving_to_another_node_is_followed_with_its_records() {
    let cluster = RedisCluster::start(3).await;
    let config = config(&cluster, Duration::from_secs(30), Duration::from_secs(2));
    // Braces of the key's own: both records hash to the slot of "moving".
    let (a, b) = ("{moving}:a", "{moving}:b");
    let (record_a, record_b) = (record(&config, a), record(&config, b));
    let from = cluster.node_of(&record_a);
    assert_eq!(cluster.node_of(&record_b), from);
    let to = (from + 1) % cluster.nodes.len();
    let store = RedisStore::connect(config).await.unwrap();
    assert_eq!(
        store.claim(a).await,
        Ok(Claim::Acquired {
            fence: 1,
            attempt: 1
        })
    );

    let slot = cluster.cli(&cluster.nodes[from], &["CLUSTER", "KEYSLOT", &record_a]);
    let slot = slot.trim();
    let id = |i: usize| {
        let id = cluster.cli(&cluster.nodes[i], &["CLUSTER", "MYID"]);
        id.trim().to_owned()
    };
    let (from_id, to_id) = (id(from), id(to));
    let node = |i: usize| &cluster.nodes[i];
    cluster.cli(
        node(to),
        &["CLUSTER", "SETSLOT", slot, "IMPORTING", &from_id],
    );
    cluster.cli(
        node(from),
        &["CLUSTER", "SETSLOT", slot, "MIGRATING", &to_id],
    );

    // Mid-migration: `from` no longer has b, so it answers ASK, and b is made on `to`.
    let b_fence = match store.claim(b).await.unwrap() {
        Claim::Acquired { fence, .. } => fence,
        other => panic!("{b}: {other:?}"),
    };
    // (Counted by slot: `to` would answer a plain EXISTS with MOVED until the slot is its.)
    let count = |i: usize| -> i64 {
        let n = cluster.cli(node(i), &["CLUSTER", "COUNTKEYSINSLOT", slot]);
        n.trim().parse().unwrap()
    };
    assert_eq!(
        (count(from), count(to)),
        (1, 1),
        "b was written where the slot is going"
    );

    let to_port = node(to).addr.port().to_string();
    let migrated = cluster.cli(
        node(from),
        &[
            "MIGRATE",
            "127.0.0.1",
            &to_port,
            "",
            "0",
            "5000",
            "KEYS",
            &record_a,
        ],
    );
    assert_eq!(migrated.trim(), "OK");
    for i in 0..cluster.nodes.len() {
        cluster.cli(node(i), &["CLUSTER", "SETSLOT", slot, "NODE", &to_id]);
    }

    // `from` answers MOVED; the store follows and finds a's claim where it moved, still held.
    assert!(matches!(store.claim(a).await, Ok(Claim::Busy { .. })));
    assert_eq!(store.complete(a, 1).await, Ok(Completion::Completed));
    assert_eq!(store.complete(b, b_fence).await, Ok(Completion::Completed));
    assert_eq!(
        store.claim_many(&[a, b]).await,
        Ok(vec![Claim::Done, Claim::Done])
    );
}

/// One delivery of `key` as the pipeline makes it: claim, then complete with the fence.
/// Counts each `Completed` in `completions`.
async fn deliver(
    store: &RedisStore,
    key: &str,
    completions: &Mutex<HashMap<String, u32>>,
) -> Result<Claim, StoreError> {
    let claim = store.claim(key).await?;
    if let Claim::Acquired { fence, .. } = claim {
        if store.complete(key, fence).await? == Completion::Completed {
            let mut completions = completions.lock().unwrap();
            *completions.entry(key.to_owned()).or_default() += 1;
        }
    }
    Ok(claim)
}

#[tokio::test]
async fn a_node_restarted_mid_stream_makes_claims_unavailable_then_recovers_without_a_second_completion(
) {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let mut cluster = RedisCluster::start(3).await;
    let config = config(&cluster, Duration::from_millis(500), TIMEOUT);
    let keys: Vec<String> = (0..60).map(|i| format!("order-{i}")).collect();
    let victim = 1;
    let on_victim: Vec<&String> = keys[20..40]
        .iter()
        .filter(|k| cluster.node_of(&record(&config, k)) == victim)
        .collect();
    assert!(
        !on_victim.is_empty(),
        "some keys live on the node that restarts"
    );
    let store = RedisStore::connect(config).await.unwrap();
    let completions = Mutex::new(HashMap::new());

    for key in &keys[..20] {
        let claim = deliver(&store, key, &completions).await.unwrap();
        assert!(matches!(claim, Claim::Acquired { .. }), "{key}: {claim:?}");
    }

    cluster.kill(victim);
    let mut failed = Vec::new();
    for key in &keys[20..40] {
        let started = Instant::now();
        match deliver(&store, key, &completions).await {
            Ok(_) => {}
            Err(StoreError::Unavailable(_)) => failed.push(key.clone()),
            Err(other) => panic!("{key}: a node down is not {other:?}"),
        }
        // Two calls at most, each bounded by the timeout (and some scheduling slack).
        assert!(started.elapsed() < 2 * TIMEOUT + Duration::from_secs(1));
    }
    for key in &on_victim {
        assert!(
            failed.contains(key),
            "{key} lives on the dead node, yet was handled"
        );
    }

    cluster.restart(victim).await;
    let probe = on_victim[0].as_str();
    wait_until("claims to work again", Duration::from_secs(20), || async {
        !matches!(store.claim(probe).await, Err(StoreError::Unavailable(_)))
    })
    .await;
    // Every key is delivered to the end: once the store answers, a key claimed before the
    // restart but not completed is busy until its lease ends, then taken over.
    for key in &keys {
        wait_until(key, Duration::from_secs(10), || async {
            matches!(deliver(&store, key, &completions).await, Ok(Claim::Done))
        })
        .await;
    }
    let completions = completions.into_inner().unwrap();
    for key in &keys[..20] {
        assert_eq!(
            completions.get(key),
            Some(&1),
            "{key}: completed before the restart"
        );
    }
    let twice: Vec<_> = completions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completed twice: {twice:?}");
}

#[tokio::test]
async fn a_batch_that_fails_part_way_leaves_no_key_held() {
    let mut cluster = RedisCluster::start(3).await;
    let config = config(
        &cluster,
        Duration::from_secs(30),
        Duration::from_millis(500),
    );
    let keys: Vec<String> = (0..30).map(|i| format!("order-{i}")).collect();
    let store = RedisStore::connect(config).await.unwrap();
    assert_eq!(store.ping().await, Ok(()));
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();

    // Within the cluster's node timeout the other two nodes still answer: part of the batch
    // is claimed, the dead node's part is not.
    cluster.kill(2);
    let batch = store.claim_many(&keys).await;
    assert!(
        matches!(batch, Err(StoreError::Unavailable(_))),
        "{batch:?}"
    );
    cluster.restart(2).await;
    wait_until("claims to work again", Duration::from_secs(20), || async {
        store.ping().await.is_ok()
    })
    .await;
    // A lease of 30s: a claim the failed batch kept would answer busy now.
    for key in keys {
        match store.claim(key).await.unwrap() {
            Claim::Acquired { attempt: 1, fence } => {
                assert!(store.release(key, fence, Release::Refund).await.unwrap());
            }
            other => panic!("{key} was left held by the failed batch: {other:?}"),
        }
    }
}
