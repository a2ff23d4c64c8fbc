//! `[delivery]` and `[backpressure]`: how events reach the app, and how many at once.

use std::time::Duration;

use bytesize::ByteSize;
use http::Uri;
use outrigger_core::Limits;
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
    /// How long one attempt may take once connected, to the end of the response, before it
    /// counts as a timeout (retried by default).
    #[serde(default = "default_timeout", deserialize_with = "de::duration")]
    pub timeout: Duration,
    /// How long making a connection to the app may take. A connect that fails or takes longer
    /// reached nothing: it counts against the app (see `[breaker]`), not against the message.
    #[serde(default = "default_connect_timeout", deserialize_with = "de::duration")]
    pub connect_timeout: Duration,
    /// Connections to the app at most; HTTP/1.1 carries one delivery at a time on each, and
    /// they are kept alive and reused while the app allows it.
    #[serde(default = "default_max_connections")]
    pub max_connections: u16,
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
    /// The largest payload delivered; a larger one is dead-lettered (class `decode`) with the
    /// reason, never sent.
    #[serde(
        default = "default_max_message_size",
        deserialize_with = "de::byte_size"
    )]
    pub max_message_size: ByteSize,
    /// `[delivery.batch]`: several events in one `POST`, as a CloudEvents batch
    /// (`application/cloudevents-batch+json`), answered with a verdict per event. Off when
    /// the table is absent: one `POST` per attempt.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
}

/// `[delivery.batch]`: how events are gathered into one request. Each event keeps its own
/// claim, attempts, ordering and dead letter; only the request is shared.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Events in one request at most; at most `backpressure.max_in_flight`, or a batch could
    /// never fill.
    #[serde(default = "default_batch_events")]
    pub max_events: u16,
    /// Bytes of events (as JSON) in one request at most; an event larger than this goes
    /// alone.
    #[serde(default = "default_batch_bytes", deserialize_with = "de::byte_size")]
    pub max_bytes: ByteSize,
    /// How long the first event of a batch waits for more before the batch goes out anyway:
    /// the latency batching adds at most, when traffic is light.
    #[serde(default = "default_batch_wait", deserialize_with = "de::duration")]
    pub max_wait: Duration,
}

/// Enough to spread a request's cost over many events, few enough that one slow batch holds
/// little back.
const fn default_batch_events() -> u16 {
    32
}

/// Far above 32 events of a few KiB, far below what an app would refuse to read.
fn default_batch_bytes() -> ByteSize {
    ByteSize::mib(1)
}

/// Like a producer's `linger.ms`: invisible next to an app's own latency, long enough for a
/// busy pipeline to fill a batch.
fn default_batch_wait() -> Duration {
    Duration::from_millis(5)
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: default_batch_events(),
            max_bytes: default_batch_bytes(),
            max_wait: default_batch_wait(),
        }
    }
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

/// Long enough for an app whose listen backlog is full to accept after the kernel's second
/// SYN retry (about 3s), short enough that an app that is gone is noticed quickly.
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Enough to keep an app on loopback busy; an app with a small listen backlog (5 for Python's
/// `http.server`) sees at most this many connects at once.
const fn default_max_connections() -> u16 {
    32
}

/// A generic type the app can route on until the user names a real one.
fn default_ce_type() -> String {
    "outrigger.event".to_owned()
}

/// Past what brokers carry by default (Kafka 1 MB, RabbitMQ's 16 MiB frames of a larger
/// message), yet a bound on what one delivery can take.
fn default_max_message_size() -> ByteSize {
    ByteSize::mib(16)
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
            connect_timeout: default_connect_timeout(),
            max_connections: default_max_connections(),
            forward_headers: Vec::new(),
            ce_source: None,
            ce_type: default_ce_type(),
            response_excerpt: default_response_excerpt(),
            http2: false,
            max_message_size: default_max_message_size(),
            batch: None,
        }
    }
}

