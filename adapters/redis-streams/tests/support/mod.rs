//! What the Redis Streams tests share: the machine's Redis (127.0.0.1:6379, or
//! `OUTRIGGER_TEST_REDIS_URL`), a test's own stream, group and dead-letter stream, and a
//! direct connection to look into them.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use outrigger_core::{Coordinates, Header, Message};
use outrigger_redis_streams::{RedisStreamsConfig, DEFAULT_KEY_FIELD, DEFAULT_PAYLOAD_FIELD};
use outrigger_testkit::{unique, Outgoing};
use redis::aio::MultiplexedConnection;
use redis::Value;

/// Upper bound for anything Redis or a source is expected to do.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The Redis the tests use.
pub fn url() -> String {
    std::env::var("OUTRIGGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Its address, for a proxy in front of it.
pub fn address() -> std::net::SocketAddr {
    let url = url();
    let host = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned();
    std::net::ToSocketAddrs::to_socket_addrs(&host)
        .unwrap()
        .next()
        .unwrap()
}

/// A direct connection to the test Redis.
#[derive(Clone)]
pub struct Redis(pub MultiplexedConnection);

impl Redis {
    pub async fn connect() -> Self {
        let client = redis::Client::open(url()).unwrap();
        Self(client.get_multiplexed_async_connection().await.unwrap())
    }

    /// Runs a command, which must succeed.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut c = self.0.clone();
        cmd.query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }

    /// Adds an entry with these fields; its id.
    pub async fn add(&self, stream: &str, fields: &[(&[u8], &[u8])]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (n, v) in fields {
            cmd.arg(*n).arg(*v);
        }
        self.run(&cmd).await
    }

    /// Adds `payload` under `key` with an `idempotency-key` field of the key.
    pub async fn add_keyed(&self, stream: &str, key: &str, payload: &[u8]) -> String {
        self.add(
            stream,
            &[
                (b"payload", payload),
                (b"key", key.as_bytes()),
                (b"idempotency-key", key.as_bytes()),
            ],
        )
        .await
    }

    /// Every entry of `stream`: id and fields.
    pub async fn range(&self, stream: &str) -> Vec<(String, Vec<(Bytes, Bytes)>)> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(stream).arg("-").arg("+");
        let v: Value = self.run(&cmd).await;
        entries(v)
    }

    /// The pending entries of `group` on `stream`: (id, consumer, deliveries).
    pub async fn pending(&self, stream: &str, group: &str) -> Vec<(String, String, u64)> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream).arg(group).arg("-").arg("+").arg(10_000);
        let rows: Vec<(String, String, u64, u64)> = self.run(&cmd).await;
        rows.into_iter().map(|(id, c, _, n)| (id, c, n)).collect()
    }

    /// Creates `group` on `stream` at its start, with the stream.
    pub async fn create_group(&self, stream: &str, group: &str) {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        let _: Value = self.run(&cmd).await;
    }

    /// An empty stream at `key`.
    pub async fn create_empty(&self, key: &str) {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg("MAXLEN").arg(0).arg("*").arg("x").arg("y");
        let _: String = self.run(&cmd).await;
    }

    pub async fn del(&self, keys: &[&str]) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(keys);
        let _: i64 = self.run(&cmd).await;
    }
}

/// `XRANGE`-shaped entries.
pub fn entries(v: Value) -> Vec<(String, Vec<(Bytes, Bytes)>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .map(|e| {
            let Value::Array(mut parts) = e else {
                panic!("an entry")
            };
            let fields = parts.pop().unwrap();
            let id: String = redis::from_redis_value(parts.pop().unwrap()).unwrap();
            let fields = match fields {
                Value::Array(flat) => flat
                    .chunks(2)
                    .map(|pair| {
                        let n: Vec<u8> = redis::from_redis_value(pair[0].clone()).unwrap();
                        let v: Vec<u8> = redis::from_redis_value(pair[1].clone()).unwrap();
                        (Bytes::from(n), Bytes::from(v))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            (id, fields)
        })
        .collect()
}

/// A dead letter as the tests look at it: payload and key from their fields, the rest
/// headers in order, as the source maps an entry.
pub fn to_message(stream: &str, id: &str, fields: &[(Bytes, Bytes)]) -> Message {
    let mut m = Message::new(
        Bytes::new(),
        Coordinates::RedisStream {
            stream: stream.to_owned(),
            id: id.to_owned(),
        },
    );
    for (n, v) in fields {
        if n.as_ref() == DEFAULT_PAYLOAD_FIELD.as_bytes() {
            m.payload = v.clone();
        } else if n.as_ref() == DEFAULT_KEY_FIELD.as_bytes() {
            m.key = Some(v.clone());
        } else {
            m.headers.push(Header::new(
                String::from_utf8_lossy(n).into_owned(),
                v.clone(),
            ));
        }
    }
    m
}

/// The fields a producer writes for `message`: payload, key, then its headers in order.
pub fn fields_of(message: &Outgoing) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = vec![(
        DEFAULT_PAYLOAD_FIELD.as_bytes().to_vec(),
        message.payload.to_vec(),
    )];
    if let Some(key) = &message.key {
        out.push((DEFAULT_KEY_FIELD.as_bytes().to_vec(), key.to_vec()));
    }
    if let Some(ct) = &message.content_type {
        out.push((b"content-type".to_vec(), ct.as_bytes().to_vec()));
    }
    for h in &message.headers {
        out.push((h.name.as_bytes().to_vec(), h.value.to_vec()));
    }
    out
}

/// A stream, its group and its dead-letter stream of the test's own, deleted by `clean_up`.
pub struct Names {
    pub stream: String,
    pub dead_letters: String,
    pub group: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        let stream = unique(prefix);
        Self {
            dead_letters: format!("{stream}.dlq"),
            group: unique("group"),
            stream,
        }
    }

    /// The `[source.redis_streams]` table for them, as consumer `consumer`, on `url`.
    pub fn config(&self, url: &str, consumer: &str) -> RedisStreamsConfig {
        RedisStreamsConfig {
            consumer: Some(consumer.to_owned()),
            block: Duration::from_millis(200),
            ..RedisStreamsConfig::new(url, [self.stream.clone()], self.group.clone())
        }
    }

    pub async fn clean_up(&self, redis: &Redis) {
        redis.del(&[&self.stream, &self.dead_letters]).await;
    }
}
