//! `charts/outrigger` through helm itself: lint, render for Kubernetes 1.28 and 1.33 with and
//! without the monitoring API, validate against the matching schemas, and assert on what a
//! platform engineer relies on in the rendered pods.

use std::path::{Path, PathBuf};
use std::process::Command;

use outrigger_ops_tests::chart::{
    self, all_ci_values, ci_values, container, env, names, pod_spec, str_of, Manifests, Placement,
    Render, FULLNAME, KUBE_VERSIONS,
};
use outrigger_ops_tests::tools;
use yaml_serde::Value;

const STANDALONE_AMQP: &str = "standalone-amqp-values.yaml";

fn standalone(kube: &str) -> Render {
    Render::new(kube).values(ci_values(STANDALONE_AMQP))
}

fn sidecar_of(m: &Manifests) -> (Placement, Value) {
    let (placement, c) = container(pod_spec(m.one("Deployment")), "outrigger");
    (placement, c.clone())
}

#[test]
fn lint_strict_passes_for_every_ci_values_file() {
    for values in all_ci_values() {
        for kube in KUBE_VERSIONS {
            let out = tools::success(
                tools::command("helm")
                    .args(["lint", "--strict", "--kube-version", kube])
                    .arg(chart::dir())
                    .arg("--values")
                    .arg(&values),
            );
            assert!(
                out.contains("0 chart(s) failed"),
                "helm lint {}: {out}",
                values.display()
            );
        }
    }
}

/// Every use (sidecar, standalone) with every broker has a values file in
/// `charts/outrigger/ci/`, so each is linted, rendered, validated and `outrigger check`ed.
#[test]
fn the_ci_values_cover_each_use_and_each_broker() {
    let files: Vec<(String, Value)> = all_ci_values()
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, yaml_serde::from_str(&text).unwrap())
        })
        .collect();
    for mode in ["sidecar", "standalone"] {
        for broker in ["amqp", "kafka", "redis_streams", "nats"] {
            let found: Vec<&str> = files
                .iter()
                .filter(|(_, v)| {
                    v["mode"] == mode
                        && v["policy"]["toml"]
                            .as_str()
                            .is_some_and(|t| t.contains(&format!("[source.{broker}]")))
                })
                .map(|(n, _)| n.as_str())
                .collect();
            assert!(
                !found.is_empty(),
                "no values file in charts/outrigger/ci/ for mode {mode} with [source.{broker}]"
            );
        }
    }
}

#[test]
fn every_render_validates_against_its_kubernetes_version() {
    let dir = tempfile::tempdir().unwrap();
    for kube in KUBE_VERSIONS {
        let mut files: Vec<PathBuf> = Vec::new();
        let mut expected = 0;
        for values in all_ci_values() {
            for monitoring in [false, true] {
                let m = Render::new(kube)
                    .values(&values)
                    .monitoring(monitoring)
                    .manifests();
                let monitors: Vec<&Value> = m
                    .docs
                    .iter()
                    .filter(|d| d["apiVersion"] == chart::MONITORING_API)
                    .collect();
                assert_eq!(
                    !monitors.is_empty(),
                    monitoring,
                    "monitoring objects must render exactly when the API is there ({} {kube}): {:?}",
                    values.display(),
                    m.kinds()
                );
                // kubernetes-validate has no schemas for the Prometheus Operator's CRDs: those
                // (PodMonitor, ServiceMonitor, PrometheusRule) are checked by their own tests.
                let core: Vec<&Value> = m
                    .docs
                    .iter()
                    .filter(|d| d["apiVersion"] != chart::MONITORING_API)
                    .collect();
                expected += core.len();
                let name = format!(
                    "{}-{kube}-{monitoring}.yaml",
                    values.file_stem().unwrap().to_string_lossy()
                );
                let text: String = core
                    .iter()
                    .map(|d| format!("---\n{}", yaml_serde::to_string(d).unwrap()))
                    .collect();
                std::fs::write(dir.path().join(&name), text).unwrap();
                files.push(dir.path().join(name));
            }
        }
        let out = tools::output(
            tools::command("kubernetes-validate")
                .args(["--strict", "--kubernetes-version", kube])
                .args(&files),
        );
        let report = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate {kube} failed:\n{report}"
        );
        let passed = report.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed, expected,
            "every object must pass against {kube}, none unvalidated:\n{report}"
        );
    }
}

