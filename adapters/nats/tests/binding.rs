//! A durable consumer the operator created, bound with `create_consumer = false`: used as it
//! is (its own ack_wait, max_ack_pending, filter subject and request limits), or refused at
//! connect when the sidecar cannot work with it. Against the machine's nats-server.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, push, AckPolicy};
use outrigger_core::{Acker, Limits, Settlement, Source, SourceContext, SourceError};
use outrigger_nats::{NatsConfig, NatsSettings, NatsSource};
use outrigger_testkit::nats::{self, Nats, Streams, DEADLINE};
use outrigger_testkit::source::{assert_quiet, recv};

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

async fn connect(config: &NatsConfig, max_in_flight: usize) -> Result<NatsSource, SourceError> {
    NatsSource::connect(NatsSettings::from_config(config, &context(max_in_flight))).await
}

/// The config that binds `streams`' consumer and never creates one, its own settings far from
/// the consumer's so that a test sees which ones are used.
fn bind(streams: &Streams) -> NatsConfig {
    NatsConfig {
        create_consumer: false,
        ack_wait: Duration::from_secs(60),
        ..streams.config(&nats::url())
    }
}

/// The operator's consumer of `streams`: explicit acks, no delivery limit, and `config`'s
/// other settings.
async fn create(streams: &Streams, config: pull::Config) {
    streams
        .js
        .get_stream(&streams.stream)
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some(streams.consumer.clone()),
            max_deliver: -1,
            ..config
        })
        .await
        .unwrap_or_else(|e| panic!("creating the operator's consumer: {e}"));
}

/// ack_wait 2s, max_ack_pending 2, a filter on `<stream>.in.orders`: the sidecar (60s and
/// 8 in flight of its own, no filter) pulls no more than 2 unacked, only orders, and keeps a
/// message held for twice the consumer's ack_wait with in-progress paced by it.
#[tokio::test]
async fn a_consumer_the_operator_created_is_used_as_it_is() {
    let s = Streams::new("bound").await;
    let orders = format!("{}.orders", s.subject);
    create(
        &s,
        pull::Config {
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(2),
            max_ack_pending: 2,
            filter_subject: orders.clone(),
            ..Default::default()
        },
    )
    .await;
    for i in 0..3 {
        Nats::publish(&s, &orders, &[], format!("order-{i}")).await;
    }
    Nats::publish(&s, &format!("{}.other", s.subject), &[], "not an order").await;

    let mut source = connect(&bind(&s), 8).await.expect("binds the consumer");
    let first = recv(&mut source, DEADLINE).await;
    let second = recv(&mut source, DEADLINE).await;
    // Held for 4s, twice the consumer's ack_wait: in-progress at a third of the sidecar's 60s
    // would come too late, and JetStream would hand both out again.
    assert_quiet(
        &mut source,
        Duration::from_secs(4),
        "max_ack_pending 2: nothing more while two are unacked, and nothing handed out again",
    )
    .await;
    let info = s.consumer_info(&s.stream, &s.consumer).await;
    assert_eq!(info.num_redelivered, 0, "kept by in-progress");
    assert_eq!(
        (
            info.config.ack_wait,
            info.config.max_ack_pending,
            info.config.filter_subject.as_str()
        ),
        (Duration::from_secs(2), 2, orders.as_str()),
        "the consumer is as the operator made it"
    );
    first.acker.settle(Settlement::Ack).await.unwrap();
    second.acker.settle(Settlement::Ack).await.unwrap();
    let third = recv(&mut source, DEADLINE).await;
    assert_eq!(&third.message.payload[..], b"order-2");
    third.acker.settle(Settlement::Ack).await.unwrap();
    assert_quiet(
        &mut source,
        Duration::from_secs(1),
        "the filter keeps others out",
    )
    .await;
    s.wait_all_acked().await;
    source.stop().await;
    s.clean_up().await;
}

