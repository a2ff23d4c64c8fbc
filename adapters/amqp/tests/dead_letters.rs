//! The dead-letter queue read back ([`AmqpDeadLetters`]) against a real RabbitMQ, as only AMQP
//! has it: typed headers and properties kept through a resubmission, content ids of identical
//! records, a pass dropped without finishing. What every broker's queue does is in
//! `contract.rs`.

use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use lapin::BasicProperties;
use outrigger_amqp::{AmqpDeadLetters, AmqpSettings, AmqpSource};
use outrigger_core::{
    Acker, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Resubmission, Scope, Settlement,
    SourceError,
};
use outrigger_testkit::dead_letter;
use outrigger_testkit::rabbit::{recv, url, Queues};

/// Every record of one pass, which is then finished.
async fn read_all(queue: &AmqpDeadLetters) -> Vec<DeadLetterRecord> {
    let mut pass = queue.open(Scope::default()).await.unwrap();
    let mut records = Vec::new();
    while let Some(r) = pass.next().await.unwrap() {
        records.push(r);
    }
    pass.finish().await.unwrap();
    records
}

fn typed_properties(n: u8) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("retries".into(), AMQPValue::LongInt(3));
    headers.insert(
        "sig".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0xde, n])),
    );
    headers.insert(
        "idempotency-key".into(),
        AMQPValue::LongString(LongString::from(format!("order-{n}"))),
    );
    BasicProperties::default()
        .with_message_id(format!("m-{n}").into())
        .with_expiration("600000".into())
        .with_headers(headers)
}

#[tokio::test]
async fn passes_change_nothing_and_resubmit_sends_the_original_back() {
    let f = Queues::new("dlq-pass").await;
    for n in 0..3u8 {
        f.publish_to_source(&[0xff, n], typed_properties(n)).await;
    }
    let mut source = AmqpSource::connect(f.settings()).await.unwrap();
    for _ in 0..3 {
        let d = recv(&mut source).await;
        d.acker
            .settle(Settlement::dead_letter(dead_letter()))
            .await
            .unwrap();
    }
    drop(source);
    f.wait_for_ready(&f.dead_letter_queue, 3).await;

    let dlq = AmqpDeadLetters::new(f.settings()).unwrap();
    assert_eq!(dlq.name(), f.dead_letter_queue);
    let first = read_all(&dlq).await;
    assert_eq!(first.len(), 3);
    f.wait_for_ready(&f.dead_letter_queue, 3).await;
    let again = read_all(&dlq).await;
    let ids = |rs: &[DeadLetterRecord]| rs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again), "same ids, same order");
    let r = &first[0];
    assert_eq!(r.context, dead_letter());
    assert_eq!(r.origin.as_ref().map(|o| o.source_name()), Some(&*f.queue));
    assert!(r
        .message
        .headers
        .iter()
        .all(|h| !h.name.starts_with("outrigger-dlq-")));

    let mut pass = dlq.open(Scope::default()).await.unwrap();
    let a = pass.next().await.unwrap().unwrap();
    let b = pass.next().await.unwrap().unwrap();
    let how = Resubmission {
        to: None,
        by: "ops".into(),
        at: std::time::SystemTime::now(),
    };
    pass.resubmit(&a, &how).await.unwrap();
    pass.purge(&b, "ops").await.unwrap();
    let stale = pass.resubmit(&b, &how).await;
    assert!(matches!(stale, Err(SourceError::Rejected(_))), "{stale:?}");
    pass.finish().await.unwrap();
    f.wait_for_ready(&f.dead_letter_queue, 1).await;
    f.wait_for_ready(&f.queue, 1).await;

    let copy = f.take(&f.queue).await;
    assert_eq!(copy.body, a.message.payload.to_vec(), "body byte for byte");
    let p = &copy.properties;
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m-0"));
    assert_eq!(
        p.expiration().as_ref().map(|s| s.as_str()),
        Some("600000"),
        "expiration restored"
    );
    let h = p.headers().as_ref().unwrap().inner();
    assert_eq!(h.get("retries"), Some(&AMQPValue::LongInt(3)), "types kept");
    assert_eq!(
        h.get("sig"),
        Some(&AMQPValue::ByteArray(ByteArray::from(vec![0xde, 0])))
    );
    assert_eq!(
        h.get("outrigger-resubmit-count"),
        Some(&AMQPValue::LongString("1".into()))
    );
    assert!(h.keys().all(|k| !k.as_str().starts_with("outrigger-dlq-")));
    f.clean_up().await;
}

#[tokio::test]
async fn identical_records_get_distinct_ids_and_a_dropped_pass_gives_records_back() {
    let f = Queues::new("dlq-ids").await;
    // Two byte-identical messages without any failure context, read as a dead-letter queue.
    f.publish_to_source(b"same", BasicProperties::default())
        .await;
    f.publish_to_source(b"same", BasicProperties::default())
        .await;
    let config = AmqpSettings {
        dead_letter_queue: f.queue.clone(),
        ..AmqpSettings::new(url(), &f.dead_letter_queue)
    };
    let dlq = AmqpDeadLetters::new(config).unwrap();
    let mut pass = dlq.open(Scope::default()).await.unwrap();
    let one = pass.next().await.unwrap().unwrap();
    let two = pass.next().await.unwrap().unwrap();
    assert_eq!(two.id, format!("{}-2", one.id));
    assert_eq!(one.context.class, "unknown");
    assert!(pass.next().await.unwrap().is_none());
    drop(pass); // no finish: the connection goes, and the broker returns both
    f.wait_for_ready(&f.queue, 2).await;
    f.clean_up().await;
}