#[test]
fn standalone_mode_renders_a_deployment_its_policy_and_a_service_for_the_admin_port() {
    let m = standalone("1.33.0").manifests();
    for kind in ["Deployment", "ConfigMap", "Service", "Secret"] {
        assert!(m.has(kind), "standalone renders a {kind}: {:?}", m.kinds());
    }
    let service = m.one("Service");
    let admin = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "outrigger-admin")
        .expect("the admin port on the Service");
    assert_eq!(admin["port"], 9090);
    assert_eq!(admin["targetPort"], "outrigger-admin");
    let labels = &m.one("Deployment")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(
            &labels[k.as_str().unwrap()],
            v,
            "the Service selects the pods"
        );
    }
    // Sidecar mode renders no workload of its own: the service's chart has it.
    let sidecar = Render::new("1.33.0")
        .values(ci_values("sidecar-amqp-values.yaml"))
        .manifests();
    assert!(!sidecar.has("Deployment") && !sidecar.has("Service"));
    assert!(sidecar.has("ConfigMap"));
}

#[test]
fn native_sidecar_from_1_29_regular_container_before() {
    let new = standalone("1.33.0").manifests();
    let pod = pod_spec(new.one("Deployment"));
    assert_eq!(names(pod, "initContainers"), ["outrigger"]);
    assert_eq!(names(pod, "containers"), ["app"]);
    let (_, sidecar) = container(pod, "outrigger");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert!(
        sidecar["lifecycle"].is_null(),
        "Kubernetes orders a native sidecar's stop after the app: no preStop needed"
    );

    let old = standalone("1.28.0").manifests();
    let pod = pod_spec(old.one("Deployment"));
    assert!(names(pod, "initContainers").is_empty());
    assert_eq!(names(pod, "containers"), ["app", "outrigger"]);
    let (_, sidecar) = container(pod, "outrigger");
    assert!(sidecar["restartPolicy"].is_null());
    let hook = sidecar["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("a preStop exec hook on a regular container");
    let script = str_of(&hook[2], "the preStop script");
    assert!(
        script.contains("/dev/tcp/127.0.0.1/8080") && script.contains("seq 20"),
        "the hook waits (at most appStopSeconds) until the app stops accepting: {script}"
    );
}

#[test]
fn vendor_and_prerelease_versions_choose_by_their_minor() {
    for (kube, native) in [
        ("v1.29.0-eks-a5ec690", true),
        ("v1.30.2-gke.1587003", true),
        ("1.29.0-rc.1", true),
        ("v1.28.9-eks-036c24b", false),
    ] {
        let m = standalone(kube).manifests();
        let (placement, _) = sidecar_of(&m);
        assert_eq!(placement == Placement::Init, native, "on {kube}");
    }
    let forced = standalone("1.33.0").set("nativeSidecar=false").manifests();
    assert_eq!(sidecar_of(&forced).0, Placement::Main);
}

#[test]
fn probes_startup_readiness_liveness() {
    for kube in KUBE_VERSIONS {
        let (_, c) = sidecar_of(&standalone(kube).manifests());
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{probe} on {kube}");
            assert_eq!(c[probe]["httpGet"]["port"], "outrigger-admin", "{probe}");
        }
        let port = &c["ports"][0];
        assert_eq!(port["name"], "outrigger-admin");
        assert_eq!(port["containerPort"], 9090);
    }
}

