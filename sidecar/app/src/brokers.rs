//! The brokers this build knows, as one closed set. This is the only file of the app that
//! names them; everything else asks [`SourceConfig`] (or is generic over
//! [`Broker`](outrigger_core::Broker)).
//!
//! # Adding a broker
//! 1. An adapter crate under `adapters/` that implements [`outrigger_core::Broker`]: its
//!    `[source.<kind>]` table with defaults and docs, its validation, its capabilities, its
//!    source and acker, its dead-letter queue.
//! 2. Its dependency in `sidecar/app/Cargo.toml`, and one line in the `brokers!` list below.
//! 3. One invocation of the source contract suite (`outrigger_testkit::source_contract!`) in
//!    the adapter's tests, against its real broker.

use std::fmt;
use std::future::Future;

use outrigger_core::{
    Broker, Capabilities, DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Problem, Resubmission,
    Scope, SourceContext, SourceError, SourceName,
};
use serde::Deserialize;

/// Something to do with the broker a policy configures, whichever it is: the app's way to run
/// generic code ([`pipeline::run`](crate::pipeline::run), the dead-letter tools) over the one
/// broker of a policy.
pub trait WithBroker {
    /// What it gives back.
    type Output;

    /// Does it with broker `B`, configured by `config`.
    fn with<B: Broker>(self, config: &B::Config) -> impl Future<Output = Self::Output>;
}

/// `true` when two strings are equal, usable in a `const` check.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

macro_rules! brokers {
    ($($variant:ident = $kind:literal => $broker:ty),+ $(,)?) => {
        // The table name serde reads is the adapter's own `KIND`.
        const _: () = {
            $(assert!(
                same($kind, <$broker as Broker>::KIND),
                concat!("the brokers! entry ", $kind, " must be its adapter's Broker::KIND")
            );)+
        };

        /// Where messages come from: exactly one `[source.<kind>]` table, owned by its
        /// adapter crate.
        // One per sidecar, read at start: the size of its largest table costs nothing, and
        // boxing the tables would only make every match on them wordier.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone, Debug, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub enum SourceConfig {
            $(
                #[doc = concat!("`[source.", $kind, "]`")]
                #[serde(rename = $kind)]
                $variant(<$broker as Broker>::Config),
            )+
        }

        impl SourceConfig {
            /// Every broker kind this build knows, as written in TOML.
            pub const KINDS: &'static [&'static str] = &[$($kind),+];

            /// The broker kind as written in TOML (`amqp`, `kafka`, ...), for logs and labels.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(SourceConfig::$variant(_) => <$broker as Broker>::KIND,)+
                }
            }

            /// What the broker can do.
            pub fn capabilities(&self) -> Capabilities {
                match self {
                    $(SourceConfig::$variant(_) => <$broker as Broker>::capabilities(),)+
                }
            }

            /// What it consumes, each name with the setting that names it.
            pub fn source_names(&self) -> Vec<SourceName> {
                match self {
                    $(SourceConfig::$variant(c) => <$broker as Broker>::names(c),)+
                }
            }

            /// The adapter's own checks of its table, in the shared context.
            pub fn validate(&self, context: &SourceContext) -> Vec<Problem> {
                match self {
                    $(SourceConfig::$variant(c) => <$broker as Broker>::validate(c, context),)+
                }
            }

            /// Runs `job` with this config's broker.
            pub async fn with_broker<J: WithBroker>(&self, job: J) -> J::Output {
                match self {
                    $(SourceConfig::$variant(c) => job.with::<$broker>(c).await,)+
                }
            }

            /// The dead-letter queue of this source, for `outrigger dlq` and the admin API.
            pub fn dead_letters(&self, context: &SourceContext) -> Result<DeadLetters, SourceError> {
                match self {
                    $(SourceConfig::$variant(c) => {
                        <$broker as Broker>::dead_letters(c, context).map(DeadLetters::$variant)
                    })+
                }
            }

            /// The capabilities of every broker, in the order of [`Self::KINDS`].
            pub fn all_capabilities() -> Vec<Capabilities> {
                vec![$(<$broker as Broker>::capabilities()),+]
            }
        }

        /// The dead-letter queue of one of the brokers.
        #[derive(Debug)]
        pub enum DeadLetters {
            $(
                #[doc = concat!("Of a `", $kind, "` source.")]
                $variant(<$broker as Broker>::DeadLetters),
            )+
        }

        /// A pass over one of [`DeadLetters`]. Boxed: each holds a connection's worth of
        /// state, and they differ in size by hundreds of bytes.
        pub enum Pass {
            $(
                #[doc = concat!("Over the dead letters of a `", $kind, "` source.")]
                $variant(Box<<<$broker as Broker>::DeadLetters as DeadLetterQueue>::Pass>),
            )+
        }

        impl DeadLetterQueue for DeadLetters {
            type Pass = Pass;

            fn name(&self) -> &str {
                match self {
                    $(DeadLetters::$variant(q) => q.name(),)+
                }
            }

            fn source(&self) -> &str {
                match self {
                    $(DeadLetters::$variant(q) => q.source(),)+
                }
            }

            async fn open(&self, scope: Scope) -> Result<Pass, SourceError> {
                match self {
                    $(DeadLetters::$variant(q) => {
                        q.open(scope).await.map(|p| Pass::$variant(Box::new(p)))
                    })+
                }
            }
        }

        impl DeadLetterPass for Pass {
            async fn next(&mut self) -> Result<Option<DeadLetterRecord>, SourceError> {
                match self {
                    $(Pass::$variant(p) => p.next().await,)+
                }
            }

            async fn resubmit(
                &mut self,
                record: &DeadLetterRecord,
                how: &Resubmission,
            ) -> Result<(), SourceError> {
                match self {
                    $(Pass::$variant(p) => p.resubmit(record, how).await,)+
                }
            }

            async fn purge(&mut self, record: &DeadLetterRecord, by: &str) -> Result<(), SourceError> {
                match self {
                    $(Pass::$variant(p) => p.purge(record, by).await,)+
                }
            }

            async fn finish(self) -> Result<(), SourceError> {
                match self {
                    $(Pass::$variant(p) => (*p).finish().await,)+
                }
            }
        }

        impl fmt::Debug for Pass {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let kind = match self {
                    $(Pass::$variant(_) => $kind,)+
                };
                write!(f, "Pass({kind})")
            }
        }
    };
}

