//! The broker seam: what an adapter crate provides so the app can configure, validate, run and
//! operate its broker without knowing anything about it.
//!
//! An adapter implements [`Broker`] once. It owns its `[source.<KIND>]` table
//! ([`Broker::Config`], a serde struct with its defaults and docs), checks it in
//! [`Broker::validate`] against the settings every source shares ([`SourceContext`]), says what
//! it can do ([`Capabilities`]), connects a [`Source`], and opens its dead-letter queue for
//! `outrigger dlq`. `outrigger check` and `outrigger run` call the same `validate`, and
//! [`Broker::connect`] refuses exactly what it finds, so nothing `run` refuses for a config
//! reason gets past `check`.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::config::{KeyPath, Problem};
use crate::dlq::{DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Resubmission, Scope};
use crate::ordering::OrderingMode;
use crate::source::{Source, SourceError};

/// One broker, as the app sees it. See the module docs.
pub trait Broker: 'static {
    /// The name of its table, `[source.<KIND>]`, and its label in logs and metrics.
    const KIND: &'static str;

    /// The `[source.<KIND>]` table: `#[serde(deny_unknown_fields)]`, defaults next to their
    /// fields, field docs written for users.
    type Config: DeserializeOwned + Clone + fmt::Debug + PartialEq + Send + Sync + 'static;

    /// The consumer `connect` returns.
    type Source: Source;

    /// The dead-letter queue `outrigger dlq` works on.
    type DeadLetters: DeadLetterQueue + fmt::Debug + Send + Sync + 'static;

    /// What this broker can do.
    fn capabilities() -> Capabilities;

    /// What it consumes: the queue, or every topic or stream, each with the key it is set by.
    /// The first names the dedup namespace, the metric labels and the CloudEvents source by
    /// default.
    fn names(config: &Self::Config) -> Vec<SourceName>;

    /// Every problem of `config` in `context`, each with the paths of the settings involved.
    /// Pure: no connection, no file. Empty when [`connect`](Self::connect) would take it.
    fn validate(config: &Self::Config, context: &SourceContext) -> Vec<Problem>;

    /// Connects and starts consuming. Refuses an invalid config with [`SourceError::Config`]
    /// (the problems [`validate`](Self::validate) finds), a broker that refuses the consumer
    /// (a missing queue, denied access) with [`SourceError::Rejected`], and an unreachable one
    /// with [`SourceError::Connection`], which a retry may cure.
    fn connect(
        config: &Self::Config,
        context: &SourceContext,
    ) -> impl Future<Output = Result<Self::Source, SourceError>> + Send;

    /// The dead-letter queue of this source; no connection is made before its first pass.
    fn dead_letters(
        config: &Self::Config,
        context: &SourceContext,
    ) -> Result<Self::DeadLetters, SourceError>;
}

/// What a broker can do, for checks and defaults that depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// What one of its source names is called: `queue`, `topic`, `stream`.
    pub noun: Noun,
    /// Retry mode `queue` (retry queues with delay tiers and parked-key chains) is built.
    pub retry_queues: bool,
    /// Retry mode `redeliver` (the broker hands a message back after a delay it is given) is
    /// built.
    pub delayed_redelivery: bool,
    /// The ordering scopes it can keep.
    pub ordering: &'static [OrderingMode],
    /// The ordering mode when the policy names none.
    pub default_ordering: OrderingMode,
    /// Its messages come in partitions, each limited by `max_in_flight_per_partition`.
    pub partitioned: bool,
    /// `outrigger dlq` can list, resubmit and purge its dead letters.
    pub dead_letter_operations: bool,
    /// It exists only inside this process (`outrigger demo`): `run` refuses it.
    pub in_process_only: bool,
    /// Every message carries a message id the broker gives it, the same on every redelivery
    /// (`{message_id}` always makes a key). Otherwise only a producer that sets one.
    pub broker_message_ids: bool,
}

/// The word for one and for several source names of a broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Noun {
    /// `topic`.
    pub one: &'static str,
    /// `topics`.
    pub many: &'static str,
}

impl Noun {
    /// The word for `n` of them.
    pub fn of(self, n: usize) -> &'static str {
        if n == 1 {
            self.one
        } else {
            self.many
        }
    }
}

/// A queue, topic or stream a source consumes, and the setting that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceName {
    /// The name.
    pub name: String,
    /// Where it is set, like `source.kafka.topics[1]`.
    pub path: KeyPath,
}

