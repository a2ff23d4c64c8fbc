//! `[ordering]`: which messages must not overtake each other.

use std::time::Duration;

use outrigger_policies::{KeyTemplate, OnGap, OrderingMode, SequencePolicy};
use serde::Deserialize;

use super::{de, SourceConfig};

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
    /// Where a message's sequence number is (`{json:/seq}`, `{header:seq}`: the syntax of
    /// `dedup.key`). With it, each key's messages reach the app in sequence order whatever order
    /// they arrive in: one ahead of its key's next waits for its predecessors, up to
    /// `gap_timeout`. Needs `mode = "key"` and a dedup store (which keeps each key's next
    /// sequence across restarts and replicas). Default: none (arrival order).
    #[serde(default)]
    pub sequence: Option<KeyTemplate>,
    /// The sequence a key starts at when the store knows nothing of it (its first message, or
    /// one quiet for longer than `dedup.ttl`). Default: none, the first message seen starts it.
    #[serde(default)]
    pub first_sequence: Option<u64>,
    /// How long a key's messages wait for a missing predecessor before `on_gap` decides.
    /// Default 30s.
    #[serde(default, deserialize_with = "de::some_duration")]
    pub gap_timeout: Option<Duration>,
    /// What happens to the messages waiting behind a gap that outlived `gap_timeout` (or
    /// filled the key's buffer): `deliver` them anyway, lowest first (the missing one, should
    /// it come later, is dead-lettered as behind its key), or `dead_letter` them with a reason
    /// naming the missing sequence. Default `deliver`.
    #[serde(default)]
    pub on_gap: Option<OnGap>,
    /// Messages of one key waiting for a predecessor at most; one more gives up the gap at
    /// once. Default 64.
    #[serde(default)]
    pub max_waiting_per_key: Option<u16>,
    /// Messages waiting for a predecessor at most, all keys together (top level only): they
    /// hold their place in `backpressure.max_in_flight`, so this stays below it and the
    /// missing ones can still be taken. One more gives up its key's gap at once. Default half
    /// of `backpressure.max_in_flight`.
    #[serde(default)]
    pub max_waiting: Option<u16>,
}

/// Default of `gap_timeout`.
pub const DEFAULT_GAP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `max_waiting_per_key`.
pub const DEFAULT_MAX_WAITING_PER_KEY: u16 = 64;

impl OrderingConfig {
    /// The mode in force for `source`: `mode`, or else the broker's default (`key` for kafka,
    /// where producers key records by entity; `none` for a queue, whose routing key is usually
    /// the queue's own name, so `key` would serialise everything).
    pub fn mode(&self, source: &SourceConfig) -> OrderingMode {
        self.mode
            .unwrap_or_else(|| source.capabilities().default_ordering)
    }
}

impl OrderingConfig {
    /// The sequence policy, when `sequence` is set.
    pub fn sequence_policy(&self) -> Option<SequencePolicy> {
        Some(SequencePolicy {
            field: self.sequence.clone()?,
            first: self.first_sequence,
            gap_timeout: self.gap_timeout.unwrap_or(DEFAULT_GAP_TIMEOUT),
            on_gap: self.on_gap.unwrap_or_default(),
            max_per_key: usize::from(
                self.max_waiting_per_key
                    .unwrap_or(DEFAULT_MAX_WAITING_PER_KEY),
            ),
        })
    }

    /// This table with what it leaves unset taken from `top` (a route's over the policy's).
    pub fn over(&self, top: &OrderingConfig) -> OrderingConfig {
        OrderingConfig {
            mode: self.mode.or(top.mode),
            sequence: self.sequence.clone().or_else(|| top.sequence.clone()),
            first_sequence: self.first_sequence.or(top.first_sequence),
            gap_timeout: self.gap_timeout.or(top.gap_timeout),
            on_gap: self.on_gap.or(top.on_gap),
            max_waiting_per_key: self.max_waiting_per_key.or(top.max_waiting_per_key),
            max_waiting: top.max_waiting,
        }
    }

    /// Messages waiting for a predecessor at most, all keys together, under `max_in_flight`.
    pub fn max_waiting(&self, max_in_flight: u16) -> usize {
        usize::from(self.max_waiting.unwrap_or(max_in_flight / 2).max(1))
    }

    /// The keys this table writes, for a route's overrides.
    pub fn written(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("ordering.mode", self.mode.is_some()),
            ("ordering.sequence", self.sequence.is_some()),
            ("ordering.first_sequence", self.first_sequence.is_some()),
            ("ordering.gap_timeout", self.gap_timeout.is_some()),
            ("ordering.on_gap", self.on_gap.is_some()),
            (
                "ordering.max_waiting_per_key",
                self.max_waiting_per_key.is_some(),
            ),
        ]
    }
}
