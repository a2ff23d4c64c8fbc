//! A Redis Cluster of the test's own: primaries only, each a [`RedisServer`] in cluster mode
//! on free ports (its cluster bus on another free port), the slots split evenly, joined with
//! `CLUSTER MEET`. A node can be killed and brought back with its `nodes.conf` and append-only
//! file, as a node restart in production would.
//!
//! The slots are assigned with `redis-cli` (`OUTRIGGER_TEST_REDIS_CLI` names it when it is
//! not on PATH), as `redis-cli --cluster create` would, without its fixed waits.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::names::free_port;
use crate::redis_server::{RedisServer, DEADLINE};

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// A cluster of primaries; every node is killed when dropped.
pub struct RedisCluster {
    /// The nodes, in slot order: node `i` serves the `i`-th share of the slots.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `size` primaries and waits until every node reports `cluster_state:ok`.
    /// `--cluster-node-timeout` is one second, so a node killed is seen as failed quickly.
    pub async fn start(size: u16) -> Self {
        assert!(size >= 1, "a cluster needs a node");
        let mut nodes = Vec::new();
        let mut buses = Vec::new();
        for _ in 0..size {
            let bus = free_port().port().to_string();
            buses.push(bus.clone());
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                "1000",
            ];
            nodes.push(RedisServer::start_with(&args).await);
        }
        let cluster = Self { nodes };
        let share = SLOTS / size;
        for (i, node) in (0u16..).zip(&cluster.nodes) {
            let first = i * share;
            let last = if i + 1 == size {
                SLOTS - 1
            } else {
                first + share - 1
            };
            cluster.cli(
                node,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            );
            // Distinct epochs, as `redis-cli --cluster create` sets them: no collision to
            // resolve before the cluster agrees.
            cluster.cli(node, &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]);
        }
        let first = &cluster.nodes[0];
        for (node, bus) in cluster.nodes.iter().zip(&buses).skip(1) {
            let port = node.addr.port().to_string();
            // The bus port too: it is not the default port + 10000.
            cluster.cli(first, &["CLUSTER", "MEET", "127.0.0.1", &port, bus]);
        }
        cluster.wait_until_ok().await;
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node, for `dedup.redis.cluster`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node that serves `key`'s slot.
    pub fn node_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .cli(&self.nodes[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        usize::from(slot / (SLOTS / self.size())).min(self.nodes.len() - 1)
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again, same port, same `nodes.conf` and data, and waits until the
    /// whole cluster is ok again.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].restart().await;
        self.wait_until_ok().await;
    }

    /// Waits until every running node says `cluster_state:ok` and knows every node.
    pub async fn wait_until_ok(&self) {
        let started = Instant::now();
        let size = self.nodes.len();
        loop {
            let ok = self.nodes.iter().all(|node| {
                let info = self.cli(node, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{size}"))
            });
            if ok {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the cluster did not reach cluster_state:ok within {DEADLINE:?}: {}",
                self.cli(&self.nodes[0], &["CLUSTER", "NODES"])
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn size(&self) -> u16 {
        u16::try_from(self.nodes.len()).expect("a small cluster")
    }

    /// One `redis-cli` command against `node`; its output.
    pub fn cli(&self, node: &RedisServer, args: &[&str]) -> String {
        let binary =
            std::env::var("OUTRIGGER_TEST_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
        let out = Command::new(&binary)
            .args(["-h", "127.0.0.1", "-p", &node.addr.port().to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `{binary}` ({e}): cluster tests need redis-cli on PATH")
            });
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
