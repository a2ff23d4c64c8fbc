//! Selecting dead letters: filters by time, reason, status, key and source; `show`; bad
//! values; `purge` and its confirmation.

use crate::*;
use support::{app_refusing_a_and_b, keys};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_exactly_the_expected_records() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dlq-filter");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let app = app_refusing_a_and_b().await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"));
    let sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    let cli = Dlq::new(&policy);
    for i in 0..4 {
        let body = format!(r#"{{"order":{i},"amount":-1}}"#);
        rabbit
            .publish_keyed(&queue, &format!("a-{i}"), body.as_bytes())
            .await;
    }
    rabbit
        .publish_keyed(&queue, "a-4", b"\xff\x00\x1b[2Jbinary")
        .await;
    wait_until("the first five dead letters", LIMIT, || async {
        rabbit.depth(&dlq).await == 5
    })
    .await;
    // Every `a` record failed before `between`, every `b` one after: no two share a millisecond.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(30)).await;
    for i in 0..5 {
        rabbit.publish_keyed(&queue, &format!("b-{i}"), b"{}").await;
    }
    wait_until("ten dead letters", LIMIT, || async {
        rabbit.depth(&dlq).await == 10
    })
    .await;
    sidecar.stop();

    let all = keys("a", 5)
        .union(&keys("b", 5))
        .cloned()
        .collect::<BTreeSet<_>>();
    assert_eq!(cli.keys(&[]), all);
    assert_eq!(cli.keys(&["--since", &between]), keys("b", 5));
    assert_eq!(cli.keys(&["--until", &between]), keys("a", 5));
    assert_eq!(cli.keys(&["--since", "1h"]), all);
    assert_eq!(cli.keys(&["--until", "1h"]), BTreeSet::new());
    assert_eq!(cli.keys(&["--reason", "HTTP 400"]), keys("a", 5));
    assert_eq!(cli.keys(&["--reason", "http 422"]), keys("b", 5));
    assert_eq!(cli.keys(&["--status", "4xx"]), all);
    assert_eq!(cli.keys(&["--status", "422"]), keys("b", 5));
    assert_eq!(cli.keys(&["--status", "none"]), BTreeSet::new());
    assert_eq!(cli.keys(&["--key", "a-3"]), set(["a-3".to_owned()]));
    assert_eq!(cli.keys(&["--key", "b-*"]), keys("b", 5));
    assert_eq!(cli.keys(&["--source", &queue]), all);
    assert_eq!(cli.keys(&["--source", "elsewhere"]), BTreeSet::new());
    assert_eq!(
        cli.keys(&["--key", "a-*", "--status", "422"]),
        BTreeSet::new()
    );
    assert_eq!(cli.list(&["--limit", "3"]).len(), 3);

    let table = cli.ok(&["list", "--key", "a-1"]);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("a-1") && table.contains("400"), "{table}");

    let record = |key: &str| cli.list(&["--key", key]).remove(0);
    let a0 = record("a-0");
    assert_eq!(
        a0["source"].as_str().unwrap().split('#').next(),
        Some(&*format!("amqp:{queue}"))
    );
    assert_eq!(a0["attempts"], 1);
    let shown = cli.ok(&["show", a0["id"].as_str().unwrap()]);
    assert!(
        shown.contains("\"amount\": -1"),
        "pretty JSON payload:\n{shown}"
    );
    assert!(
        shown.contains("amount must be positive"),
        "response excerpt:\n{shown}"
    );
    assert!(shown.contains("idempotency-key: a-0"), "headers:\n{shown}");
    let binary = cli.ok(&["show", record("a-4")["id"].as_str().unwrap()]);
    assert!(
        binary.contains(r"\xff\x00\x1b[2Jbinary"),
        "escaped:\n{binary}"
    );
    assert!(
        !binary.contains('\x1b'),
        "no raw escape sequence on the terminal"
    );
    let json: Value =
        serde_json::from_str(&cli.ok(&["show", "--json", a0["id"].as_str().unwrap()])).unwrap();
    assert_eq!(json["payload_format"], "json");
    assert_eq!(
        json["payload"], r#"{"order":0,"amount":-1}"#,
        "the payload as produced"
    );
    let missing = cli.run(&["show", "0000000000000000"]);
    assert_eq!(missing.status.code(), Some(1));

    for (args, names) in [
        (vec!["list", "--since", "yesterday"], "--since"),
        (vec!["list", "--until", "2024-13-45"], "--until"),
        (vec!["list", "--status", "99x"], "--status"),
        (vec!["list", "--key", "a*b"], "--key"),
        (vec!["list", "--limit", "many"], "--limit"),
        (vec!["resubmit", "--rate", "0"], "--rate"),
        (vec!["purge", "--bogus"], "--bogus"),
    ] {
        let out = cli.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?} exits EX_USAGE: {err}"
        );
        assert!(
            err.contains(names),
            "{args:?}: the error names {names}: {err}"
        );
    }
    assert_eq!(rabbit.depth(&dlq).await, 10, "bad commands changed nothing");

    let unconfirmed = cli.run(&["purge", "--key", "b-*"]);
    assert_eq!(
        unconfirmed.status.code(),
        Some(64),
        "no terminal, no --yes: refused"
    );
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    let dry = cli.ok(&["purge", "--key", "b-*", "--dry-run"]);
    assert_eq!(lines_starting(&dry, "would purge"), 5);
    assert_eq!(rabbit.depth(&dlq).await, 10, "neither changed anything");
    let purged = cli.ok(&["purge", "--key", "b-*", "--yes"]);
    assert!(purged.contains("Purged 5 of 5"), "{purged}");
    assert_eq!(cli.keys(&[]), keys("a", 5));
    assert_eq!(rabbit.depth(&dlq).await, 5);
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
}