brokers! {
    Amqp = "amqp" => outrigger_amqp::Amqp,
    Kafka = "kafka" => outrigger_kafka::Kafka,
    RedisStreams = "redis_streams" => outrigger_redis_streams::RedisStreams,
    Nats = "nats" => outrigger_nats::Nats,
    Memory = "memory" => outrigger_memory::Memory,
}

impl SourceConfig {
    /// The queue consumed, or the first topic or stream: names the dead-letter destination,
    /// the dedup namespace, the metric labels and the CloudEvents source by default.
    pub fn name(&self) -> String {
        self.source_names()
            .into_iter()
            .next()
            .map(|n| n.name)
            .unwrap_or_default()
    }

    /// Kinds whose brokers have retry queues (retry mode `queue`), for messages.
    pub fn kinds_with_retry_queues() -> Vec<&'static str> {
        Self::kinds_that(|c| c.retry_queues)
    }

    /// Kinds whose brokers redeliver after a delay (retry mode `redeliver`), for messages.
    pub fn kinds_with_delayed_redelivery() -> Vec<&'static str> {
        Self::kinds_that(|c| c.delayed_redelivery)
    }

    fn kinds_that(can: impl Fn(&Capabilities) -> bool) -> Vec<&'static str> {
        Self::KINDS
            .iter()
            .zip(Self::all_capabilities())
            .filter(|(_, c)| can(c))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Everything consumed.
    pub fn names(&self) -> Vec<String> {
        self.source_names().into_iter().map(|n| n.name).collect()
    }

    /// `[source.amqp], [source.kafka] or [source.memory]`, for messages.
    pub fn tables() -> String {
        one_of(Self::KINDS.iter().copied())
    }

    /// The tables of the brokers `outrigger run` can consume from (not the in-process one).
    pub fn broker_tables() -> String {
        one_of(
            Self::KINDS
                .iter()
                .zip(Self::all_capabilities())
                .filter(|(_, c)| !c.in_process_only)
                .map(|(k, _)| *k),
        )
    }
}

/// `[source.a], [source.b] or [source.c]`.
fn one_of<'a>(kinds: impl Iterator<Item = &'a str>) -> String {
    let tables: Vec<String> = kinds.map(|k| format!("[source.{k}]")).collect();
    match tables.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}
