//! The dead-letter queue points: what `outrigger dlq list`, `show`, `resubmit` and `purge` do
//! on every broker whose dead letters an operator can work on.

use std::time::{Duration, UNIX_EPOCH};

use outrigger_core::dead_letter::headers;
use outrigger_core::dlq::resubmit_headers;
use outrigger_core::{
    Broker, Coordinates, DeadLetter, DeadLetterPass, DeadLetterQueue, DeadLetterRecord,
    HandledAction, Header, Resubmission, Scope, Settlement, Source, SourceError,
};
use outrigger_memory::Outgoing;

use super::{left_over, next, payload, settle, SourceFixture};
use crate::source::{dead_letter, Faults};

/// How many messages each point dead-letters.
const COUNT: usize = 3;

/// Message `i`: payload `dlq-<i>`, a text and a binary header.
fn message(i: usize) -> Outgoing {
    Outgoing::new(format!("dlq-{i}"))
        .header("bin", vec![0xff, 0x00, i as u8])
        .header("trace", format!("t-{i}"))
}

/// The failure context of message `i`: its own reason and key.
fn context(i: usize) -> DeadLetter {
    DeadLetter {
        reason: format!("app answered HTTP 400 for order {i}"),
        key: Some(format!("order-{i}")),
        ..dead_letter()
    }
}

/// The `i` of a record's `order-<i>` key.
fn index(record: &DeadLetterRecord) -> usize {
    let key = record.key().expect("the context names the key");
    key["order-".len()..].parse().unwrap()
}

/// Has the source dead-letter [`COUNT`] messages, each with its [`context`]; returns what was
/// published and where each was consumed from, by index.
async fn dead_letter_some<F: SourceFixture>(f: &F) -> Vec<(Outgoing, Coordinates)> {
    for i in 0..COUNT {
        f.publish(message(i)).await;
    }
    let mut source = f.source().await;
    let mut origins = vec![None; COUNT];
    for _ in 0..COUNT {
        let delivery = next::<F>(&mut source).await;
        let i: usize = payload(&delivery.message)["dlq-".len()..].parse().unwrap();
        origins[i] = Some(delivery.message.coordinates.clone());
        settle(delivery, Settlement::dead_letter(context(i))).await;
    }
    source.stop().await;
    origins
        .into_iter()
        .enumerate()
        .map(|(i, origin)| (message(i), origin.expect("each message delivered once")))
        .collect()
}

async fn drain<P: DeadLetterPass>(pass: &mut P) -> Vec<DeadLetterRecord> {
    let mut out = Vec::new();
    while let Some(record) = pass.next().await.expect("reading the dead-letter queue") {
        out.push(record);
    }
    out
}

/// Every record one pass hands out; the pass is then finished.
async fn list<Q: DeadLetterQueue>(queue: &Q, include_handled: bool) -> Vec<DeadLetterRecord> {
    let mut pass = queue.open(Scope { include_handled }).await.unwrap();
    let records = drain(&mut pass).await;
    pass.finish().await.unwrap();
    records
}

/// The indexes of the records a pass hands out, pending ones only, sorted.
async fn pending<Q: DeadLetterQueue>(queue: &Q) -> Vec<usize> {
    let mut pending: Vec<usize> = list(queue, false).await.iter().map(index).collect();
    pending.sort_unstable();
    pending
}

fn ids(records: &[DeadLetterRecord]) -> Vec<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

/// A pass hands out every dead letter with its failure context, where it was consumed from,
/// and the original payload and headers; passes change nothing, ids are stable, and a later
/// pass finds a record by its id (`dlq show`).
pub async fn dlq_lists_each_dead_letter_with_its_context<F: SourceFixture>() {
    let f = F::new(Faults::None).await;
    let sent = dead_letter_some(&f).await;
    let queue = f.dead_letter_queue();
    let names = <F::Broker as Broker>::names(&f.config());
    let source_name = &names[0].name;
    assert_eq!(queue.name(), f.context().dead_letter_for(source_name));
    assert_eq!(queue.source(), source_name);

    let records = list(&queue, false).await;
    assert_eq!(records.len(), COUNT, "{records:?}");
    for r in &records {
        let i = index(r);
        let (published, origin) = &sent[i];
        assert_eq!(r.context, context(i), "the failure context, read back");
        assert_eq!(
            r.origin.as_ref(),
            Some(origin),
            "where it was consumed from"
        );
        assert_eq!(
            r.message.payload, published.payload,
            "payload byte for byte"
        );
        assert_eq!(
            r.message.headers, published.headers,
            "the original headers, the context taken off"
        );
        assert_eq!(r.handled, None);
        assert_eq!(r.resubmissions, 0);
    }
    let mut distinct = ids(&records);
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), COUNT, "ids are unique: {:?}", ids(&records));
    assert_eq!(
        ids(&list(&queue, false).await),
        ids(&records),
        "a pass changes nothing: the next one has the same ids, in the same order"
    );

    let wanted = &records[1];
    let mut pass = queue.open(Scope::default()).await.unwrap();
    let shown = loop {
        match pass.next().await.unwrap() {
            Some(r) if r.id == wanted.id => break r,
            Some(_) => {}
            None => panic!("record {} is not found again", wanted.id),
        }
    };
    pass.finish().await.unwrap();
    assert_eq!(
        (&shown.context, &shown.origin, &shown.message.payload),
        (&wanted.context, &wanted.origin, &wanted.message.payload)
    );
    assert_eq!(shown.message.headers, wanted.message.headers);

    let mut source = f.source().await;
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "reading the dead letters sent nothing back"
    );
    source.stop().await;
    f.clean_up().await;
}

