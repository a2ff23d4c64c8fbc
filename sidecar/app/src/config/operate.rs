//! `[admin]`, `[log]` and `[shutdown]`: how the sidecar is observed and stopped.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::de;

/// `[admin]`: the listener serving `/metrics`, `/healthz`, `/readyz` and the DLQ API.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:PORT` to listen on. Anything but loopback requires `token`.
    #[serde(default = "default_listen", deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// Bearer token (`Authorization: Bearer <token>`) required on the operator endpoints
    /// (`/metrics`, the DLQ API); the probes stay open. Prefer setting it from the
    /// environment, `OUTRIGGER__ADMIN__TOKEN`, over writing it in the file.
    #[serde(default)]
    pub token: Option<String>,
}

/// Loopback: nothing outside the pod can resubmit or purge dead letters unless the user opens
/// it up (with a token). 9090 is the customary metrics port.
fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9090))
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token: None,
        }
    }
}

/// `[log]`: what the sidecar writes to stderr.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    #[serde(default)]
    pub format: LogFormat,
    /// A level (`trace`, `debug`, `info`, `warn`, `error`) or `tracing` filter directives such
    /// as `info,outrigger=debug`. `RUST_LOG`, when set, wins.
    #[serde(default = "default_level")]
    pub level: String,
}

/// Startup, shutdown and problems, without a line per message.
fn default_level() -> String {
    "info".to_owned()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_level(),
        }
    }
}

/// The log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines. The default: the first reader is a person at a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[shutdown]`: what happens on SIGTERM.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight messages may finish after SIGTERM; the rest are released for
    /// redelivery. Keep it below the pod's `terminationGracePeriodSeconds`.
    #[serde(default = "default_grace_period", deserialize_with = "de::duration")]
    pub grace_period: Duration,
}

/// Kubernetes' default termination grace period, which the default delivery timeout (10s) fits
/// in; give the pod a few seconds more so the sidecar can settle before SIGKILL.
fn default_grace_period() -> Duration {
    Duration::from_secs(30)
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace_period: default_grace_period(),
        }
    }
}

/// `[reload]`: how a changed policy file is picked up while running. SIGHUP always re-reads
/// it; `watch` also notices a change on disk by itself (a ConfigMap mount is updated in place,
/// and nothing sends a signal).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Re-read the file when its content changes, checked every `interval`.
    #[serde(default)]
    pub watch: bool,
    /// How often a watched file is read.
    #[serde(default = "default_reload_interval", deserialize_with = "de::duration")]
    pub interval: Duration,
}

/// Kubelet refreshes ConfigMap volumes about once a minute; a few seconds more is not felt,
/// and reading a small file this often costs nothing.
fn default_reload_interval() -> Duration {
    Duration::from_secs(5)
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: false,
            interval: default_reload_interval(),
        }
    }
}
