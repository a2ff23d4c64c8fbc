//! Rendering `charts/outrigger` with `helm template` and reading what it renders.

use std::path::{Path, PathBuf};

use yaml_serde::Value;

use crate::tools;

/// The release and namespace every render uses (the promtool tests expect them).
pub const RELEASE: &str = "orders";
/// See [`RELEASE`].
pub const NAMESPACE: &str = "payments";
/// The objects' name for [`RELEASE`].
pub const FULLNAME: &str = "orders-outrigger";

/// The Kubernetes versions CI renders for: the last without native sidecars, and a current one.
pub const KUBE_VERSIONS: [&str; 2] = ["1.28.0", "1.33.0"];
/// The Prometheus Operator's API, present or not.
pub const MONITORING_API: &str = "monitoring.coreos.com/v1";

/// The chart's directory.
pub fn dir() -> PathBuf {
    crate::repo().join("charts/outrigger")
}

/// `charts/outrigger/ci/<name>`.
pub fn ci_values(name: &str) -> PathBuf {
    dir().join("ci").join(name)
}

/// Every values file under `charts/outrigger/ci/`, sorted.
pub fn all_ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("ci"))
        .expect("charts/outrigger/ci exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no values files in charts/outrigger/ci");
    files
}

/// One `helm template` run.
#[derive(Clone, Debug)]
pub struct Render {
    chart: PathBuf,
    kube: String,
    monitoring: bool,
    values: Vec<PathBuf>,
    set: Vec<String>,
}

impl Render {
    /// Renders `charts/outrigger` for Kubernetes `kube`, without the monitoring API.
    pub fn new(kube: &str) -> Self {
        Self::chart(&dir(), kube)
    }

    /// Renders the chart in `chart` (e.g. a service chart that depends on this one).
    pub fn chart(chart: &Path, kube: &str) -> Self {
        Self {
            chart: chart.to_owned(),
            kube: kube.to_owned(),
            monitoring: false,
            values: Vec::new(),
            set: Vec::new(),
        }
    }

    /// As if the cluster served `monitoring.coreos.com/v1`.
    pub fn monitoring(mut self, on: bool) -> Self {
        self.monitoring = on;
        self
    }

    /// Adds a values file.
    pub fn values(mut self, file: impl AsRef<Path>) -> Self {
        self.values.push(file.as_ref().to_owned());
        self
    }

    /// Adds a `--set` (or `--set-string` with `string:` in front) override.
    pub fn set(mut self, assignment: &str) -> Self {
        self.set.push(assignment.to_owned());
        self
    }

    /// `helm template`'s stdout, or its stderr when it fails.
    pub fn run(&self) -> Result<String, String> {
        let mut cmd = tools::command("helm");
        cmd.args(["template", RELEASE]).arg(&self.chart).args([
            "--namespace",
            NAMESPACE,
            "--kube-version",
            &self.kube,
        ]);
        if self.monitoring {
            cmd.args(["--api-versions", MONITORING_API]);
        }
        for v in &self.values {
            cmd.arg("--values").arg(v);
        }
        for s in &self.set {
            match s.strip_prefix("string:") {
                Some(s) => cmd.args(["--set-string", s]),
                None => cmd.args(["--set", s]),
            };
        }
        let out = tools::output(&mut cmd);
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).expect("helm prints UTF-8"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The rendered manifests; panics when rendering fails.
    pub fn manifests(&self) -> Manifests {
        let text = self
            .run()
            .unwrap_or_else(|e| panic!("helm template {self:?} failed:\n{e}"));
        Manifests::parse(&text)
    }

    /// The error `helm template` fails with; panics when it renders.
    pub fn error(&self) -> String {
        match self.run() {
            Ok(_) => panic!("helm template {self:?} rendered, but should have failed"),
            Err(e) => e,
        }
    }
}

/// The documents `helm template` printed.
#[derive(Clone, Debug)]
pub struct Manifests {
    /// The rendered text.
    pub text: String,
    /// Each non-empty document.
    pub docs: Vec<Value>,
}

impl Manifests {
    /// Parses a multi-document YAML stream.
    pub fn parse(text: &str) -> Self {
        use serde::Deserialize as _;
        let docs = yaml_serde::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("invalid YAML: {e}\n{text}")))
            .filter(|v| !v.is_null())
            .collect();
        Self {
            text: text.to_owned(),
            docs,
        }
    }

    /// The objects of `kind`.
    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    /// The one object of `kind`; panics unless there is exactly one.
    pub fn one(&self, kind: &str) -> &Value {
        match self.all(kind).as_slice() {
            [one] => one,
            other => panic!("expected one {kind}, found {}:\n{}", other.len(), self.text),
        }
    }

    /// Whether any object is of `kind`.
    pub fn has(&self, kind: &str) -> bool {
        !self.all(kind).is_empty()
    }

    /// The kinds rendered, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.docs
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

/// Where a container sits in a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// `initContainers`.
    Init,
    /// `containers`.
    Main,
}

/// The pod spec of a Deployment (or any object with `spec.template.spec`).
pub fn pod_spec(workload: &Value) -> &Value {
    let spec = &workload["spec"]["template"]["spec"];
    assert!(spec.is_mapping(), "no pod spec in {workload:?}");
    spec
}

/// The container `name` of a pod spec and where it is; panics when it is not there.
pub fn container<'a>(pod: &'a Value, name: &str) -> (Placement, &'a Value) {
    for (field, placement) in [
        ("initContainers", Placement::Init),
        ("containers", Placement::Main),
    ] {
        if let Some(list) = pod[field].as_sequence() {
            if let Some(c) = list.iter().find(|c| c["name"] == name) {
                return (placement, c);
            }
        }
    }
    panic!("no container {name} in {pod:?}")
}

/// The names of a pod's containers in `field` (`containers` or `initContainers`).
pub fn names(pod: &Value, field: &str) -> Vec<String> {
    pod[field]
        .as_sequence()
        .map(|l| {
            l.iter()
                .map(|c| c["name"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The environment variable `name` of a container.
pub fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"] == name)
}

/// A string field, or a panic naming what was expected.
pub fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}
