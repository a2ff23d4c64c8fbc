//! What the harness needs from a broker: a source and a dead-letter destination of the run's
//! own, the sidecar's `[source]` table pointing through a proxy the harness can cut, a
//! producer, and a look into the dead letters. Adding a broker is one fixture of this trait
//! and one `#[tokio::test]` line in `chaos.rs`.

use std::future::Future;
use std::time::Duration;

use support::Policy;

use super::workload::Event;
use crate::support;

/// A dead letter read back from the broker.
#[derive(Clone, Debug)]
pub struct DeadRecord {
    /// `outrigger-dlq-key`.
    pub key: Option<String>,
    /// The `copy` field of the original payload (kept byte for byte).
    pub copy: Option<u32>,
    /// `outrigger-dlq-class`.
    pub class: String,
    /// `outrigger-dlq-source`: where the original sat.
    pub source: String,
    /// `outrigger-dlq-attempts`.
    pub attempts: String,
}

/// A broker the chaos run drives. The fixture owns everything it starts or declares and
/// removes it in [`clean_up`](Self::clean_up) (or when dropped, for processes).
pub trait ChaosBroker: Send + Sync + Sized + 'static {
    /// For the report and the names of the run's queues and files.
    const NAME: &'static str;
    /// How long a killed sidecar leaves its work unattended before the restarted one has it
    /// back; the kill period is set well above it, so that the sidecar runs between kills.
    const TAKEOVER: Duration;
    /// Distinct keys of a CI run: a minute or two on a 2-core machine.
    const CI_KEYS: usize = 3_000;

    /// Starts the broker (or connects to the machine's), with a source and dead-letter
    /// destination of this run's own and a proxy in front for the sidecar's connections.
    fn start() -> impl Future<Output = Self>;

    /// The sidecar's policy: the `[source]` table (through the proxy), delivery to
    /// `app_url`, dedup under `namespace` with a key template that gives every copy of an
    /// event its key. The harness sets the rest (store, lease, retries) on top.
    fn policy(&self, app_url: &str, namespace: &str) -> Policy;

    /// Publishes `events`, returning once the broker confirmed each of them.
    fn publish(&self, events: &[Event]) -> impl Future<Output = ()>;

    /// Breaks every connection the sidecar has to the broker; new ones go through.
    fn cut(&self);

    /// The dead letters written since the last call.
    fn dead_letters(&self) -> impl Future<Output = Vec<DeadRecord>>;

    /// Messages the broker still holds for the sidecar, not settled as far as it knows.
    fn backlog(&self) -> impl Future<Output = u64>;

    /// Messages left in the source once the sidecar has exited.
    fn left_over(&self) -> impl Future<Output = u64> {
        self.backlog()
    }

    /// Deletes what [`start`](Self::start) declared.
    fn clean_up(self) -> impl Future<Output = ()>;
}
