//! The dead-letter queue contract on Kafka, against a real Kafka-protocol broker (a tansu
//! process per test): a pass hands out what the source dead-lettered, with its context; a
//! resubmission publishes a faithful copy once and marks the record; purge marks it; later
//! passes hide what was handled unless asked.
//!
//! tansu must be on PATH (or at `OUTRIGGER_TEST_TANSU`); without it these tests fail.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use outrigger_core::dlq::resubmit_headers;
use outrigger_core::{
    Acker, Coordinates, DeadLetter, DeadLetterPass, DeadLetterQueue, DeadLetterRecord,
    HandledAction, Resubmission, Scope, Settlement, Source, SourceError,
};
use outrigger_kafka::{KafkaDeadLetters, KafkaPass, KafkaSource};
use outrigger_testkit::kafka::{headers_of, position, recv_n, Kafka};
use outrigger_testkit::{dead_letter, unique, Tansu};
use rdkafka::Message;

/// A record the test produced to the source topic.
#[derive(Clone, Debug)]
struct Produced {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Record `i`: key `k-<i>`, payload `{"id":<i>}`, two headers (one binary); record 2 has a
/// null value and a null header value, which must stay null.
fn record(i: usize, partitions: i32) -> Produced {
    let mut headers = vec![
        ("trace".to_owned(), Some(format!("t-{i}").into_bytes())),
        ("bin".to_owned(), Some(vec![0xff, 0x00, i as u8])),
    ];
    let mut value = Some(format!(r#"{{"id":{i}}}"#).into_bytes());
    if i == 2 {
        headers.push(("null".to_owned(), None));
        value = None;
    }
    Produced {
        partition: i as i32 % partitions,
        offset: -1,
        key: Some(format!("k-{i}").into_bytes()),
        value,
        headers,
    }
}

/// The failure context of record `i`.
fn context(i: usize) -> DeadLetter {
    DeadLetter {
        reason: format!("app answered HTTP 400 for order {i}"),
        key: Some(format!("order-{i}")),
        ..dead_letter()
    }
}

/// Produces `count` records into `topic` and has the real source dead-letter each one with
/// [`context`]; returns them with their offsets.
async fn dead_lettered(kafka: &Kafka, topic: &str, partitions: i32, count: usize) -> Vec<Produced> {
    let producer = kafka.producer();
    let mut records = Vec::new();
    for i in 0..count {
        let mut r = record(i, partitions);
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect();
        r.offset = kafka
            .produce(
                &producer,
                topic,
                r.partition,
                r.key.as_deref(),
                r.value.as_deref(),
                &headers,
            )
            .await;
        records.push(r);
    }
    let mut source = KafkaSource::connect(kafka.config(&[topic], &unique("group")))
        .await
        .unwrap();
    for delivery in recv_n(&mut source, count).await {
        let at = position(&delivery);
        let i = records
            .iter()
            .position(|r| (r.partition, r.offset) == at)
            .expect("a record the test produced");
        delivery
            .acker
            .settle(Settlement::dead_letter(context(i)))
            .await
            .unwrap();
    }
    source.stop().await;
    records
}

fn queue(kafka: &Kafka, topic: &str) -> KafkaDeadLetters {
    KafkaDeadLetters::new(kafka.config(&[topic], "unused")).unwrap()
}

/// A tansu of the test's own, a source topic `<name>` of `partitions` partitions whose first
/// `count` records the source dead-lettered, and the queue over its dead-letter topic.
struct Setup {
    tansu: Tansu,
    topic: String,
    dlq: String,
    produced: Vec<Produced>,
    queue: KafkaDeadLetters,
}

impl Setup {
    async fn new(name: &str, partitions: i32, count: usize) -> Self {
        let tansu = Tansu::start().await;
        let topic = unique(name);
        tansu.kafka.create_topic(&topic, partitions).await;
        let produced = dead_lettered(&tansu.kafka, &topic, partitions, count).await;
        let queue = queue(&tansu.kafka, &topic);
        Self {
            dlq: format!("{topic}.dlq"),
            tansu,
            topic,
            produced,
            queue,
        }
    }
}

/// Every record a pass hands out, then finishes it.
async fn list(queue: &KafkaDeadLetters, include_handled: bool) -> Vec<DeadLetterRecord> {
    let mut pass = queue.open(Scope { include_handled }).await.unwrap();
    let records = drain(&mut pass).await;
    pass.finish().await.unwrap();
    records
}

/// The ids of the records a pass hands out, pending ones only.
async fn pending_ids(queue: &KafkaDeadLetters) -> Vec<String> {
    list(queue, false).await.into_iter().map(|r| r.id).collect()
}

async fn drain(pass: &mut KafkaPass) -> Vec<DeadLetterRecord> {
    let mut out = Vec::new();
    while let Some(r) = pass.next().await.unwrap() {
        out.push(r);
    }
    out
}

/// The key the record's context names, `order-<i>`, as `i`.
fn index(record: &DeadLetterRecord) -> usize {
    record.key().unwrap()["order-".len()..].parse().unwrap()
}

fn resubmission(to: Option<&str>) -> Resubmission {
    Resubmission {
        to: to.map(str::to_owned),
        by: "tester".into(),
        at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

/// The high watermark of every partition of `topic`: what was ever written there.
async fn ends(kafka: &Kafka, topic: &str, partitions: i32) -> Vec<i64> {
    let mut out = Vec::new();
    for p in 0..partitions {
        out.push(kafka.read_all(topic, p).await.len() as i64);
    }
    out
}

#[tokio::test]
async fn a_pass_hands_out_every_dead_letter_with_its_context_in_a_stable_order() {
    let Setup {
        tansu,
        topic,
        dlq,
        produced,
        queue,
    } = Setup::new("dlq-list", 2, 6).await;
    let kafka = &tansu.kafka;
    assert_eq!(queue.name(), dlq);

    let records = list(&queue, false).await;
    assert_eq!(records.len(), 6);
    for r in &records {
        let i = index(r);
        let original = &produced[i];
        let Coordinates::Kafka {
            topic: at_topic,
            partition,
            offset,
        } = &r.message.coordinates
        else {
            panic!("not a Kafka position: {}", r.message.coordinates);
        };
        assert_eq!(at_topic, &dlq);
        assert_eq!(
            *partition, original.partition,
            "dead letters keep their partition"
        );
        assert_eq!(r.id, format!("{dlq}/{partition}@{offset}"));
        assert_eq!(
            r.origin,
            Some(Coordinates::Kafka {
                topic: topic.clone(),
                partition: original.partition,
                offset: original.offset,
            })
        );
        assert_eq!(r.context.reason, context(i).reason);
        assert_eq!(r.context.last_status, Some(400));
        assert_eq!(r.context.attempts, 3);
        assert_eq!(r.context.response_excerpt, "bad order");
        assert_eq!(r.message.key.as_deref(), original.key.as_deref());
        assert_eq!(
            r.message.payload,
            original.value.clone().unwrap_or_default(),
            "payload byte for byte (a null one is empty)"
        );
        let headers: Vec<(String, Vec<u8>)> = r
            .message
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.to_vec()))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = original
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().unwrap_or_default()))
            .collect();
        assert_eq!(headers, expected, "the original headers, context off");
        assert_eq!(r.handled, None);
        assert_eq!(r.resubmissions, 0);
    }
    let positions: Vec<(i32, i64)> = records
        .iter()
        .map(|r| match r.message.coordinates {
            Coordinates::Kafka {
                partition, offset, ..
            } => (partition, offset),
            _ => unreachable!(),
        })
        .collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted, "partition by partition, in offset order");

