//! `outrigger dlq` and the admin API's `/dlq` routes against real RabbitMQ and Redis: dead
//! letters made by the running sidecar, then listed, resubmitted and purged by an operator.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use serde_json::Value;
use support::{
    app_until_fixed, ids, kill_a_resubmit_halfway, lines_starting, resubmit_100_paced, set, unique,
    wait_resubmitted_once, wait_until, Dlq, Policy, Rabbit, Reply, Sidecar, TestApp, OUTRIGGER,
};

const LIMIT: Duration = Duration::from_secs(90);
const SETTLED: &str = "outrigger_messages_settled_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmit_by_reason_delivers_each_once_and_a_second_run_nothing() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dlq-fix");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let (app, fixed) = app_until_fixed(|key| {
        if key.starts_with("poison") {
            Some(Reply::status(500).body("constraint violated"))
        } else {
            Some(Reply::status(422).body("unknown product"))
        }
    })
    .await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns")).set("retry.max_attempts", 2);
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    let cli = Dlq::new(&policy);
    for i in 0..50 {
        rabbit
            .publish_keyed(
                &queue,
                &format!("poison-{i}"),
                format!(r#"{{"n":{i}}}"#).as_bytes(),
            )
            .await;
    }
    for i in 0..5 {
        rabbit
            .publish_keyed(&queue, &format!("other-{i}"), b"{}")
            .await;
    }
    wait_until("55 dead letters", LIMIT, || async {
        rabbit.depth(&dlq).await == 55
    })
    .await;
    let exhausted = cli.keys(&["--reason", "gave up after 2 attempts"]);
    assert_eq!(exhausted, set((0..50).map(|i| format!("poison-{i}"))));

    fixed.store(true, Ordering::SeqCst);
    let before = app.count();
    let out = cli.ok(&[
        "resubmit",
        "--reason",
        "gave up after 2 attempts",
        "--by",
        "tester",
    ]);
    assert!(out.contains("Resubmitted 50 of 50"), "{out}");
    wait_resubmitted_once(&app, before, "poison", 50, LIMIT).await;
    assert_eq!(rabbit.depth(&dlq).await, 5, "only the others stay");

    let again = cli.ok(&["resubmit", "--reason", "gave up after 2 attempts"]);
    assert!(again.contains("Resubmitted 0 of 0"), "{again}");
    assert_eq!(rabbit.depth(&queue).await, 0, "nothing new was published");
    assert!(cli.list(&["--reason", "gave up"]).is_empty());
    let rest = cli.list(&[]);
    assert_eq!(rest.len(), 5);
    assert!(rest
        .iter()
        .all(|r| r["status"] == 422 && r["class"] == "4xx"));
    sidecar.stop();
    assert_eq!(app.count(), before + 50, "nothing was delivered twice");
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_rate_paces_a_faithful_copy() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dlq-rate");
    let dlq = format!("{queue}.dlq");
    let replay = format!("{queue}.replay");
    rabbit.declare(&queue).await;
    rabbit.declare(&replay).await;
    let app = TestApp::start(|_, _| Reply::status(400).body("no")).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"));
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    for i in 0..100 {
        rabbit
            .publish_keyed(&queue, &format!("k-{i}"), format!("body-{i}").as_bytes())
            .await;
    }
    wait_until("100 dead letters", LIMIT, || async {
        rabbit.depth(&dlq).await == 100
    })
    .await;
    sidecar.stop();
    let cli = Dlq::new(&policy);
    let listed = ids(&cli.list(&[]));
    assert_eq!(listed.len(), 100);
    assert_eq!(set(listed.clone()).len(), 100, "ids are unique");

    let dry = cli.ok(&["resubmit", "--dry-run", "--to", &replay]);
    assert_eq!(lines_starting(&dry, "would resubmit"), 100);
    assert!(
        dry.contains(&format!("to {replay} as resubmission #1")),
        "{dry}"
    );
    assert_eq!(rabbit.depth(&dlq).await, 100, "the dry run took nothing");
    assert_eq!(rabbit.depth(&replay).await, 0, "the dry run sent nothing");
    assert_eq!(
        ids(&cli.list(&[])),
        listed,
        "ids and order are stable across passes"
    );

    resubmit_100_paced(&cli, &replay);
    assert_eq!(rabbit.depth(&dlq).await, 0);
    let copies = rabbit.drain(&replay).await;
    assert_eq!(copies.len(), 100);
    for m in &copies {
        let key = m.header("idempotency-key").expect("original header kept");
        let n = key.strip_prefix("k-").unwrap();
        assert_eq!(
            m.body,
            format!("body-{n}").into_bytes(),
            "{key}: body byte for byte"
        );
        assert_eq!(m.header("outrigger-resubmit-count").as_deref(), Some("1"));
        assert_eq!(
            m.header("outrigger-resubmitted-by").as_deref(),
            Some("tester")
        );
        assert!(m.header("outrigger-resubmitted-at").is_some());
        let names = m.properties.headers().as_ref().unwrap().inner();
        assert!(
            names
                .keys()
                .all(|k| !k.as_str().starts_with("outrigger-dlq-")),
            "context headers are off: {names:?}"
        );
    }
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
    rabbit.delete(&replay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmit_killed_halfway_and_rerun_delivers_every_record_once() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dlq-kill");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let (app, fixed) = app_until_fixed(|_| Some(Reply::status(400))).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"));
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    let cli = Dlq::new(&policy);
    for i in 0..100 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    wait_until("100 dead letters", LIMIT, || async {
        rabbit.depth(&dlq).await == 100
    })
    .await;
    fixed.store(true, Ordering::SeqCst);

    kill_a_resubmit_halfway(&cli, &app, LIMIT).await;

    // The broker hands the killed run's records back once it sees the connection gone;
    // an operator reruns until nothing is left, as would we.
    let reruns = AtomicUsize::new(0);
    wait_until("every key delivered and the DLQ empty", LIMIT, || async {
        let left = rabbit.depth(&dlq).await;
        if left == 0 {
            return app.successes().len() == 100;
        }
        reruns.fetch_add(1, Ordering::SeqCst);
        cli.ok(&["resubmit"]);
        false
    })
    .await;
    let reruns = reruns.load(Ordering::SeqCst);
    assert!((1..=3).contains(&reruns), "reruns: {reruns}");
    wait_until("everything settled", LIMIT, || async {
        rabbit.depth(&queue).await == 0
            && sidecar.metric(SETTLED, r#"outcome="delivered""#) >= 100.0
    })
    .await;
    app.assert_each_key_once();
    assert_eq!(app.successes().len(), 100);
    sidecar.stop();
    assert_eq!(rabbit.depth(&dlq).await, 0, "none left");
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_delivered_meanwhile_is_not_delivered_again() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dlq-dedup");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let (app, fixed) = app_until_fixed(|_| Some(Reply::status(400))).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"));
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    rabbit.publish_keyed(&queue, "order-1", b"first try").await;
    wait_until("dead-lettered", LIMIT, || async {
        rabbit.depth(&dlq).await == 1
    })
    .await;
    fixed.store(true, Ordering::SeqCst);
    // A copy of the key sent by the producer is recognised as already dead-lettered (a dead
    // letter is written once); one resubmitted earlier (another replica's admin API, say) is
    // new work, and is delivered.
    rabbit
        .publish_keyed(&queue, "order-1", b"sent again by the producer")
        .await;
    wait_until("the producer's copy settled", LIMIT, || async {
        sidecar.metric(SETTLED, r#"outcome="already_dead_lettered""#) == 1.0
    })
    .await;
    assert_eq!(
        rabbit.depth(&dlq).await,
        1,
        "its dead letter is written once"
    );
    let mut headers = FieldTable::default();
    for (name, value) in [
        ("idempotency-key", "order-1"),
        ("outrigger-resubmit-count", "1"),
        ("outrigger-resubmitted-key", "order-1"),
    ] {
        headers.insert(
            name.into(),
            AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
        );
    }
    let earlier = BasicProperties::default().with_headers(headers);
    rabbit
        .publish(&queue, b"resubmitted earlier", earlier)
        .await;
    wait_until("the earlier resubmission delivered", LIMIT, || async {
        app.successes().get("order-1") == Some(&1)
    })
    .await;

    let out = Dlq::new(&policy).ok(&["resubmit", "--key", "order-1"]);
    assert!(out.contains("Resubmitted 1 of 1"), "{out}");
    wait_until(
        "the resubmitted copy skipped as a duplicate",
        LIMIT,
        || async { sidecar.metric(SETTLED, r#"outcome="duplicate""#) == 1.0 },
    )
    .await;
    assert_eq!(app.successes().get("order-1"), Some(&1));
    assert_eq!(rabbit.depth(&dlq).await, 0);
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
}

// Filters and the admin API, in tests/dlq/.
mod dlq {
    mod api;
    mod filters;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_dead_letters_are_listed_and_resubmitted_by_route_or_destination() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dlq-route");
    let (dlq, refunds_dlq) = (format!("{queue}.dlq"), format!("{queue}.refunds.dlq"));
    rabbit.declare(&queue).await;
    let (app, fixed) = app_until_fixed(|_| Some(Reply::status(422).body("unknown product"))).await;
    let routes = format!(
        "[[routes]]\nname = \"refunds\"\nmatch = {{ headers = {{ x-kind = \"refund\" }} }}\n\
         [routes.dead_letter]\ndestination = \"{refunds_dlq}\"\n"
    );
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns")).with_toml(&routes);
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    let cli = Dlq::new(&policy);
    for i in 0..3 {
        let key = format!("refund-{i}");
        rabbit
            .publish_keyed_with(&queue, &key, &[("x-kind", "refund")], b"{}")
            .await;
    }
    for i in 0..2 {
        rabbit
            .publish_keyed(&queue, &format!("order-{i}"), b"{}")
            .await;
    }
    wait_until("3 + 2 dead letters", LIMIT, || async {
        rabbit.depth(&refunds_dlq).await == 3 && rabbit.depth(&dlq).await == 2
    })
    .await;

    let refunds = set((0..3).map(|i| format!("refund-{i}")));
    assert_eq!(cli.keys(&["--route", "refunds"]), refunds);
    assert_eq!(cli.keys(&["--destination", &refunds_dlq]), refunds);
    let orders = set((0..2).map(|i| format!("order-{i}")));
    assert_eq!(cli.keys(&[]), orders, "the policy's own by default");
    assert_eq!(cli.keys(&["--destination", &dlq]), orders);
    let record = &cli.list(&["--route", "refunds", "--key", "refund-1"])[0];
    let id = record["id"].as_str().unwrap();
    let shown = cli.ok(&["show", id, "--route", "refunds"]);
    assert!(shown.contains("unknown product"), "{shown}");

    let unknown = cli.run(&["list", "--route", "nope"]);
    assert_eq!(unknown.status.code(), Some(64));
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("no route is named \"nope\"; the policy's routes are \"refunds\""),
        "{said}"
    );
    let unknown = cli.run(&["list", "--destination", "elsewhere.dlq"]);
    assert_eq!(unknown.status.code(), Some(64));
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains(&format!(
            "\"elsewhere.dlq\" is no dead-letter destination of this policy; it uses \
             \"{dlq}\" (the default for \"{queue}\"), \"{refunds_dlq}\" (route \"refunds\")"
        )),
        "{said}"
    );
    let both = cli.run(&["list", "--route", "refunds", "--destination", &dlq]);
    assert_eq!(both.status.code(), Some(64), "one or the other");
    let said = String::from_utf8_lossy(&both.stderr);
    assert!(said.contains("cannot be used with"), "{said}");

    fixed.store(true, Ordering::SeqCst);
    let before = app.count();
    let out = cli.ok(&["resubmit", "--route", "refunds", "--by", "tester"]);
    assert!(out.contains("Resubmitted 3 of 3"), "{out}");
    // Back to the source queue, where the route takes them again, now to a fixed app.
    wait_resubmitted_once(&app, before, "refund", 3, LIMIT).await;
    assert_eq!(rabbit.depth(&refunds_dlq).await, 0);
    assert_eq!(rabbit.depth(&dlq).await, 2, "the policy's own stay");
    sidecar.stop();
    for q in [&queue, &dlq, &refunds_dlq] {
        rabbit.delete(q).await;
    }
}
