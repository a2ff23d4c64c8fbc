//! The points of the source contract, each a generic test over a [`SourceFixture`]; see
//! [`source_contract!`](crate::source_contract), which runs every one of them.
//!
//! Whether anything is left for a consumer is checked with a sentinel: the point publishes one
//! more message and takes everything up to it. A queue (or the one partition of a fixture's
//! topic) hands messages out in order, so anything delivered again comes before the sentinel,
//! and no fixed wait can pass because the broker was slow to redeliver.

mod dlq;

pub use dlq::{
    dlq_lists_each_dead_letter_with_its_context, dlq_purge_discards_the_record,
    dlq_resubmit_sends_a_marked_copy_back_once,
};

use bytes::Bytes;
use outrigger_core::dead_letter::{headers, source_from_headers};
use outrigger_core::{
    Acker, Broker, DeadLetter, Delivery, Header, Message, Settlement, Source, SourceError,
    Unsettled,
};
use outrigger_memory::Outgoing;

use super::{dead_letter, recv, recv_n, AfterCut, Faults, Redelivery, SourceFixture};
use crate::names::unique;
use crate::wait::{wait_until, within};

type SourceOf<F> = <<F as SourceFixture>::Broker as Broker>::Source;
type AckerOf<F> = <SourceOf<F> as Source>::Acker;

/// A message of only a text payload.
fn text(payload: &str) -> Outgoing {
    Outgoing::new(payload.to_owned())
}

/// A payload as text, for assertions that read well.
fn payload(message: &Message) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

async fn next<F: SourceFixture>(source: &mut SourceOf<F>) -> Delivery<AckerOf<F>> {
    recv(source, F::DEADLINE).await
}

/// Settles `delivery`, which must succeed.
async fn settle<A: Acker>(delivery: Delivery<A>, settlement: Settlement) {
    let what = payload(&delivery.message);
    if let Err(unsettled) = delivery.acker.settle(settlement).await {
        panic!(
            "settling {what} as {:?} failed: {}",
            unsettled.settlement, unsettled.error
        );
    }
}

/// Stops `source` and connects the next consumer, as a restarted sidecar does.
async fn restart<F: SourceFixture>(f: &F, mut source: SourceOf<F>) -> SourceOf<F> {
    source.stop().await;
    drop(source);
    f.source().await
}

/// Publishes a sentinel and takes everything up to it from `source`, acking each: the payloads
/// that were still there for this consumer.
async fn left_over<F: SourceFixture>(f: &F, source: &mut SourceOf<F>) -> Vec<String> {
    let sentinel = unique("sentinel");
    f.publish(text(&sentinel)).await;
    let mut before = Vec::new();
    loop {
        let delivery = next::<F>(source).await;
        let got = payload(&delivery.message);
        settle(delivery, Settlement::Ack).await;
        if got == sentinel {
            return before;
        }
        before.push(got);
    }
}

/// The message handed back unsettled, delivered again where the broker redelivers it.
async fn redelivered<F: SourceFixture>(
    f: &F,
    source: SourceOf<F>,
    expected: &str,
    why: &str,
) -> (SourceOf<F>, Delivery<AckerOf<F>>) {
    let mut source = match F::REDELIVERY {
        Redelivery::SameSource => source,
        Redelivery::NextSource => restart(f, source).await,
    };
    let again = next::<F>(&mut source).await;
    assert_eq!(
        payload(&again.message),
        expected,
        "{why}: the message handed back is delivered again"
    );
    if F::MARKS_REDELIVERED {
        assert!(
            again.message.redelivered,
            "{why}: the message delivered again says so"
        );
    }
    (source, again)
}

/// Acked messages are gone: not delivered again to the source that acked them, nor to the
/// next one.
pub async fn each_delivery_is_settled_once<F: SourceFixture>() {
    let f = F::new(Faults::None).await;
    let sent = ["settle-0", "settle-1", "settle-2"];
    for p in sent {
        f.publish(text(p)).await;
    }
    let mut source = f.source().await;
    let got = recv_n(&mut source, sent.len(), F::DEADLINE).await;
    let payloads: Vec<String> = got.iter().map(|d| payload(&d.message)).collect();
    assert_eq!(payloads, sent, "each delivered once, in order");
    assert!(
        got.iter().all(|d| !d.message.redelivered),
        "first deliveries are not marked redelivered"
    );
    for delivery in got {
        settle(delivery, Settlement::Ack).await;
    }
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "an acked message is not delivered again"
    );
    let mut source = restart(&f, source).await;
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "nor after a restart"
    );
    source.stop().await;
    f.clean_up().await;
}

/// A delivery whose acker is dropped unsettled is handed back to the broker and delivered
/// again; acked then, it is gone.
pub async fn a_dropped_acker_redelivers<F: SourceFixture>() {
    handed_back::<F>(None).await;
}

/// `Requeue` hands the message back to the broker, which delivers it again; acked then, it
/// is gone.
pub async fn a_requeue_redelivers<F: SourceFixture>() {
    handed_back::<F>(Some(Settlement::Requeue)).await;
}

