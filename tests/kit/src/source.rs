//! The source contract: what every adapter promises, checked against its real broker.
//!
//! An adapter's tests implement [`SourceFixture`] once, over a server on loopback, and call
//! [`source_contract!`](crate::source_contract) with it: one `#[tokio::test]` per contract
//! point, each in [`points`], asserting what a user would notice. A point a broker cannot
//! have (a memory broker has no connection to cut) is opted out of by name, with the reason,
//! and shows as an ignored test; nothing passes silently.
//!
//! The fixture says how its broker behaves where brokers legitimately differ
//! ([`Redelivery`], [`AfterCut`], how keys travel), and the points hold every broker to the
//! same outcome: each message settled once, nothing lost, nothing acked before its dead letter
//! is safe.

pub mod points;

use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use outrigger_core::{Broker, DeadLetter, Delivery, Message, Source, SourceContext};

use crate::wait::within;

/// A message to publish, as a [`SourceFixture`] takes it: payload, headers in order, key,
/// message id, content type.
pub use outrigger_memory::Outgoing;

/// The faults a point is going to inject, so that a fixture can start the server that can
/// produce them (the Kafka fixture runs librdkafka's mock cluster for failing writes, a tansu
/// behind a proxy for cuts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// None: the plain server.
    None,
    /// [`SourceFixture::break_dead_letter_writes`] and
    /// [`heal_dead_letter_writes`](SourceFixture::heal_dead_letter_writes).
    DeadLetterWrites,
    /// [`SourceFixture::cut_connections`].
    ConnectionCuts,
}

/// Who gets a message again once it was handed back unsettled (acker dropped, `Requeue`, a
/// failed dead letter whose handle was dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redelivery {
    /// The broker hands it out again at once, to the same source (RabbitMQ, memory).
    SameSource,
    /// The next consumer of its partition reads it again, after a restart or a rebalance
    /// (Kafka: nothing is committed past it, the consumer does not seek back).
    NextSource,
}

/// What a connection cut does to the deliveries handed out before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterCut {
    /// Their ackers fail with [`SourceError::Connection`](outrigger_core::SourceError), and
    /// the broker hands their messages out again on the new connection (RabbitMQ: a delivery
    /// belongs to its channel).
    Redelivered,
    /// Their ackers still settle: the client keeps its place across the reconnect (Kafka: the
    /// consumer stores offsets itself and commits them to its group).
    Kept,
}

/// A broker on loopback with a queue (topic, stream) and a dead-letter destination of the
/// test's own, and the way to look into both. See the module docs.
///
/// Each point makes a fresh fixture. Only [`publish`](Self::publish),
/// [`dead_letters`](Self::dead_letters) and the fault switches are needed for a broker whose
/// source comes from [`Broker::connect`] and whose dead letters from
/// [`Broker::dead_letters`]; the rest have defaults.
pub trait SourceFixture: Sized + 'static {
    /// The broker under test.
    type Broker: Broker;

    /// Upper bound for anything the broker is expected to do; the points pass far below it.
    const DEADLINE: Duration;

    /// Who gets a message handed back unsettled.
    const REDELIVERY: Redelivery;

    /// Whether a message delivered again says so ([`Message::redelivered`]).
    const MARKS_REDELIVERED: bool;

    /// Starts the server (or finds it), and creates the queue and its dead-letter destination,
    /// ready for the `faults` the point will inject.
    fn new(faults: Faults) -> impl Future<Output = Self>;

    /// The `[source.<broker>]` table of the fixture's queue.
    fn config(&self) -> <Self::Broker as Broker>::Config;

    /// The settings shared with the rest of the policy. By default: dead letters to
    /// `<queue>.dlq`, which the fixture created, so the source declares nothing.
    fn context(&self) -> SourceContext {
        SourceContext {
            declare_dead_letters: false,
            ..SourceContext::default()
        }
    }

    /// A new consumer of the queue: the first, or the next after a restart.
    fn source(&self) -> impl Future<Output = <Self::Broker as Broker>::Source> {
        let (config, context) = (self.config(), self.context());
        async move { connect::<Self::Broker>(&config, &context).await }
    }

    /// The dead-letter queue as `outrigger dlq` opens it.
    fn dead_letter_queue(&self) -> <Self::Broker as Broker>::DeadLetters {
        <Self::Broker as Broker>::dead_letters(&self.config(), &self.context()).unwrap_or_else(
            |e| {
                panic!(
                    "{} opens no dead-letter queue ({e}): opt out of the dlq points",
                    <Self::Broker as Broker>::KIND
                )
            },
        )
    }

    /// Publishes one message to the queue and waits until the broker has it. A broker without
    /// producer keys, message ids or content types leaves them out (see
    /// [`delivered_key`](Self::delivered_key)).
    fn publish(&self, message: Outgoing) -> impl Future<Output = ()>;

    /// Every message in the dead-letter destination, in order, context headers included,
    /// left there for later reads.
    fn dead_letters(&self) -> impl Future<Output = Vec<Message>>;

    /// The key a consumer sees on a message published as `published`: the producer's key by
    /// default.
    fn delivered_key(&self, published: &Outgoing) -> Option<Bytes> {
        published.key.clone()
    }

    /// The key the dead letter of `published` has in the dead-letter destination: the key it
    /// was delivered with by default.
    fn dead_letter_key(&self, published: &Outgoing) -> Option<Bytes> {
        self.delivered_key(published)
    }

    /// Breaks every connection of the sources (the fixture's own may stay), and says what
    /// that does to the deliveries handed out before. Needs [`Faults::ConnectionCuts`].
    fn cut_connections(&self) -> AfterCut {
        panic!(
            "{} cannot cut its connections: opt out of the point in source_contract!",
            <Self::Broker as Broker>::KIND
        )
    }

    /// From now on the broker refuses or never confirms dead-letter writes. Needs
    /// [`Faults::DeadLetterWrites`].
    fn break_dead_letter_writes(&self) -> impl Future<Output = ()>;

    /// Dead-letter writes succeed again.
    fn heal_dead_letter_writes(&self) -> impl Future<Output = ()>;

    /// Removes what the fixture created; called when a point passed (a failed one leaves it
    /// for the broker's own expiry, or for the process going away).
    fn clean_up(self) -> impl Future<Output = ()> {
        async {}
    }
}