#[test]
fn the_admin_listener_is_reachable_from_the_node_with_a_token_from_a_secret() {
    let m = standalone("1.33.0").monitoring(true).manifests();
    let (_, c) = sidecar_of(&m);
    assert_eq!(
        env(&c, "OUTRIGGER__ADMIN__LISTEN").unwrap()["value"],
        "0.0.0.0:9090",
        "kubelet probes come from the node: the listener cannot be loopback"
    );
    let token = &env(&c, "OUTRIGGER__ADMIN__TOKEN").unwrap()["valueFrom"]["secretKeyRef"];
    assert_eq!(token["name"], format!("{FULLNAME}-admin-token"));
    assert_eq!(token["key"], "token");
    let secret = m.one("Secret");
    assert_eq!(secret["metadata"]["name"], token["name"]);
    assert!(secret["data"]["token"]
        .as_str()
        .is_some_and(|t| t.len() > 40));
    let auth = &m.one("ServiceMonitor")["spec"]["endpoints"][0]["authorization"];
    assert_eq!(auth["type"], "Bearer");
    assert_eq!(auth["credentials"]["name"], token["name"]);
    assert_eq!(auth["credentials"]["key"], "token");

    // A Secret the user manages: none rendered, the same reference everywhere.
    let own = Render::new("1.33.0")
        .values(ci_values("sidecar-amqp-values.yaml"))
        .monitoring(true)
        .manifests();
    assert!(!own.has("Secret"));
    let auth = &own.one("PodMonitor")["spec"]["podMetricsEndpoints"][0]["authorization"];
    assert_eq!(auth["credentials"]["name"], "orders-outrigger-admin");
}

#[test]
fn security_context_is_restricted() {
    for kube in KUBE_VERSIONS {
        let m = standalone(kube).manifests();
        let (_, c) = sidecar_of(&m);
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"][0], "ALL");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert!(sc["runAsUser"].as_u64().is_some_and(|u| u > 0));
        let pod = pod_spec(m.one("Deployment"));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(pod["automountServiceAccountToken"], false);
    }
}

#[test]
fn the_policy_is_mounted_where_run_reads_it() {
    let values: Value =
        yaml_serde::from_str(&std::fs::read_to_string(ci_values(STANDALONE_AMQP)).unwrap())
            .unwrap();
    for kube in KUBE_VERSIONS {
        let m = standalone(kube).manifests();
        let deployment = m.one("Deployment");
        let pod = pod_spec(deployment);
        let (_, c) = container(pod, "outrigger");
        let args: Vec<&str> = c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| str_of(a, "an arg"))
            .collect();
        assert_eq!(args[..2], ["run", "--config"]);
        let config = Path::new(args[2]);
        let mount = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| Path::new(str_of(&v["mountPath"], "mountPath")) == config.parent().unwrap())
            .unwrap_or_else(|| panic!("nothing mounted at {}", config.display()));
        assert_eq!(mount["readOnly"], true);
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume");
        let item = &volume["configMap"]["items"][0];
        assert_eq!(item["path"], config.file_name().unwrap().to_str().unwrap());
        let cm = m.one("ConfigMap");
        assert_eq!(cm["metadata"]["name"], volume["configMap"]["name"]);
        let key = str_of(&item["key"], "the item key");
        assert_eq!(
            str_of(&cm["data"][key], "the policy").trim_end(),
            str_of(&values["policy"]["toml"], "policy.toml").trim_end(),
            "the ConfigMap holds the values' policy as it is"
        );
    }

    let existing = standalone("1.33.0")
        .set("policy.toml=")
        .set("policy.existingConfigMap=orders-policy")
        .set("policy.key=outrigger.toml")
        .manifests();
    assert!(
        !existing.has("ConfigMap"),
        "no ConfigMap of ours: {:?}",
        existing.kinds()
    );
    let pod = pod_spec(existing.one("Deployment"));
    let volume = &pod["volumes"][0]["configMap"];
    assert_eq!(volume["name"], "orders-policy");
    assert_eq!(volume["items"][0]["key"], "outrigger.toml");
    assert_eq!(volume["items"][0]["path"], "policy.toml");
}

const CHECKSUM: &str = "checksum/outrigger-policy";