/// Hands a delivery back by `settlement`, or by dropping its acker.
async fn handed_back<F: SourceFixture>(settlement: Option<Settlement>) {
    let f = F::new(Faults::None).await;
    f.publish(text("keep me")).await;
    let mut source = f.source().await;
    let first = next::<F>(&mut source).await;
    assert_eq!(payload(&first.message), "keep me");
    assert!(!first.message.redelivered, "a first delivery");
    let why = match settlement {
        Some(settlement) => {
            settle(first, settlement).await;
            "a requeue"
        }
        None => {
            drop(first);
            "a dropped acker"
        }
    };
    let (source, again) = redelivered(&f, source, "keep me", why).await;
    settle(again, Settlement::Ack).await;
    let mut source = restart(&f, source).await;
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "acked at last, it is gone"
    );
    source.stop().await;
    f.clean_up().await;
}

/// `stop` ends the stream; an acker handed out before still settles; what the source had not
/// handed out stays for the next consumer, and what was settled does not come back.
pub async fn stop_ends_the_stream_and_ackers_stay_usable<F: SourceFixture>() {
    let f = F::new(Faults::None).await;
    for p in ["stop-0", "stop-1", "stop-2"] {
        f.publish(text(p)).await;
    }
    let mut source = f.source().await;
    let held = next::<F>(&mut source).await;
    assert_eq!(payload(&held.message), "stop-0");
    // A source may wait in stop for what is in flight (Kafka commits it): settle meanwhile.
    let ((), settled) = tokio::join!(source.stop(), held.acker.settle(Settlement::Ack));
    if let Err(unsettled) = settled {
        panic!(
            "an acker handed out before stop must still settle: {}",
            unsettled.error
        );
    }
    let after = within("recv after stop", F::DEADLINE, source.recv()).await;
    assert!(
        matches!(after, Ok(None)),
        "recv ends once the source is stopped: {:?}",
        after.map(|d| d.map(|d| d.message))
    );
    drop(source);
    let mut source = f.source().await;
    assert_eq!(
        left_over(&f, &mut source).await,
        ["stop-1", "stop-2"],
        "the next consumer gets what was not delivered, and not what was settled"
    );
    source.stop().await;
    f.clean_up().await;
}

/// A dead-letter settlement returns only once the broker has the dead letter: it is in the
/// dead-letter destination the moment the settlement returns, and the original is gone.
pub async fn a_dead_letter_is_safe_before_the_original_is_acked<F: SourceFixture>() {
    let f = F::new(Faults::None).await;
    f.publish(text("poison").header("trace", "t-1")).await;
    let mut source = f.source().await;
    let delivery = next::<F>(&mut source).await;
    let origin = delivery.message.coordinates.clone();
    let none = f.dead_letters().await;
    assert!(none.is_empty(), "nothing dead-lettered yet: {none:?}");

    settle(delivery, Settlement::dead_letter(dead_letter())).await;
    // No waiting: settled means the broker confirmed the write.
    let dead = f.dead_letters().await;
    assert_eq!(dead.len(), 1, "the dead letter is there at once: {dead:?}");
    assert_eq!(dead[0].payload, "poison");
    assert_eq!(
        dead[0].header_str(headers::REASON),
        Some(dead_letter().reason.as_str())
    );
    assert_eq!(source_from_headers(&dead[0].headers), Some(origin));

    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "the original was acked"
    );
    let mut source = restart(&f, source).await;
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "and stays gone after a restart"
    );
    assert_eq!(f.dead_letters().await.len(), 1, "written once");
    source.stop().await;
    f.clean_up().await;
}

/// A dead letter the broker does not take settles nothing: the handle comes back with the
/// settlement, the original stays (dropping the handle redelivers it), and once the broker
/// takes dead letters again the returned handle settles.
pub async fn a_failed_dead_letter_write_keeps_the_original<F: SourceFixture>() {
    let f = F::new(Faults::DeadLetterWrites).await;
    f.publish(text("poison")).await;
    let mut source = f.source().await;
    let delivery = next::<F>(&mut source).await;

    f.break_dead_letter_writes().await;
    let unsettled = delivery
        .acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .expect_err("a dead letter the broker did not take must not settle");
    assert!(
        matches!(unsettled.error, SourceError::Publish(_)),
        "{:?}",
        unsettled.error
    );
    assert_eq!(
        unsettled.settlement,
        Settlement::dead_letter(dead_letter()),
        "the settlement comes back with the handle"
    );
    let none = f.dead_letters().await;
    assert!(none.is_empty(), "no dead letter was written: {none:?}");

    // Nothing was acked: the dropped handle hands the original back.
    drop(unsettled);
    let (mut source, again) = redelivered(
        &f,
        source,
        "poison",
        "the dropped handle of a failed dead letter",
    )
    .await;
    let unsettled = again
        .acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .expect_err("still not taken");
    f.heal_dead_letter_writes().await;
    let Unsettled {
        acker, settlement, ..
    } = *unsettled;
    if let Err(failed) = acker.settle(settlement).await {
        panic!(
            "the returned handle settles once the broker takes dead letters: {}",
            failed.error
        );
    }
    let dead: Vec<String> = f.dead_letters().await.iter().map(payload).collect();
    assert_eq!(dead, ["poison"], "one dead letter, written by the retry");
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "the original was acked with it"
    );
    let mut source = restart(&f, source).await;
    assert_eq!(left_over(&f, &mut source).await, Vec::<String>::new());
    source.stop().await;
    f.clean_up().await;
}

