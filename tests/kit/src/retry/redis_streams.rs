//! Redis Streams in the retry contract: a stream of the test's own on the machine's Redis
//! (127.0.0.1:6379), its retry stream `<stream>.retry.0` made by the sidecar.

use super::{RetryFixture, TIER};
use crate::{unique, Policy};

/// The machine's Redis, which the dedup store of every test policy uses too.
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
        let commands: Vec<redis::Cmd> = records
            .iter()
            .map(|(key, body)| {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(&self.stream)
                    .arg("*")
                    .arg("payload")
                    .arg(body)
                    .arg("key")
                    .arg(key);
                xadd
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
        let mut del = redis::cmd("DEL");
        del.arg(&self.stream)
            .arg(format!("{}.retry.0", self.stream))
            .arg(format!("{}.dlq", self.stream));
        run(&[del]).await;
    }
}

/// Sends `commands` in one pipeline; an error reply fails the test.
async fn run(commands: &[redis::Cmd]) {
    let client = redis::Client::open(URL).expect("a valid Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connecting to Redis at {URL}: {e}"));
    let mut pipe = redis::pipe();
    for cmd in commands {
        pipe.add_command(cmd.clone()).ignore();
    }
    pipe.query_async::<()>(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("Redis refused a command: {e}"));
}