/// A resubmitted record goes back to its source once: the original payload and headers, the
/// context off, the resubmission mark on; the record is settled, and a second resubmission of
/// it is refused.
pub async fn dlq_resubmit_sends_a_marked_copy_back_once<F: SourceFixture>() {
    let f = F::new(Faults::None).await;
    let sent = dead_letter_some(&f).await;
    let queue = f.dead_letter_queue();
    let how = Resubmission {
        to: None,
        by: "tester".into(),
        at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };

    let mut pass = queue.open(Scope::default()).await.unwrap();
    let records = drain(&mut pass).await;
    let chosen = records.iter().find(|r| index(r) == 1).expect("record 1");
    pass.resubmit(chosen, &how).await.expect("resubmitting");
    let twice = pass.resubmit(chosen, &how).await;
    assert!(
        matches!(twice, Err(SourceError::Rejected(_))),
        "the same record is not resubmitted twice: {twice:?}"
    );
    pass.finish().await.unwrap();

    let mut source = f.source().await;
    let copy = next::<F>(&mut source).await;
    let (published, _) = &sent[1];
    assert_eq!(
        copy.message.payload, published.payload,
        "payload byte for byte"
    );
    let (mark, original): (Vec<Header>, Vec<Header>) = copy
        .message
        .headers
        .iter()
        .cloned()
        .partition(|h| resubmit_headers::is_mark(&h.name));
    assert_eq!(
        original, published.headers,
        "the original headers, no context"
    );
    let mut mark: Vec<(String, String)> = mark
        .into_iter()
        .map(|h| (h.name, String::from_utf8(h.value.to_vec()).unwrap()))
        .collect();
    let mut expected: Vec<(String, String)> = how
        .mark(chosen)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    mark.sort();
    expected.sort();
    assert_eq!(mark, expected, "the mark: who, when, how often, the key");
    assert_eq!(copy.message.header_str(resubmit_headers::COUNT), Some("1"));
    assert_eq!(
        copy.message.header_str(resubmit_headers::KEY),
        Some("order-1")
    );
    assert!(!copy
        .message
        .headers
        .iter()
        .any(|h| headers::is_context(&h.name)));
    settle(copy, Settlement::Ack).await;
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "one copy"
    );
    source.stop().await;

    assert_eq!(
        pending(&queue).await,
        [0, 2],
        "the resubmitted record is settled"
    );
    // Asked for handled records too, a queue that keeps them shows it marked, and refuses it.
    let mut pass = queue
        .open(Scope {
            include_handled: true,
        })
        .await
        .unwrap();
    for r in drain(&mut pass).await {
        if index(&r) != 1 {
            assert_eq!(r.handled, None, "{}", r.id);
            continue;
        }
        let handled = r.handled.as_ref().expect("a handled record is marked");
        assert_eq!(handled.action, HandledAction::Resubmitted);
        assert_eq!((handled.by.as_str(), handled.at), ("tester", how.at));
        let refused = pass.resubmit(&r, &how).await;
        assert!(
            matches!(refused, Err(SourceError::Rejected(_))),
            "{refused:?}"
        );
    }
    pass.finish().await.unwrap();
    f.clean_up().await;
}

/// A purged record is discarded: later passes do not hand it out, a second purge of it is
/// refused, and nothing goes to the source.
pub async fn dlq_purge_discards_the_record<F: SourceFixture>() {
    let f = F::new(Faults::None).await;
    dead_letter_some(&f).await;
    let queue = f.dead_letter_queue();

    let mut pass = queue.open(Scope::default()).await.unwrap();
    let records = drain(&mut pass).await;
    let chosen = records.iter().find(|r| index(r) == 1).expect("record 1");
    pass.purge(chosen, "ops@host").await.expect("purging");
    let twice = pass.purge(chosen, "ops@host").await;
    assert!(
        matches!(twice, Err(SourceError::Rejected(_))),
        "the same record is not purged twice: {twice:?}"
    );
    pass.finish().await.unwrap();

    assert_eq!(pending(&queue).await, [0, 2], "the purged record is gone");
    for r in list(&queue, true).await {
        if index(&r) == 1 {
            let handled = r.handled.as_ref().expect("a handled record is marked");
            assert_eq!(
                (handled.action, handled.by.as_str()),
                (HandledAction::Purged, "ops@host")
            );
        } else {
            assert_eq!(r.handled, None, "{}", r.id);
        }
    }
    let mut source = f.source().await;
    assert_eq!(
        left_over(&f, &mut source).await,
        Vec::<String>::new(),
        "purge sends nothing to the source"
    );
    source.stop().await;
    f.clean_up().await;
}
