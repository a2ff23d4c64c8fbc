//! The memory broker itself: what a queue holds, in which order, and when a source ends. The
//! source contract every adapter passes is in `contract.rs`.

use std::time::Duration;

use bytes::Bytes;
use outrigger_core::dead_letter::headers;
use outrigger_core::{Acker, Coordinates, Delivery, Settlement, Source, SourceError};
use outrigger_memory::{MemoryAcker, MemoryBroker, MemorySource, Outgoing};
use outrigger_testkit::{dead_letter, source};

/// In process, everything happens at once; the deadline only keeps a bug from hanging a test.
const DEADLINE: Duration = Duration::from_secs(5);

/// Waits for `f` with the deadline.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    outrigger_testkit::within("the memory broker", DEADLINE, f).await
}

async fn next(source: &mut MemorySource) -> Delivery<MemoryAcker> {
    source::recv(source, DEADLINE).await
}

fn setup(n: usize) -> (MemoryBroker, MemorySource) {
    let broker = MemoryBroker::new();
    for i in 1..=n {
        broker.publish("orders", Outgoing::new(format!("m{i}")));
    }
    let source = broker.source("orders", "orders.dlq");
    (broker, source)
}

#[tokio::test]
async fn delivers_in_order_with_memory_coordinates() {
    let (broker, mut source) = setup(2);
    let first = next(&mut source).await;
    assert_eq!(first.message.payload, "m1");
    assert_eq!(
        first.message.coordinates,
        Coordinates::Memory {
            queue: "orders".into(),
            sequence: 1
        }
    );
    assert!(!first.message.redelivered);
    assert!(first.message.timestamp.is_some());
    assert_eq!(broker.depth("orders"), (1, 1));
    assert!(source.health().is_up());
    first.acker.settle(Settlement::Ack).await.unwrap();
}

