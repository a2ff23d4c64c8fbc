//! The NATS source against a real nats-server, for what only JetStream has: in-progress that
//! keeps a slow delivery, redelivery after `ack_wait` once a consumer died, consumer stats,
//! what is checked at connect, and headers as NATS carries them. What every broker does is in
//! `contract.rs`; authentication and TLS in `security.rs`.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use outrigger_core::dead_letter::headers as context;
use outrigger_core::{Acker, DeadLetter, Limits, Settlement, Source, SourceContext, SourceError};
use outrigger_nats::{NatsConfig, NatsSettings, NatsSource, DEAD_LETTER_SUBJECT_HEADER};
use outrigger_testkit::nats::{self, Nats, Streams, DEADLINE};
use outrigger_testkit::source::{assert_quiet, recv};
use outrigger_testkit::{dead_letter, unique, wait_until, Proxy};

fn context(max_in_flight: usize) -> SourceContext {
    SourceContext {
        declare_dead_letters: false,
        limits: Limits {
            max_in_flight,
            ..Limits::default()
        },
        ..SourceContext::default()
    }
}

async fn connect(config: &NatsConfig, max_in_flight: usize) -> NatsSource {
    NatsSource::connect(NatsSettings::from_config(config, &context(max_in_flight)))
        .await
        .unwrap_or_else(|e| panic!("connecting: {e}"))
}

#[tokio::test]
async fn headers_key_and_payload_round_trip_and_the_dead_letter_keeps_them() {
    let s = Streams::new("round-trip").await;
    let payload = Bytes::from_static(&[0xff, 0xfe, 0x00, 0x80, b'x', 0xc3]);
    let mut headers = HeaderMap::new();
    headers.append("trace", "t-1");
    headers.append("multi", "one");
    headers.append("multi", "two");
    headers.append("empty", "");
    headers.append("outrigger-key", "order-7");
    headers.append("Content-Type", "application/octet-stream");
    headers.append("Nats-Msg-Id", "m-1");
    let sequence = s.publish_map(&s.subject, headers, payload.clone()).await;
    s.publish(&[], "no key").await;

    let mut source = connect(&s.config(&nats::url()), 8).await;
    let d = recv(&mut source, DEADLINE).await;
    let m = &d.message;
    assert_eq!(m.payload, payload, "payload byte for byte");
    assert_eq!(m.key.as_deref(), Some(&b"order-7"[..]), "the key header");
    assert_eq!(m.message_id, Some(format!("{}@{sequence}", s.stream)));
    assert_eq!(m.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(m.deliveries, Some(1));
    let names: Vec<(&str, &[u8])> = m
        .headers
        .iter()
        .map(|h| (h.name.as_str(), &h.value[..]))
        .collect();
    assert_eq!(
        names,
        [
            ("Content-Type", &b"application/octet-stream"[..]),
            ("Nats-Msg-Id", b"m-1"),
            ("empty", b""),
            ("multi", b"one"),
            ("multi", b"two"),
            ("outrigger-key", b"order-7"),
            ("trace", b"t-1"),
        ],
        "every header, sorted by name, repeated values in order"
    );
    let original = m.headers.clone();
    let origin = m.coordinates.clone();
    let mut failure = dead_letter();
    failure.response_excerpt = Bytes::from_static(b"bad order\nsee the docs");
    d.acker
        .settle(Settlement::dead_letter(failure.clone()))
        .await
        .unwrap();

    let keyless = recv(&mut source, DEADLINE).await;
    assert_eq!(
        keyless.message.key.as_deref(),
        Some(s.subject.as_bytes()),
        "without a key header, the subject"
    );
    keyless.acker.settle(Settlement::Ack).await.unwrap();

    let dead = s.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let dl = &dead[0];
    assert_eq!(dl.payload, payload, "dead letter payload byte for byte");
    let (written, kept): (Vec<_>, Vec<_>) = dl
        .headers
        .iter()
        .cloned()
        .partition(|h| context::is_context(&h.name));
    let without_id: Vec<_> = original
        .iter()
        .filter(|h| h.name != "Nats-Msg-Id")
        .cloned()
        .collect();
    let (own_id, kept): (Vec<_>, Vec<_>) = kept.into_iter().partition(|h| h.name == "Nats-Msg-Id");
    assert_eq!(kept, without_id, "the original headers, the id moved aside");
    assert_eq!(
        own_id.iter().map(|h| h.value.clone()).collect::<Vec<_>>(),
        [format!("outrigger-dead-letter:{origin}")],
        "the dead letter's own id, which JetStream deduplicates a second write on"
    );
    let get = |name: &str| {
        written
            .iter()
            .find(|h| h.name == name)
            .map(|h| String::from_utf8(h.value.to_vec()).unwrap())
    };
    assert_eq!(
        get("outrigger-dlq-original-nats-msg-id").as_deref(),
        Some("m-1")
    );
    assert_eq!(
        get(DEAD_LETTER_SUBJECT_HEADER).as_deref(),
        Some(s.subject.as_str())
    );
    assert_eq!(
        get(context::RESPONSE).as_deref(),
        Some("bad order see the docs"),
        "one line"
    );
    let back = DeadLetter::from_headers(&dl.headers).unwrap();
    assert_eq!(back.reason, failure.reason);
    assert_eq!(back.attempts, failure.attempts);
    assert_eq!(
        outrigger_core::dead_letter::source_from_headers(&dl.headers),
        Some(origin)
    );
    source.stop().await;
    s.wait_all_acked().await;
    s.clean_up().await;
}

/// ack_wait 2s, a delivery that takes 7s: in-progress keeps it, so a second consumer on the
/// same durable consumer gets nothing, and nothing is redelivered once it is acked.
#[tokio::test]
async fn in_progress_keeps_a_slow_delivery_from_being_redelivered() {
    let s = Streams::new("slow").await;
    let config = NatsConfig {
        ack_wait: Duration::from_secs(2),
        ..s.config(&nats::url())
    };
    s.publish(&[], "slow").await;
    let mut first = connect(&config, 4).await;
    let mut second = connect(&config, 4).await;
    let held = recv(&mut first, DEADLINE).await;
    assert_quiet(
        &mut second,
        Duration::from_secs(7),
        "a message in progress is not handed to another consumer",
    )
    .await;
    held.acker.settle(Settlement::Ack).await.unwrap();
    let info = s.consumer_info(&s.stream, &s.consumer).await;
    assert_eq!(info.num_redelivered, 0, "never redelivered");
    assert_eq!(info.num_ack_pending, 0);
    assert_quiet(&mut first, Duration::from_secs(3), "acked for good").await;
    first.stop().await;
    second.stop().await;
    s.clean_up().await;
}

/// A consumer that dies (its connection gone, no nak, no in-progress) loses its messages to
/// the survivor once ack_wait passes, and the survivor sees the second delivery.
#[tokio::test]
async fn jetstream_redelivers_a_dead_consumers_messages_after_ack_wait() {
    let s = Streams::new("dead-peer").await;
    let proxy = Proxy::start(nats::address().await).await;
    let through = NatsConfig {
        ack_wait: Duration::from_secs(2),
        ..s.config(&format!("nats://{}", proxy.addr))
    };
    let direct = NatsConfig {
        ack_wait: Duration::from_secs(2),
        ..s.config(&nats::url())
    };
    for i in 0..3 {
        s.publish(&[], format!("m-{i}")).await;
    }
    let mut doomed = connect(&through, 3).await;
    let held = [
        recv(&mut doomed, DEADLINE).await,
        recv(&mut doomed, DEADLINE).await,
        recv(&mut doomed, DEADLINE).await,
    ];
    let mut survivor = connect(&direct, 8).await;
    proxy.refuse();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = recv(&mut survivor, DEADLINE).await;
        assert!(d.message.redelivered, "a second delivery says so");
        assert_eq!(d.message.deliveries, Some(2), "num_delivered counts it");
        got.push(String::from_utf8(d.message.payload.to_vec()).unwrap());
        d.acker.settle(Settlement::Ack).await.unwrap();
    }
    got.sort();
    assert_eq!(got, ["m-0", "m-1", "m-2"]);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "only after ack_wait: {:?}",
        started.elapsed()
    );
    // The dead consumer's handles cannot settle any more: nothing was acked twice.
    let info = s.consumer_info(&s.stream, &s.consumer).await;
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    drop(held);
    survivor.stop().await;
    drop(doomed);
    s.clean_up().await;
}

