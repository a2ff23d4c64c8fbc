//! `policy.onChange: reload` end to end: the policy the chart renders, in a directory laid out as
//! the kubelet lays out a ConfigMap volume, read by the real sidecar with the environment the
//! chart gives its container. A new ConfigMap version swapped in as the kubelet swaps it is
//! applied without a restart, a change that needs one is refused, and the hash the sidecar
//! reports is the one the chart's OutriggerPolicyNotApplied rule expects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outrigger_ops_tests::chart::{ci_values, container, env, pod_spec, str_of, Render, FULLNAME};
use outrigger_ops_tests::rabbit::{self, Rabbit};
use outrigger_ops_tests::sidecar::{free_port, get, Sidecar};
use outrigger_ops_tests::{unique, wait};
use yaml_serde::Value;

const TOKEN: &str = "ops-reload-token-0123456789";

/// The standalone RabbitMQ values with `policy` as the policy; everything else as CI renders it.
fn render(policy: &str, dir: &Path) -> outrigger_ops_tests::chart::Manifests {
    let file = dir.join(format!("{}.yaml", unique("values")));
    let values = yaml_serde::to_string(&yaml_serde::Mapping::from_iter([(
        Value::from("policy"),
        Value::Mapping(yaml_serde::Mapping::from_iter([(
            Value::from("toml"),
            Value::from(policy),
        )])),
    )]))
    .unwrap();
    std::fs::write(&file, values).unwrap();
    Render::new("1.33.0")
        .values(ci_values("standalone-amqp-values.yaml"))
        .values(&file)
        .monitoring(true)
        .manifests()
}

/// What one render gives the pod: the policy file's content, the hash the alert expects, and
/// the sidecar container's environment (Secret references left out).
struct Rendered {
    file: String,
    hash: String,
    env: Vec<(String, String)>,
}

