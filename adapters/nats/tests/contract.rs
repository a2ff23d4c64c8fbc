//! The source contract against a real nats-server with JetStream on 127.0.0.1:4222, or the
//! server at `OUTRIGGER_TEST_NATS_URL`. Sources connect through a proxy of the test's own,
//! which cuts their connections on cue; the fixture itself talks to the server directly.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use outrigger_core::{Limits, Message, SourceContext};
use outrigger_nats::{Nats, NatsConfig, DEFAULT_KEY_HEADER};
use outrigger_testkit::nats::{self, Streams};
use outrigger_testkit::{AfterCut, Faults, Outgoing, Proxy, Redelivery, SourceFixture};

/// Shorter than [`nats::DEADLINE`] by more than a pull's expiry.
const CUT_ACK_WAIT: Duration = Duration::from_secs(6);

/// A test's own stream and dead-letter stream, and a proxy in front of the server.
struct NatsContract {
    streams: Streams,
    proxy: Proxy,
}

impl SourceFixture for NatsContract {
    type Broker = Nats;
    const DEADLINE: Duration = nats::DEADLINE;
    // A nak (a requeue, a dropped acker) makes the message available again at once, and the
    // source's next pull takes it.
    const REDELIVERY: Redelivery = Redelivery::SameSource;
    const MARKS_REDELIVERED: bool = true;

    async fn new(_faults: Faults) -> Self {
        Self {
            streams: Streams::new("contract").await,
            proxy: Proxy::start(nats::address().await).await,
        }
    }

    /// A message the server sends down a connection as the proxy cuts it never arrives and
    /// comes back after `ack_wait`: short here, so that it comes back within the deadline.
    /// Messages held longer are kept by in-progress, every third of it.
    fn config(&self) -> NatsConfig {
        NatsConfig {
            ack_wait: CUT_ACK_WAIT,
            ..self.streams.config(&format!("nats://{}", self.proxy.addr))
        }
    }

    fn context(&self) -> SourceContext {
        SourceContext {
            declare_dead_letters: false,
            limits: Limits {
                prefetch: Some(10),
                ..Limits::default()
            },
            ..SourceContext::default()
        }
    }

    /// Headers as NATS carries them (text); the key in the key header, the message id in
    /// `Nats-Msg-Id`.
    async fn publish(&self, message: Outgoing) {
        let mut headers = HeaderMap::new();
        for h in &message.headers {
            let value = std::str::from_utf8(&h.value)
                .expect("NATS header values are text: this point is skipped for NATS");
            headers.append(h.name.as_str(), value);
        }
        if let Some(key) = &message.key {
            let key = std::str::from_utf8(key).expect("a text key");
            headers.append(DEFAULT_KEY_HEADER, key);
        }
        if let Some(id) = &message.message_id {
            headers.append("Nats-Msg-Id", id.as_str());
        }
        self.streams
            .publish_map(&self.streams.subject, headers, message.payload.clone())
            .await;
    }

    async fn dead_letters(&self) -> Vec<Message> {
        self.streams.dead_letters().await
    }

    /// Without a key header, a message is keyed by its subject.
    fn delivered_key(&self, published: &Outgoing) -> Option<Bytes> {
        published
            .key
            .clone()
            .or_else(|| Some(Bytes::from(self.streams.subject.clone())))
    }

    fn cut_connections(&self) -> AfterCut {
        self.proxy.cut();
        // An ack subject belongs to the consumer, not to a connection: the client reconnects
        // and the old deliveries' acks go through.
        AfterCut::Kept
    }

    /// The dead-letter stream goes away after the source checked it: a publish to the
    /// dead-letter subject finds no stream to ack it.
    async fn break_dead_letter_writes(&self) {
        self.streams.break_dead_letters().await;
    }

    async fn heal_dead_letter_writes(&self) {
        self.streams.heal_dead_letters().await;
    }

    async fn clean_up(self) {
        self.streams.clean_up().await;
    }
}

outrigger_testkit::source_contract!(
    NatsContract,
    skip {
        payload_key_and_headers_round_trip_byte_for_byte:
            "NATS header values are one line of text and the point publishes binary ones; \
         tests/source.rs runs the same round trip with text values",
        dlq_lists_each_dead_letter_with_its_context:
            "its messages carry a binary header, which NATS cannot; tests/dead_letters.rs lists \
         with text headers",
        dlq_resubmit_sends_a_marked_copy_back_once:
            "its messages carry a binary header, which NATS cannot; tests/dead_letters.rs \
         resubmits with text headers",
        dlq_purge_discards_the_record:
            "its messages carry a binary header, which NATS cannot; tests/dead_letters.rs purges \
         with text headers",
    }
);
