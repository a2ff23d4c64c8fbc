//! What only RabbitMQ does, against a real RabbitMQ on 127.0.0.1:5672 (guest/guest), or the
//! broker at `OUTRIGGER_TEST_AMQP_URL`: AMQP properties and typed headers, prefetch, queue
//! checks at connect, a cancelled consumer. The source contract every adapter passes is in
//! `contract.rs`.
//!
//! Each test works on its own queues, named after the test with a unique suffix, declared with
//! `x-expires` so that a failed test's queues go away on their own, and deleted at the end.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use lapin::types::{AMQPValue, ByteArray, FieldTable};
use lapin::BasicProperties;
use outrigger_amqp::{AmqpSettings, AmqpSource};
use outrigger_core::{Acker, Coordinates, Delivery, Settlement, Source, SourceError};
use outrigger_testkit::rabbit::{recv, Queues, DEADLINE, QUIET};
use outrigger_testkit::{dead_letter, unique};

#[tokio::test]
async fn ack_removes_the_message_and_the_message_carries_its_properties() {
    let f = Queues::new("ack").await;
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000);
    f.publish_to_source(br#"{"order":1}"#, properties).await;

    let mut source = AmqpSource::connect(f.settings()).await.unwrap();
    assert!(source.health().is_up());
    let Delivery { message, acker } = recv(&mut source).await;
    assert_eq!(message.payload, Bytes::from_static(br#"{"order":1}"#));
    assert_eq!(message.key.as_deref(), Some(f.queue.as_bytes()));
    assert_eq!(message.message_id.as_deref(), Some("m-1"));
    assert_eq!(message.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        message.timestamp,
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert!(!message.redelivered);
    assert!(
        matches!(&message.coordinates, Coordinates::Amqp { queue, .. } if *queue == f.queue),
        "{:?}",
        message.coordinates
    );

    acker.settle(Settlement::Ack).await.unwrap();
    drop(source);
    f.wait_for_ready(&f.queue, 0).await;
    f.clean_up().await;
}

#[tokio::test]
async fn dead_letter_keeps_body_properties_and_typed_headers() {
    let f = Queues::new("dead-letter").await;
    let body: &[u8] = &[0xff, 0xfe, 0x00, 0x80, b'x', 0xc3];
    let mut headers = FieldTable::default();
    headers.insert("trace".into(), AMQPValue::LongString("t-1".into()));
    headers.insert("retries".into(), AMQPValue::LongInt(42));
    headers.insert(
        "sig".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0xde, 0xad, 0xbe, 0xef])),
    );
    let properties = BasicProperties::default()
        .with_content_type("application/octet-stream".into())
        .with_message_id("m-42".into())
        .with_timestamp(1_700_000_000)
        .with_headers(headers.clone());
    f.publish_to_source(body, properties).await;

    let mut source = AmqpSource::connect(f.settings()).await.unwrap();
    let Delivery { message, acker } = recv(&mut source).await;
    assert_eq!(message.header_str("trace"), Some("t-1"));
    assert_eq!(message.header_str("retries"), Some("42"));
    assert_eq!(
        message.header("sig"),
        Some(&Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]))
    );
    let source_coordinates = message.coordinates.to_string();
    acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap();

    let copy = f.take(&f.dead_letter_queue).await;
    assert_eq!(copy.body, body, "body must be byte-identical");
    let p = &copy.properties;
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/octet-stream")
    );
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m-42"));
    assert_eq!(*p.timestamp(), Some(1_700_000_000));
    let got = p
        .headers()
        .as_ref()
        .expect("dead letter has headers")
        .inner();
    for (name, value) in headers.inner() {
        assert_eq!(got.get(name), Some(value), "original header {name} changed");
    }
    let text = |name: &str| match got.get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
        other => panic!("header {name} is {other:?}"),
    };
    assert_eq!(text("outrigger-dlq-reason"), "app answered HTTP 400");
    assert_eq!(text("outrigger-dlq-class"), "4xx");
    assert_eq!(text("outrigger-dlq-status"), "400");
    assert_eq!(text("outrigger-dlq-attempts"), "3");
    assert_eq!(text("outrigger-dlq-key"), "order-7");
    assert_eq!(text("outrigger-dlq-response"), "bad order");
    assert_eq!(text("outrigger-dlq-source"), source_coordinates);
    assert_eq!(
        text("outrigger-dlq-first-failure"),
        "2023-11-14T22:13:20.000Z"
    );

    drop(source);
    f.wait_for_ready(&f.queue, 0).await;
    f.wait_for_ready(&f.dead_letter_queue, 0).await;
    f.clean_up().await;
}