/// The settings every source shares, from the policy's sections outside `[source]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceContext {
    /// `dead_letter.destination`: one destination for every source name; `None` means
    /// `<name>.dlq` for each.
    pub dead_letter_destination: Option<String>,
    /// `routes[].dead_letter.destination`: the other destinations dead letters may go to, one
    /// per route that names one. Declared (with `declare_dead_letters`) and checked at connect
    /// like the source's own, and checked by `validate` at the route's key path.
    pub route_dead_letters: Vec<RouteDeadLetter>,
    /// `dead_letter.declare`: create the destination when it is missing.
    pub declare_dead_letters: bool,
    /// Retry mode `queue`: the delay of each retry tier, shortest first. Empty: retries wait in
    /// place and no retry queue is used.
    pub retry_tiers: Vec<Duration>,
    /// The backpressure limits.
    pub limits: Limits,
}

impl SourceContext {
    /// Where dead letters of messages from `name` go: the destination, or `<name>.dlq`.
    pub fn dead_letter_for(&self, name: &str) -> String {
        self.dead_letter_destination
            .clone()
            .unwrap_or_else(|| format!("{name}.dlq"))
    }

    /// The destinations routes name, each once, in the order of the routes.
    pub fn route_destinations(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for route in &self.route_dead_letters {
            if !out.contains(&route.destination.as_str()) {
                out.push(&route.destination);
            }
        }
        out
    }
}

/// A dead-letter destination a `[[routes]]` entry names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDeadLetter {
    /// The route's name.
    pub route: String,
    /// The queue, topic, stream or subject.
    pub destination: String,
    /// Where it is set: `routes[<i>].dead_letter.destination`.
    pub path: KeyPath,
}

impl Default for SourceContext {
    /// Dead letters to `<name>.dlq`, declared when missing; retries in place; default limits.
    fn default() -> Self {
        Self {
            dead_letter_destination: None,
            route_dead_letters: Vec::new(),
            declare_dead_letters: true,
            retry_tiers: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// How much a source takes from its broker before settling some of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Messages taken and not settled, over the whole source.
    pub max_in_flight: usize,
    /// The same per partition, where the broker has partitions.
    pub max_in_flight_per_partition: usize,
    /// Payload bytes taken and not settled.
    pub max_buffered_bytes: u64,
    /// Messages the broker may push ahead of the pipeline (AMQP `basic.qos`, a fetch batch);
    /// `None`: the adapter's own default, which its docs give.
    pub prefetch: Option<usize>,
}

impl Limits {
    /// Keeps a typical app busy without piling up more unsettled messages than a restart can
    /// redeliver quickly.
    pub const DEFAULT_MAX_IN_FLIGHT: u16 = 64;
    /// A quarter of the default `max_in_flight`: one hot partition cannot take every slot, so
    /// the other partitions keep moving.
    pub const DEFAULT_MAX_IN_FLIGHT_PER_PARTITION: u16 = 16;
    /// Bounds the sidecar's memory whatever the message size: 64 messages of 1 MiB fit, a
    /// burst of large messages waits.
    pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 64 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: usize::from(Self::DEFAULT_MAX_IN_FLIGHT),
            max_in_flight_per_partition: usize::from(Self::DEFAULT_MAX_IN_FLIGHT_PER_PARTITION),
            max_buffered_bytes: Self::DEFAULT_MAX_BUFFERED_BYTES,
            prefetch: None,
        }
    }
}

/// The dead-letter queue of a broker that keeps none an operator could work on.
#[derive(Debug)]
pub enum NoDeadLetters {}

impl DeadLetterQueue for NoDeadLetters {
    type Pass = NoDeadLetters;

    fn name(&self) -> &str {
        match *self {}
    }

    fn source(&self) -> &str {
        match *self {}
    }

    async fn open(&self, _scope: Scope) -> Result<NoDeadLetters, SourceError> {
        match *self {}
    }
}

impl DeadLetterPass for NoDeadLetters {
    async fn next(&mut self) -> Result<Option<DeadLetterRecord>, SourceError> {
        match *self {}
    }

    async fn resubmit(
        &mut self,
        _record: &DeadLetterRecord,
        _how: &Resubmission,
    ) -> Result<(), SourceError> {
        match *self {}
    }

    async fn purge(&mut self, _record: &DeadLetterRecord, _by: &str) -> Result<(), SourceError> {
        match *self {}
    }

    async fn finish(self) -> Result<(), SourceError> {
        match self {}
    }
}