/// Payload, key and headers (binary values and empty ones too) reach the delivered message
/// byte for byte, and the dead letter keeps them beside its failure context.
pub async fn payload_key_and_headers_round_trip_byte_for_byte<F: SourceFixture>() {
    let f = F::new(Faults::None).await;
    // Distinct names in order, which every broker keeps (an AMQP table is sorted by name).
    let published = Outgoing::new(Bytes::from_static(&[0xff, 0xfe, 0x00, 0x80, b'x', 0xc3]))
        .key(Bytes::from_static(&[0xff, 0x00, b'k']))
        .header("bin", Bytes::from_static(&[0xde, 0xad, 0x00, 0xbe, 0xef]))
        .header("empty", "")
        .header("trace", "t-1");
    f.publish(published.clone()).await;
    let mut source = f.source().await;
    let delivery = next::<F>(&mut source).await;
    let m = &delivery.message;
    assert_eq!(m.payload, published.payload, "payload byte for byte");
    assert_eq!(m.key, f.delivered_key(&published), "the key");
    assert_eq!(
        m.headers, published.headers,
        "headers byte for byte, in order"
    );
    let origin = m.coordinates.clone();

    let context = dead_letter();
    settle(delivery, Settlement::dead_letter(context.clone())).await;
    let dead = f.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dl = &dead[0];
    assert_eq!(
        dl.payload, published.payload,
        "dead letter payload byte for byte"
    );
    assert_eq!(dl.key, f.dead_letter_key(&published), "dead letter key");
    let (mut written, original): (Vec<Header>, Vec<Header>) = dl
        .headers
        .iter()
        .cloned()
        .partition(|h| headers::is_context(&h.name));
    assert_eq!(
        original, published.headers,
        "the original headers, untouched, in order"
    );
    let mut expected: Vec<Header> = context
        .context_headers(&origin)
        .into_iter()
        .map(|(name, value)| Header::new(name, value))
        .collect();
    written.sort_by(|a, b| a.name.cmp(&b.name));
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        written, expected,
        "the outrigger-dlq-* context, nothing else"
    );
    assert_eq!(DeadLetter::from_headers(&dl.headers), Ok(context));
    assert_eq!(source_from_headers(&dl.headers), Some(origin));

    assert_eq!(left_over(&f, &mut source).await, Vec::<String>::new());
    source.stop().await;
    f.clean_up().await;
}

/// After its connection is cut the source reconnects by itself and keeps delivering; a
/// delivery of the old connection is either settled by its acker or delivered again, never
/// lost and never settled twice.
pub async fn reconnects_after_a_connection_cut<F: SourceFixture>() {
    let f = F::new(Faults::ConnectionCuts).await;
    f.publish(text("before")).await;
    let mut source = f.source().await;
    let health = source.health();
    let held = next::<F>(&mut source).await;
    assert_eq!(payload(&held.message), "before");
    assert!(health.is_up());

    let after_cut = f.cut_connections();
    f.publish(text("after")).await;
    match after_cut {
        AfterCut::Redelivered => {
            // The source notices the cut even though nobody is polling recv.
            wait_until("the source to notice the cut", F::DEADLINE, || {
                let health = health.clone();
                async move { !health.is_up() }
            })
            .await;
            let refused = held
                .acker
                .settle(Settlement::Ack)
                .await
                .expect_err("an acker of the broken connection cannot settle");
            assert!(
                matches!(refused.error, SourceError::Connection(_)),
                "{:?}",
                refused.error
            );
            drop(refused);
            let got = recv_n(&mut source, 2, F::DEADLINE).await;
            let payloads: Vec<String> = got.iter().map(|d| payload(&d.message)).collect();
            assert_eq!(
                payloads,
                ["before", "after"],
                "the old connection's message comes back, then the new one"
            );
            if F::MARKS_REDELIVERED {
                assert!(got[0].message.redelivered, "delivered again, and says so");
            }
            for delivery in got {
                settle(delivery, Settlement::Ack).await;
            }
        }
        AfterCut::Kept => {
            settle(held, Settlement::Ack).await;
            let delivery = next::<F>(&mut source).await;
            assert_eq!(payload(&delivery.message), "after");
            settle(delivery, Settlement::Ack).await;
        }
    }
    assert!(health.is_up(), "up again once reconnected");
    assert_eq!(left_over(&f, &mut source).await, Vec::<String>::new());
    let mut source = restart(&f, source).await;
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "each message settled once across the cut"
    );
    source.stop().await;
    f.clean_up().await;
}