#[tokio::test]
async fn stats_report_lag_unacked_in_flight_and_redeliveries() {
    let s = Streams::new("stats").await;
    for i in 0..5 {
        s.publish(&[], format!("m-{i}")).await;
    }
    let mut source = connect(&s.config(&nats::url()), 2).await;
    let a = recv(&mut source, DEADLINE).await;
    let b = recv(&mut source, DEADLINE).await;
    let probe = source.stats();
    let stats = wait_until("the consumer info refreshed", DEADLINE, || {
        let probe = probe.clone();
        async move {
            let all = probe.read().await;
            let one = all.into_iter().next()?;
            (one.lag == Some(3) && one.pending == Some(2)).then_some(one)
        }
    })
    .await;
    assert_eq!(stats.source, s.stream);
    assert_eq!(stats.partition, "");
    assert_eq!(stats.in_flight, 2);
    assert!(stats.paused, "at max_in_flight, nothing more is pulled");
    assert_eq!(stats.watermark, Some(1), "nothing acked yet");
    a.acker.settle(Settlement::Ack).await.unwrap();
    b.acker.settle(Settlement::Requeue).await.unwrap();
    let mut next = Vec::new();
    for _ in 0..2 {
        next.push(recv(&mut source, DEADLINE).await);
    }
    let mut seen: Vec<(Bytes, bool)> = next
        .iter()
        .map(|d| (d.message.payload.clone(), d.message.redelivered))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [(Bytes::from("m-1"), true), (Bytes::from("m-2"), false)],
        "the naked one came back, marked"
    );
    // JetStream counts the redelivered messages among those pending.
    wait_until("the redelivery counted", DEADLINE, || async {
        source
            .consumer_stats()
            .is_some_and(|c| c.num_redelivered == 1 && c.ack_floor == 1)
    })
    .await;
    for d in next {
        d.acker.settle(Settlement::Ack).await.unwrap();
    }
    source.stop().await;
    let after = probe.read().await;
    assert_eq!(after.len(), 1, "readable after stop");
    s.clean_up().await;
}

