//! The command line as a user meets it: version, help, `check` with every error at once.

use std::process::Command;

fn outrigger(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(args)
        .env_remove("OUTRIGGER_CONFIG")
        .output()
        .expect("outrigger runs")
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn version_and_help_on_every_subcommand() {
    let out = outrigger(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("outrigger "));
    for sub in ["run", "check", "demo"] {
        let out = outrigger(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: outrigger"));
    }
}

#[test]
fn check_accepts_the_examples() {
    let mut names: Vec<String> = std::fs::read_dir(examples())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    for broker in ["amqp", "kafka", "nats", "redis-streams"] {
        assert!(
            names.contains(&format!("{broker}-redis.toml")),
            "an example per broker: {names:?}"
        );
    }
    for name in names {
        let path = examples().join(&name);
        let out = outrigger(&["check", "--config", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    }
}

#[test]
fn check_explains_which_route_a_sample_takes_and_refuses_a_bad_sample() {
    let path = examples().join("kafka-routes.toml");
    let path = path.to_str().unwrap();
    let out = outrigger(&[
        "check",
        "--config",
        path,
        "--explain",
        "source=orders,type=order.refunded",
        "--explain",
        "source=payments,header.X-Kind=heartbeat",
        "--explain",
        "type=order.created",
        "--explain",
        "source=payments,type=ledger.posted",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].contains(r#"takes route "refunds" (routes[0]): POST http://127.0.0.1:8080/refunds (timeout 30s); dedup on {json:/refund_id}; up to 10 attempts; ordering none"#),
        "{stdout}"
    );
    assert!(
        lines[0].ends_with(r#"; dead letters to "refunds.dlq""#),
        "{stdout}"
    );
    assert!(
        lines[1].contains(r#"takes route "heartbeats" (routes[3]): dropped"#),
        "{stdout}"
    );
    assert!(
        lines[2]
            .contains("takes no route, so the top-level policy: POST http://127.0.0.1:8080/events"),
        "{stdout}"
    );
    assert!(
        lines[2].ends_with(r#"; dead letters to "orders.dlq""#),
        "{stdout}"
    );
    assert!(
        lines[3].contains(
            r#"takes route "ledger" (routes[2]): POST http://127.0.0.1:8080/events (timeout 10s); dedup on {json:/id}; up to 5 attempts; ordering key in {json:/seq} order (a gap waits 10s, then dead_letter)"#
        ),
        "{stdout}"
    );

    let out = outrigger(&["check", "--config", path, "--explain", "topic=orders"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected source, type or header.NAME"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_three_mistakes_at_once_with_positions_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[source.amqp]
queue = "orders"

[delivery]
url = "http://127.0.0.1:8080/"
timeout = "soon"

[retry]
max_attempts = -3
backof = "exponential"
"#,
    )
    .unwrap();
    for command in ["check", "run"] {
        let out = outrigger(&[command, "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{command} exits EX_USAGE");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bad.toml:6:11"),
            "bad duration at 6:11:\n{err}"
        );
        assert!(err.contains("delivery.timeout"), "{err}");
        assert!(err.contains("soon"), "{err}");
        assert!(
            err.contains("bad.toml:9:16"),
            "negative number at 9:16:\n{err}"
        );
        assert!(err.contains("retry.max_attempts"), "{err}");
        assert!(err.contains("bad.toml:10:1"), "unknown key at 10:1:\n{err}");
        assert!(err.contains("backof"), "{err}");
    }
}

#[test]
fn env_overrides_are_validated_too() {
    let path = examples().join("amqp-redis.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env("OUTRIGGER__RETRY__MAX_ATTEMPTS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OUTRIGGER__RETRY__MAX_ATTEMPTS"), "{err}");
}

#[test]
fn demo_runs_without_any_service_and_its_checks_hold() {
    let out = outrigger(&["demo", "--events", "300"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Where every message ended"), "{stdout}");
    assert!(
        stdout.contains("✓ every message is accounted for"),
        "{stdout}"
    );
    assert!(!stdout.contains('✗'), "{stdout}");
}
