//! `[breaker]`: what the sidecar does while the app cannot be reached.

use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::de;

/// `[breaker]`: an app that cannot be reached is the app's fault, not the message's. A
/// delivery that could not connect spends no attempt and waits; a run of them (or of 503
/// answers) opens the circuit: nothing more is taken from the broker, the app is probed with a
/// backoff, one trial delivery goes out once it answers, and the circuit closes when that
/// reaches it. `retry.max_age` still bounds how long a message waits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Turn it off to treat a failed connect like any failed attempt (`[[classify.rules]]`
    /// with `connection_error`, retried by default, spending the attempt).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Deliveries in a row that could not connect to the app, to open the circuit.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// 503 answers in a row, to open it: a storm of "unavailable" means the app is not up.
    #[serde(default = "default_unavailable")]
    pub unavailable: u32,
    /// A URL the prober GETs (2xx means up), like `http://127.0.0.1:8080/healthz`. Default: a
    /// TCP connect to `delivery.url`'s host and port.
    #[serde(default, deserialize_with = "optional_uri")]
    pub probe_url: Option<Uri>,
    /// The first wait between probes while the circuit is open; it doubles up to `probe_max`.
    #[serde(default = "default_probe_interval", deserialize_with = "de::duration")]
    pub probe_interval: Duration,
    /// The longest wait between probes.
    #[serde(default = "default_probe_max", deserialize_with = "de::duration")]
    pub probe_max: Duration,
}

fn optional_uri<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Uri>, D::Error> {
    de::uri(d).map(Some)
}

/// The point of the breaker; turning it off is the exception.
const fn default_enabled() -> bool {
    true
}

/// Three refused connects in a row is an app that is not listening, not a blip.
const fn default_failures() -> u32 {
    3
}

/// A 503 alone throttles; twenty in a row is an app that is up but not serving.
const fn default_unavailable() -> u32 {
    20
}

/// A restarting app is back within a second or two: probe soon.
fn default_probe_interval() -> Duration {
    Duration::from_millis(200)
}

/// An app down for minutes is probed every few seconds, no less often.
fn default_probe_max() -> Duration {
    Duration::from_secs(5)
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            failures: default_failures(),
            unavailable: default_unavailable(),
            probe_url: None,
            probe_interval: default_probe_interval(),
            probe_max: default_probe_max(),
        }
    }
}
