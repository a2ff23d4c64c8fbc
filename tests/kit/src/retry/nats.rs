//! NATS JetStream in the retry contract: a stream of the test's own on the machine's
//! nats-server (127.0.0.1:4222), its retry stream `<stream>_retry` (subject
//! `<stream>.retry.0`) and retry consumer made by the sidecar.

use toml_edit::Value;

use super::{RetryFixture, TIER};
use crate::nats::{self, Streams};
use crate::Policy;

/// NATS JetStream: a stream of the test's own and its dead-letter stream, read by a durable
/// consumer of its own; a short `ack_wait`, so the restarted sidecar gets the killed one's
/// unacked messages within seconds.
pub struct NatsRetry {
    streams: Streams,
}

impl RetryFixture for NatsRetry {
    async fn new(test: &str) -> Self {
        Self {
            streams: Streams::new(test).await,
        }
    }

    async fn publish(&self, records: &[(String, String)]) {
        for (key, body) in records {
            self.streams
                .publish(&[("outrigger-key", key.as_str())], body.clone())
                .await;
        }
    }

    fn policy(&self, app_url: &str, namespace: &str) -> Policy {
        nats::policy(
            &self.streams,
            &nats::url(),
            app_url,
            namespace,
            &[("ack_wait", Value::from("2s"))],
        )
        .set("dedup.key", "{json:/id}")
        .set("ordering.mode", "key")
        .set("retry.mode", "queue")
        .set("retry.tiers", toml_edit::Array::from_iter([TIER]))
    }

    async fn clean_up(self) {
        let retry = format!("{}_retry", self.streams.stream);
        self.streams.delete_stream(&retry).await;
        self.streams.clean_up().await;
    }
}
