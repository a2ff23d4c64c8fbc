//! Retry topics (retry mode `queue`) against a real Kafka-protocol broker: the copy a `Retry`
//! settlement writes, and how the source hands it out again once it is due.
//!
//! tansu must be on PATH (or at `OUTRIGGER_TEST_TANSU`); without it these tests fail.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use outrigger_core::{Acker, Coordinates, Settlement, Source, Trail};
use outrigger_kafka::{KafkaSettings, KafkaSource};
use outrigger_testkit::kafka::{ack, headers_of, recv};
use outrigger_testkit::{unique, Tansu};

#[tokio::test]
async fn a_retry_copy_comes_back_after_its_tier_delay_as_its_origin() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("retry"), unique("retry-group"));
    kafka.create_topic(&topic, 2).await;
    let producer = kafka.producer();
    let headers: [(&str, Option<&[u8]>); 1] = [("trace", Some(b"t-1"))];
    kafka
        .produce(
            &producer,
            &topic,
            1,
            Some(b"order-7"),
            Some(b"{}"),
            &headers,
        )
        .await;

    let config = KafkaSettings {
        retry_tiers: vec![Duration::from_millis(200), Duration::from_secs(2)],
        ..kafka.config(&[&topic], &group)
    };
    let mut source = KafkaSource::connect(config).await.unwrap();
    let first = recv(&mut source).await;
    let origin = first.message.coordinates.clone();
    assert_eq!(first.message.trail, None);
    let seen = SystemTime::now();
    let trail = Trail {
        origin: origin.clone(),
        hop: 1,
        attempts: 1,
        tier: 1,
        first_seen: seen,
        first_failure: Some(seen),
        due: None,
    };
    let written = Instant::now();
    first
        .acker
        .settle(Settlement::Retry(trail.clone()))
        .await
        .unwrap();

    // The copy is in the second tier's topic, at the origin's partition, with its trail.
    let retry_topic = format!("{topic}.retry.2");
    let copy = kafka.read(&retry_topic, 1, 1).await;
    let names: Vec<String> = headers_of(&copy[0]).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "trace", "original headers first: {names:?}");
    assert!(
        names.iter().any(|n| n == "outrigger-retry-due"),
        "{names:?}"
    );

    // It comes back only after the tier's delay, as the origin record with its trail.
    let again = recv(&mut source).await;
    assert!(
        written.elapsed() >= Duration::from_millis(1_900),
        "handed out {:?} after writing, before its 2s tier delay",
        written.elapsed()
    );
    let m = &again.message;
    assert_eq!(m.coordinates, origin);
    assert_eq!(m.message_id, Some(format!("{topic}/1@0")));
    assert_eq!(m.payload, Bytes::from_static(b"{}"));
    assert_eq!(m.key.as_deref(), Some(&b"order-7"[..]));
    assert_eq!(m.header_str("trace"), Some("t-1"));
    assert!(
        m.headers
            .iter()
            .all(|h| !h.name.starts_with("outrigger-retry-")),
        "retry headers are taken off: {:?}",
        m.headers
    );
    let got = m.trail.clone().expect("a trail");
    assert_eq!((got.hop, got.attempts, got.tier), (1, 1, 1));
    assert!(got.due.is_some());
    assert!(matches!(
        got.origin,
        Coordinates::Kafka {
            partition: 1,
            offset: 0,
            ..
        }
    ));

    // Both records settled: the source topic and the retry topic are committed past them.
    ack(again).await;
    kafka.wait_committed(&group, &topic, &[None, Some(1)]).await;
    kafka
        .wait_committed(&group, &retry_topic, &[None, Some(1)])
        .await;
    source.stop().await;
}