#[tokio::test]
async fn ack_removes_the_message() {
    let (broker, mut source) = setup(1);
    let d = next(&mut source).await;
    d.acker.settle(Settlement::Ack).await.unwrap();
    assert_eq!(broker.depth("orders"), (0, 0));
    assert!(within(source.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn requeue_puts_it_back_first_and_marks_it_redelivered() {
    let (broker, mut source) = setup(2);
    let d = next(&mut source).await;
    d.acker.settle(Settlement::Requeue).await.unwrap();
    assert_eq!(broker.depth("orders"), (2, 0));
    let again = next(&mut source).await;
    assert_eq!(again.message.payload, "m1");
    assert!(again.message.redelivered);
    again.acker.settle(Settlement::Ack).await.unwrap();
    let second = next(&mut source).await;
    assert_eq!(second.message.payload, "m2");
    assert!(!second.message.redelivered);
    second.acker.settle(Settlement::Ack).await.unwrap();
}

#[tokio::test]
async fn dropping_an_unsettled_acker_requeues() {
    let (broker, mut source) = setup(1);
    drop(next(&mut source).await);
    assert_eq!(broker.depth("orders"), (1, 0));
    let ready = broker.ready("orders");
    assert_eq!(ready.len(), 1);
    assert!(ready[0].redelivered);
    let again = next(&mut source).await;
    assert!(again.message.redelivered);
    again.acker.settle(Settlement::Ack).await.unwrap();
    assert_eq!(broker.depth("orders"), (0, 0));
}

#[tokio::test]
async fn dead_letter_keeps_payload_and_headers_and_adds_context() {
    let broker = MemoryBroker::new();
    broker.publish(
        "orders",
        Outgoing::new(Bytes::from_static(b"\x00poison\xff"))
            .header("tenant", "acme")
            .header("tenant", "second")
            .key("customer-4")
            .message_id("m-1")
            .content_type("application/octet-stream"),
    );
    let mut source = broker.source("orders", "orders.dlq");
    let d = next(&mut source).await;
    d.acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap();
    assert_eq!(broker.depth("orders"), (0, 0));

    let dlq = broker.ready("orders.dlq");
    assert_eq!(dlq.len(), 1);
    let record = &dlq[0];
    assert_eq!(record.payload, Bytes::from_static(b"\x00poison\xff"));
    assert_eq!(record.headers[0].name, "tenant");
    assert_eq!(record.headers[0].value, "acme");
    assert_eq!(record.headers[1].value, "second");
    assert_eq!(
        record.header_str(headers::REASON),
        Some("app answered HTTP 400")
    );
    assert_eq!(record.header_str(headers::STATUS), Some("400"));
    assert_eq!(record.header_str(headers::SOURCE), Some("memory:orders@1"));
    assert_eq!(record.header_str(headers::KEY), Some("order-7"));
    assert_eq!(record.key.as_deref(), Some(&b"customer-4"[..]));
    assert_eq!(record.message_id.as_deref(), Some("m-1"));
    assert_eq!(
        record.coordinates,
        Coordinates::Memory {
            queue: "orders.dlq".into(),
            sequence: 1
        }
    );
    assert!(within(source.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn failed_dead_letter_acks_nothing_and_returns_the_handle() {
    let (broker, mut source) = setup(1);
    broker.set_fail_dead_letters(true);
    let d = next(&mut source).await;
    let unsettled = d
        .acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap_err();
    assert!(matches!(unsettled.error, SourceError::Publish(_)));
    assert!(matches!(
        unsettled.settlement,
        Settlement::DeadLetter { .. }
    ));
    assert_eq!(broker.depth("orders"), (0, 1));
    assert!(broker.ready("orders.dlq").is_empty());

    // The returned handle still owns the message: once the broker recovers it settles.
    broker.set_fail_dead_letters(false);
    unsettled.acker.settle(unsettled.settlement).await.unwrap();
    assert_eq!(broker.depth("orders"), (0, 0));
    assert_eq!(broker.depth("orders.dlq"), (1, 0));
}

#[tokio::test]
async fn dropping_a_returned_handle_requeues() {
    let (broker, mut source) = setup(1);
    broker.set_fail_dead_letters(true);
    let d = next(&mut source).await;
    let unsettled = d
        .acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap_err();
    drop(unsettled);
    assert_eq!(broker.depth("orders"), (1, 0));
}

/// Lets a spawned task run until it parks: the test runtime is single-threaded, so one yield
/// runs it up to its first wait.
async fn let_it_park() {
    tokio::task::yield_now().await;
}

#[tokio::test]
async fn drained_queue_ends_only_after_every_message_is_settled() {
    let (_broker, mut source) = setup(2);
    let a = next(&mut source).await;
    let b = next(&mut source).await;
    // Nothing ready, but two unacked that could come back: recv must wait, not end.
    let waiting = tokio::spawn(async move {
        let got = source.recv().await.unwrap();
        (got, source)
    });
    let_it_park().await;
    a.acker.settle(Settlement::Ack).await.unwrap();
    let_it_park().await;
    assert!(!waiting.is_finished(), "one unacked message is left");
    // A requeue wakes the waiter with the message again.
    b.acker.settle(Settlement::Requeue).await.unwrap();
    let (got, mut source) = within(waiting).await.unwrap();
    let last = got.expect("the requeued message comes back");
    assert_eq!(last.message.payload, "m2");
    assert!(last.message.redelivered);

    // Settling the last message wakes a waiting recv, which then reports the end.
    let ending = tokio::spawn(async move { source.recv().await.unwrap().is_none() });
    let_it_park().await;
    assert!(!ending.is_finished());
    last.acker.settle(Settlement::Ack).await.unwrap();
    assert!(within(ending).await.unwrap());
}

#[tokio::test]
async fn recv_waits_for_a_publish() {
    let (broker, mut source) = setup(1);
    let held = next(&mut source).await;
    let waiting = tokio::spawn(async move {
        let d = source.recv().await.unwrap().unwrap();
        let payload = d.message.payload.clone();
        d.acker.settle(Settlement::Ack).await.unwrap();
        payload
    });
    let_it_park().await;
    assert!(!waiting.is_finished());
    broker.publish("orders", Outgoing::new("late"));
    assert_eq!(within(waiting).await.unwrap(), "late");
    held.acker.settle(Settlement::Ack).await.unwrap();
}

#[tokio::test]
async fn stop_ends_recv_and_keeps_ackers_usable() {
    let (broker, mut source) = setup(2);
    let d = next(&mut source).await;
    source.stop().await;
    assert!(within(source.recv()).await.unwrap().is_none());
    d.acker.settle(Settlement::Ack).await.unwrap();
    assert_eq!(broker.depth("orders"), (1, 0));
}

#[tokio::test]
async fn competing_sources_share_a_queue() {
    let (broker, mut one) = setup(2);
    let mut two = broker.source("orders", "orders.dlq");
    let a = next(&mut one).await;
    let b = next(&mut two).await;
    assert_ne!(a.message.coordinates, b.message.coordinates);
    assert_eq!(a.acker.sequence(), 1);
    assert_eq!(b.acker.sequence(), 2);
    a.acker.settle(Settlement::Ack).await.unwrap();
    b.acker.settle(Settlement::Ack).await.unwrap();
    assert!(within(one.recv()).await.unwrap().is_none());
    assert!(within(two.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn empty_or_unknown_queues_are_drained() {
    let broker = MemoryBroker::new();
    assert_eq!(broker.depth("nothing"), (0, 0));
    assert!(broker.ready("nothing").is_empty());
    let mut source = broker.source("nothing", "nothing.dlq");
    assert!(within(source.recv()).await.unwrap().is_none());
}
