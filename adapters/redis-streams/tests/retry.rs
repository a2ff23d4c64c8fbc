//! Retry mode `queue` on Redis Streams, against the machine's Redis: the copy and the
//! acknowledgement of its entry are one step, a copy waits in its retry stream until it is due
//! (without taking a permit), and comes back as its origin, after a crash too.

mod support;

use std::time::{Duration, Instant, SystemTime};

use outrigger_core::dead_letter::source_from_headers;
use outrigger_core::retry::headers::{self, is_retry};
use outrigger_core::{
    Acker, Broker, Coordinates, Delivery, Limits, Settlement, Source, SourceContext, SourceError,
    Trail,
};
use outrigger_redis_streams::{
    message_id, RedisStreams, RedisStreamsAcker, RedisStreamsConfig, RedisStreamsSettings,
    RedisStreamsSource,
};
use outrigger_testkit::source::{assert_quiet, dead_letter, recv};
use outrigger_testkit::Proxy;
use support::{Names, Redis, DEADLINE};

const TIER: Duration = Duration::from_millis(1500);

fn context(max_in_flight: usize) -> SourceContext {
    SourceContext {
        retry_tiers: vec![TIER],
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

fn retry_stream(names: &Names) -> String {
    RedisStreamsSettings::retry_stream_for(&names.stream, 0)
}

/// The trail of a first failure of `d`.
fn trail(d: &Delivery<RedisStreamsAcker>) -> Trail {
    Trail {
        origin: d.message.coordinates.clone(),
        hop: 1,
        attempts: 1,
        tier: 0,
        first_seen: SystemTime::now(),
        first_failure: Some(SystemTime::now()),
        due: None,
    }
}

async fn setup(prefix: &str) -> (Redis, Names, String) {
    let redis = Redis::connect().await;
    let names = Names::new(prefix);
    redis.create_group(&names.stream, &names.group).await;
    let id = redis
        .add(
            &names.stream,
            &[
                (b"trace", &[0xff, 0x00]),
                (b"payload", b"p-1"),
                (b"key", b"K"),
            ],
        )
        .await;
    (redis, names, id)
}

async fn clean_up(redis: &Redis, names: &Names) {
    names.clean_up(redis).await;
    redis.del(&[&retry_stream(names)]).await;
}

#[tokio::test]
async fn a_copy_waits_until_due_without_a_permit_and_comes_back_as_its_origin() {
    let (redis, names, id) = setup("rs-retry-due").await;
    let mut source = source(&names.config(&support::url(), "c1"), 1).await;
    let d = recv(&mut source, DEADLINE).await;
    let origin = d.message.coordinates.clone();
    let written = Instant::now();
    let t = trail(&d);
    d.acker.settle(Settlement::Retry(t)).await.unwrap();
    assert!(
        redis.pending(&names.stream, &names.group).await.is_empty(),
        "the original is acknowledged"
    );
    let copies = redis.range(&retry_stream(&names)).await;
    assert_eq!(copies.len(), 1, "one copy");
    let fields = &copies[0].1;
    let names_of: Vec<&[u8]> = fields.iter().map(|(n, _)| n.as_ref()).collect();
    assert_eq!(
        names_of[..3],
        [&b"trace"[..], b"payload", b"key"],
        "the entry's fields first, in order"
    );
    assert_eq!(fields[0].1.as_ref(), &[0xff, 0x00], "byte for byte");
    assert!(names_of[3..]
        .iter()
        .all(|n| is_retry(std::str::from_utf8(n).unwrap())));
    assert!(names_of.contains(&headers::DUE.as_bytes()));

    // The copy is read and waits: pending on this consumer, handed to no one, and it takes no
    // permit (the in-flight limit is 1).
    let second = redis.add(&names.stream, &[(b"payload", b"p-2")]).await;
    let d2 = recv(&mut source, DEADLINE).await;
    assert_eq!(
        d2.message.coordinates,
        Coordinates::RedisStream {
            stream: names.stream.clone(),
            id: second
        },
        "a new entry flows while the copy waits"
    );
    d2.acker.settle(Settlement::Ack).await.unwrap();
    let pending = redis.pending(&retry_stream(&names), &names.group).await;
    assert_eq!(pending.len(), 1, "the waiting copy is pending: {pending:?}");
    assert_eq!(pending[0].1, "c1");
    let stats = source.stats().read().await;
    let waiting = stats
        .iter()
        .find(|p| p.source == retry_stream(&names))
        .unwrap_or_else(|| panic!("no stats for the retry stream: {stats:?}"));
    assert_eq!(
        waiting.pending,
        Some(1),
        "the waiting copy counts as pending"
    );
    let before_due = TIER.saturating_sub(written.elapsed() + Duration::from_millis(300));
    assert_quiet(&mut source, before_due, "the copy is not due yet").await;

    let copy = recv(&mut source, DEADLINE).await;
    assert!(
        written.elapsed() >= TIER - Duration::from_millis(50),
        "handed out once due, not before: {:?}",
        written.elapsed()
    );
    let m = &copy.message;
    assert_eq!(m.coordinates, origin, "the copy is its origin again");
    assert_eq!(
        m.message_id.as_deref(),
        Some(&*message_id(&names.stream, &id))
    );
    assert_eq!(m.payload.as_ref(), b"p-1");
    assert_eq!(m.key.as_deref(), Some(&b"K"[..]));
    assert_eq!(m.trail.as_ref().map(|t| (t.hop, t.attempts)), Some((1, 1)));
    assert_eq!(m.deliveries, Some(1));
    assert!(
        m.headers.iter().all(|h| !is_retry(&h.name)),
        "{:?}",
        m.headers
    );
    copy.acker.settle(Settlement::Ack).await.unwrap();
    assert!(redis
        .pending(&retry_stream(&names), &names.group)
        .await
        .is_empty());
    source.stop().await;
    clean_up(&redis, &names).await;
}

#[tokio::test]
async fn a_failed_copy_write_leaves_the_entry_pending_and_writes_nothing() {
    let (redis, names, id) = setup("rs-retry-fail").await;
    let mut source = source(&names.config(&support::url(), "c1"), 4).await;
    let d = recv(&mut source, DEADLINE).await;
    // The retry stream becomes a string: the script's XADD fails.
    redis.del(&[&retry_stream(&names)]).await;
    let mut set = redis::cmd("SET");
    set.arg(retry_stream(&names)).arg("not a stream");
    let _: String = redis.run(&set).await;
    let t = trail(&d);
    let refused = d.acker.settle(Settlement::Retry(t)).await.unwrap_err();
    assert!(
        matches!(refused.error, SourceError::Publish(_)),
        "{}",
        refused.error
    );
    let pending = redis.pending(&names.stream, &names.group).await;
    assert_eq!(
        pending.iter().map(|p| &p.0).collect::<Vec<_>>(),
        [&id],
        "the entry stays pending"
    );
    let mut kind = redis::cmd("TYPE");
    kind.arg(retry_stream(&names));
    let kind: String = redis.run(&kind).await;
    assert_eq!(kind, "string", "nothing written");
    drop(refused);
    source.stop().await;
    clean_up(&redis, &names).await;
}

#[tokio::test]
async fn a_killed_sidecars_waiting_copy_comes_back_once_due() {
    let (redis, names, id) = setup("rs-retry-kill").await;
    let config = names.config(&support::url(), "c1");
    let mut first = source(&config, 4).await;
    let d = recv(&mut first, DEADLINE).await;
    let written = Instant::now();
    let t = trail(&d);
    d.acker.settle(Settlement::Retry(t)).await.unwrap();
    // The copy is read and waits; then the sidecar dies without a word.
    wait_pending(&redis, &names).await;
    drop(first);

    let mut second = source(&config, 4).await;
    let copy = recv(&mut second, DEADLINE).await;
    assert!(written.elapsed() >= TIER - Duration::from_millis(50));
    assert_eq!(
        copy.message.message_id.as_deref(),
        Some(&*message_id(&names.stream, &id))
    );
    assert_eq!(
        copy.message.deliveries,
        Some(1),
        "reads while it waited spent no attempt"
    );
    let pending = redis.pending(&retry_stream(&names), &names.group).await;
    assert_eq!(pending[0].2, 1, "handed out once, as Redis counts it");
    copy.acker.settle(Settlement::Ack).await.unwrap();
    assert_quiet(&mut second, Duration::from_millis(500), "one copy").await;
    second.stop().await;
    clean_up(&redis, &names).await;
}

#[tokio::test]
async fn a_waiting_copy_is_kept_from_peers() {
    let (redis, names, _) = setup("rs-retry-keep").await;
    let config = RedisStreamsConfig {
        claim_idle: Duration::from_secs(1),
        ..names.config(&support::url(), "c1")
    };
    let mut source = source(&config, 4).await;
    let d = recv(&mut source, DEADLINE).await;
    let t = trail(&d);
    d.acker.settle(Settlement::Retry(t)).await.unwrap();
    wait_pending(&redis, &names).await;
    // Past claim_idle while it waits: the keeper refreshed it, a peer finds nothing idle.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut claim = redis::cmd("XAUTOCLAIM");
    claim
        .arg(retry_stream(&names))
        .arg(&names.group)
        .arg("peer")
        .arg(1000)
        .arg("0-0")
        .arg("JUSTID");
    let claimed: redis::Value = redis.run(&claim).await;
    let redis::Value::Array(parts) = claimed else {
        panic!("{claimed:?}")
    };
    assert_eq!(
        parts[1],
        redis::Value::Array(vec![]),
        "the peer took the waiting copy"
    );
    let copy = recv(&mut source, DEADLINE).await;
    copy.acker.settle(Settlement::Ack).await.unwrap();
    source.stop().await;
    clean_up(&redis, &names).await;
}

#[tokio::test]
async fn a_deleted_retry_stream_gets_its_group_back_even_without_create() {
    let (redis, names, id) = setup("rs-retry-deleted").await;
    let config = RedisStreamsConfig {
        create: false,
        ..names.config(&support::url(), "c1")
    };
    let mut source = source(&config, 4).await;
    let d = recv(&mut source, DEADLINE).await;
    redis.del(&[&retry_stream(&names)]).await;
    let t = trail(&d);
    d.acker.settle(Settlement::Retry(t)).await.unwrap();
    let copy = recv(&mut source, DEADLINE).await;
    assert_eq!(
        copy.message.message_id.as_deref(),
        Some(&*message_id(&names.stream, &id))
    );
    copy.acker.settle(Settlement::Ack).await.unwrap();
    source.stop().await;
    clean_up(&redis, &names).await;
}

#[tokio::test]
async fn a_reconnect_while_a_copy_waits_spends_none_of_its_attempts() {
    let (redis, names, _) = setup("rs-retry-reconnect").await;
    let proxy = Proxy::start(support::address()).await;
    let through = names.config(&format!("redis://{}", proxy.addr), "c1");
    let mut first = source(&through, 4).await;
    let d = recv(&mut first, DEADLINE).await;
    let t = trail(&d);
    d.acker.settle(Settlement::Retry(t)).await.unwrap();
    wait_pending(&redis, &names).await;
    // The reader reconnects and reads its pending list again, the waiting copy in it.
    let cut = Instant::now();
    proxy.cut();
    // Read again after the cut (its idle time started over since), its count set back.
    let until = Instant::now() + DEADLINE;
    loop {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(retry_stream(&names))
            .arg(&names.group)
            .arg("-")
            .arg("+")
            .arg(10);
        let rows: Vec<(String, String, u64, u64)> = redis.run(&cmd).await;
        let (_, _, idle, count) = &rows[0];
        // Idle is whole milliseconds, measured before the reply came: a margin.
        if Duration::from_millis(idle + 5) < cut.elapsed() && *count == 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the pending read after the reconnect counted the waiting copy: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    let mut second = source(&names.config(&support::url(), "c1"), 4).await;
    let copy = recv(&mut second, DEADLINE).await;
    assert_eq!(copy.message.deliveries, Some(1), "no attempt spent");
    copy.acker.settle(Settlement::Ack).await.unwrap();
    second.stop().await;
    clean_up(&redis, &names).await;
}

#[tokio::test]
async fn a_copy_dead_letters_as_its_origin_into_the_source_streams_dead_letters() {
    let (redis, names, _) = setup("rs-retry-dlq").await;
    let mut source = source(&names.config(&support::url(), "c1"), 4).await;
    let d = recv(&mut source, DEADLINE).await;
    let origin = d.message.coordinates.clone();
    let t = trail(&d);
    d.acker.settle(Settlement::Retry(t)).await.unwrap();
    let copy = recv(&mut source, DEADLINE).await;
    copy.acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap();
    let records = redis.range(&names.dead_letters).await;
    assert_eq!(
        records.len(),
        1,
        "one dead letter, in {}",
        names.dead_letters
    );
    let (record_id, fields) = &records[0];
    let m = support::to_message(&names.dead_letters, record_id, fields);
    assert_eq!(
        source_from_headers(&m.headers),
        Some(origin),
        "named after its origin"
    );
    assert_eq!(
        fields[0].0.as_ref(),
        b"trace",
        "the entry's fields first, in order"
    );
    assert!(
        fields
            .iter()
            .all(|(n, _)| !is_retry(std::str::from_utf8(n).unwrap())),
        "no trail on the dead letter"
    );
    assert!(redis
        .pending(&retry_stream(&names), &names.group)
        .await
        .is_empty());
    source.stop().await;
    clean_up(&redis, &names).await;
}

#[test]
fn a_retry_stream_may_not_be_a_source_or_dead_letter_stream() {
    let config =
        RedisStreamsConfig::new("redis://127.0.0.1:6379", ["orders", "orders.retry.0"], "g");
    let found: Vec<String> = RedisStreams::validate(&config, &context(4))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("source.redis_streams.streams[0]")
            && found[0].contains("\"orders.retry.0\", which is consumed as a source stream"),
        "{found:#?}"
    );
    let to_dead_letters = SourceContext {
        dead_letter_destination: Some("orders.retry.0".into()),
        ..context(4)
    };
    let single = RedisStreamsConfig::new("redis://127.0.0.1:6379", ["orders"], "g");
    let found: Vec<String> = RedisStreams::validate(&single, &to_dead_letters)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("which is the dead-letter stream \"orders.retry.0\""),
        "{found:#?}"
    );
    assert!(RedisStreams::validate(&single, &context(4)).is_empty());
}

/// Waits until the copy is pending in the retry stream, read by the source and waiting: its
/// count set back to none.
async fn wait_pending(redis: &Redis, names: &Names) {
    let until = Instant::now() + DEADLINE;
    while redis
        .pending(&retry_stream(names), &names.group)
        .await
        .first()
        .is_none_or(|p| p.2 != 0)
    {
        assert!(Instant::now() < until, "the copy was never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