/// Connects `B`'s source, which must succeed.
pub async fn connect<B: Broker>(config: &B::Config, context: &SourceContext) -> B::Source {
    B::connect(config, context)
        .await
        .unwrap_or_else(|e| panic!("connecting the {} source: {e}", B::KIND))
}

/// The next delivery, which must come within `limit`.
pub async fn recv<S: Source>(source: &mut S, limit: Duration) -> Delivery<S::Acker> {
    within("the next delivery", limit, source.recv())
        .await
        .unwrap_or_else(|e| panic!("recv failed: {e}"))
        .expect("the source ended early")
}

/// `n` deliveries, each within `limit`.
pub async fn recv_n<S: Source>(
    source: &mut S,
    n: usize,
    limit: Duration,
) -> Vec<Delivery<S::Acker>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(recv(source, limit).await);
    }
    out
}

/// Asserts that no delivery arrives for `quiet` (a source that ends counts as quiet).
pub async fn assert_quiet<S: Source>(source: &mut S, quiet: Duration, why: &str) {
    if let Ok(Ok(Some(got))) = tokio::time::timeout(quiet, source.recv()).await {
        panic!("{why}: got {:?}", got.message);
    }
}

/// A typical failure context: the app refused the message with HTTP 400 after three attempts.
/// Its times are whole seconds, so it reads back from its headers unchanged.
pub fn dead_letter() -> DeadLetter {
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    DeadLetter {
        reason: "app answered HTTP 400".into(),
        class: "4xx".into(),
        last_status: Some(400),
        attempts: 3,
        first_failure: at,
        last_failure: at,
        key: Some("order-7".into()),
        response_excerpt: Bytes::from_static(b"bad order"),
    }
}

/// Expands to a module `source_contract` with one `#[tokio::test]` per point of
/// [`points`](crate::source::points) for the [`SourceFixture`] `$fixture`. Points the broker
/// cannot have are listed after `skip` with the reason, and become ignored tests:
///
/// ```ignore
/// outrigger_testkit::source_contract!(MemoryContract, skip {
///     reconnects_after_a_connection_cut: "in process: there is no connection to cut",
/// });
/// ```
///
/// The crate needs `tokio` (with `macros` and `rt`) among its dependencies. A new point goes
/// in the list below, so that every broker runs it.
#[macro_export]
macro_rules! source_contract {
    ($fixture:ty $(, skip { $($skipped:ident : $reason:literal),* $(,)? })? $(,)?) => {
        $crate::source_contract!(@points ($) $fixture; [$($($skipped : $reason),*)?];
            each_delivery_is_settled_once,
            a_dropped_acker_redelivers,
            a_requeue_redelivers,
            stop_ends_the_stream_and_ackers_stay_usable,
            a_dead_letter_is_safe_before_the_original_is_acked,
            a_failed_dead_letter_write_keeps_the_original,
            payload_key_and_headers_round_trip_byte_for_byte,
            reconnects_after_a_connection_cut,
            dlq_lists_each_dead_letter_with_its_context,
            dlq_resubmit_sends_a_marked_copy_back_once,
            dlq_purge_discards_the_record,
        );
    };
    (@points ($d:tt) $fixture:ty; [$($skipped:ident : $reason:literal),*]; $($point:ident),+ $(,)?) => {
        mod source_contract {
            #[allow(unused_imports)]
            use super::*;

            // A skipped name that is no point fails to compile.
            $(const _: () = {
                let _ = $crate::source::points::$skipped::<$fixture>;
            };)*

            macro_rules! point {
                $(($skipped) => {
                    #[tokio::test]
                    #[ignore = $reason]
                    async fn $skipped() {
                        $crate::source::points::$skipped::<$fixture>().await;
                    }
                };)*
                ($d name:ident) => {
                    #[tokio::test]
                    async fn $d name() {
                        $crate::source::points::$d name::<$fixture>().await;
                    }
                };
            }

            $(point!($point);)+
        }
    };
}
