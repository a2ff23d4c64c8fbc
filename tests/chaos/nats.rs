//! NATS JetStream: the machine's server (the kit's [`Streams`]: a source stream and a
//! dead-letter stream of the run's own), the sidecar connected through a proxy the harness
//! cuts, a short `ack_wait` so what a killed sidecar held is redelivered within seconds, the
//! business key in a header the source reads as the message key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use outrigger_testkit::nats::{self, Streams};

use super::broker::{ChaosBroker, DeadRecord};
use super::workload::{copy_of, Event};
use crate::support::{Policy, Proxy};

/// The run's streams and the proxy in front of the server.
pub struct Nats {
    streams: Streams,
    proxy: Proxy,
    /// The sequence of the last dead letter read.
    read_up_to: AtomicU64,
}

impl ChaosBroker for Nats {
    const NAME: &'static str = "nats";
    // A killed sidecar's unacked messages come back after ack_wait (below).
    const TAKEOVER: Duration = Duration::from_secs(4);

    async fn start() -> Self {
        Self {
            streams: Streams::new("chaos").await,
            proxy: Proxy::start(nats::address().await).await,
            read_up_to: AtomicU64::new(0),
        }
    }

    fn policy(&self, app_url: &str, namespace: &str) -> Policy {
        let server = format!("nats://{}", self.proxy.addr);
        nats::policy(
            &self.streams,
            &server,
            app_url,
            namespace,
            &[
                ("ack_wait", "4s".into()),
                // Keyed by the business key, as a producer keys by entity: ordering mode
                // `key` (the default) then runs keys in parallel. Without it every message
                // is keyed by the one subject and runs one at a time.
                ("key_header", "idempotency-key".into()),
            ],
        )
    }

    async fn publish(&self, events: &[Event]) {
        join_all(events.iter().map(|e| async move {
            self.streams
                .publish(&[("idempotency-key", &e.key)], e.payload.clone())
                .await
        }))
        .await;
    }

    fn cut(&self) {
        self.proxy.cut();
    }

    async fn dead_letters(&self) -> Vec<DeadRecord> {
        let Ok(stream) = self
            .streams
            .js
            .get_stream(&self.streams.dead_letter_stream)
            .await
        else {
            return Vec::new();
        };
        let last = stream.cached_info().state.last_sequence;
        let mut out = Vec::new();
        let mut seq = self.read_up_to.load(Ordering::Relaxed) + 1;
        while seq <= last {
            let Ok(m) = stream.get_first_raw_message_by_subject(">", seq).await else {
                break;
            };
            if m.sequence > last {
                break;
            }
            seq = m.sequence + 1;
            let text = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
            out.push(DeadRecord {
                key: text("outrigger-dlq-key"),
                copy: copy_of(&m.payload),
                class: text("outrigger-dlq-class").unwrap_or_default(),
                source: text("outrigger-dlq-source").unwrap_or_default(),
                attempts: text("outrigger-dlq-attempts").unwrap_or_default(),
            });
        }
        self.read_up_to.store(seq - 1, Ordering::Relaxed);
        out
    }

    async fn backlog(&self) -> u64 {
        match self.streams.js.get_stream(&self.streams.stream).await {
            Ok(s) => match s.consumer_info(&self.streams.consumer).await {
                Ok(info) => info.num_pending + info.num_ack_pending as u64,
                Err(_) => s.cached_info().state.messages,
            },
            Err(_) => u64::MAX,
        }
    }

    async fn clean_up(self) {
        self.streams.clean_up().await;
    }
}
