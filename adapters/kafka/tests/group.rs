//! Flow control and group membership against a real Kafka-protocol broker (a tansu process
//! per test): fetching pauses at the in-flight limits and resumes below them; partitions move
//! between members without losing what was not settled.
//!
//! tansu must be on PATH (or at `OUTRIGGER_TEST_TANSU`); without it these tests fail.

use std::collections::BTreeSet;

use outrigger_core::{Acker, Settlement, Source};
use outrigger_kafka::{KafkaSettings, KafkaSource};
use outrigger_testkit::kafka::{
    ack, assert_quiet, partition, position, recv, recv_n, text, DEADLINE,
};
use outrigger_testkit::{unique, wait_until, Tansu};
use tokio::time::Instant;

#[tokio::test]
async fn a_partition_pauses_at_its_limit_and_resumes_after_settling() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("partition-limit"), unique("partition-limit-group"));
    kafka.create_topic(&topic, 1).await;
    kafka.produce_numbered(&topic, 1, 10).await;
    let config = KafkaSettings {
        max_in_flight_per_partition: 2,
        ..kafka.config(&[&topic], &group)
    };
    let mut source = KafkaSource::connect(config).await.unwrap();
    let stats = source.stats();

    let mut held = recv_n(&mut source, 2).await;
    assert_quiet(
        &mut source,
        "a third record with two unsettled and a limit of 2",
    )
    .await;
    let p = partition(&stats.partitions(), &topic, 0);
    assert!(p.paused, "{p:?}");
    assert_eq!(p.in_flight, 2);

    // One settled: 1 is at or below 80% of 2, so fetching resumes.
    ack(held.remove(0)).await;
    let third = recv(&mut source).await;
    assert_eq!(text(&third), "0-2");
    assert!(partition(&stats.partitions(), &topic, 0).in_flight <= 2);
    ack(third).await;
    ack(held.remove(0)).await;
    for _ in 3..10 {
        ack(recv(&mut source).await).await;
    }
    kafka.wait_committed(&group, &topic, &[Some(10)]).await;
    let p = partition(&stats.partitions(), &topic, 0);
    assert!(!p.paused, "{p:?}");
    source.stop().await;
}

/// What the sidecar met end to end: records produced together (one record batch), the
/// partition held back at its limit partway through them, then settlements from concurrent
/// tasks taking it below the limit. The rest must follow. (Pausing the partition in librdkafka
/// threw its prefetch away, and the fetch again from inside the batch never returned anything
/// from tansu, which serves only batches starting at or after the fetch offset.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_held_back_partway_through_a_batch_goes_on_with_the_rest_of_it() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("batch"), unique("batch-group"));
    kafka.create_topic(&topic, 1).await;
    kafka
        .produce_burst(&kafka.batching_producer(), &topic, 0, 50)
        .await;
    let config = KafkaSettings {
        max_in_flight_per_partition: 16,
        ..kafka.config(&[&topic], &group)
    };
    let mut source = KafkaSource::connect(config).await.unwrap();
    let stats = source.stats();

    let mut first = recv_n(&mut source, 16).await;
    let p = partition(&stats.partitions(), &topic, 0);
    assert!(p.paused, "{p:?}");
    // Offset 10 stays out; the other 15 settle at once from their own tasks, as the
    // pipeline's workers settle them.
    let slow = first.remove(10);
    let settles: Vec<_> = first.into_iter().map(|d| tokio::spawn(ack(d))).collect();
    for settle in settles {
        settle.await.unwrap();
    }
    let mut offsets = Vec::new();
    for _ in 16..50 {
        let delivery = recv(&mut source).await;
        offsets.push(position(&delivery).1);
        ack(delivery).await;
    }
    assert_eq!(offsets, (16..50).collect::<Vec<_>>());
    kafka.wait_committed(&group, &topic, &[Some(10)]).await;
    ack(slow).await;
    kafka.wait_committed(&group, &topic, &[Some(50)]).await;
    source.stop().await;
}

/// Holding a partition back keeps what librdkafka prefetched for it: going on needs no fetch,
/// so it works with the broker gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_held_back_keeps_its_prefetch() {
    let tansu = Tansu::start().await;
    let kafka = tansu.kafka.clone();
    let topic = unique("prefetch");
    kafka.create_topic(&topic, 1).await;
    kafka.produce_numbered(&topic, 1, 10).await;
    let config = KafkaSettings {
        max_in_flight_per_partition: 2,
        ..kafka.config(&[&topic], &unique("prefetch-group"))
    };
    let mut source = KafkaSource::connect(config).await.unwrap();
    let stats = source.stats();
    let held = recv_n(&mut source, 2).await;
    assert!(partition(&stats.partitions(), &topic, 0).paused);

    drop(tansu);
    for delivery in held {
        ack(delivery).await;
    }
    for i in 2..10 {
        let delivery = recv(&mut source).await;
        assert_eq!(text(&delivery), format!("0-{i}"));
        ack(delivery).await;
    }
    // No stop: with the broker gone, leaving the group would only time out.
    drop(source);
}