fn annotations(m: &Manifests) -> Value {
    m.one("Deployment")["spec"]["template"]["metadata"]["annotations"].clone()
}

/// `policy.onChange: reload` (the default): the sidecar watches the mounted file, which the
/// kubelet updates in place; no checksum, so a policy change does not restart the pods.
#[test]
fn by_default_a_changed_policy_is_reloaded_in_place_without_rolling_the_pods() {
    for kube in KUBE_VERSIONS {
        let m = standalone(kube).manifests();
        assert!(
            annotations(&m)[CHECKSUM].is_null(),
            "no checksum annotation with onChange reload: {:?}",
            annotations(&m)
        );
        let pod = pod_spec(m.one("Deployment"));
        let (_, c) = container(pod, "outrigger");
        assert_eq!(env(c, "OUTRIGGER__RELOAD__WATCH").unwrap()["value"], "true");
        assert_eq!(
            env(c, "OUTRIGGER__RELOAD__INTERVAL").unwrap()["value"],
            "5s"
        );
        // The kubelet updates a ConfigMap volume in place only where it is mounted as a
        // directory: a subPath mount keeps the file the container started with.
        for field in ["containers", "initContainers"] {
            for c in pod[field].as_sequence().into_iter().flatten() {
                for mount in c["volumeMounts"].as_sequence().into_iter().flatten() {
                    assert!(mount["subPath"].is_null(), "a subPath mount: {mount:?}");
                }
            }
        }
        let mount = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "outrigger-policy")
            .unwrap();
        assert_eq!(mount["mountPath"], "/etc/outrigger");
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "outrigger-policy")
            .unwrap();
        assert!(volume["configMap"]["name"].is_string());
    }
    let slower = standalone("1.33.0")
        .set("policy.reloadInterval=30s")
        .manifests();
    let (_, c) = sidecar_of(&slower);
    assert_eq!(
        env(&c, "OUTRIGGER__RELOAD__INTERVAL").unwrap()["value"],
        "30s"
    );
    // An existing ConfigMap is reloaded the same way.
    let existing = standalone("1.33.0")
        .set("policy.toml=")
        .set("policy.existingConfigMap=orders-policy")
        .manifests();
    let (_, c) = sidecar_of(&existing);
    assert_eq!(
        env(&c, "OUTRIGGER__RELOAD__WATCH").unwrap()["value"],
        "true"
    );
}

/// `policy.onChange: rollout`: the pod template carries the policy's sha256, so a changed
/// policy rolls the pods, and the sidecar does not watch the file.
#[test]
fn with_on_change_rollout_the_checksum_annotation_rolls_the_pods() {
    let rollout = |r: Render| r.set("policy.onChange=rollout");
    let checksum = |m: &Manifests| str_of(&annotations(m)[CHECKSUM], "the checksum").to_owned();
    let m = rollout(standalone("1.33.0")).manifests();
    let a = checksum(&m);
    let (_, c) = sidecar_of(&m);
    assert!(env(&c, "OUTRIGGER__RELOAD__WATCH").is_none());
    let again = checksum(&rollout(standalone("1.33.0")).manifests());
    assert_eq!(a, again, "the same policy renders the same checksum");
    assert_eq!(a.len(), 64, "a sha256: {a}");
    let changed = rollout(standalone("1.33.0"))
        .set("string:policy.toml=[source.amqp]\nqueue = \"orders\"\n[retry]\nmax_attempts = 8\n")
        .manifests();
    assert_ne!(
        a,
        checksum(&changed),
        "a changed policy changes the pod template"
    );
    // Settings outside the policy do not roll the pods through this annotation.
    let other = rollout(standalone("1.33.0"))
        .set("admin.port=9191")
        .manifests();
    assert_eq!(a, checksum(&other));
    // An existing ConfigMap's content is not the chart's to see: no annotation.
    let existing = rollout(standalone("1.33.0"))
        .set("policy.toml=")
        .set("policy.existingConfigMap=orders-policy")
        .manifests();
    assert!(annotations(&existing)[CHECKSUM].is_null());
}

