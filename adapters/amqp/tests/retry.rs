//! Delay queues (retry mode `queue`) against the real RabbitMQ: the copy a `Retry` settlement
//! publishes, how RabbitMQ brings it back to the source queue after the tier's TTL, and how the
//! source hands it out again as its origin. The whole pipeline through them (parked keys, a
//! SIGKILL) is in the workspace's `tests/retry_queues.rs` and the retry contract.

use std::time::{Duration, Instant, SystemTime};

use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use outrigger_amqp::{AmqpSettings, AmqpSource, RetryQueueType};
use outrigger_core::{Acker, Coordinates, Settlement, Source, SourceError, Trail};
use outrigger_testkit::rabbit::{recv, Queues};
use outrigger_testkit::{dead_letter, unique, wait_until};

fn headers(key: &str) -> FieldTable {
    let mut h = FieldTable::default();
    h.insert(
        "idempotency-key".into(),
        AMQPValue::LongString(LongString::from(key.as_bytes().to_vec())),
    );
    h.insert("retries".into(), AMQPValue::LongInt(3));
    h
}

fn settings(f: &Queues, tiers: &[Duration], kind: RetryQueueType) -> AmqpSettings {
    AmqpSettings {
        retry_tiers: tiers.to_vec(),
        retry_queue_type: kind,
        ..f.settings()
    }
}

async fn delete_delay_queues(f: &Queues, tiers: usize) {
    for tier in 0..tiers {
        f.delete(&AmqpSettings::retry_queue_for(&f.queue, tier))
            .await;
    }
}

fn first_trail(origin: Coordinates, tier: usize) -> Trail {
    let seen = SystemTime::now();
    Trail {
        origin,
        hop: 1,
        attempts: 1,
        tier,
        first_seen: seen,
        first_failure: Some(seen),
        due: None,
    }
}

/// Publishes one message with routing key `key` through `amq.direct` (bound to the source
/// queue), so that its key is not the queue's name.
async fn publish_routed(f: &Queues, key: &str, properties: BasicProperties) {
    f.bind(&f.queue, "amq.direct", key).await;
    f.publish_routed("amq.direct", key, b"{\"n\":1}", properties)
        .await;
}

async fn comes_back_as_its_origin(kind: RetryQueueType) {
    let f = Queues::new("retry-back").await;
    let tiers = [Duration::from_millis(200), Duration::from_millis(1500)];
    let key = unique("order");
    let properties = BasicProperties::default()
        .with_headers(headers("k-1"))
        .with_message_id("m-1".into())
        .with_expiration("600000".into());
    publish_routed(&f, &key, properties).await;
    let mut source = AmqpSource::connect(settings(&f, &tiers, kind))
        .await
        .unwrap();

    let first = recv(&mut source).await;
    let origin = first.message.coordinates.clone();
    assert!(
        matches!(&origin, Coordinates::Amqp { queue, .. } if *queue == f.queue),
        "{origin}"
    );
    assert_eq!(first.message.key.as_deref(), Some(key.as_bytes()));
    let written = Instant::now();
    first
        .acker
        .settle(Settlement::Retry(first_trail(origin.clone(), 1)))
        .await
        .unwrap();

    // The copy waits in the second tier's queue, with its trail and no per-message TTL.
    let delay_queue = AmqpSettings::retry_queue_for(&f.queue, 1);
    let waiting = f.peek(&delay_queue).await;
    assert_eq!(waiting.len(), 1, "the copy is in {delay_queue}");
    assert_eq!(*waiting[0].properties.expiration(), None);
    assert!(waiting[0].header("outrigger-retry-due").is_some());
    assert_eq!(
        waiting[0].header("outrigger-retry-hop").as_deref(),
        Some("1")
    );

    // RabbitMQ brings it back after the tier's TTL; it is its origin again.
    let again = recv(&mut source).await;
    assert!(
        written.elapsed() >= Duration::from_millis(1_400),
        "back {:?} after writing, before its 1.5s tier",
        written.elapsed()
    );
    let m = &again.message;
    assert_eq!(m.coordinates, origin, "the origin's coordinates");
    assert_eq!(m.key.as_deref(), Some(key.as_bytes()), "the original key");
    assert_eq!(m.message_id.as_deref(), Some("m-1"));
    assert_eq!(m.header_str("idempotency-key"), Some("k-1"));
    assert_eq!(m.header_str("retries"), Some("3"));
    for h in &m.headers {
        assert!(
            !h.name.starts_with("outrigger-retry-") && !h.name.starts_with("x-"),
            "the delay queue's headers are taken off: {:?}",
            m.headers
        );
    }
    let trail = m.trail.clone().expect("a trail");
    assert_eq!((trail.hop, trail.attempts, trail.tier), (1, 1, 1));
    assert_eq!(trail.origin, origin);

    // Its dead letter is the original's, with the origin as source and no retry headers.
    again
        .acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap();
    let dead = f.take(&f.dead_letter_queue).await;
    assert_eq!(
        dead.header("outrigger-dlq-source"),
        Some(origin.to_string())
    );
    assert_eq!(
        dead.header("outrigger-dlq-original-expiration").as_deref(),
        Some("600000")
    );
    assert_eq!(dead.routing_key, f.dead_letter_queue);
    let names: Vec<String> = dead
        .properties
        .headers()
        .as_ref()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("outrigger-retry-") && !n.starts_with("x-")),
        "{names:?}"
    );
    source.stop().await;
    drop(source);
    f.wait_for_ready(&f.queue, 0).await;
    assert_eq!(f.depth(&delay_queue).await, 0);
    delete_delay_queues(&f, tiers.len()).await;
    f.clean_up().await;
}

