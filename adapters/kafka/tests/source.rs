//! What only Kafka does, against a real Kafka-protocol broker (the source contract every
//! adapter passes is in `contract.rs`): a tansu process per test, in
//! memory on a free loopback port. Each test uses its own topics and group.
//!
//! tansu must be on PATH (or at `OUTRIGGER_TEST_TANSU`); without it these tests fail.

use std::time::UNIX_EPOCH;

use bytes::Bytes;
use outrigger_core::{Acker, Settlement, Source, SourceError};
use outrigger_kafka::KafkaSource;
use outrigger_testkit::kafka::{ack, headers_of, partition, position, recv, recv_n, text};
use outrigger_testkit::{dead_letter, unique, Tansu};
use rdkafka::Message;

#[tokio::test]
async fn acked_records_are_committed_and_carry_their_record() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("ack"), unique("ack-group"));
    kafka.create_topic(&topic, 2).await;
    let producer = kafka.producer();
    let headers: [(&str, Option<&[u8]>); 3] = [
        ("content-type", Some(b"application/json")),
        ("trace", Some(b"t-1")),
        ("nothing", None),
    ];
    kafka
        .produce(
            &producer,
            &topic,
            0,
            Some(b"order-1"),
            Some(br#"{"order":1}"#),
            &headers,
        )
        .await;
    kafka.produce_numbered(&topic, 2, 5).await;

    let mut source = KafkaSource::connect(kafka.config(&[&topic], &group))
        .await
        .unwrap();
    assert!(source.health().is_up());
    let deliveries = recv_n(&mut source, 11).await;
    let first = deliveries
        .iter()
        .find(|d| position(d) == (0, 0))
        .expect("the first record of partition 0");
    let m = &first.message;
    assert_eq!(m.payload, Bytes::from_static(br#"{"order":1}"#));
    assert_eq!(m.key.as_deref(), Some(&b"order-1"[..]));
    assert_eq!(m.header_str("trace"), Some("t-1"));
    assert_eq!(m.header("nothing"), Some(&Bytes::new()));
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.message_id, Some(format!("{topic}/0@0")));
    assert!(m.timestamp.is_some_and(|t| t > UNIX_EPOCH));
    assert!(!m.redelivered);
    // Per partition, records come in offset order.
    for p in 0..2 {
        let offsets: Vec<i64> = deliveries
            .iter()
            .map(position)
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| o)
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    }

    for delivery in deliveries {
        ack(delivery).await;
    }
    kafka
        .wait_committed(&group, &topic, &[Some(6), Some(5)])
        .await;
    let stats = source.stats().partitions();
    assert_eq!(partition(&stats, &topic, 0).watermark, 6);
    assert_eq!(partition(&stats, &topic, 1).in_flight, 0);
    source.stop().await;
    assert!(source.recv().await.unwrap().is_none());
}

#[tokio::test]
async fn a_slow_record_holds_the_committed_offset_until_it_settles() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("watermark"), unique("watermark-group"));
    kafka.create_topic(&topic, 1).await;
    kafka.produce_numbered(&topic, 1, 10).await;

    let mut source = KafkaSource::connect(kafka.config(&[&topic], &group))
        .await
        .unwrap();
    let mut slow = None;
    for delivery in recv_n(&mut source, 10).await {
        if position(&delivery) == (0, 3) {
            slow = Some(delivery);
        } else {
            ack(delivery).await;
        }
    }
    // Everything else is settled; the commit goes up to the slow record and no further.
    kafka.wait_committed(&group, &topic, &[Some(3)]).await;
    let stats = source.stats();
    assert_eq!(partition(&stats.partitions(), &topic, 0).watermark, 3);
    assert_eq!(kafka.committed(&group, &topic, 1).await, vec![Some(3)]);

    ack(slow.unwrap()).await;
    kafka.wait_committed(&group, &topic, &[Some(10)]).await;
    source.stop().await;
}

