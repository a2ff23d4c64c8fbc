//! `[dead_letter]`: where messages go that will never succeed.

use serde::Deserialize;

use super::SourceConfig;

/// `[dead_letter]`: the destination of permanent failures and exhausted retries. Each record
/// keeps the original payload and headers byte for byte, plus the failure context.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The queue (topic, stream) dead letters are published to; default `<source queue>.dlq`,
    /// and for kafka `<topic>.dlq` for each topic consumed.
    #[serde(default)]
    pub destination: Option<String>,
    /// Declare the destination at startup if it does not exist (durable). Turn off where the
    /// platform manages queues and the sidecar's user may not declare them.
    #[serde(default = "default_declare")]
    pub declare: bool,
}

impl DeadLetterConfig {
    /// The destination name: `destination`, or else `<source queue>.dlq` (for kafka, the
    /// first topic's; see [`Self::destination_for`]).
    pub fn destination(&self, source: &SourceConfig) -> String {
        self.destination_for(&source.name())
    }

    /// The destination of dead letters from the queue or topic `source_name`: `destination`,
    /// or else `<source_name>.dlq`.
    pub fn destination_for(&self, source_name: &str) -> String {
        self.destination
            .clone()
            .unwrap_or_else(|| format!("{source_name}.dlq"))
    }
}

/// A dead letter with nowhere to go would block the queue; declaring it makes the first run
/// work without broker setup.
const fn default_declare() -> bool {
    true
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            destination: None,
            declare: default_declare(),
        }
    }
}