/// The checksum (and the hash the alert expects, its first 12 digits) is that of the very
/// file the pod gets, whatever whitespace the values' TOML starts or ends with.
#[test]
fn the_checksum_is_the_sha256_of_the_file_in_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    for (i, toml) in [
        "[source.amqp]\nqueue = \"orders\"\n",
        "[source.amqp]\nqueue = \"orders\"",
        "[source.amqp]\nqueue = \"orders\"   \n\n  \n\n",
        "  # indented first line\n[source.amqp]\n\n\tqueue = \"orders\" # tab\n",
        "\n\n[source.amqp]\n  queue = \"orders\"\n",
    ]
    .iter()
    .enumerate()
    {
        let values = dir.path().join(format!("policy-{i}.yaml"));
        let mut doc = yaml_serde::Mapping::new();
        doc.insert(
            "policy".into(),
            Value::Mapping(yaml_serde::Mapping::from_iter([
                ("toml".into(), Value::from(*toml)),
                ("onChange".into(), "rollout".into()),
            ])),
        );
        std::fs::write(&values, yaml_serde::to_string(&doc).unwrap()).unwrap();
        let m = standalone("1.33.0").values(&values).manifests();
        let cm = m.one("ConfigMap");
        let file = str_of(&cm["data"]["policy.toml"], "the policy file");
        assert_eq!(
            file,
            format!("{}\n", toml.trim_end()),
            "the file is the TOML with its trailing whitespace trimmed, then one newline"
        );
        let path = dir.path().join(format!("policy-{i}.toml"));
        std::fs::write(&path, file).unwrap();
        let sum = tools::success(Command::new("sha256sum").arg(&path));
        assert_eq!(
            sum.split_whitespace().next().unwrap(),
            str_of(&annotations(&m)[CHECKSUM], "the checksum"),
            "{toml:?}"
        );
    }
}

#[test]
fn secrets_reach_the_sidecar_only_from_secrets() {
    for values in all_ci_values() {
        let m = Render::new("1.33.0").values(&values).manifests();
        let pods: Vec<&Value> = m.all("Deployment").into_iter().map(pod_spec).collect();
        for pod in pods {
            let (_, c) = container(pod, "outrigger");
            for var in c["env"].as_sequence().unwrap() {
                let name = str_of(&var["name"], "an env name");
                if let Some(value) = var["value"].as_str() {
                    assert!(
                        !value.contains('@')
                            && !name.contains("TOKEN")
                            && !name.contains("PASSWORD"),
                        "{name}={value} looks like a secret written into the pod spec ({})",
                        values.display()
                    );
                } else {
                    assert!(
                        var["valueFrom"]["secretKeyRef"]["name"].is_string(),
                        "{name} must come from a Secret"
                    );
                }
            }
        }
        for cm in m.all("ConfigMap") {
            let policy = cm["data"]["policy.toml"].as_str().unwrap_or("");
            assert!(!policy.contains("guest:guest") && !policy.contains("token"));
        }
    }
    let env_from = Render::new("1.33.0")
        .values(ci_values("sidecar-kafka-values.yaml"))
        .set("mode=standalone")
        .set("app.image.repository=registry.example.com/orders")
        .manifests();
    let (_, c) = sidecar_of(&env_from);
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "orders-outrigger-env");
}

/// The README benchmark's peak RSS of the sidecar, as it prints it ("20–35 MB"), and its upper
/// bound in MB.
fn measured_peak_rss() -> (String, f64) {
    let readme = std::fs::read_to_string(outrigger_ops_tests::repo().join("README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| peak RSS |"))
        .expect("the README's benchmark table has a peak RSS row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | peak RSS | raw | sidecar now | sidecar before |
    let now = cells[3].to_owned();
    let upper: f64 = now
        .trim_end_matches(" MB")
        .rsplit(['–', '-'])
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("peak RSS {now:?}: {e}"));
    (now, upper)
}