    let ids = |records: &[DeadLetterRecord]| -> Vec<String> {
        records.iter().map(|r| r.id.clone()).collect()
    };
    assert_eq!(
        ids(&list(&queue, false).await),
        ids(&records),
        "the same ids in the same order on every pass"
    );
    assert_eq!(
        kafka.partitions(&format!("{dlq}.handled")).await,
        None,
        "reading creates nothing"
    );
}

#[tokio::test]
async fn resubmit_publishes_a_faithful_copy_and_a_marked_record_is_never_sent_again() {
    let Setup {
        tansu,
        topic,
        dlq,
        produced,
        queue,
    } = Setup::new("dlq-resubmit", 2, 4).await;
    let kafka = &tansu.kafka;
    let before = ends(kafka, &topic, 2).await;
    assert_eq!(before, [2, 2]);

    // Record 2 (null value, a null header, on partition 0) and record 1 (partition 1).
    let mut pass = queue.open(Scope::default()).await.unwrap();
    let records = drain(&mut pass).await;
    let by_index: HashMap<usize, &DeadLetterRecord> =
        records.iter().map(|r| (index(r), r)).collect();
    for i in [2, 1] {
        pass.resubmit(by_index[&i], &resubmission(None))
            .await
            .unwrap();
    }
    pass.finish().await.unwrap();
    assert_eq!(ends(kafka, &topic, 2).await, [3, 3], "one copy each");

    for i in [2, 1] {
        let original = &produced[i];
        let partition = kafka.read_all(&topic, original.partition).await;
        let copy = partition.last().unwrap();
        assert_eq!(copy.key(), original.key.as_deref(), "{i}: key");
        assert_eq!(
            copy.payload(),
            original.value.as_deref(),
            "{i}: value byte for byte, a null kept null"
        );
        let mut expected = original.headers.clone();
        expected.extend([
            (resubmit_headers::BY.to_owned(), Some(b"tester".to_vec())),
            (
                resubmit_headers::AT.to_owned(),
                Some(b"2023-11-14T22:13:20.000Z".to_vec()),
            ),
            (resubmit_headers::COUNT.to_owned(), Some(b"1".to_vec())),
        ]);
        // The idempotency key the original was deduplicated under travels with the mark.
        let key = by_index[&i].key().expect("the dead letter names its key");
        expected.push((
            resubmit_headers::KEY.to_owned(),
            Some(key.as_bytes().to_vec()),
        ));
        assert_eq!(
            headers_of(copy),
            expected,
            "{i}: original headers in order, no context, the mark"
        );
    }

    let left: Vec<usize> = list(&queue, false).await.iter().map(index).collect();
    assert_eq!(left, [0, 3], "resubmitted records are hidden");
    let all = list(&queue, true).await;
    assert_eq!(all.len(), 4);
    for r in &all {
        match index(r) {
            1 | 2 => {
                let handled = r.handled.as_ref().expect("marked handled");
                assert_eq!(handled.action, HandledAction::Resubmitted);
                assert_eq!(handled.by, "tester");
                assert_eq!(handled.at, resubmission(None).at);
            }
            _ => assert_eq!(r.handled, None),
        }
    }
    assert_eq!(kafka.partitions(&format!("{dlq}.handled")).await, Some(1));

    // Asked for explicitly, a handled record is still refused: never twice by accident.
    let mut pass = queue
        .open(Scope {
            include_handled: true,
        })
        .await
        .unwrap();
    let records = drain(&mut pass).await;
    let handled = records.iter().find(|r| index(r) == 2).unwrap();
    let refused = pass.resubmit(handled, &resubmission(None)).await;
    assert!(
        matches!(&refused, Err(SourceError::Rejected(why)) if why.contains("already resubmitted")),
        "{refused:?}"
    );
    let refused = pass.purge(handled, "tester").await;
    assert!(
        matches!(refused, Err(SourceError::Rejected(_))),
        "{refused:?}"
    );
    pass.finish().await.unwrap();
    assert_eq!(ends(kafka, &topic, 2).await, [3, 3], "nothing new was sent");
}