#[tokio::test]
async fn connect_refuses_what_cannot_work_and_creates_what_it_is_asked_to() {
    let nats = Nats::connect().await;
    let missing = unique("outrigger-test-missing");
    let config = NatsConfig::new(nats::url(), &missing, "c");
    let refused = NatsSource::connect(NatsSettings::from_config(&config, &context(4))).await;
    assert!(
        matches!(&refused, Err(SourceError::Rejected(t)) if t.contains("create_stream")),
        "{refused:?}"
    );

    // Asked to, it creates the stream, the consumer and the dead-letter stream.
    let subject = format!("{missing}.in");
    let create = NatsConfig {
        create_stream: true,
        subjects: vec![subject.clone()],
        ..config.clone()
    };
    let settings = NatsSettings::from_config(&create, &SourceContext::default());
    let mut source = NatsSource::connect(settings).await.unwrap();
    nats.publish(&subject, &[], "hello").await;
    let d = recv(&mut source, DEADLINE).await;
    d.acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap();
    assert_eq!(nats.read(&format!("{missing}_dlq")).await.len(), 1);
    let info = nats.consumer_info(&missing, "c").await;
    assert_eq!(
        info.config.max_ack_pending, 64,
        "max_ack_pending from max_in_flight"
    );
    assert_eq!(
        info.config.max_deliver, -1,
        "the pipeline decides when to give up"
    );
    source.stop().await;

    // A consumer created elsewhere must be a pull consumer with explicit acks.
    nats.js
        .get_stream(&missing)
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::push::Config {
            durable_name: Some("pushed".into()),
            deliver_subject: format!("{missing}.push"),
            ..Default::default()
        })
        .await
        .unwrap();
    let push = NatsConfig::new(nats::url(), &missing, "pushed");
    let refused = NatsSource::connect(NatsSettings::from_config(&push, &context(4))).await;
    assert!(
        matches!(&refused, Err(SourceError::Rejected(t)) if t.contains("push consumer")),
        "{refused:?}"
    );
    let bound_only = NatsConfig {
        create_consumer: false,
        ..NatsConfig::new(nats::url(), &missing, "nobody")
    };
    let refused = NatsSource::connect(NatsSettings::from_config(&bound_only, &context(4))).await;
    assert!(
        matches!(&refused, Err(SourceError::Rejected(t)) if t.contains("create_consumer")),
        "{refused:?}"
    );

    // Dead letters the source stream would capture are refused.
    let wide = unique("outrigger-test-wide");
    nats.create_stream(&wide, &[format!("{wide}.>")]).await;
    let config = NatsConfig::new(nats::url(), &wide, "c");
    let refused = NatsSource::connect(NatsSettings::from_config(&config, &context(4))).await;
    assert!(
        matches!(&refused, Err(SourceError::Rejected(t)) if t.contains("captured by the source stream")),
        "{refused:?}"
    );
    let unreachable = NatsConfig::new("nats://127.0.0.1:1", &wide, "c");
    let refused = NatsSource::connect(NatsSettings::from_config(&unreachable, &context(4))).await;
    assert!(
        matches!(&refused, Err(SourceError::Connection(_))),
        "unreachable is worth a retry: {refused:?}"
    );
    nats.delete_stream(&wide).await;
    nats.delete_stream(&missing).await;
    nats.delete_stream(&format!("{missing}_dlq")).await;
}

/// A server that goes away and comes back: the source reports itself down, reconnects by
/// itself, and delivers what was published meanwhile; what was acked stays acked.
#[tokio::test]
async fn a_server_restart_is_ridden_out() {
    let server = nats::NatsServer::start("").await;
    let nats = Nats::connect_to(&server.url()).await;
    let s = Streams::on(nats, "restart").await;
    s.publish(&[], "before").await;
    let mut source = connect(&s.config(&server.url()), 4).await;
    let health = source.health();
    let d = recv(&mut source, DEADLINE).await;
    d.acker.settle(Settlement::Ack).await.unwrap();

    let server = server.restart().await;
    let nats = Nats::connect_to(&server.url()).await;
    nats.publish(&s.subject, &[], "after").await;
    let d = recv(&mut source, DEADLINE).await;
    assert_eq!(
        &d.message.payload[..],
        b"after",
        "the acked one is not back"
    );
    d.acker.settle(Settlement::Ack).await.unwrap();
    assert!(health.is_up());
    source.stop().await;
    drop(server);
}