#[test]
fn resources_and_termination_grace_follow_the_measurements_and_the_drain() {
    // The defaults cite the README's measurement, and cover it.
    let (rss, upper) = measured_peak_rss();
    for doc in ["charts/outrigger/values.yaml", "docs/kubernetes.md"] {
        let text = std::fs::read_to_string(outrigger_ops_tests::repo().join(doc)).unwrap();
        assert!(
            text.contains(&format!("peak RSS {rss}")),
            "{doc} must cite the README's measured peak RSS ({rss})"
        );
    }
    let request_mb = 64.0 * 1.048_576;
    assert!(
        request_mb >= 1.5 * upper,
        "the memory request (64Mi) must cover the measured peak ({upper} MB) with room"
    );
    assert!(
        192.0 * 1.048_576 >= upper + 64.0 * 1.048_576,
        "the limit covers the peak plus max_buffered_bytes"
    );
    let m = standalone("1.28.0").manifests();
    let (_, c) = sidecar_of(&m);
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(c["resources"]["limits"]["memory"], "192Mi");
    assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    assert_eq!(
        env(&c, "OUTRIGGER__SHUTDOWN__GRACE_PERIOD").unwrap()["value"],
        "30s"
    );
    let pod = pod_spec(m.one("Deployment"));
    assert_eq!(
        pod["terminationGracePeriodSeconds"], 55,
        "the app's stop (20s) + the sidecar's drain (30s) + 5s"
    );
    let set = standalone("1.28.0")
        .set("shutdown.terminationGracePeriodSeconds=120")
        .manifests();
    assert_eq!(
        pod_spec(set.one("Deployment"))["terminationGracePeriodSeconds"],
        120
    );
}

#[test]
fn the_embedded_store_gets_a_volume() {
    let empty_dir = standalone("1.33.0").set("data.enabled=true").manifests();
    let pod = pod_spec(empty_dir.one("Deployment"));
    let (_, c) = container(pod, "outrigger");
    let path = str_of(
        &env(c, "OUTRIGGER__DEDUP__EMBEDDED__PATH").unwrap()["value"],
        "the store path",
    );
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "outrigger-data")
        .expect("the data volume is mounted");
    assert!(path.starts_with(str_of(&mount["mountPath"], "mountPath")));
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "outrigger-data")
        .unwrap();
    assert_eq!(volume["emptyDir"]["sizeLimit"], "256Mi");

    let pvc = Render::new("1.33.0")
        .values(ci_values("standalone-kafka-values.yaml"))
        .manifests();
    let claim = pvc.one("PersistentVolumeClaim");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
    let pod = pod_spec(pvc.one("Deployment"));
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "outrigger-data")
        .unwrap();
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );
}

#[test]
fn monitoring_objects_need_the_operator_api_and_carry_extra_labels() {
    let without = standalone("1.33.0").manifests();
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(
            !without.has(kind),
            "{kind} without monitoring.coreos.com/v1"
        );
    }
    let with = standalone("1.33.0").monitoring(true).manifests();
    assert!(with.has("ServiceMonitor") && with.has("PrometheusRule"));
    assert!(
        !with.has("PodMonitor"),
        "standalone mode scrapes through its Service"
    );
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            with.one(kind)["metadata"]["labels"]["release"],
            "kube-prometheus-stack",
            "{kind} carries monitoring.labels"
        );
    }
    let monitor = with.one("ServiceMonitor");
    let service = with.one("Service");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k.as_str().unwrap()], v);
    }

    let sidecar = Render::new("1.33.0")
        .values(ci_values("sidecar-kafka-values.yaml"))
        .monitoring(true)
        .set("monitoring.labels.team=payments")
        .manifests();
    let pm = sidecar.one("PodMonitor");
    assert_eq!(pm["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"]["outrigger-sidecar"],
        FULLNAME
    );
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "outrigger-admin");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "job");
    assert_eq!(endpoint["relabelings"][0]["replacement"], FULLNAME);
    assert!(!sidecar.has("Deployment") && !sidecar.has("ServiceMonitor"));
    let off = Render::new("1.33.0")
        .values(ci_values("sidecar-kafka-values.yaml"))
        .monitoring(true)
        .set("monitoring.podMonitor.enabled=false")
        .set("monitoring.rules.enabled=false")
        .manifests();
    assert!(!off.has("PodMonitor") && !off.has("PrometheusRule"));
}

