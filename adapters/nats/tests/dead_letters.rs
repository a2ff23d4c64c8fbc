//! The dead-letter stream read back ([`NatsDeadLetters`]) against a real nats-server: what
//! the contract's dlq points check, with the text headers NATS carries (theirs carry a binary
//! one), and what only JetStream has: a producer's `Nats-Msg-Id` kept through a dead letter,
//! and a resubmission run twice giving one copy.

use std::time::{Duration, UNIX_EPOCH};

use outrigger_core::dead_letter::headers as context;
use outrigger_core::dlq::resubmit_headers;
use outrigger_core::{
    Acker, DeadLetter, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Header, Resubmission,
    Scope, Settlement, Source, SourceContext, SourceError,
};
use outrigger_nats::{Nats, NatsDeadLetters, NatsSettings, NatsSource};
use outrigger_testkit::dead_letter;
use outrigger_testkit::nats::{self, Streams, DEADLINE};
use outrigger_testkit::source::{assert_quiet, recv};

const COUNT: usize = 3;

fn context_of(i: usize) -> DeadLetter {
    DeadLetter {
        reason: format!("app answered HTTP 400 for order {i}"),
        key: Some(format!("order-{i}")),
        ..dead_letter()
    }
}

fn settings(s: &Streams) -> NatsSettings {
    let context = SourceContext {
        declare_dead_letters: false,
        ..SourceContext::default()
    };
    NatsSettings::from_config(&s.config(&nats::url()), &context)
}

fn queue(s: &Streams) -> NatsDeadLetters {
    <Nats as outrigger_core::Broker>::dead_letters(
        &s.config(&nats::url()),
        &SourceContext {
            declare_dead_letters: false,
            ..SourceContext::default()
        },
    )
    .unwrap()
}

/// The headers message `i` is published with (sorted by name, as they come back).
fn published(i: usize) -> Vec<Header> {
    vec![
        Header::new("Nats-Msg-Id", format!("producer-{i}")),
        Header::new("multi", "a"),
        Header::new("multi", "b"),
        Header::new("trace", format!("t-{i}")),
    ]
}

/// Publishes [`COUNT`] messages and dead-letters each with its own context; returns where
/// each was consumed from.
async fn dead_letter_some(s: &Streams) -> Vec<outrigger_core::Coordinates> {
    for i in 0..COUNT {
        let headers: Vec<(String, String)> = published(i)
            .into_iter()
            .map(|h| (h.name, String::from_utf8(h.value.to_vec()).unwrap()))
            .collect();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        s.publish(&headers, format!("dlq-{i}")).await;
    }
    let mut source = NatsSource::connect(settings(s)).await.unwrap();
    let mut origins = Vec::new();
    for i in 0..COUNT {
        let d = recv(&mut source, DEADLINE).await;
        assert_eq!(d.message.payload, format!("dlq-{i}"));
        origins.push(d.message.coordinates.clone());
        d.acker
            .settle(Settlement::dead_letter(context_of(i)))
            .await
            .unwrap();
    }
    source.stop().await;
    origins
}

async fn list(q: &NatsDeadLetters) -> Vec<DeadLetterRecord> {
    let mut pass = q.open(Scope::default()).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = pass.next().await.unwrap() {
        out.push(r);
    }
    pass.finish().await.unwrap();
    out
}

fn index(r: &DeadLetterRecord) -> usize {
    r.key().unwrap()["order-".len()..].parse().unwrap()
}

#[tokio::test]
async fn a_pass_lists_each_dead_letter_with_its_context_and_changes_nothing() {
    let s = Streams::new("dlq-list").await;
    let origins = dead_letter_some(&s).await;
    let q = queue(&s);
    assert_eq!(q.name(), s.dead_letter_subject);
    assert_eq!(q.source(), s.stream);
    let records = list(&q).await;
    assert_eq!(records.len(), COUNT);
    for r in &records {
        let i = index(r);
        assert_eq!(r.context, context_of(i));
        assert_eq!(r.origin.as_ref(), Some(&origins[i]));
        assert_eq!(r.message.payload, format!("dlq-{i}"));
        assert_eq!(
            r.message.headers,
            published(i),
            "the original headers, the producer's id back, repeated values kept"
        );
        assert_eq!(
            r.message.key.as_deref(),
            Some(s.subject.as_bytes()),
            "keyed as the original"
        );
        assert_eq!(r.resubmissions, 0);
        assert_eq!(r.handled, None);
    }
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["1", "2", "3"],
        "ids are the dead-letter stream's sequences"
    );
    let again: Vec<String> = list(&q).await.into_iter().map(|r| r.id).collect();
    assert_eq!(again, ids, "a pass changes nothing");
    assert_eq!(s.count(&s.dead_letter_stream).await, COUNT as u64);
    s.clean_up().await;
}

