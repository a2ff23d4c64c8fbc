//! Retry mode `queue` against a real nats-server: a copy is written to `<stream>.retry.<n>`
//! with its trail and the original acked; a copy not due is not handed out, and comes back
//! after its delay as its origin; a failed publish leaves the original unacked.

use std::time::{Duration, Instant, SystemTime};

use outrigger_core::retry::headers as retry_headers;
use outrigger_core::{Acker, Coordinates, Settlement, Source, SourceContext, Trail};
use outrigger_nats::{NatsSettings, NatsSource};
use outrigger_testkit::nats::{self, Streams, DEADLINE};
use outrigger_testkit::source::{assert_quiet, recv};

const TIER: Duration = Duration::from_secs(2);

fn settings(s: &Streams) -> NatsSettings {
    let context = SourceContext {
        declare_dead_letters: false,
        retry_tiers: vec![TIER],
        ..SourceContext::default()
    };
    NatsSettings::from_config(&s.config(&nats::url()), &context)
}

fn trail(origin: &Coordinates) -> Trail {
    Trail {
        origin: origin.clone(),
        hop: 1,
        attempts: 1,
        tier: 0,
        first_seen: SystemTime::now(),
        first_failure: Some(SystemTime::now()),
        due: None,
    }
}

fn retry_stream(s: &Streams) -> String {
    format!("{}_retry", s.stream)
}

async fn clean_up(s: Streams) {
    s.delete_stream(&retry_stream(&s)).await;
    s.clean_up().await;
}

#[tokio::test]
async fn a_copy_waits_in_the_retry_stream_and_comes_back_as_its_origin() {
    let s = Streams::new("retry-copy").await;
    let mut source = NatsSource::connect(settings(&s)).await.unwrap();
    s.publish(
        &[("outrigger-key", "order-1"), ("trace", "t-1")],
        "payload-1",
    )
    .await;
    let first = recv(&mut source, DEADLINE).await;
    let origin = first.message.coordinates.clone();
    let message_id = first.message.message_id.clone();
    let written = Instant::now();
    first
        .acker
        .settle(Settlement::Retry(trail(&origin)))
        .await
        .unwrap();
    s.wait_all_acked().await;

    let copies = s.read(&retry_stream(&s)).await;
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    assert_eq!(&copy.payload[..], b"payload-1", "byte for byte");
    assert_eq!(
        copy.header(retry_headers::ORIGIN).map(|v| v.to_vec()),
        Some(origin.to_string().into_bytes())
    );
    assert!(copy.header(retry_headers::DUE).is_some());
    assert_eq!(copy.header("trace").map(|v| &v[..]), Some(&b"t-1"[..]));

    // Not due yet: not handed out.
    assert_quiet(&mut source, TIER / 2, "a copy not due is not handed out").await;
    let back = recv(&mut source, DEADLINE).await;
    assert!(written.elapsed() >= TIER, "handed out before it was due");
    let m = &back.message;
    assert_eq!(m.coordinates, origin, "as its origin");
    assert_eq!(m.message_id, message_id);
    assert_eq!(m.key.as_deref(), Some(&b"order-1"[..]));
    assert_eq!(m.deliveries, None, "waiting spent no attempt");
    assert_eq!(m.trail.as_ref().map(|t| t.hop), Some(1));
    assert!(
        m.headers.iter().all(|h| !retry_headers::is_retry(&h.name)),
        "{:?}",
        m.headers
    );
    assert!(m.headers.iter().all(|h| h.name != "Nats-Msg-Id"));
    assert_eq!(m.header("trace").map(|v| &v[..]), Some(&b"t-1"[..]));
    back.acker.settle(Settlement::Ack).await.unwrap();
    source.stop().await;
    clean_up(s).await;
}

#[tokio::test]
async fn a_failed_copy_leaves_the_original_unacked() {
    let s = Streams::new("retry-failed").await;
    let mut source = NatsSource::connect(settings(&s)).await.unwrap();
    // No stream captures the retry subject any more: the publish finds no stream to ack it.
    s.delete_stream(&retry_stream(&s)).await;
    s.publish(&[], "payload-1").await;
    let first = recv(&mut source, DEADLINE).await;
    let origin = first.message.coordinates.clone();
    let unsettled = first
        .acker
        .settle(Settlement::Retry(trail(&origin)))
        .await
        .expect_err("no stream stores the copy");
    assert_eq!(s.ack_pending().await, 1, "the original stays unacked");
    unsettled.acker.settle(Settlement::Ack).await.unwrap();
    source.stop().await;
    clean_up(s).await;
}