#[test]
fn the_dashboard_ships_as_a_file_and_optionally_as_a_configmap() {
    let file = chart::dir().join("files/grafana-dashboard.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let on = Render::new("1.33.0")
        .values(ci_values("sidecar-kafka-values.yaml"))
        .manifests();
    let cm = on
        .all("ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == format!("{FULLNAME}-dashboard"))
        .expect("the dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        str_of(&cm["data"]["outrigger.json"], "the dashboard").trim(),
        text.trim()
    );
    let off = standalone("1.33.0").manifests();
    assert!(off
        .all("ConfigMap")
        .iter()
        .all(|c| c["metadata"]["name"] != format!("{FULLNAME}-dashboard")));
}

/// Each bad value and the message helm must refuse it with.
#[test]
fn the_schema_and_the_templates_refuse_wrong_values_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["mode=daemonset"], "at '/mode': value must be one of 'sidecar', 'standalone'"),
        (&["replicaCount=2"], "additional properties 'replicaCount' not allowed"),
        (&["policy.tomll=x"], "at '/policy': additional properties 'tomll' not allowed"),
        (&["policy.onChange=restart"], "at '/policy/onChange': value must be one of 'reload', 'rollout'"),
        (&["policy.reloadInterval=5 seconds"], "at '/policy/reloadInterval'"),
        (&["image.pullPolicy=Sometimes"], "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
        (&["nativeSidecar=maybe"], "at '/nativeSidecar'"),
        (&["admin.listenAddress=127.0.0.1"], "at '/admin/listenAddress': value must be one of '0.0.0.0', '[::]'"),
        (&["admin.port=70000"], "at '/admin/port'"),
        (&["secretEnv[0].name=AMQP_URL", "secretEnv[0].secretName=rabbit", "secretEnv[0].secretKey=url"], "at '/secretEnv/0/name': 'AMQP_URL' does not match pattern"),
        (&["extraEnv[0].value=debug"], "at '/extraEnv/0': missing property 'name'"),
        (&["resources.limits.memory=lots"], "at '/resources/limits/memory'"),
        (&["data.type=hostPath"], "at '/data/type': value must be one of 'emptyDir', 'persistentVolumeClaim'"),
        (&["monitoring.interval=30 seconds"], "at '/monitoring/interval'"),
        (&["monitoring.rules.redeliveries.ratio=5"], "at '/monitoring/rules/redeliveries/ratio'"),
        (&["policy.toml="], "no policy: set policy.toml"),
        (&["policy.existingConfigMap=orders-policy"], "set policy.toml or policy.existingConfigMap, not both"),
        (&["string:policy.toml=[source.amqp]\nurl = \"amqp://orders:s3cret@rabbitmq:5672/%2f\"\nqueue = \"orders\"\n"], "policy.toml holds a URL with a password"),
        (&["string:policy.toml=[source.amqp]\nqueue = \"orders\"\n[admin]\ntoken = \"hunter2\"\n"], "policy.toml sets an admin token"),
        (&["admin.token.create=false"], "no admin token"),
        (&["app.image.repository="], "mode standalone deploys your app beside the sidecar: set app.image.repository"),
        (&["data.enabled=true", "data.type=persistentVolumeClaim", "replicas=2"], "the embedded dedup store serves one replica only"),
    ];
    for (sets, message) in cases {
        let mut render = standalone("1.33.0");
        for s in *sets {
            render = render.set(s);
        }
        let error = render.error();
        assert!(
            error.contains(message),
            "--set {sets:?} must fail with {message:?}, got:\n{error}"
        );
    }
    // The chart's defaults alone say what is missing.
    let error = Render::new("1.33.0").error();
    assert!(error.contains("no policy: set policy.toml"), "{error}");
}