/// `[backpressure]`: how much work is outstanding at once, in three separate limits: what is
/// taken from the broker and not settled (`max_in_flight`, per partition, in bytes), what the
/// broker pushes ahead (`prefetch`), and what is delivered to the app at once
/// (`max_concurrency`). Taking from the broker pauses at whichever limit is reached first and
/// resumes below it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpressureConfig {
    /// Messages taken from the broker and not yet settled, in all: running, waiting for their
    /// ordering lane, or waiting to be retried in place.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u16,
    /// Messages of one Kafka partition taken and not yet settled: that partition pauses at the
    /// limit while the others go on. At most `max_in_flight`. Does not apply to a source
    /// without partitions (amqp), where a queue is a single stream.
    #[serde(default = "default_max_in_flight_per_partition")]
    pub max_in_flight_per_partition: u16,
    /// With `ordering.mode = "none"`: messages of one key delivered at once; the key's others
    /// wait (holding their place in `max_in_flight`, not a delivery slot), so one hot key
    /// cannot take every delivery to the app. Messages without a key are not limited.
    /// Default: no limit.
    #[serde(default)]
    pub max_in_flight_per_key: Option<u16>,
    /// Payload bytes taken and not yet settled, whatever the number of messages.
    #[serde(
        default = "default_max_buffered_bytes",
        deserialize_with = "de::byte_size"
    )]
    pub max_buffered_bytes: ByteSize,
    /// Deliveries to the app at once (HTTP requests in flight), at most `max_in_flight`.
    /// Default: `max_in_flight`. With `adaptive`, the most the limit grows to.
    #[serde(default)]
    pub max_concurrency: Option<u16>,
    /// Find the app's concurrency from its answers instead of fixing it: the limit grows while
    /// the app's latency shows no queue, shrinks when requests wait or the app refuses (`429`,
    /// `503`) or times out; between `min_concurrency` and `max_concurrency`.
    #[serde(default)]
    pub adaptive: bool,
    /// With `adaptive`: the floor of the limit. Default 1.
    #[serde(default = "default_min_concurrency")]
    pub min_concurrency: u16,
    /// Messages the broker hands out ahead of the pipeline: RabbitMQ's `basic.qos` prefetch
    /// (default `max_in_flight`: RabbitMQ counts a delivery as unacked until it is settled),
    /// or the records librdkafka keeps fetched per Kafka partition (default 1000).
    #[serde(default)]
    pub prefetch: Option<u16>,
}

impl BackpressureConfig {
    /// Deliveries to the app at once: `max_concurrency`, or else `max_in_flight`; with
    /// `adaptive`, the most there may be.
    pub fn concurrency(&self) -> usize {
        usize::from(self.max_concurrency.unwrap_or(self.max_in_flight))
    }

    /// With `adaptive`: where the limit starts, and its bounds. It starts low (8, or the floor
    /// when higher) and grows within seconds under load, so an app that cannot take much is
    /// not flooded before the first measurement.
    pub fn adaptive_bounds(&self) -> Option<outrigger_policies::Bounds> {
        let max = self.concurrency();
        let min = usize::from(self.min_concurrency);
        self.adaptive.then(|| outrigger_policies::Bounds {
            initial: min.max(ADAPTIVE_START).min(max),
            min,
            max,
        })
    }
}

/// Where an adaptive limit starts (see [`BackpressureConfig::adaptive_bounds`]).
const ADAPTIVE_START: usize = 8;

/// One delivery at a time at least: a floor of 0 could stop delivering altogether.
const fn default_min_concurrency() -> u16 {
    1
}

/// See [`Limits::DEFAULT_MAX_IN_FLIGHT`], which every adapter shares.
const fn default_max_in_flight() -> u16 {
    Limits::DEFAULT_MAX_IN_FLIGHT
}

/// See [`Limits::DEFAULT_MAX_IN_FLIGHT_PER_PARTITION`].
const fn default_max_in_flight_per_partition() -> u16 {
    Limits::DEFAULT_MAX_IN_FLIGHT_PER_PARTITION
}

/// See [`Limits::DEFAULT_MAX_BUFFERED_BYTES`].
fn default_max_buffered_bytes() -> ByteSize {
    ByteSize::b(Limits::DEFAULT_MAX_BUFFERED_BYTES)
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self {
            max_in_flight: default_max_in_flight(),
            max_in_flight_per_partition: default_max_in_flight_per_partition(),
            max_in_flight_per_key: None,
            max_buffered_bytes: default_max_buffered_bytes(),
            max_concurrency: None,
            adaptive: false,
            min_concurrency: default_min_concurrency(),
            prefetch: None,
        }
    }
}