#[tokio::test]
async fn dead_letter_copies_the_record_byte_for_byte() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("dead-letter"), unique("dead-letter-group"));
    let dlq = format!("{topic}.dlq");
    kafka.create_topic(&topic, 2).await;
    let key: &[u8] = &[0xff, 0x00, b'k'];
    let value: &[u8] = &[0xff, 0xfe, 0x00, 0x80, b'x', 0xc3];
    let headers: [(&str, Option<&[u8]>); 5] = [
        ("trace", Some(b"t-1")),
        ("sig", Some(&[0xde, 0xad, 0xbe, 0xef])),
        ("empty", Some(b"")),
        ("null", None),
        ("trace", Some(b"t-2")),
    ];
    let producer = kafka.producer();
    kafka
        .produce(&producer, &topic, 1, Some(key), Some(value), &headers)
        .await;

    // The dead-letter topic does not exist: connect creates it like its source.
    assert_eq!(kafka.partitions(&dlq).await, None);
    let mut source = KafkaSource::connect(kafka.config(&[&topic], &group))
        .await
        .unwrap();
    assert_eq!(kafka.partitions(&dlq).await, Some(2));

    let delivery = recv(&mut source).await;
    assert_eq!(position(&delivery), (1, 0));
    let source_coordinates = delivery.message.coordinates.to_string();
    delivery
        .acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap();

    let copy = &kafka.read(&dlq, 1, 1).await[0];
    assert_eq!(copy.key(), Some(key), "key must be byte-identical");
    assert_eq!(copy.payload(), Some(value), "value must be byte-identical");
    let got = headers_of(copy);
    let original: Vec<(String, Option<Vec<u8>>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(
        got[..original.len()],
        original[..],
        "original headers, in order"
    );
    let context = |name: &str| {
        got[original.len()..]
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8(v).unwrap())
            .unwrap_or_else(|| panic!("header {name} missing in {got:?}"))
    };
    assert_eq!(context("outrigger-dlq-reason"), "app answered HTTP 400");
    assert_eq!(context("outrigger-dlq-class"), "4xx");
    assert_eq!(context("outrigger-dlq-status"), "400");
    assert_eq!(context("outrigger-dlq-attempts"), "3");
    assert_eq!(context("outrigger-dlq-key"), "order-7");
    assert_eq!(context("outrigger-dlq-response"), "bad order");
    assert_eq!(context("outrigger-dlq-source"), source_coordinates);
    assert_eq!(
        context("outrigger-dlq-first-failure"),
        "2023-11-14T22:13:20.000Z"
    );

    // Dead-lettered counts as settled: the source commits past it.
    kafka.wait_committed(&group, &topic, &[None, Some(1)]).await;
    source.stop().await;
}

#[tokio::test]
async fn requeued_and_buffered_records_are_read_again_after_a_restart() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("stop"), unique("stop-group"));
    kafka.create_topic(&topic, 1).await;
    kafka.produce_numbered(&topic, 1, 6).await;

    let mut source = KafkaSource::connect(kafka.config(&[&topic], &group))
        .await
        .unwrap();
    let mut got = recv_n(&mut source, 4).await.into_iter();
    ack(got.next().unwrap()).await;
    ack(got.next().unwrap()).await;
    let requeued = got.next().unwrap();
    let in_flight = got.next().unwrap();
    requeued.acker.settle(Settlement::Requeue).await.unwrap();
    // Stop waits for what is in flight: the ack lands while it waits, and ackers stay usable.
    let ((), ()) = tokio::join!(source.stop(), ack(in_flight));
    assert!(source.recv().await.unwrap().is_none());
    kafka.wait_committed(&group, &topic, &[Some(2)]).await;
    drop(source);

    let mut again = KafkaSource::connect(kafka.config(&[&topic], &group))
        .await
        .unwrap();
    let first = recv(&mut again).await;
    assert_eq!(text(&first), "0-2", "the requeued record comes back first");
    ack(first).await;
    for _ in 3..6 {
        ack(recv(&mut again).await).await;
    }
    kafka.wait_committed(&group, &topic, &[Some(6)]).await;
    again.stop().await;
}

#[tokio::test]
async fn missing_source_topics_are_rejected_by_name() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (present, missing) = (unique("present"), unique("missing"));
    kafka.create_topic(&present, 1).await;
    let config = kafka.config(&[&present, &missing], &unique("missing-group"));
    match KafkaSource::connect(config).await {
        Err(SourceError::Rejected(text)) => {
            assert!(text.contains(&missing), "{text}");
            assert!(!text.contains(&present), "{text}");
        }
        other => panic!("expected Rejected, got {:?}", other.map(|_| "a source")),
    }
    // Nothing was created for the missing topic, nor for the present one.
    assert_eq!(kafka.partitions(&format!("{present}.dlq")).await, None);
}
