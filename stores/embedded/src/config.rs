//! The file and the protocol timings.

use std::path::PathBuf;
use std::time::Duration;

/// Where the store keeps its file and how long claims and records last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedStoreConfig {
    /// The redb file; created (with its directory) if missing. It must sit on a volume that
    /// outlives the container, or done keys are forgotten on restart.
    pub path: PathBuf,
    /// How long a claim holds a key before another attempt may take it over.
    pub lease: Duration,
    /// How long a record is kept after its last write; a done key is skipped for this long.
    pub ttl: Duration,
}
