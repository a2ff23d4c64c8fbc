//! `[[routes]]` through the real binary on RabbitMQ and Redis: each kind of message goes to its
//! own handler under its own budget, routes that deliver nothing drop or dead-letter, the rest
//! takes the top-level policy, and a reload changes the routes for the messages taken after it.

mod support;

use std::time::Duration;

use support::{unique, wait_until, Policy, Rabbit, Reply, Sidecar, TestApp, OUTRIGGER};

const SETTLED: &str = "outrigger_messages_settled_total";
const LIMIT: Duration = Duration::from_secs(60);

/// Publishes a `{}` body with an `idempotency-key` header and these others.
async fn publish(rabbit: &Rabbit, queue: &str, key: &str, headers: &[(&str, &str)]) {
    rabbit.publish_keyed_with(queue, key, headers, b"{}").await;
}

fn keys_of(app: &TestApp) -> Vec<String> {
    let mut keys: Vec<String> = app.hits().into_iter().map(|h| h.key).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_message_takes_its_route_and_the_rest_the_top_level_policy() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("routes");
    rabbit.declare(&queue).await;
    let orders = TestApp::accepting().await;
    // The refunds handler is broken: its route gives up after 2 attempts, not the policy's 5.
    let refunds = TestApp::start(|_, _| Reply::status(500)).await;
    let routes = format!(
        "[[routes]]\nname = \"refunds\"\nmatch = {{ type = \"order.refund*\" }}\n\
         [routes.delivery]\nurl = \"{}\"\n[routes.retry]\nmax_attempts = 2\n\
         [[routes]]\nname = \"noise\"\naction = \"drop\"\nmatch = {{ headers = {{ x-kind = \"heartbeat\" }} }}\n\
         [[routes]]\nname = \"legacy\"\naction = \"dead_letter\"\n\
         match = {{ source = \"{queue}\", type = \"order.v1.*\" }}\n",
        refunds.url()
    );
    let policy = Policy::amqp(&queue, &orders.url(), &unique("ns")).with_toml(&routes);
    let sidecar = Sidecar::start(OUTRIGGER, policy);

    for i in 0..3 {
        publish(
            &rabbit,
            &queue,
            &format!("created-{i}"),
            &[("ce-type", "order.created")],
        )
        .await;
    }
    for i in 0..2 {
        publish(
            &rabbit,
            &queue,
            &format!("refund-{i}"),
            &[("ce-type", "order.refunded")],
        )
        .await;
    }
    for i in 0..4 {
        publish(
            &rabbit,
            &queue,
            &format!("beat-{i}"),
            &[("X-Kind", "heartbeat")],
        )
        .await;
    }
    publish(&rabbit, &queue, "old-0", &[("ce-type", "order.v1.created")]).await;
    publish(&rabbit, &queue, "untyped-0", &[]).await;

    wait_until("every message settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 11.0
    })
    .await;
    assert_eq!(
        keys_of(&orders),
        ["created-0", "created-1", "created-2", "untyped-0"],
        "the top-level policy's app sees what no route takes, once each"
    );
    assert_eq!(
        keys_of(&refunds),
        ["refund-0", "refund-0", "refund-1", "refund-1"],
        "the refunds route's app, with the route's budget of 2 attempts"
    );
    let route = |route: &str, outcome: &str| {
        sidecar.metric(SETTLED, &format!(r#"outcome="{outcome}",route="{route}""#))
    };
    assert_eq!(route("default", "delivered"), 4.0);
    assert_eq!(route("refunds", "dead_lettered"), 2.0);
    assert_eq!(route("noise", "dropped"), 4.0);
    assert_eq!(route("legacy", "dead_lettered"), 1.0);

    let dead = rabbit.drain(&format!("{queue}.dlq")).await;
    let mut by_key: Vec<(String, String, String)> = dead
        .iter()
        .map(|d| {
            (
                d.header("idempotency-key").unwrap_or_default(),
                d.header("outrigger-dlq-class").unwrap_or_default(),
                d.header("outrigger-dlq-attempts").unwrap_or_default(),
            )
        })
        .collect();
    by_key.sort();
    assert_eq!(
        by_key,
        [
            ("old-0".to_owned(), "route".to_owned(), "0".to_owned()),
            ("refund-0".to_owned(), "5xx".to_owned(), "2".to_owned()),
            ("refund-1".to_owned(), "5xx".to_owned(), "2".to_owned()),
        ]
    );
    let legacy = dead
        .iter()
        .find(|d| d.header("idempotency-key").as_deref() == Some("old-0"))
        .unwrap();
    assert!(
        legacy
            .header("outrigger-dlq-reason")
            .unwrap()
            .contains("route \"legacy\""),
        "the dead letter says which route sent it"
    );
    assert_eq!(rabbit.depth(&queue).await, 0, "nothing left behind");
    sidecar.stop();
    rabbit.delete(&format!("{queue}.dlq")).await;
    rabbit.delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_routes_the_messages_taken_after_it() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("routes-reload");
    rabbit.declare(&queue).await;
    let orders = TestApp::accepting().await;
    let refunds = TestApp::accepting().await;
    let policy = Policy::amqp(&queue, &orders.url(), &unique("ns"));
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    publish(&rabbit, &queue, "before", &[("ce-type", "order.refunded")]).await;
    wait_until("the first refund delivered", LIMIT, || async {
        orders.count() == 1
    })
    .await;

    sidecar.rewrite_policy(policy.with_toml(&format!(
        "[[routes]]\nname = \"refunds\"\nmatch = {{ type = \"order.refunded\" }}\n\
         [routes.delivery]\nurl = \"{}\"\n",
        refunds.url()
    )));
    sidecar.hangup();
    wait_until("the reload applied", LIMIT, || async {
        sidecar.metric("outrigger_policy_reloads_total", r#"result="applied""#) == 1.0
    })
    .await;
    publish(&rabbit, &queue, "after", &[("ce-type", "order.refunded")]).await;
    publish(&rabbit, &queue, "created", &[("ce-type", "order.created")]).await;
    wait_until("both settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 3.0
    })
    .await;
    assert_eq!(keys_of(&orders), ["before", "created"]);
    assert_eq!(
        keys_of(&refunds),
        ["after"],
        "the new route takes what comes after"
    );
    assert_eq!(
        sidecar.metric(SETTLED, r#"outcome="delivered",route="refunds""#),
        1.0
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_dead_letters_go_to_its_own_queue_and_the_rest_to_the_policys() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("route-dlq");
    let (dlq, refunds_dlq, legacy_dlq) = (
        format!("{queue}.dlq"),
        format!("{queue}.refunds.dlq"),
        format!("{queue}.legacy.dlq"),
    );
    rabbit.declare(&queue).await;
    // Every message is refused for good: where its dead letter goes is its route's say.
    let app = TestApp::start(|_, _| Reply::status(422).body("no")).await;
    let routes = format!(
        "[[routes]]\nname = \"refunds\"\nmatch = {{ type = \"order.refund*\" }}\n\
         [routes.dead_letter]\ndestination = \"{refunds_dlq}\"\n\
         [[routes]]\nname = \"legacy\"\naction = \"dead_letter\"\nmatch = {{ type = \"order.v1.*\" }}\n\
         [routes.dead_letter]\ndestination = \"{legacy_dlq}\"\n"
    );
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns")).with_toml(&routes);
    // The sidecar declares the route's queues: a dead letter to a missing one is unroutable.
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    publish(
        &rabbit,
        &queue,
        "refund-0",
        &[("ce-type", "order.refunded")],
    )
    .await;
    publish(&rabbit, &queue, "old-0", &[("ce-type", "order.v1.created")]).await;
    publish(
        &rabbit,
        &queue,
        "created-0",
        &[("ce-type", "order.created")],
    )
    .await;

    wait_until("three dead letters", LIMIT, || async {
        rabbit.depth(&dlq).await
            + rabbit.depth(&refunds_dlq).await
            + rabbit.depth(&legacy_dlq).await
            == 3
    })
    .await;
    sidecar.stop();
    let keys = |dead: &[outrigger_testkit::rabbit::Got]| -> Vec<String> {
        dead.iter()
            .map(|m| m.header("idempotency-key").unwrap_or_default())
            .collect()
    };
    let refunds = rabbit.drain(&refunds_dlq).await;
    assert_eq!(keys(&refunds), ["refund-0"]);
    assert_eq!(
        refunds[0].header("outrigger-dlq-status").as_deref(),
        Some("422")
    );
    assert_eq!(
        refunds[0].header("outrigger-dlq-class").as_deref(),
        Some("4xx")
    );
    assert!(refunds[0]
        .header("outrigger-dlq-source")
        .unwrap()
        .starts_with(&format!("amqp:{queue}#")));
    let legacy = rabbit.drain(&legacy_dlq).await;
    assert_eq!(keys(&legacy), ["old-0"]);
    assert_eq!(
        legacy[0].header("outrigger-dlq-class").as_deref(),
        Some("route")
    );
    assert_eq!(keys(&rabbit.drain(&dlq).await), ["created-0"]);
    for q in [&queue, &dlq, &refunds_dlq, &legacy_dlq] {
        rabbit.delete(q).await;
    }
}