fn rendered(policy: &str, dir: &Path) -> Rendered {
    let m = render(policy, dir);
    let cm = m
        .all("ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == format!("{FULLNAME}-policy"))
        .expect("the policy ConfigMap");
    let file = str_of(&cm["data"]["policy.toml"], "the policy").to_owned();
    let rule = m.one("PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "OutriggerPolicyNotApplied")
        .expect("OutriggerPolicyNotApplied")
        .clone();
    let expr = str_of(&rule["expr"], "expr");
    let hash = expr
        .split_once("hash!=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .expect("the expected hash in the rule")
        .to_owned();
    let pod = pod_spec(m.one("Deployment"));
    let (_, c) = container(pod, "outrigger");
    assert_eq!(
        env(c, "OUTRIGGER__RELOAD__WATCH").map(|e| &e["value"]),
        Some(&Value::from("true")),
        "policy.onChange reload (the default) turns the watch on"
    );
    let env = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let value = e["value"].as_str()?;
            Some((str_of(&e["name"], "env name").to_owned(), value.to_owned()))
        })
        .collect();
    Rendered { file, hash, env }
}

/// A ConfigMap volume as the kubelet's atomic writer lays it out: the file is a symlink
/// through `..data`, which points at a timestamped directory; an update writes a new
/// directory and renames a new `..data` link over the old one.
struct ConfigMapVolume {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapVolume {
    fn new(dir: &Path, content: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = Self {
            dir: dir.to_owned(),
            version: 0,
        };
        volume.update(content);
        std::os::unix::fs::symlink("..data/policy.toml", dir.join("policy.toml")).unwrap();
        volume
    }

    fn update(&mut self, content: &str) {
        self.version += 1;
        let name = format!(
            "..2026_12_02_18_00_0{}.{}",
            self.version,
            std::process::id()
        );
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("policy.toml"), content).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn path(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }
}

fn metric_line<'a>(metrics: &'a str, prefix: &str) -> Option<&'a str> {
    metrics.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn a_changed_configmap_is_applied_in_place_and_one_needing_a_restart_is_refused() {
    let rabbit = Rabbit::connect();
    let queue = unique("ops-reload");
    rabbit.declare(&queue);
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(ci_values("standalone-amqp-values.yaml")).unwrap();
    let base: Value = yaml_serde::from_str(&base).unwrap();
    let policy = str_of(&base["policy"]["toml"], "the CI policy").to_owned();

    let first = rendered(&policy, dir.path());
    let mut volume = ConfigMapVolume::new(&dir.path().join("etc-outrigger"), &first.file);
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin_listen = admin.to_string();
    // The chart's environment, with what differs on this machine: the Secrets' values, the
    // admin listener on a free loopback port, the queue of this test.
    let mut env: Vec<(&str, &str)> = first
        .env
        .iter()
        .filter(|(k, _)| k != "OUTRIGGER__ADMIN__LISTEN")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([
        ("OUTRIGGER__ADMIN__LISTEN", admin_listen.as_str()),
        ("OUTRIGGER__ADMIN__TOKEN", TOKEN),
        ("OUTRIGGER__SOURCE__AMQP__URL", rabbit::URL),
        ("OUTRIGGER__SOURCE__AMQP__QUEUE", queue.as_str()),
        ("OUTRIGGER__DEDUP__REDIS__URL", "redis://127.0.0.1:6379"),
    ]);
    let mut sidecar = Sidecar::start(&volume.path(), admin, &env, &dir.path().join("sidecar.log"));
    sidecar.wait_healthy(Duration::from_secs(30));
    let metrics = || {
        get(admin, "/metrics", Some(TOKEN))
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let in_force = |hash: &str| format!("outrigger_policy_info{{hash=\"{hash}\"}} 1");
    let wait_for = |what: &str, check: &dyn Fn(&str) -> bool| {
        let mut last = String::new();
        // The chart's reload interval is 5s.
        wait::poll(Duration::from_secs(30), || {
            last = metrics();
            check(&last).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "no {what} within 30s:\n{last}\n--- the sidecar's log:\n{}",
                sidecar.log()
            )
        });
        last
    };

    // The hash the sidecar reports for the file the chart rendered is the one the rule expects.
    wait_for("policy hash", &|m| m.contains(&in_force(&first.hash)));

    // A route change ([delivery] timeout): applied in place, no restart.
    let faster = policy.replace("timeout = \"10s\"", "timeout = \"5s\"");
    assert_ne!(faster, policy, "the CI policy sets [delivery] timeout");
    let second = rendered(&faster, dir.path());
    assert_ne!(second.hash, first.hash);
    volume.update(&second.file);
    let m = wait_for("applied reload", &|m| {
        m.contains("outrigger_policy_reloads_total{result=\"applied\"} 1")
    });
    assert!(m.contains(&in_force(&second.hash)), "{m}");
    assert!(metric_line(&m, "outrigger_policy_info{").is_some_and(|l| l == in_force(&second.hash)));

    // A change only a restart can apply ([backpressure]): refused whole, the policy in force
    // stays, and the rule that expects the new hash would see the old one.
    let limited = format!("{faster}\n[backpressure]\nmax_in_flight = 8\n");
    let third = rendered(&limited, dir.path());
    volume.update(&third.file);
    let m = wait_for("refused reload", &|m| {
        m.contains("outrigger_policy_reloads_total{result=\"refused\"} 1")
    });
    assert!(
        metric_line(&m, "outrigger_policy_info{").is_some_and(|l| l == in_force(&second.hash)),
        "the policy in force stays:\n{m}"
    );
    assert_ne!(third.hash, second.hash);
    let log = sidecar.log();
    assert!(
        log.contains("backpressure") && log.contains("restart"),
        "the log names the section that needs a restart:\n{log}"
    );

    // Still running, still ready to serve.
    assert_eq!(get(admin, "/healthz", None).unwrap().0, 200);
    drop(sidecar);
    rabbit.delete(&[&queue, &format!("{queue}.dlq")]);
}
