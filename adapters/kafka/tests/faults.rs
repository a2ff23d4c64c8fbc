//! What tansu cannot be made to show on cue, on librdkafka's in-process mock cluster (a real
//! Kafka-protocol server on loopback, with fault injection): failing dead-letter writes and
//! brokers going away.

use std::collections::BTreeMap;

use outrigger_core::{Acker, Settlement, Source, SourceError, Unsettled};
use outrigger_kafka::KafkaSource;
use outrigger_testkit::kafka::{headers_of, partition, recv_n, Kafka, DEADLINE};
use outrigger_testkit::{dead_letter, unique, wait_until};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::Message;

#[tokio::test]
async fn a_failed_dead_letter_write_holds_the_commit_until_a_retry_succeeds() {
    let mock = MockCluster::new(1).unwrap();
    let kafka = Kafka {
        bootstrap: mock.bootstrap_servers(),
    };
    let topic = unique("dlq-fault");
    let group = unique("dlq-fault-group");
    let dlq = format!("{topic}.dlq");
    mock.create_topic(&topic, 1, 1).unwrap();
    mock.create_topic(&dlq, 1, 1).unwrap();
    kafka.produce_numbered(&topic, 1, 3).await;

    let mut config = kafka.config(&[&topic], &group);
    // Dead-letter writes give up quickly, so the failure shows within the test.
    config.properties = BTreeMap::from([("message.timeout.ms".into(), "1500".into())]);
    let mut source = KafkaSource::connect(config).await.unwrap();
    let stats = source.stats();
    let mut deliveries = recv_n(&mut source, 3).await.into_iter();
    let (first, poison, last) = (
        deliveries.next().unwrap(),
        deliveries.next().unwrap(),
        deliveries.next().unwrap(),
    );
    first.acker.settle(Settlement::Ack).await.unwrap();
    last.acker.settle(Settlement::Ack).await.unwrap();

    // Every produce request fails with a retriable error until the fault is cleared.
    let not_enough_replicas = RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS;
    mock.request_errors(RDKafkaApiKey::Produce, &[not_enough_replicas; 500]);
    let unsettled = poison
        .acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .expect_err("a dead letter the broker never took must not settle");
    assert!(
        matches!(unsettled.error, SourceError::Publish(_)),
        "{:?}",
        unsettled.error
    );
    assert_eq!(unsettled.settlement, Settlement::dead_letter(dead_letter()));

    let p = partition(&stats.partitions(), &topic, 0);
    assert!(p.stalled_on_dead_letter, "{p:?}");
    assert_eq!(p.watermark, 1, "the watermark stops at the failed record");
    // Commits go on, up to the record and not past it.
    kafka.wait_committed(&group, &topic, &[Some(1)]).await;

    mock.clear_request_errors(RDKafkaApiKey::Produce);
    let Unsettled {
        acker, settlement, ..
    } = *unsettled;
    acker.settle(settlement).await.unwrap();

    let p = partition(&stats.partitions(), &topic, 0);
    assert!(!p.stalled_on_dead_letter, "{p:?}");
    assert_eq!(p.watermark, 3);
    kafka.wait_committed(&group, &topic, &[Some(3)]).await;
    let copies = kafka.read(&dlq, 0, 1).await;
    assert_eq!(copies[0].payload(), Some(&b"0-1"[..]));
    assert!(headers_of(&copies[0])
        .iter()
        .any(|(name, value)| name == "outrigger-dlq-source"
            && value.as_deref() == Some(format!("kafka:{topic}/0@1").as_bytes())));
    source.stop().await;
}

#[tokio::test]
async fn health_follows_the_brokers() {
    let mock = MockCluster::new(1).unwrap();
    let kafka = Kafka {
        bootstrap: mock.bootstrap_servers(),
    };
    let topic = unique("health");
    mock.create_topic(&topic, 1, 1).unwrap();
    // The mock cluster does not implement CreateTopics.
    mock.create_topic(&format!("{topic}.dlq"), 1, 1).unwrap();
    kafka.produce_numbered(&topic, 1, 1).await;
    let mut config = kafka.config(&[&topic], &unique("health-group"));
    // Broker states come with librdkafka's statistics; report them often here.
    config.properties = BTreeMap::from([("statistics.interval.ms".into(), "200".into())]);
    let mut source = KafkaSource::connect(config).await.unwrap();
    let health = source.health();
    assert!(health.is_up());
    let delivery = recv_n(&mut source, 1).await.pop().unwrap();
    delivery.acker.settle(Settlement::Ack).await.unwrap();

    mock.broker_down(1).unwrap();
    wait_until("health goes down with the only broker", DEADLINE, || {
        let health = health.clone();
        async move { !health.is_up() }
    })
    .await;
    mock.broker_up(1).unwrap();
    wait_until("health comes back with the broker", DEADLINE, || {
        let health = health.clone();
        async move { health.is_up() }
    })
    .await;
    source.stop().await;
}
