//! `[ordering]`: which messages must not overtake each other.

use outrigger_policies::OrderingMode;
use serde::Deserialize;

use super::SourceConfig;

/// `[ordering]`: what keeps its order while messages are delivered in parallel. A message
/// retried in place holds back exactly what must wait for it: its partition, its key, or
/// nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderingConfig {
    /// `partition`: one message at a time per partition (per queue for amqp). `key`: one at a
    /// time per message key, parallel across keys; messages without a key run freely. `none`:
    /// everything in parallel up to `backpressure.max_in_flight`. Default: `key` for kafka,
    /// `none` for amqp and memory.
    #[serde(default)]
    pub mode: Option<OrderingMode>,
}

impl OrderingConfig {
    /// The mode in force for `source`: `mode`, or else the broker's default (`key` for kafka,
    /// where producers key records by entity; `none` for a queue, whose routing key is usually
    /// the queue's own name, so `key` would serialise everything).
    pub fn mode(&self, source: &SourceConfig) -> OrderingMode {
        self.mode
            .unwrap_or_else(|| source.capabilities().default_ordering)
    }
}
