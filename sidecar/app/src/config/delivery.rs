//! `[delivery]` and `[backpressure]`: how events reach the app, and how many at once.

use std::time::Duration;

use bytesize::ByteSize;
use http::Uri;
use serde::Deserialize;

use super::de;

/// `[delivery]`: the HTTP request the app receives for each message.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// The app's URL; each message is `POST`ed to it. Plain `http://` with a host: the app runs
    /// beside the sidecar, on loopback or in the same pod.
    #[serde(default = "default_url", deserialize_with = "de::uri")]
    pub url: Uri,
    /// How long one attempt may take, from connecting to the end of the response, before it
    /// counts as a timeout (retried by default).
    #[serde(default = "default_timeout", deserialize_with = "de::duration")]
    pub timeout: Duration,
    /// Broker headers passed on to the app (names compared case-insensitively). Others are
    /// dropped, so internal broker metadata does not leak into the app by accident.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// The CloudEvents `ce-source` attribute; default `/outrigger/<source kind>/<queue>` (the
    /// first topic for kafka).
    #[serde(default)]
    pub ce_source: Option<String>,
    /// The CloudEvents `ce-type` attribute, for payloads that are not already CloudEvents.
    #[serde(default = "default_ce_type")]
    pub ce_type: String,
    /// How much of the app's response body is kept for classification and dead letters.
    #[serde(
        default = "default_response_excerpt",
        deserialize_with = "de::byte_size"
    )]
    pub response_excerpt: ByteSize,
    /// Speak HTTP/2 without TLS (h2c, prior knowledge) instead of HTTP/1.1 keep-alive.
    #[serde(default)]
    pub http2: bool,
}

impl DeliveryConfig {
    /// Whether broker header `name` is on the `forward_headers` allow-list.
    pub fn forwards(&self, name: &str) -> bool {
        self.forward_headers
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

/// The conventional local port of an HTTP app; the sidecar shares the app's network namespace.
fn default_url() -> Uri {
    Uri::from_static("http://127.0.0.1:8080/")
}

/// Long enough for a slow handler, short enough that a hung app is noticed well before the
/// dedup lease (60s) runs out.
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A generic type the app can route on until the user names a real one.
fn default_ce_type() -> String {
    "outrigger.event".to_owned()
}

/// Enough of an error body to see what went wrong, small enough for every dead letter.
fn default_response_excerpt() -> ByteSize {
    ByteSize::kib(4)
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            timeout: default_timeout(),
            forward_headers: Vec::new(),
            ce_source: None,
            ce_type: default_ce_type(),
            response_excerpt: default_response_excerpt(),
            http2: false,
        }
    }
}

/// `[backpressure]`: how much work is outstanding at once. Fetching pauses at whichever limit
/// is reached first and resumes below it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpressureConfig {
    /// Messages fetched but not yet settled, in all. For amqp it is also the broker prefetch;
    /// for kafka, every partition pauses at the limit.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u16,
    /// Messages of one Kafka partition fetched but not yet settled: that partition pauses at
    /// the limit while the others go on. At most `max_in_flight`. Does not apply to amqp, where
    /// a queue is a single stream whose limit is `max_in_flight` (the prefetch).
    #[serde(default = "default_max_in_flight_per_partition")]
    pub max_in_flight_per_partition: u16,
    /// Payload bytes fetched but not yet settled, whatever the number of messages.
    #[serde(
        default = "default_max_buffered_bytes",
        deserialize_with = "de::byte_size"
    )]
    pub max_buffered_bytes: ByteSize,
}

/// Keeps a typical app busy without piling up more unacknowledged messages than a restart
/// can redeliver quickly.
const fn default_max_in_flight() -> u16 {
    64
}

/// A quarter of the default `max_in_flight`: one hot partition cannot take every slot, so the
/// other partitions keep moving.
const fn default_max_in_flight_per_partition() -> u16 {
    16
}

/// Bounds the sidecar's memory whatever the message size: 64 messages of 1MiB fit, a burst of
/// large messages waits.
fn default_max_buffered_bytes() -> ByteSize {
    ByteSize::mib(64)
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
            max_in_flight_per_partition: default_max_in_flight_per_partition(),
            max_buffered_bytes: default_max_buffered_bytes(),
        }
    }
}
