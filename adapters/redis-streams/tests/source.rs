//! What only Redis Streams has, against the machine's Redis: a consumer's own pending entries
//! first, a crashed peer's entries taken over after `claim_idle`, a slow entry kept by its
//! holder, entries deleted while pending reported, delivery counts, and the stats.

mod support;

use std::time::{Duration, Instant};

use outrigger_core::dead_letter::{headers, source_from_headers};
use outrigger_core::{
    Acker, Broker, Coordinates, Delivery, Limits, Settlement, Source, SourceContext,
};
use outrigger_redis_streams::{
    RedisStreams, RedisStreamsAcker, RedisStreamsConfig, RedisStreamsSource, DELETED_CLASS,
};
use outrigger_testkit::source::{assert_quiet, recv};
use outrigger_testkit::wait_until;
use support::{Names, Redis, DEADLINE};

fn context(max_in_flight: usize) -> SourceContext {
    SourceContext {
        limits: Limits {
            max_in_flight,
            ..Limits::default()
        },
        ..SourceContext::default()
    }
}

async fn source(config: &RedisStreamsConfig, max_in_flight: usize) -> RedisStreamsSource {
    RedisStreams::connect(config, &context(max_in_flight))
        .await
        .unwrap_or_else(|e| panic!("connecting: {e}"))
}

fn payload(d: &Delivery<RedisStreamsAcker>) -> String {
    String::from_utf8_lossy(&d.message.payload).into_owned()
}

fn id(d: &Delivery<RedisStreamsAcker>) -> String {
    match &d.message.coordinates {
        Coordinates::RedisStream { id, .. } => id.clone(),
        other => panic!("not a stream entry: {other}"),
    }
}

async fn ack(d: Delivery<RedisStreamsAcker>) {
    if let Err(e) = d.acker.settle(Settlement::Ack).await {
        panic!("ack failed: {}", e.error);
    }
}

/// Reads `n` entries as `consumer` without acknowledging them: a sidecar that then crashed.
async fn read_as(redis: &Redis, names: &Names, consumer: &str, n: usize) -> Vec<String> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&names.group)
        .arg(consumer)
        .arg("COUNT")
        .arg(n)
        .arg("STREAMS")
        .arg(&names.stream)
        .arg(">");
    let v: redis::Value = redis.run(&cmd).await;
    let redis::Value::Array(mut streams) = v else {
        panic!("nothing read")
    };
    let redis::Value::Array(mut pair) = streams.remove(0) else {
        panic!()
    };
    support::entries(pair.remove(1))
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

async fn setup(prefix: &str, entries: usize) -> (Redis, Names) {
    let redis = Redis::connect().await;
    let names = Names::new(prefix);
    redis.create_group(&names.stream, &names.group).await;
    for i in 0..entries {
        redis
            .add(&names.stream, &[(b"payload", format!("e-{i}").as_bytes())])
            .await;
    }
    (redis, names)
}

