//! The chart's PrometheusRule through promtool (`check rules`, and `test rules` with a firing
//! and a quiet case for every alert), its runbook links, and the metric names the rules and
//! the Grafana dashboard use.

use std::collections::BTreeSet;

use outrigger_ops_tests::chart::{ci_values, str_of, Render};
use outrigger_ops_tests::{metrics, repo, tools};
use yaml_serde::Value;

/// The rule groups, as the chart renders them for release "orders" in "payments".
fn rendered_spec(render: Render) -> Value {
    let m = render.monitoring(true).manifests();
    m.one("PrometheusRule")["spec"].clone()
}

fn spec() -> Value {
    rendered_spec(Render::new("1.33.0").values(ci_values("sidecar-kafka-values.yaml")))
}

fn alerts(spec: &Value) -> Vec<Value> {
    spec["groups"]
        .as_sequence()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

fn alert_names(spec: &Value) -> BTreeSet<String> {
    alerts(spec)
        .iter()
        .map(|r| str_of(&r["alert"], "an alert name").to_owned())
        .collect()
}

fn unit_tests() -> Value {
    let path = repo().join("tests/ops/rules/alerts.test.yaml");
    yaml_serde::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The hash of the policy the rules expect the pods to run (`hash!="..."` in
/// OutriggerPolicyNotApplied); `None` when they cannot know it.
fn expected_hash(spec: &Value) -> Option<String> {
    let rule = alerts(spec)
        .into_iter()
        .find(|r| r["alert"] == "OutriggerPolicyNotApplied")
        .expect("OutriggerPolicyNotApplied");
    let expr = str_of(&rule["expr"], "expr");
    let (_, rest) = expr.split_once("hash!=\"")?;
    Some(rest.split('"').next().unwrap().to_owned())
}

/// `promtool check rules` on `spec`, then `promtool test rules` with the unit tests in
/// `tests/ops/rules/<tests>` (POLICY_HASH in them replaced by the policy's hash).
fn promtool_tests(spec: &Value, tests: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        yaml_serde::to_string(spec).unwrap(),
    )
    .unwrap();
    let checked = tools::success(
        tools::command("promtool")
            .args(["check", "rules", "rules.yaml"])
            .current_dir(dir.path()),
    );
    let count = alerts(spec).len();
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
    let text = std::fs::read_to_string(repo().join("tests/ops/rules").join(tests)).unwrap();
    let text = match expected_hash(spec) {
        Some(hash) => text.replace("POLICY_HASH", &hash),
        None => text,
    };
    std::fs::write(dir.path().join(tests), text).unwrap();
    let tested = tools::success(
        tools::command("promtool")
            .args(["test", "rules", tests])
            .current_dir(dir.path()),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    promtool_tests(&spec(), "alerts.test.yaml");
}

/// With policy.existingConfigMap the chart cannot know the policy's hash: the rule compares
/// the replicas with each other instead.
#[test]
fn with_an_existing_configmap_the_policy_alert_compares_the_replicas() {
    let spec = rendered_spec(
        Render::new("1.33.0")
            .values(ci_values("sidecar-kafka-values.yaml"))
            .set("policy.toml=")
            .set("policy.existingConfigMap=orders-policy"),
    );
    assert_eq!(expected_hash(&spec), None);
    assert_eq!(alert_names(&spec), alert_names(&self::spec()));
    promtool_tests(&spec, "alerts-existing-configmap.test.yaml");
}

/// The hash the rule expects is the one the chart's checksum annotation (rollout mode) starts
/// with, and so the one a sidecar reading the ConfigMap reports (tests/reload.rs shows that).
#[test]
fn the_policy_alert_expects_the_hash_of_the_policy_the_chart_deployed() {
    let m = Render::new("1.33.0")
        .values(ci_values("standalone-amqp-values.yaml"))
        .set("policy.onChange=rollout")
        .monitoring(true)
        .manifests();
    let checksum = str_of(
        &m.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/outrigger-policy"],
        "the checksum annotation",
    );
    let spec = m.one("PrometheusRule")["spec"].clone();
    let hash = expected_hash(&spec).expect("the inline policy's hash");
    assert_eq!(hash.len(), 12);
    assert!(checksum.starts_with(&hash), "{checksum} / {hash}");
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests = unit_tests();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().unwrap() {
            let name = str_of(&case["alertname"], "alertname").to_owned();
            match case["exp_alerts"].as_sequence() {
                Some(expected) if !expected.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let names = alert_names(&spec());
    assert!(names.len() >= 12, "{names:?}");
    for name in &names {
        assert!(firing.contains(name), "no unit test where {name} fires");
        assert!(
            quiet.contains(name),
            "no unit test where {name} stays quiet"
        );
    }
    let unknown: Vec<_> = firing
        .union(&quiet)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "unit tests for alerts that do not exist: {unknown:?}"
    );
}

#[test]
fn every_alert_says_what_it_means_and_links_its_runbook_section() {
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let headings: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_owned())
        .collect();
    let base = "https://runbooks.example.com/outrigger";
    let spec = rendered_spec(
        Render::new("1.33.0")
            .values(ci_values("standalone-amqp-values.yaml"))
            .set(&format!("monitoring.rules.runbookBaseUrl={base}")),
    );
    assert_eq!(
        alert_names(&spec),
        alert_names(&self::spec()),
        "both modes ship every alert"
    );
    for rule in alerts(&spec) {
        let name = str_of(&rule["alert"], "alert");
        let severity = str_of(&rule["labels"]["severity"], "severity");
        assert!(
            matches!(severity, "warning" | "critical"),
            "{name}: {severity}"
        );
        for field in ["summary", "description"] {
            let text = str_of(&rule["annotations"][field], field);
            assert!(
                text.len() > 20 && text.ends_with('.'),
                "{name} {field}: {text:?}"
            );
        }
        let url = str_of(&rule["annotations"]["runbook_url"], "runbook_url");
        assert_eq!(url, format!("{base}#{}", name.to_lowercase()), "{name}");
        assert!(
            headings.contains(name),
            "docs/runbook.md has no `## {name}` section for the runbook_url to point at"
        );
        assert!(
            str_of(&rule["expr"], "expr").contains("namespace=\"payments\""),
            "{name} must be scoped to its release's namespace"
        );
    }
}

#[test]
fn rules_and_dashboard_use_only_metrics_the_sidecar_declares() {
    let declared = metrics::declared();
    for rule in alerts(&spec()) {
        let name = str_of(&rule["alert"], "alert");
        metrics::assert_known(name, str_of(&rule["expr"], "expr"), &declared);
    }

    let path = repo().join("charts/outrigger/files/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().to_owned();
            metrics::assert_known(panel["title"].as_str().unwrap(), &expr, &declared);
            exprs.push(expr);
        }
    }
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metrics::used_in(e)).collect();
    // Panels do not overlap, and each has a title and a description.
    let mut cells = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        if panel["type"] != "row" {
            assert!(
                panel["description"].as_str().is_some_and(|d| d.len() > 20),
                "{title}: no description"
            );
        }
        let g = &panel["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{title} is wider than the dashboard");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
    }
    let ids: BTreeSet<u64> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        dashboard["panels"].as_array().unwrap().len(),
        "panel ids are unique"
    );
    for wanted in [
        "outrigger_messages_settled_total",
        "outrigger_delivery_duration_seconds",
        "outrigger_in_flight_messages",
        "outrigger_consumer_lag_messages",
        "outrigger_dead_lettered_total",
        "outrigger_dedup_store_errors_total",
        "outrigger_breaker_state",
        "outrigger_policy_reloads_total",
        "outrigger_policy_info",
        "outrigger_pending_messages",
        "outrigger_deleted_while_pending_total",
    ] {
        assert!(used.contains(wanted), "the dashboard shows no {wanted}");
    }
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("sum by (outcome)")
                && e.contains("outrigger_messages_settled_total")),
        "throughput by outcome"
    );
    assert!(
        exprs.iter().any(|e| e.contains("histogram_quantile(0.99")
            && e.contains("outrigger_delivery_duration_seconds_bucket")),
        "p99 delivery latency"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "job", "source"]);
}
