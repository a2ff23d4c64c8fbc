//! A live sidecar's `/metrics` through `promtool check metrics`, and the admin listener's
//! behaviour the chart relies on: probes open, `/metrics` behind the token.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use outrigger_ops_tests::rabbit::{self, Rabbit};
use outrigger_ops_tests::sidecar::{free_port, get, Sidecar, StubApp};
use outrigger_ops_tests::{tools, unique, wait};

const TOKEN: &str = "ops-test-token-0123456789";

#[test]
fn a_live_sidecars_metrics_pass_promtool_check_metrics() {
    tools::require("promtool");
    let rabbit = Rabbit::connect();
    let queue = unique("ops-metrics");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue);
    let app = StubApp::start();
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"[source.amqp]
url = "{url}"
queue = "{queue}"

[delivery]
url = "http://{app}/"

[dedup]
key = "{{json:/order_id}}"
store = "embedded"

[dedup.embedded]
path = "{store}"

[admin]
listen = "{admin}"
"#,
            url = rabbit::URL,
            app = app.addr,
            store = dir.path().join("dedup.redb").display(),
        ),
    )
    .unwrap();
    let mut sidecar = Sidecar::start(
        &policy,
        admin,
        &[("OUTRIGGER__ADMIN__TOKEN", TOKEN)],
        &dir.path().join("sidecar.log"),
    );
    sidecar.wait_healthy(Duration::from_secs(30));
    for i in 0..3 {
        rabbit.publish(&queue, format!(r#"{{"order_id": {i}}}"#).as_bytes());
    }
    let mut last = String::new();
    let metrics = wait::poll(Duration::from_secs(30), || {
        let (status, body) = get(admin, "/metrics", Some(TOKEN)).ok()?;
        let settled = body.lines().any(|l| {
            l.starts_with("outrigger_messages_settled_total{")
                && l.contains("outcome=\"delivered\"")
                && l.ends_with(" 3")
        });
        last = body.clone();
        (status == 200 && app.posts() >= 3 && settled).then_some(body)
    })
    .unwrap_or_else(|| {
        panic!(
            "three deliveries did not settle within 30s (the app saw {}):\n{last}\n--- the sidecar's log:\n{}",
            app.posts(),
            sidecar.log()
        )
    });

    // What the chart's probes and scrapes rely on.
    assert_eq!(
        get(admin, "/metrics", None).unwrap().0,
        401,
        "/metrics needs the token"
    );
    assert_eq!(get(admin, "/metrics", Some("wrong")).unwrap().0, 401);
    assert_eq!(
        get(admin, "/healthz", None).unwrap().0,
        200,
        "the liveness probe is open"
    );
    let ready = wait::until("/readyz answers 200", Duration::from_secs(10), || {
        let (status, body) = get(admin, "/readyz", None).ok()?;
        (status == 200).then_some(body)
    });
    assert!(ready.contains("\"ready\":true"), "{ready}");

    let mut check = tools::command("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems ({}):\n{report}\n--- the metrics:\n{metrics}",
        out.status
    );
    for name in [
        "outrigger_messages_consumed_total",
        "outrigger_messages_settled_total",
        "outrigger_delivery_duration_seconds_bucket",
        "outrigger_in_flight_messages",
        "outrigger_policy_info",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    drop(sidecar);
    rabbit.delete(&[&queue, &dlq]);
}

/// The chart sets the admin listener to the pod's address and the token from a Secret: the
/// sidecar refuses the first without the second, and the chart's values pass together.
#[test]
fn the_sidecar_listens_beyond_loopback_only_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[source.amqp]\nqueue = \"orders\"\n").unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(outrigger_ops_tests::sidecar::binary());
        cmd.args(["check", "--config"])
            .arg(&policy)
            .envs(env.iter().copied());
        tools::output(&mut cmd)
    };
    let refused = check(&[("OUTRIGGER__ADMIN__LISTEN", "0.0.0.0:9090")]);
    assert_eq!(refused.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("admin.listen") && stderr.contains("OUTRIGGER__ADMIN__TOKEN"),
        "{stderr}"
    );
    let accepted = check(&[
        ("OUTRIGGER__ADMIN__LISTEN", "0.0.0.0:9090"),
        ("OUTRIGGER__ADMIN__TOKEN", TOKEN),
    ]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}