#[tokio::test]
async fn a_copy_in_a_quorum_delay_queue_comes_back_after_its_tier_as_its_origin() {
    comes_back_as_its_origin(RetryQueueType::Quorum).await;
}

#[tokio::test]
async fn a_copy_in_a_classic_delay_queue_comes_back_after_its_tier_as_its_origin() {
    comes_back_as_its_origin(RetryQueueType::Classic).await;
}

#[tokio::test]
async fn a_redelivered_message_keeps_its_name_and_two_messages_differ() {
    let f = Queues::new("retry-name").await;
    let tiers = [Duration::from_secs(1)];
    for n in 0..2 {
        let props = BasicProperties::default().with_headers(headers(&format!("k-{n}")));
        f.publish_to_source(b"same body", props).await;
    }
    let config = settings(&f, &tiers, RetryQueueType::Classic);
    let mut source = AmqpSource::connect(config.clone()).await.unwrap();
    let (a, b) = (recv(&mut source).await, recv(&mut source).await);
    let names = [a.message.coordinates.clone(), b.message.coordinates.clone()];
    assert_ne!(names[0], names[1], "two messages, two names");
    // Handed back and out again on a new channel: new delivery tags, the same names.
    drop((a, b));
    source.stop().await;
    drop(source);
    f.wait_for_ready(&f.queue, 2).await;
    let mut source = AmqpSource::connect(config).await.unwrap();
    let again = [recv(&mut source).await, recv(&mut source).await];
    let mut seen: Vec<_> = again
        .iter()
        .map(|d| d.message.coordinates.clone())
        .collect();
    seen.sort_by_key(|c| c.to_string());
    let mut want = names.to_vec();
    want.sort_by_key(|c| c.to_string());
    assert_eq!(seen, want);
    assert!(again.iter().all(|d| d.message.redelivered));
    for d in again {
        d.acker.settle(Settlement::Ack).await.unwrap();
    }
    source.stop().await;
    delete_delay_queues(&f, tiers.len()).await;
    f.clean_up().await;
}

#[tokio::test]
async fn a_delay_queue_declared_otherwise_is_refused_with_what_it_needs() {
    let f = Queues::new("retry-mismatch").await;
    let delay_queue = AmqpSettings::retry_queue_for(&f.queue, 0);
    // An operator's queue of that name, without TTL or dead-lettering.
    f.declare(&delay_queue).await;
    let config = settings(&f, &[Duration::from_secs(1)], RetryQueueType::Quorum);
    let refused = AmqpSource::connect(config).await.err().expect("refused");
    let SourceError::Rejected(text) = &refused else {
        panic!("not a refusal: {refused:?}")
    };
    assert!(
        text.contains(&format!(
            "delay queue {delay_queue:?} of retry tier 1 exists, declared otherwise"
        )) && text.contains("x-message-ttl 1000 ms")
            && text.contains(&format!("dead-lettering to {:?}", f.queue)),
        "{text}"
    );
    assert!(!refused.is_retryable());
    // The sidecar touched nothing: the operator's queue is as it was.
    wait_until("the queue still there", Duration::from_secs(5), || async {
        f.counts(&delay_queue).await == (0, 0)
    })
    .await;
    f.delete(&delay_queue).await;
    f.clean_up().await;
}