#[tokio::test]
async fn prefetch_bounds_unsettled_deliveries() {
    let f = Queues::new("prefetch").await;
    for body in [&b"1"[..], b"2", b"3"] {
        f.publish_to_source(body, BasicProperties::default()).await;
    }
    let config = AmqpSettings {
        prefetch: 2,
        ..f.settings()
    };
    let mut source = AmqpSource::connect(config).await.unwrap();

    let first = recv(&mut source).await;
    let second = recv(&mut source).await;
    assert!(
        tokio::time::timeout(QUIET, source.recv()).await.is_err(),
        "a third delivery arrived while two were unsettled with prefetch 2"
    );

    first.acker.settle(Settlement::Ack).await.unwrap();
    let third = recv(&mut source).await;
    assert_eq!(third.message.payload, Bytes::from_static(b"3"));
    second.acker.settle(Settlement::Ack).await.unwrap();
    third.acker.settle(Settlement::Ack).await.unwrap();
    drop(source);
    f.wait_for_ready(&f.queue, 0).await;
    f.clean_up().await;
}

#[tokio::test]
async fn stop_ends_the_stream_and_keeps_ackers_usable() {
    let f = Queues::new("stop").await;
    for body in [&b"1"[..], b"2", b"3"] {
        f.publish_to_source(body, BasicProperties::default()).await;
    }
    let mut source = AmqpSource::connect(f.settings()).await.unwrap();
    let in_flight = recv(&mut source).await;

    source.stop().await;
    assert!(source.recv().await.unwrap().is_none());
    // The consumer is gone and what it had buffered went back to the queue.
    f.wait_for_ready(&f.queue, 2).await;

    in_flight.acker.settle(Settlement::Ack).await.unwrap();
    drop(source);
    f.wait_for_ready(&f.queue, 2).await;
    f.clean_up().await;
}

#[tokio::test]
async fn missing_queues_are_rejected() {
    let f = Queues::new("missing").await;
    let missing = unique("missing-source");
    let config = AmqpSettings {
        queue: missing.clone(),
        ..f.settings()
    };
    match AmqpSource::connect(config).await {
        Err(SourceError::Rejected(text)) => assert!(text.contains(&missing), "{text}"),
        other => panic!("expected Rejected, got {:?}", other.map(|_| "a source")),
    }

    let missing_dlq = unique("missing-dlq");
    let config = AmqpSettings {
        dead_letter_queue: missing_dlq.clone(),
        ..f.settings()
    };
    match AmqpSource::connect(config).await {
        Err(SourceError::Rejected(text)) => assert!(text.contains(&missing_dlq), "{text}"),
        other => panic!("expected Rejected, got {:?}", other.map(|_| "a source")),
    }

    // Asked to, the source declares the dead-letter queue it does not find.
    let config = AmqpSettings {
        dead_letter_queue: missing_dlq.clone(),
        declare_dead_letter_queue: true,
        ..f.settings()
    };
    let source = AmqpSource::connect(config).await.unwrap();
    drop(source);
    assert_eq!(f.counts(&missing_dlq).await.0, 0);

    // A route's dead-letter queue is checked the same way, and declared when asked to.
    let missing_route_dlq = unique("missing-route-dlq");
    let config = AmqpSettings {
        route_dead_letter_queues: vec![missing_route_dlq.clone()],
        ..f.settings()
    };
    match AmqpSource::connect(config.clone()).await {
        Err(SourceError::Rejected(text)) => assert!(
            text.contains(&format!(
                "dead-letter queue {missing_route_dlq:?} does not exist"
            )),
            "{text}"
        ),
        other => panic!("expected Rejected, got {:?}", other.map(|_| "a source")),
    }
    let declaring = AmqpSettings {
        declare_dead_letter_queue: true,
        ..config
    };
    drop(AmqpSource::connect(declaring).await.unwrap());
    assert_eq!(f.counts(&missing_route_dlq).await.0, 0);
    f.delete(&missing_dlq).await;
    f.delete(&missing_route_dlq).await;
    f.clean_up().await;
}

#[tokio::test]
async fn recovers_when_the_broker_cancels_the_consumer() {
    let f = Queues::new("recover").await;
    let mut source = AmqpSource::connect(f.settings()).await.unwrap();
    let health = source.health();
    assert!(health.is_up());

    // Deleting the queue makes the broker cancel the consumer; the queue is then missing.
    f.delete(&f.queue).await;
    let error = tokio::time::timeout(DEADLINE, source.recv())
        .await
        .expect("recv did not notice the cancel")
        .map(|d| d.map(|d| d.message))
        .expect_err("the queue is gone");
    assert!(matches!(error, SourceError::Rejected(_)), "{error:?}");
    assert!(!health.is_up());

    f.declare(&f.queue).await;
    f.publish_to_source(b"back", BasicProperties::default())
        .await;
    let delivery = recv(&mut source).await;
    assert_eq!(delivery.message.payload, Bytes::from_static(b"back"));
    assert!(health.is_up());
    delivery.acker.settle(Settlement::Ack).await.unwrap();
    f.clean_up().await;
}
