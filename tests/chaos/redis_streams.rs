//! Redis Streams: a `redis-server` of the run's own holding the stream (not the dedup Redis,
//! which the harness kills; not the machine's shared one), a consumer group, the sidecar
//! connected through a proxy the harness cuts, one consumer name for every incarnation (a
//! restarted sidecar takes up its own pending entries first).

use std::time::Duration;

use outrigger_testkit::redis_server::RedisServer;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use toml_edit::{Array, InlineTable, Value};

use super::broker::{ChaosBroker, DeadRecord};
use super::workload::{copy_of, Event};
use crate::support::{unique, Policy, Proxy};

/// An entry as `XRANGE` gives it: id, then fields and values in turn.
type Entry = (String, Vec<Vec<u8>>);

/// The run's Redis, stream, group and dead-letter stream.
pub struct RedisStreams {
    _server: RedisServer,
    proxy: Proxy,
    redis: MultiplexedConnection,
    stream: String,
    dead_letters: String,
    group: String,
    /// The id of the last dead letter read.
    read_up_to: Mutex<String>,
}

impl RedisStreams {
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut c = self.redis.clone();
        cmd.query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }
}

impl ChaosBroker for RedisStreams {
    const NAME: &'static str = "redis-streams";
    // The restarted sidecar is the same consumer: it reads its own pending entries first.
    const TAKEOVER: Duration = Duration::from_secs(1);

    async fn start() -> Self {
        let server = RedisServer::start().await;
        let client = redis::Client::open(server.url()).unwrap();
        let stream = unique("outrigger-chaos");
        let streams = Self {
            redis: client.get_multiplexed_async_connection().await.unwrap(),
            proxy: Proxy::start(server.addr).await,
            _server: server,
            dead_letters: format!("{stream}.dlq"),
            group: unique("g"),
            read_up_to: Mutex::new("0".to_owned()),
            stream,
        };
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(&streams.stream)
            .arg(&streams.group)
            .arg("0")
            .arg("MKSTREAM");
        let () = streams.run(&create).await;
        streams
    }

    fn policy(&self, app_url: &str, namespace: &str) -> Policy {
        let mut source = InlineTable::new();
        source.insert("url", format!("redis://{}", self.proxy.addr).into());
        source.insert(
            "streams",
            Value::Array(Array::from_iter([self.stream.as_str()])),
        );
        source.insert("group", self.group.as_str().into());
        source.insert("consumer", "chaos".into());
        source.insert("block", "200ms".into());
        source.insert("claim_idle", "2s".into());
        let mut table = InlineTable::new();
        table.insert("redis_streams", Value::InlineTable(source));
        // The kit builds RabbitMQ and Kafka policies; the source table is swapped for ours,
        // the `idempotency-key` field (a header to the sidecar) stays the dedup key.
        Policy::amqp("unused", app_url, namespace).set("source", Value::InlineTable(table))
    }

    async fn publish(&self, events: &[Event]) {
        let mut pipe = redis::pipe();
        for e in events {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("payload")
                .arg(&e.payload[..])
                .arg("key")
                .arg(&e.key)
                .arg("idempotency-key")
                .arg(&e.key)
                .ignore();
        }
        let mut c = self.redis.clone();
        let () = pipe
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("XADD to {}: {e}", self.stream));
    }

    fn cut(&self) {
        self.proxy.cut();
    }

    async fn dead_letters(&self) -> Vec<DeadRecord> {
        let mut out = Vec::new();
        loop {
            let from = format!("({}", self.read_up_to.lock());
            let mut range = redis::cmd("XRANGE");
            range
                .arg(&self.dead_letters)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(1000);
            let entries: Vec<Entry> = self.run(&range).await;
            let Some((last, _)) = entries.last() else {
                return out;
            };
            *self.read_up_to.lock() = last.clone();
            out.extend(entries.iter().map(|(_, fields)| dead_record(fields)));
        }
    }

    async fn backlog(&self) -> u64 {
        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg(&self.stream);
        let groups: Vec<Vec<redis::Value>> = self.run(&info).await;
        // Each group is a flat list of names and values; lag is nil while Redis cannot tell.
        for group in groups {
            let field = |name: &str| {
                group
                    .chunks(2)
                    .find(
                        |kv| matches!(&kv[0], redis::Value::BulkString(n) if n == name.as_bytes()),
                    )
                    .map(|kv| kv[1].clone())
            };
            let is_ours = matches!(field("name"), Some(redis::Value::BulkString(n)) if n == self.group.as_bytes());
            if !is_ours {
                continue;
            }
            let count = |v: Option<redis::Value>| match v {
                Some(redis::Value::Int(n)) => n.max(0) as u64,
                _ => u64::MAX / 4,
            };
            return count(field("pending")) + count(field("lag"));
        }
        u64::MAX
    }

    async fn clean_up(self) {}
}

fn dead_record(fields: &[Vec<u8>]) -> DeadRecord {
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv.len() == 2 && kv[0] == name.as_bytes())
            .map(|kv| kv[1].clone())
    };
    let text = |name: &str| field(name).map(|v| String::from_utf8_lossy(&v).into_owned());
    DeadRecord {
        key: text("outrigger-dlq-key"),
        copy: field("payload").and_then(|p| copy_of(&p)),
        class: text("outrigger-dlq-class").unwrap_or_default(),
        source: text("outrigger-dlq-source").unwrap_or_default(),
        attempts: text("outrigger-dlq-attempts").unwrap_or_default(),
    }
}
