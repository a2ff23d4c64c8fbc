//! Redis Streams in the retry contract: a stream of the test's own on the machine's Redis
//! (127.0.0.1:6379), its retry stream `<stream>.retry.0` made by the sidecar.
//!
//! The kit has no Redis client of its own: the few commands the fixture sends (`XADD`, `DEL`)
//! go over a plain connection in RESP.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{RetryFixture, TIER};
use crate::{unique, Policy};

/// The machine's Redis, which the dedup store of every test policy uses too.
const ADDRESS: &str = "127.0.0.1:6379";
const URL: &str = "redis://127.0.0.1:6379";

/// Redis Streams: a stream of the test's own, read by a group of its own as one consumer name,
/// so the restarted sidecar takes its pending entries (the copies waiting when it was killed)
/// back at once, as a StatefulSet's pod would.
pub struct RedisStreamsRetry {
    stream: String,
    group: String,
}

impl RetryFixture for RedisStreamsRetry {
    async fn new(test: &str) -> Self {
        Self {
            stream: unique(test),
            group: unique("retry-group"),
        }
    }

    async fn publish(&self, records: &[(String, String)]) {
        let commands: Vec<Vec<&[u8]>> = records
            .iter()
            .map(|(key, body)| {
                vec![
                    &b"XADD"[..],
                    self.stream.as_bytes(),
                    b"*",
                    b"payload",
                    body.as_bytes(),
                    b"key",
                    key.as_bytes(),
                ]
            })
            .collect();
        run(&commands).await;
    }

    fn policy(&self, app_url: &str, namespace: &str) -> Policy {
        let mut source = toml_edit::InlineTable::new();
        source.insert("url", URL.into());
        source.insert(
            "streams",
            toml_edit::Value::Array(toml_edit::Array::from_iter([self.stream.as_str()])),
        );
        source.insert("group", self.group.as_str().into());
        source.insert("consumer", "retry-contract".into());
        source.insert("block", "200ms".into());
        source.insert("claim_idle", "2s".into());
        let mut table = toml_edit::InlineTable::new();
        table.insert("redis_streams", toml_edit::Value::InlineTable(source));
        // The kit builds RabbitMQ and Kafka policies; the source table is swapped for this one.
        Policy::amqp("unused", app_url, namespace)
            .set("source", toml_edit::Value::InlineTable(table))
            .set("dedup.key", "{json:/id}")
            .set("ordering.mode", "key")
            .set("retry.mode", "queue")
            .set("retry.tiers", toml_edit::Array::from_iter([TIER]))
    }

    async fn clean_up(self) {
        let retry = format!("{}.retry.0", self.stream);
        let dlq = format!("{}.dlq", self.stream);
        run(&[vec![
            &b"DEL"[..],
            self.stream.as_bytes(),
            retry.as_bytes(),
            dlq.as_bytes(),
        ]])
        .await;
    }
}

/// Sends `commands` in one go and reads a reply to each; an error reply fails the test.
async fn run(commands: &[Vec<&[u8]>]) {
    let connection = TcpStream::connect(ADDRESS)
        .await
        .unwrap_or_else(|e| panic!("connecting to Redis at {ADDRESS}: {e}"));
    let (read, mut write) = connection.into_split();
    let mut out = Vec::new();
    for args in commands {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }
    write.write_all(&out).await.expect("writing to Redis");
    let mut replies = BufReader::new(read);
    for args in commands {
        let mut line = String::new();
        replies.read_line(&mut line).await.expect("reading Redis");
        assert!(
            !line.starts_with('-'),
            "Redis refused {}: {line}",
            String::from_utf8_lossy(args[0])
        );
        if let Some(len) = line.strip_prefix('$') {
            let len: i64 = len.trim().parse().expect("a bulk length");
            if len >= 0 {
                let mut bulk = vec![0; len as usize + 2];
                replies.read_exact(&mut bulk).await.expect("reading Redis");
            }
        }
    }
}
