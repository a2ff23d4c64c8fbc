//! The pull loop against the machine's nats-server: a pull request waits at the server for 5s
//! with a heartbeat every second; one that expires is asked again, and so is one the server
//! goes silent on for 3s, so an idle sidecar still gets the next message at once.

use std::time::{Duration, Instant};

use outrigger_core::{Acker, Settlement, Source, SourceContext};
use outrigger_nats::{NatsConfig, NatsSettings, NatsSource};
use outrigger_testkit::nats::{self, Streams, DEADLINE};
use outrigger_testkit::source::{assert_quiet, recv};
use outrigger_testkit::{wait_until, within, Proxy};

/// How long one pull request waits at the server (the adapter's own, not configurable).
const EXPIRES: Duration = Duration::from_secs(5);
/// What "at once" is: far below a request's expiry.
const PROMPTLY: Duration = Duration::from_secs(1);

async fn connect(config: &NatsConfig) -> NatsSource {
    NatsSource::connect(NatsSettings::from_config(config, &SourceContext::default()))
        .await
        .unwrap_or_else(|e| panic!("connecting: {e}"))
}

/// The pull requests the server holds for the consumer now.
async fn waiting(s: &Streams) -> usize {
    s.consumer_info(&s.stream, &s.consumer).await.num_waiting
}

/// Idle for longer than a request lasts: a request of the sidecar waits all along, and a
/// message published then comes at once.
#[tokio::test]
async fn an_idle_consumer_asks_again_after_each_expiry() {
    let s = Streams::new("pull-expiry").await;
    let mut source = connect(&s.config(&nats::url())).await;
    wait_until("a pull request waits", DEADLINE, || async {
        waiting(&s).await == 1
    })
    .await;
    assert_quiet(
        &mut source,
        EXPIRES + Duration::from_secs(1),
        "nothing to consume",
    )
    .await;
    assert_eq!(
        waiting(&s).await,
        1,
        "the first request expired and another one waits"
    );
    s.publish(&[], "after the expiry").await;
    let d = within(
        "the message, at once",
        PROMPTLY,
        recv(&mut source, DEADLINE),
    )
    .await;
    assert_eq!(&d.message.payload[..], b"after the expiry");
    d.acker.settle(Settlement::Ack).await.unwrap();
    s.wait_all_acked().await;
    source.stop().await;
    s.clean_up().await;
}

/// The server's side goes silent (a proxy holds back what it sends) while the sidecar's
/// traffic still reaches it: after three missed heartbeats the sidecar asks again, so a
/// request of its own still waits once every one sent before the silence has expired; a
/// message published meanwhile comes as soon as the server is heard again, on the same
/// connection.
#[tokio::test]
async fn a_request_the_server_goes_silent_on_is_asked_again() {
    let s = Streams::new("pull-silent").await;
    let proxy = Proxy::start(nats::address().await).await;
    let mut source = connect(&s.config(&format!("nats://{}", proxy.addr))).await;
    let health = source.health();
    wait_until("a pull request waits", DEADLINE, || async {
        waiting(&s).await == 1
    })
    .await;
    proxy.stall();
    let stalled = Instant::now();
    // Without asking again, the server holds nothing once the request sent before the stall
    // expired (at most EXPIRES after it).
    wait_until(
        "a request sent during the silence, once every earlier one expired",
        DEADLINE,
        || async {
            stalled.elapsed() > EXPIRES + Duration::from_millis(500) && waiting(&s).await >= 1
        },
    )
    .await;
    s.publish(&[], "during the silence").await;
    assert!(
        health.is_up(),
        "still connected: no reconnect hides the silence"
    );
    proxy.resume();
    let d = within(
        "the message, at once",
        PROMPTLY * 2,
        recv(&mut source, DEADLINE),
    )
    .await;
    assert_eq!(&d.message.payload[..], b"during the silence");
    d.acker.settle(Settlement::Ack).await.unwrap();
    s.publish(&[], "after").await;
    let d = within(
        "the next one, at once",
        PROMPTLY,
        recv(&mut source, DEADLINE),
    )
    .await;
    assert_eq!(&d.message.payload[..], b"after");
    d.acker.settle(Settlement::Ack).await.unwrap();
    s.wait_all_acked().await;
    let info = s.consumer_info(&s.stream, &s.consumer).await;
    assert_eq!(
        info.num_redelivered, 0,
        "nothing was lost and handed out again"
    );
    source.stop().await;
    s.clean_up().await;
}