#[tokio::test]
async fn purge_marks_the_record_and_later_passes_hide_it() {
    let Setup {
        tansu,
        topic,
        queue,
        ..
    } = Setup::new("dlq-purge", 1, 3).await;
    let kafka = &tansu.kafka;

    let mut pass = queue.open(Scope::default()).await.unwrap();
    let records = drain(&mut pass).await;
    pass.purge(&records[1], "ops@host").await.unwrap();
    pass.finish().await.unwrap();

    assert_eq!(
        pending_ids(&queue).await,
        [records[0].id.clone(), records[2].id.clone()]
    );
    let all = list(&queue, true).await;
    let purged = all.iter().find(|r| r.id == records[1].id).unwrap();
    let handled = purged.handled.as_ref().unwrap();
    assert_eq!(
        (handled.action, handled.by.as_str()),
        (HandledAction::Purged, "ops@host")
    );
    assert_eq!(
        ends(kafka, &topic, 1).await,
        [3],
        "purge sends nothing to the source"
    );
}

#[tokio::test]
async fn a_record_left_resubmitting_by_a_dead_run_is_listed_and_sent_again() {
    let Setup {
        tansu,
        topic,
        dlq,
        queue,
        ..
    } = Setup::new("dlq-rerun", 1, 2).await;
    let kafka = &tansu.kafka;
    let markers = format!("{dlq}.handled");
    let records = list(&queue, false).await;

    // What a run killed after publishing a copy and before confirming it leaves behind.
    kafka.create_topic(&markers, 1).await;
    let producer = kafka.producer();
    let marker = br#"{"action":"resubmitting","at":"2024-05-01T12:00:00.000Z","by":"dead-run"}"#;
    kafka
        .produce(
            &producer,
            &markers,
            0,
            Some(records[0].id.as_bytes()),
            Some(marker),
            &[],
        )
        .await;

    let mut pass = queue.open(Scope::default()).await.unwrap();
    let listed = drain(&mut pass).await;
    assert_eq!(listed.len(), 2, "a copy on its way is not handled yet");
    assert_eq!(listed[0].id, records[0].id);
    assert_eq!(listed[0].handled, None);
    pass.resubmit(&listed[0], &resubmission(None))
        .await
        .unwrap();
    pass.finish().await.unwrap();

    assert_eq!(pending_ids(&queue).await, [records[1].id.clone()]);
    // The two markers of this run follow the dead run's.
    let written: Vec<String> = kafka
        .read_all(&markers, 0)
        .await
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            format!(
                "{}:{}",
                v["action"].as_str().unwrap(),
                v["by"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        written,
        [
            "resubmitting:dead-run",
            "resubmitting:tester",
            "resubmitted:tester"
        ]
    );
    assert_eq!(ends(kafka, &topic, 1).await, [3]);
}

#[tokio::test]
async fn resubmit_goes_to_another_topic_when_told_and_refuses_bad_targets() {
    let Setup {
        tansu,
        topic,
        dlq,
        produced,
        queue,
    } = Setup::new("dlq-to", 1, 2).await;
    let kafka = &tansu.kafka;
    let replay = format!("{topic}.replay");
    kafka.create_topic(&replay, 3).await;

    let mut pass = queue.open(Scope::default()).await.unwrap();
    let records = drain(&mut pass).await;
    for (to, why) in [
        (dlq.as_str(), "dead-letter topic"),
        (&format!("{dlq}.handled"), "dead-letter topic"),
        ("no-such-topic", "does not exist"),
    ] {
        let refused = pass.resubmit(&records[0], &resubmission(Some(to))).await;
        assert!(
            matches!(&refused, Err(SourceError::Rejected(e)) if e.contains(why)),
            "{to}: {refused:?}"
        );
    }
    pass.resubmit(&records[0], &resubmission(Some(&replay)))
        .await
        .unwrap();
    pass.finish().await.unwrap();

    let copies = kafka.read_topic(&replay, 3).await;
    assert_eq!(copies.len(), 1);
    let original = &produced[index(&records[0])];
    assert_eq!(copies[0].payload(), original.value.as_deref());
    assert_eq!(
        ends(kafka, &topic, 1).await,
        [2],
        "nothing went to the source"
    );
    assert_eq!(list(&queue, false).await.len(), 1);
}

#[tokio::test]
async fn a_pass_ends_where_it_caught_up_and_keeps_records_without_context() {
    let Setup {
        tansu, dlq, queue, ..
    } = Setup::new("dlq-end", 1, 2).await;
    let kafka = &tansu.kafka;

    let mut pass = queue.open(Scope::default()).await.unwrap();
    assert_eq!(drain(&mut pass).await.len(), 2);
    // Written after the pass read to the end, by hand, without any failure context.
    let producer = kafka.producer();
    kafka
        .produce(&producer, &dlq, 0, None, Some(b"by hand"), &[])
        .await;
    assert!(
        pass.next().await.unwrap().is_none(),
        "the pass does not chase new records"
    );
    pass.finish().await.unwrap();

    let records = list(&queue, false).await;
    assert_eq!(records.len(), 3, "the next pass has it");
    let by_hand = &records[2];
    assert_eq!(by_hand.id, format!("{dlq}/0@2"));
    assert_eq!(by_hand.context.class, "unknown");
    assert_eq!(by_hand.origin, None);
    assert_eq!(by_hand.message.payload, "by hand");
}

#[tokio::test]
async fn records_sharing_a_batch_are_all_read() {
    // tansu 0.6.0 reports the end of a partition as the first offset of its last record batch
    // plus one: a reader that trusted it would miss the rest of a batch.
    let tansu = Tansu::start().await;
    let kafka = &tansu.kafka;
    let topic = unique("dlq-batch");
    let dlq = format!("{topic}.dlq");
    kafka.create_topic(&topic, 1).await;
    kafka.create_topic(&dlq, 1).await;
    let producer = kafka.batching_producer();
    kafka.produce_burst(&producer, &dlq, 0, 5).await;
    kafka.produce_burst(&producer, &dlq, 0, 4).await;
    let records = list(&queue(kafka, &topic), false).await;
    let payloads: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.message.payload.to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = (0..5).chain(0..4).map(|i| format!("0-{i}")).collect();
    assert_eq!(payloads, expected);
}

#[tokio::test]
async fn a_missing_dead_letter_topic_is_refused_by_name() {
    let tansu = Tansu::start().await;
    let topic = unique("dlq-missing");
    tansu.kafka.create_topic(&topic, 1).await;
    match queue(&tansu.kafka, &topic).open(Scope::default()).await {
        Err(SourceError::Rejected(why)) => {
            assert!(why.contains(&format!("{topic}.dlq")), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