#[tokio::test]
async fn a_consumer_drains_its_own_pending_entries_first_counting_each_hand_out() {
    let (redis, names) = setup("own", 3).await;
    let earlier = read_as(&redis, &names, "me", 3).await;
    // The third was handed out four times before (crashes during each).
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(&names.stream)
        .arg(&names.group)
        .arg("me")
        .arg(0)
        .arg(&earlier[2])
        .arg("RETRYCOUNT")
        .arg(4)
        .arg("JUSTID");
    let _: redis::Value = redis.run(&cmd).await;
    for i in 3..5 {
        redis
            .add(&names.stream, &[(b"payload", format!("e-{i}").as_bytes())])
            .await;
    }
    let mut source = source(&names.config(&support::url(), "me"), 64).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = recv(&mut source, DEADLINE).await;
        got.push((payload(&d), d.message.deliveries, d.message.redelivered));
        ack(d).await;
    }
    assert_eq!(
        got,
        [
            ("e-0".to_owned(), Some(2), true),
            ("e-1".to_owned(), Some(2), true),
            ("e-2".to_owned(), Some(5), true),
            ("e-3".to_owned(), Some(1), false),
            ("e-4".to_owned(), Some(1), false),
        ],
        "own pending entries first, each counting this hand-out too, then the new ones"
    );
    assert!(redis.pending(&names.stream, &names.group).await.is_empty());
    source.stop().await;
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn a_dead_peers_entries_are_claimed_after_claim_idle_and_not_before() {
    let (redis, names) = setup("peer", 3).await;
    let started = Instant::now();
    read_as(&redis, &names, "dead-peer", 3).await;
    let config = RedisStreamsConfig {
        claim_idle: Duration::from_secs(1),
        ..names.config(&support::url(), "survivor")
    };
    let mut source = source(&config, 64).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = recv(&mut source, DEADLINE).await;
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "claimed after {:?}, before claim_idle",
            started.elapsed()
        );
        assert_eq!(d.message.deliveries, Some(2), "the peer's hand-out counts");
        got.push(payload(&d));
        let pending = redis.pending(&names.stream, &names.group).await;
        assert!(
            pending
                .iter()
                .any(|(i, c, _)| *i == id(&d) && c == "survivor"),
            "{pending:?}"
        );
        ack(d).await;
    }
    got.sort();
    assert_eq!(got, ["e-0", "e-1", "e-2"]);
    assert!(redis.pending(&names.stream, &names.group).await.is_empty());
    source.stop().await;
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn a_slow_entry_stays_with_its_holder_and_goes_to_a_peer_only_once_the_holder_died() {
    let (redis, names) = setup("slow", 1).await;
    let claim_idle = Duration::from_secs(1);
    let config = |consumer: &str| RedisStreamsConfig {
        claim_idle,
        ..names.config(&support::url(), consumer)
    };
    let mut holder = source(&config("holder"), 64).await;
    let slow = recv(&mut holder, DEADLINE).await;
    let mut peer = source(&config("peer"), 64).await;
    // Three times claim_idle: the holder's keeper refreshes the entry all along.
    assert_quiet(&mut peer, claim_idle * 3, "the peer takes a slow entry").await;
    let pending = redis.pending(&names.stream, &names.group).await;
    assert_eq!(
        pending,
        [(id(&slow), "holder".to_owned(), 1)],
        "still the holder's, handed out once"
    );

    // The holder dies with the entry in hand: nothing refreshes it any more.
    std::mem::forget(slow);
    drop(holder);
    let taken = recv(&mut peer, DEADLINE).await;
    assert_eq!(payload(&taken), "e-0");
    assert_eq!(taken.message.deliveries, Some(2));
    ack(taken).await;
    assert!(redis.pending(&names.stream, &names.group).await.is_empty());
    peer.stop().await;
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn entries_deleted_while_pending_are_counted_and_dead_lettered_as_tombstones() {
    let (redis, names) = setup("deleted", 4).await;
    let ids = read_as(&redis, &names, "dead-peer", 2).await;
    let own = read_as(&redis, &names, "me", 2).await;
    let mut cmd = redis::cmd("XDEL");
    cmd.arg(&names.stream).arg(&ids[0]).arg(&own[0]);
    let _: i64 = redis.run(&cmd).await;
    let config = RedisStreamsConfig {
        claim_idle: Duration::from_secs(1),
        ..names.config(&support::url(), "me")
    };
    let mut source = source(&config, 64).await;
    // Its own pending list first (one deleted there), then the peer's after claim_idle.
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = recv(&mut source, DEADLINE).await;
        got.push(payload(&d));
        ack(d).await;
    }
    assert_eq!(got, ["e-3", "e-1"]);
    wait_until("both tombstones", DEADLINE, || async {
        redis.range(&names.dead_letters).await.len() == 2
    })
    .await;
    assert_eq!(source.deleted_while_pending(&names.stream), 2);
    let tombstones = redis.range(&names.dead_letters).await;
    let mut origins = Vec::new();
    for (id, fields) in &tombstones {
        let m = support::to_message(&names.dead_letters, id, fields);
        assert!(m.payload.is_empty() && m.key.is_none());
        assert_eq!(m.header_str(headers::CLASS), Some(DELETED_CLASS));
        assert!(m
            .header_str(headers::REASON)
            .unwrap()
            .contains("deleted or trimmed"));
        assert!(
            m.headers.iter().all(|h| headers::is_context(&h.name)),
            "only the context: {:?}",
            m.headers
        );
        origins.push(source_from_headers(&m.headers).unwrap());
    }
    let expected: Vec<Coordinates> = [&own[0], &ids[0]]
        .iter()
        .map(|id| Coordinates::RedisStream {
            stream: names.stream.clone(),
            id: (*id).clone(),
        })
        .collect();
    assert_eq!(origins, expected, "the own one first, with the entry ids");
    assert!(
        redis.pending(&names.stream, &names.group).await.is_empty(),
        "nothing deleted stays pending"
    );
    source.stop().await;
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn stats_report_lag_pending_and_what_is_held_per_stream() {
    let (redis, names) = setup("stats", 5).await;
    let mut source = source(&names.config(&support::url(), "me"), 2).await;
    let stats = source.stats();
    let first = recv(&mut source, DEADLINE).await;
    let read = wait_until("two entries read", DEADLINE, || async {
        let all = stats.read().await;
        (all[0].in_flight == 2).then_some(all)
    })
    .await;
    assert_eq!(read.len(), 1);
    let s = &read[0];
    assert_eq!(
        (s.source.as_str(), s.partition.as_str()),
        (names.stream.as_str(), "")
    );
    assert_eq!(s.lag, Some(3), "three entries the group has not read");
    assert_eq!(s.pending, Some(2), "two pending on this consumer");
    assert!(s.paused, "at max_in_flight, reading waits");
    assert!(!s.stalled);
    ack(first).await;
    for _ in 0..4 {
        let d = recv(&mut source, DEADLINE).await;
        ack(d).await;
    }
    let done = wait_until("everything settled", DEADLINE, || async {
        let all = stats.read().await;
        (all[0].in_flight == 0).then_some(all)
    })
    .await;
    assert_eq!((done[0].lag, done[0].pending), (Some(0), Some(0)));
    assert!(!done[0].paused);
    source.stop().await;
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn a_requeue_keeps_the_count_a_drop_adds_one_and_a_stop_gives_back_what_was_not_handed_out() {
    let (redis, names) = setup("counts", 4).await;
    let config = names.config(&support::url(), "me");
    let mut source = source(&config, 4).await;
    let first = recv(&mut source, DEADLINE).await;
    assert_eq!(
        (payload(&first), first.message.deliveries),
        ("e-0".into(), Some(1))
    );
    if let Err(e) = first.acker.settle(Settlement::Requeue).await {
        panic!("requeue: {}", e.error);
    }
    // Three more were read with it; the requeued one comes after them.
    let mut later = Vec::new();
    for _ in 0..4 {
        later.push(recv(&mut source, DEADLINE).await);
    }
    let requeued = later.pop().unwrap();
    assert_eq!(payload(&requeued), "e-0");
    assert_eq!(
        requeued.message.deliveries,
        Some(1),
        "a requeue spends nothing"
    );
    assert!(requeued.message.redelivered);
    drop(requeued);
    let dropped = recv(&mut source, DEADLINE).await;
    assert_eq!(payload(&dropped), "e-0");
    assert_eq!(dropped.message.deliveries, Some(2), "a drop counts");
    ack(dropped).await;
    for d in later.drain(1..) {
        ack(d).await;
    }
    // e-1 is still in hand; stop, then hand it back as a stopped sidecar does.
    let held = later.pop().unwrap();
    assert_eq!(payload(&held), "e-1");
    redis.add(&names.stream, &[(b"payload", b"e-4")]).await;
    // Give the reader the time to read e-4 ahead.
    wait_until("e-4 read ahead", DEADLINE, || async {
        redis.pending(&names.stream, &names.group).await.len() == 2
    })
    .await;
    source.stop().await;
    if let Err(e) = held.acker.settle(Settlement::Requeue).await {
        panic!("requeue after stop: {}", e.error);
    }
    let pending = redis.pending(&names.stream, &names.group).await;
    assert_eq!(
        pending.len(),
        2,
        "both stay pending for the next consumer: {pending:?}"
    );
    assert!(
        pending.iter().all(|(_, _, n)| *n == 0),
        "their counts set back: {pending:?}"
    );
    let mut next = RedisStreams::connect(&config, &context(4)).await.unwrap();
    let mut again = Vec::new();
    for _ in 0..2 {
        let d = recv(&mut next, DEADLINE).await;
        again.push((payload(&d), d.message.deliveries));
        ack(d).await;
    }
    again.sort();
    assert_eq!(
        again,
        [("e-1".to_owned(), Some(1)), ("e-4".to_owned(), Some(1))],
        "counted once over both runs"
    );
    next.stop().await;
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn several_streams_are_read_together_and_each_dead_letters_into_its_own_stream() {
    let redis = Redis::connect().await;
    let a = Names::new("multi-a");
    let b = Names::new("multi-b");
    let config = RedisStreamsConfig {
        consumer: Some("me".into()),
        block: Duration::from_millis(100),
        ..RedisStreamsConfig::new(
            support::url(),
            [a.stream.clone(), b.stream.clone()],
            a.group.clone(),
        )
    };
    redis.add(&a.stream, &[(b"payload", b"from a")]).await;
    redis.add(&b.stream, &[(b"payload", b"from b")]).await;
    // Room for one at a time: the streams take turns.
    let mut source = source(&config, 1).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = recv(&mut source, DEADLINE).await;
        got.push(payload(&d));
        let context = outrigger_testkit::dead_letter();
        if let Err(e) = d.acker.settle(Settlement::dead_letter(context)).await {
            panic!("dead letter: {}", e.error);
        }
    }
    got.sort();
    assert_eq!(got, ["from a", "from b"]);
    for (names, expected) in [(&a, "from a"), (&b, "from b")] {
        let dead = redis.range(&names.dead_letters).await;
        assert_eq!(dead.len(), 1, "{}", names.dead_letters);
        let m = support::to_message(&names.dead_letters, &dead[0].0, &dead[0].1);
        assert_eq!(m.payload, expected);
    }
    source.stop().await;
    a.clean_up(&redis).await;
    b.clean_up(&redis).await;
}

#[tokio::test]
async fn a_missing_group_or_a_dead_letter_key_of_another_type_is_refused_at_connect() {
    let redis = Redis::connect().await;
    let names = Names::new("refused");
    let config = RedisStreamsConfig {
        create: false,
        ..names.config(&support::url(), "me")
    };
    let refused = RedisStreams::connect(&config, &context(8))
        .await
        .unwrap_err();
    assert!(!refused.is_retryable(), "{refused}");
    assert!(refused.to_string().contains("does not exist"), "{refused}");
    redis.create_group(&names.stream, "another-group").await;
    let refused = RedisStreams::connect(&config, &context(8))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(&format!("has no consumer group {}", names.group)),
        "{refused}"
    );
    let mut cmd = redis::cmd("SET");
    cmd.arg(&names.dead_letters).arg("x");
    let _: redis::Value = redis.run(&cmd).await;
    let refused = RedisStreams::connect(&names.config(&support::url(), "me"), &context(8))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("holds a string, not a stream"),
        "{refused}"
    );
    let unreachable =
        RedisStreams::connect(&names.config("redis://127.0.0.1:1", "me"), &context(8))
            .await
            .unwrap_err();
    assert!(unreachable.is_retryable(), "{unreachable}");
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn an_entry_deleted_while_it_is_delivered_is_still_dead_lettered() {
    let (redis, names) = setup("deleted-in-hand", 1).await;
    let config = RedisStreamsConfig {
        claim_idle: Duration::from_secs(1),
        ..names.config(&support::url(), "me")
    };
    let mut source = source(&config, 8).await;
    let held = recv(&mut source, DEADLINE).await;
    let mut cmd = redis::cmd("XDEL");
    cmd.arg(&names.stream).arg(id(&held));
    let _: i64 = redis.run(&cmd).await;
    // The keeper's next refresh finds it gone from the stream, and Redis drops it from the
    // pending list.
    wait_until("the entry left the pending list", DEADLINE, || async {
        redis.pending(&names.stream, &names.group).await.is_empty()
    })
    .await;
    let context = outrigger_testkit::dead_letter();
    if let Err(e) = held.acker.settle(Settlement::dead_letter(context)).await {
        panic!("dead letter: {}", e.error);
    }
    let dead = redis.range(&names.dead_letters).await;
    assert_eq!(dead.len(), 1, "written from the fields the source held");
    let m = support::to_message(&names.dead_letters, &dead[0].0, &dead[0].1);
    assert_eq!(m.payload, "e-0");
    assert_eq!(
        m.header_str(headers::REASON),
        Some(outrigger_testkit::dead_letter().reason.as_str())
    );
    source.stop().await;
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn a_stream_deleted_under_the_reader_gets_its_group_back_or_ends_the_source() {
    let (redis, names) = setup("recreated", 0).await;
    let mut first = source(&names.config(&support::url(), "me"), 8).await;
    let health = first.health();
    wait_until("connected", DEADLINE, || {
        let health = health.clone();
        async move { health.is_up() }
    })
    .await;
    redis.del(&[&names.stream]).await;
    redis.add(&names.stream, &[(b"payload", b"after")]).await;
    let d = recv(&mut first, DEADLINE).await;
    assert_eq!(
        payload(&d),
        "after",
        "the group was created again, at the start"
    );
    ack(d).await;
    first.stop().await;

    let config = RedisStreamsConfig {
        create: false,
        ..names.config(&support::url(), "me")
    };
    let mut source = source(&config, 8).await;
    redis.del(&[&names.stream]).await;
    let ended = tokio::time::timeout(DEADLINE, source.recv())
        .await
        .expect("recv reports it");
    let error = ended.expect_err("no group, and none may be created");
    assert!(!error.is_retryable(), "{error}");
    assert!(
        error.to_string().contains("has no consumer group"),
        "{error}"
    );
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn a_dead_peers_entries_are_claimed_page_by_page_through_the_cursor() {
    // Seven entries on the dead peer, room for two at a time: XAUTOCLAIM asks for two per
    // call, and only its cursor leads to the rest.
    let (redis, names) = setup("pages", 7).await;
    read_as(&redis, &names, "dead-peer", 7).await;
    let config = RedisStreamsConfig {
        claim_idle: Duration::from_secs(1),
        ..names.config(&support::url(), "survivor")
    };
    let mut source = source(&config, 2).await;
    let mut got = Vec::new();
    for _ in 0..7 {
        let d = recv(&mut source, DEADLINE).await;
        assert_eq!(d.message.deliveries, Some(2), "taken over from the peer");
        got.push(payload(&d));
        ack(d).await;
    }
    got.sort();
    let want: Vec<String> = (0..7).map(|i| format!("e-{i}")).collect();
    assert_eq!(got, want, "every page, each entry once");
    assert!(redis.pending(&names.stream, &names.group).await.is_empty());
    source.stop().await;
    names.clean_up(&redis).await;
}

#[tokio::test]
async fn a_routes_dead_letter_stream_is_checked_and_declared_at_connect() {
    let redis = Redis::connect().await;
    let names = Names::new("route-dlq");
    let route_stream = format!("{}.refunds.dlq", names.stream);
    let routed = |declare: bool| SourceContext {
        route_dead_letters: vec![outrigger_core::RouteDeadLetter {
            route: "refunds".into(),
            destination: route_stream.clone(),
            path: outrigger_core::KeyPath::parse("routes")
                .index(0)
                .key("dead_letter")
                .key("destination"),
        }],
        declare_dead_letters: declare,
        ..context(8)
    };
    let config = names.config(&support::url(), "me");
    // The source's own dead-letter stream exists; the route's does not.
    redis.create_empty(&names.dead_letters).await;
    let refused = RedisStreams::connect(&config, &routed(false))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains(&format!(
            "the dead-letter stream {route_stream} does not exist"
        )),
        "{refused}"
    );
    let mut source = RedisStreams::connect(&config, &routed(true)).await.unwrap();
    let mut cmd = redis::cmd("TYPE");
    cmd.arg(&route_stream);
    let kind: String = redis.run(&cmd).await;
    assert_eq!(kind, "stream", "created empty, for `outrigger dlq` to find");
    source.stop().await;
    redis.del(&[&route_stream]).await;
    names.clean_up(&redis).await;
}