/// The example service chart that depends on this one, with the dependency in place
/// (`helm dependency build` would copy it there; the test copies it itself, offline).
fn service_chart() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = outrigger_ops_tests::repo().join("examples/postgres-app/chart");
    copy_dir(&src, &dir.path().join("orders"));
    copy_dir(&chart::dir(), &dir.path().join("orders/charts/outrigger"));
    dir
}

/// The example service chart's values files, one per broker, sorted.
fn example_values_files() -> Vec<String> {
    let dir = outrigger_ops_tests::repo().join("examples/postgres-app/chart");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("values-") && n.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .arg("-R")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "cp -R {} {}",
        from.display(),
        to.display()
    );
}

#[test]
fn a_service_chart_adds_the_sidecar_with_the_named_templates() {
    let dir = service_chart();
    let chart_dir = dir.path().join("orders");
    let files = example_values_files();
    assert_eq!(
        files,
        [
            "values-amqp.yaml",
            "values-kafka.yaml",
            "values-nats.yaml",
            "values-redis-streams.yaml"
        ],
        "one values file per broker"
    );
    for file in &files {
        tools::success(
            tools::command("helm")
                .args(["lint", "--strict"])
                .arg(&chart_dir)
                .arg("--values")
                .arg(chart_dir.join(file)),
        );
    }
    for kube in KUBE_VERSIONS {
        for file in &files {
            let m = Render::chart(&chart_dir, kube)
                .values(chart_dir.join(file))
                .monitoring(true)
                .manifests();
            let deployment = m.one("Deployment");
            assert_eq!(deployment["metadata"]["name"], "orders");
            let pod = pod_spec(deployment);
            let (placement, sidecar) = container(pod, "outrigger");
            assert_eq!(
                placement == Placement::Init,
                kube == "1.33.0",
                "{file} on {kube}"
            );
            assert_eq!(container(pod, "orders").0, Placement::Main);
            let volumes: Vec<&str> = pod["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| str_of(&v["name"], "a volume"))
                .collect();
            assert!(volumes.contains(&"outrigger-policy"), "{volumes:?}");
            let template = &deployment["spec"]["template"]["metadata"];
            assert_eq!(template["labels"]["outrigger-sidecar"], FULLNAME);
            // onChange reload: the sidecar watches the mounted policy; no checksum rolls the pods.
            assert!(template["annotations"][CHECKSUM].is_null());
            assert_eq!(
                env(sidecar, "OUTRIGGER__RELOAD__WATCH").unwrap()["value"],
                "true"
            );
            assert_eq!(pod["terminationGracePeriodSeconds"], 55);
            // The subchart rendered the policy the sidecar mounts, and monitors these pods.
            let cm = m
                .all("ConfigMap")
                .into_iter()
                .find(|c| c["metadata"]["name"] == format!("{FULLNAME}-policy"))
                .expect("the policy ConfigMap");
            assert!(cm["data"]["policy.toml"]
                .as_str()
                .unwrap()
                .contains("[source."));
            assert_eq!(
                m.one("PodMonitor")["spec"]["selector"]["matchLabels"]["outrigger-sidecar"],
                FULLNAME
            );
            assert_eq!(
                env(sidecar, "OUTRIGGER__ADMIN__TOKEN").unwrap()["valueFrom"]["secretKeyRef"]
                    ["name"],
                m.one("Secret")["metadata"]["name"]
            );
            // And the pod is valid for this version.
            let file = dir.path().join(format!("rendered-{kube}-{file}"));
            let core: String = m
                .docs
                .iter()
                .filter(|d| d["apiVersion"] != chart::MONITORING_API)
                .map(|d| format!("---\n{}", yaml_serde::to_string(d).unwrap()))
                .collect();
            std::fs::write(&file, core).unwrap();
            tools::success(
                tools::command("kubernetes-validate")
                    .args(["--strict", "--kubernetes-version", kube])
                    .arg(&file),
            );
        }
    }
}