/// A consumer that takes one message per pull request and requests of at most 1s: the
/// sidecar's pulls (64 messages, 5s, heartbeats every second) would be refused every time.
#[tokio::test]
async fn a_bound_consumers_request_limits_are_kept() {
    let s = Streams::new("bound-limits").await;
    create(
        &s,
        pull::Config {
            ack_policy: AckPolicy::Explicit,
            max_batch: 1,
            max_expires: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    for i in 0..3 {
        s.publish(&[], format!("m-{i}")).await;
    }
    let mut source = connect(&bind(&s), 8).await.expect("binds the consumer");
    for i in 0..3 {
        let d = recv(&mut source, DEADLINE).await;
        assert_eq!(d.message.payload, format!("m-{i}"));
        d.acker.settle(Settlement::Ack).await.unwrap();
    }
    // Idle past several of the short requests: the next message still comes.
    assert_quiet(&mut source, Duration::from_millis(2500), "nothing more yet").await;
    s.publish(&[], "later").await;
    let d = recv(&mut source, DEADLINE).await;
    assert_eq!(&d.message.payload[..], b"later");
    d.acker.settle(Settlement::Ack).await.unwrap();
    s.wait_all_acked().await;
    source.stop().await;
    s.clean_up().await;
}

fn rejected(result: Result<NatsSource, SourceError>, why: &str) -> String {
    match result {
        Err(SourceError::Rejected(text)) => text,
        Err(other) => panic!("{why}: refused, but as {other:?}"),
        Ok(_) => panic!("{why}: bound"),
    }
}

/// Missing, push, acks none or all, headers only, another filter than the one asked for: each
/// refused at connect with what to change, and the consumer left as it was.
#[tokio::test]
async fn a_consumer_the_sidecar_cannot_work_with_is_refused() {
    let s = Streams::new("bound-refused").await;
    let text = rejected(connect(&bind(&s), 4).await, "a missing consumer");
    assert!(
        text.contains("does not exist") && text.contains("create_consumer"),
        "{text}"
    );
    assert!(
        s.js.get_stream(&s.stream)
            .await
            .unwrap()
            .consumer_info(&s.consumer)
            .await
            .is_err(),
        "create_consumer = false creates none"
    );

    let js = s.js.get_stream(&s.stream).await.unwrap();
    let named = |name: &str| NatsConfig {
        consumer: name.to_owned(),
        ..bind(&s)
    };
    js.create_consumer(push::Config {
        durable_name: Some("pushed".into()),
        deliver_subject: format!("{}.push", s.stream),
        ack_policy: AckPolicy::Explicit,
        ..Default::default()
    })
    .await
    .unwrap();
    let text = rejected(connect(&named("pushed"), 4).await, "a push consumer");
    assert!(text.contains("push consumer"), "{text}");

    for (name, policy, says) in [
        ("acks-none", AckPolicy::None, "ack_policy none"),
        ("acks-all", AckPolicy::All, "ack_policy all"),
    ] {
        js.create_consumer(pull::Config {
            durable_name: Some(name.into()),
            ack_policy: policy,
            ..Default::default()
        })
        .await
        .unwrap();
        let text = rejected(connect(&named(name), 4).await, name);
        assert!(
            text.contains(says) && text.contains("explicit"),
            "{name}: {text}"
        );
        let info = s.consumer_info(&s.stream, name).await;
        assert_eq!(info.config.ack_policy, policy, "{name}: left as it was");
    }

    js.create_consumer(pull::Config {
        durable_name: Some("headers-only".into()),
        ack_policy: AckPolicy::Explicit,
        headers_only: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let text = rejected(connect(&named("headers-only"), 4).await, "headers only");
    assert!(text.contains("headers_only"), "{text}");

    js.create_consumer(pull::Config {
        durable_name: Some("filtered".into()),
        ack_policy: AckPolicy::Explicit,
        filter_subject: format!("{}.orders", s.subject),
        ..Default::default()
    })
    .await
    .unwrap();
    let other = NatsConfig {
        filter_subject: Some(format!("{}.refunds", s.subject)),
        ..named("filtered")
    };
    let text = rejected(connect(&other, 4).await, "another filter");
    assert!(
        text.contains("filter") && text.contains(".orders") && text.contains(".refunds"),
        "{text}"
    );
    // The same filter, or none asked for, binds it.
    let same = NatsConfig {
        filter_subject: Some(format!("{}.orders", s.subject)),
        ..named("filtered")
    };
    connect(&same, 4).await.unwrap().stop().await;
    connect(&named("filtered"), 4).await.unwrap().stop().await;
    s.clean_up().await;
}