#[tokio::test]
async fn resubmit_sends_a_marked_copy_back_once_and_purge_discards() {
    let s = Streams::new("dlq-resubmit").await;
    dead_letter_some(&s).await;
    let q = queue(&s);
    let how = Resubmission {
        to: None,
        by: "tester".into(),
        at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    let mut pass = q.open(Scope::default()).await.unwrap();
    let mut records = Vec::new();
    while let Some(r) = pass.next().await.unwrap() {
        records.push(r);
    }
    let chosen = records.iter().find(|r| index(r) == 1).unwrap();
    pass.resubmit(chosen, &how).await.expect("resubmitting");
    let twice = pass.resubmit(chosen, &how).await;
    assert!(matches!(twice, Err(SourceError::Rejected(_))), "{twice:?}");
    let purged = records.iter().find(|r| index(r) == 2).unwrap();
    pass.purge(purged, "ops@host").await.expect("purging");
    let twice = pass.purge(purged, "ops@host").await;
    assert!(matches!(twice, Err(SourceError::Rejected(_))), "{twice:?}");
    pass.finish().await.unwrap();

    let left: Vec<usize> = list(&q).await.iter().map(index).collect();
    assert_eq!(left, [0], "the resubmitted and the purged record are gone");

    let mut source = NatsSource::connect(settings(&s)).await.unwrap();
    let copy = recv(&mut source, DEADLINE).await;
    assert_eq!(copy.message.payload, "dlq-1", "payload byte for byte");
    let (mark, rest): (Vec<Header>, Vec<Header>) = copy
        .message
        .headers
        .iter()
        .cloned()
        .partition(|h| resubmit_headers::is_mark(&h.name));
    let expected: Vec<Header> = published(1)
        .into_iter()
        .map(|h| match h.name.as_str() {
            "Nats-Msg-Id" => Header::new(
                "Nats-Msg-Id",
                format!("outrigger-resubmit:{}:2", s.dead_letter_stream),
            ),
            _ => h,
        })
        .collect();
    assert_eq!(
        rest, expected,
        "the original headers; the id names the resubmission"
    );
    let mut mark: Vec<(String, String)> = mark
        .into_iter()
        .map(|h| (h.name, String::from_utf8(h.value.to_vec()).unwrap()))
        .collect();
    let mut want: Vec<(String, String)> = how
        .mark(chosen)
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    mark.sort();
    want.sort();
    assert_eq!(mark, want, "the mark: who, when, how often, the key");
    assert!(!copy
        .message
        .headers
        .iter()
        .any(|h| context::is_context(&h.name)));
    copy.acker.settle(Settlement::Ack).await.unwrap();
    assert_quiet(
        &mut source,
        Duration::from_millis(500),
        "one copy, nothing for the purged one",
    )
    .await;
    source.stop().await;
    s.clean_up().await;
}

/// Two runs holding the same record (one killed after its publish, before its delete): the
/// second publish is dropped by JetStream as a duplicate of the first copy, and its delete
/// finds the record gone. One copy reaches the source.
#[tokio::test]
async fn a_resubmission_run_twice_gives_one_copy() {
    let s = Streams::new("dlq-rerun").await;
    dead_letter_some(&s).await;
    let q = queue(&s);
    let how = Resubmission {
        to: None,
        by: "tester".into(),
        at: UNIX_EPOCH,
    };
    let mut first = q.open(Scope::default()).await.unwrap();
    let mut second = q.open(Scope::default()).await.unwrap();
    let a = first.next().await.unwrap().unwrap();
    let b = second.next().await.unwrap().unwrap();
    assert_eq!(a.id, b.id);
    let before = s.count(&s.stream).await;
    first.resubmit(&a, &how).await.unwrap();
    let rerun = second.resubmit(&b, &how).await;
    assert!(matches!(rerun, Err(SourceError::Rejected(_))), "{rerun:?}");
    assert_eq!(
        s.count(&s.stream).await,
        before + 1,
        "one copy in the source stream"
    );
    first.finish().await.unwrap();
    second.finish().await.unwrap();
    s.clean_up().await;
}

/// A sidecar killed after JetStream stored a dead letter, before the original's `+TERM`,
/// gets the original again and writes the same dead letter again: the same headers, its
/// `Nats-Msg-Id` included, so the dead-letter stream drops the second one.
#[tokio::test]
async fn a_dead_letter_written_again_after_a_crash_is_dropped_by_the_stream() {
    let s = Streams::new("dl-twice").await;
    dead_letter_some(&s).await;
    let stored = s.dead_letters().await;
    assert_eq!(stored.len(), COUNT);
    let first = &stored[0];
    let mut again = async_nats::HeaderMap::new();
    for h in &first.headers {
        again.append(h.name.as_str(), std::str::from_utf8(&h.value).unwrap());
    }
    assert!(
        first
            .headers
            .iter()
            .any(|h| h.name == "Nats-Msg-Id" && h.value.starts_with(b"outrigger-dead-letter:nats:")),
        "the dead letter's own id: {:?}",
        first.headers
    );
    s.publish_dead_letter(again, first.payload.clone()).await;
    let after = s.dead_letters().await;
    assert_eq!(after.len(), COUNT, "the second write dropped");
    s.clean_up().await;
}