#[tokio::test]
async fn the_global_and_byte_limits_pause_every_partition() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("global-limit"), unique("global-limit-group"));
    kafka.create_topic(&topic, 2).await;
    kafka.produce_numbered(&topic, 2, 5).await;

    for config in [
        KafkaSettings {
            max_in_flight: 3,
            ..kafka.config(&[&topic], &group)
        },
        // Payloads are 3 bytes ("0-1"): the third reaches 9 of 9 bytes.
        KafkaSettings {
            max_buffered_bytes: 9,
            ..kafka.config(&[&topic], &group)
        },
    ] {
        let mut source = KafkaSource::connect(config).await.unwrap();
        let stats = source.stats();
        let held = recv_n(&mut source, 3).await;
        assert_quiet(&mut source, "a fourth record at the global limit").await;
        let partitions = stats.partitions();
        assert_eq!(partitions.len(), 2);
        assert!(partitions.iter().all(|p| p.paused), "{partitions:?}");
        assert_eq!(stats.in_flight(), 3);
        // Requeued: nothing is committed, and the next member of the group reads them again.
        for delivery in held {
            delivery.acker.settle(Settlement::Requeue).await.unwrap();
        }
        let fourth = recv(&mut source).await;
        drop(fourth);
        source.stop().await;
        // At most the position it started from (0) was committed.
        let committed = kafka.committed(&group, &topic, 2).await;
        assert!(
            committed.iter().all(|c| matches!(c, None | Some(0))),
            "{committed:?}"
        );
    }
}

/// Under the global limit the partitions with records share what comes free: one partition
/// with a backlog does not take every slot.
#[tokio::test]
async fn the_partitions_share_the_global_limit() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("share"), unique("share-group"));
    kafka.create_topic(&topic, 2).await;
    kafka.produce_numbered(&topic, 2, 20).await;
    let config = KafkaSettings {
        max_in_flight: 10,
        max_in_flight_per_partition: 10,
        ..kafka.config(&[&topic], &group)
    };
    let mut source = KafkaSource::connect(config).await.unwrap();
    let mut held = recv_n(&mut source, 10).await;
    assert_quiet(&mut source, "an eleventh record at the global limit").await;

    // Two settle: 8 is 80% of 10, so two more come, one of each partition.
    for delivery in held.drain(..2) {
        ack(delivery).await;
    }
    let next = recv_n(&mut source, 2).await;
    let partitions: BTreeSet<i32> = next.iter().map(|d| position(d).0).collect();
    assert_eq!(partitions, BTreeSet::from([0, 1]));
    source.stop().await;
}

#[tokio::test]
async fn a_leaving_member_hands_its_unsettled_records_to_the_survivor() {
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let (topic, group) = (unique("rebalance"), unique("rebalance-group"));
    kafka.create_topic(&topic, 4).await;
    kafka.produce_numbered(&topic, 4, 5).await;

    // The first member alone gets every partition; it holds offset 2 of each unsettled.
    let mut first = KafkaSource::connect(kafka.config(&[&topic], &group))
        .await
        .unwrap();
    let mut held = Vec::new();
    for delivery in recv_n(&mut first, 20).await {
        if position(&delivery).1 == 2 {
            held.push(delivery);
        } else {
            ack(delivery).await;
        }
    }
    kafka.wait_committed(&group, &topic, &[Some(2); 4]).await;

    // A second member joins: the partitions split, each starting at the watermark.
    let mut second = KafkaSource::connect(kafka.config(&[&topic], &group))
        .await
        .unwrap();
    let (a, b) = (first.stats(), second.stats());
    wait_until(
        "the partitions are split between the members",
        DEADLINE,
        || {
            let (a, b) = (a.partitions().len(), b.partitions().len());
            async move { a >= 1 && b >= 1 && a + b == 4 }
        },
    )
    .await;
    // Settlements from before the rebalance change nothing now.
    for delivery in held {
        ack(delivery).await;
    }
    let mut seen = BTreeSet::new();
    for delivery in recv_n(&mut second, 3 * b.partitions().len()).await {
        seen.insert(position(&delivery));
        ack(delivery).await;
    }

    // The first member leaves; the survivor gets its partitions from their watermark.
    first.stop().await;
    let everything: BTreeSet<(i32, i64)> =
        (0..4).flat_map(|p| (2..5).map(move |o| (p, o))).collect();
    let deadline = Instant::now() + DEADLINE;
    while seen != everything {
        let next = tokio::time::timeout_at(deadline, second.recv()).await;
        let Ok(Ok(Some(delivery))) = next else {
            panic!("the survivor saw {seen:?}, expected {everything:?}");
        };
        seen.insert(position(&delivery));
        ack(delivery).await;
    }
    kafka.wait_committed(&group, &topic, &[Some(5); 4]).await;
    second.stop().await;
}
