//! The retry contract: retry mode `queue` end to end, through the real binary, the same
//! scenario and the same assertions on every broker that has retry queues.
//!
//! A broker joins with a [`RetryFixture`] (a source of the test's own, publishing keyed
//! records, the policy that consumes them) and one [`retry_contract!`](crate::retry_contract)
//! invocation in the app's tests, which alone know where cargo built the binary. The fixtures
//! of Kafka and RabbitMQ are in [`fixtures`], Redis Streams' in [`redis_streams`], NATS' in
//! [`nats`].
//!
//! The scenario: key `K`'s first record fails twice then succeeds; its four later records and
//! 36 records of other keys come after it. The other keys must not wait for `K`'s retries, `K`'s
//! later records must not overtake it (they are parked), and a SIGKILL while they are parked
//! must change none of that: every record reaches the app once, `K`'s in order.

pub mod fixtures;
pub mod nats;
pub mod redis_streams;

use std::future::Future;
use std::time::Duration;

use crate::{wait_until, Policy, Reply, Sidecar, TestApp};

/// Upper bound of every wait of the contract; it passes far below it.
pub const LIMIT: Duration = Duration::from_secs(120);
/// The delay of the contract's one retry tier: long enough that the kill comes while the first
/// record's copy waits (never while it is at the app), on a slow machine too.
pub const TIER: &str = "3s";

const SETTLED: &str = "outrigger_messages_settled_total";

/// A broker in the retry contract. See the module docs.
pub trait RetryFixture: Sized + 'static {
    /// A source of the test's own (a queue; a topic of one partition), named after `test`.
    fn new(test: &str) -> impl Future<Output = Self>;

    /// Publishes `records` (ordering key, JSON payload) in this order, where one consumer
    /// reads them in this order.
    fn publish(&self, records: &[(String, String)]) -> impl Future<Output = ()>;

    /// A policy of this source into `app_url`, dedup in the local Redis under `namespace`,
    /// dedup key `{json:/id}`, ordering by the records' key, retry mode `queue` with the one
    /// tier [`TIER`]; with what else a restarted sidecar needs to take over within seconds.
    fn policy(&self, app_url: &str, namespace: &str) -> Policy;

    /// Removes what the test made on the broker (its retry queues included).
    fn clean_up(self) -> impl Future<Output = ()> {
        async {}
    }
}

/// The contract's records: `m-0` of key `K`, then 40 where every tenth is `K` again
/// (`m-10` ... `m-40`) and the rest have keys of their own; payload
/// `{"id":"m-<n>","key":"<key>","seq":<n>}`.
pub fn records() -> Vec<(String, String)> {
    (0..=40)
        .map(|n| {
            let key = if n % 10 == 0 {
                "K".to_owned()
            } else {
                format!("o{n}")
            };
            let body = format!(r#"{{"id":"m-{n}","key":"{key}","seq":{n}}}"#);
            (key, body)
        })
        .collect()
}

fn is_k(id: &str) -> bool {
    id.strip_prefix("m-")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n % 10 == 0)
}

/// The scenario of the module docs, for broker `F`, with the `outrigger` binary at `binary`.
pub async fn a_key_retries_in_order_while_others_flow_through_a_sigkill<F: RetryFixture>(
    binary: &str,
) {
    let fixture = F::new("retry-contract").await;
    let records = records();
    fixture.publish(&records).await;
    let app = TestApp::start(|id, nth| {
        if id == "m-0" && nth <= 2 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let namespace = crate::unique("retry-contract");
    let policy = fixture.policy(&app.url(), &namespace);

    let mut first = Sidecar::start(binary, policy.clone());
    wait_until(
        "K's later records parked, the other keys delivered",
        LIMIT,
        || async {
            let others = app.successes().keys().filter(|id| !is_k(id)).count();
            others == 36 && first.metric(SETTLED, r#"outcome="parked""#) >= 4.0
        },
    )
    .await;
    wait_until("key K counted as parked", LIMIT, || async {
        first.metric("outrigger_parked_keys", "") >= 1.0
    })
    .await;
    let k_early: Vec<String> = app.successes().into_keys().filter(|id| is_k(id)).collect();
    assert!(
        k_early.is_empty(),
        "no K record ran while m-0 waited for its retry: {k_early:?}"
    );
    first.kill();

    let second = Sidecar::start(binary, policy);
    wait_until("every record delivered", LIMIT, || async {
        app.successes().len() == records.len()
    })
    .await;

    let hits = app.hits();
    let k_order: Vec<&str> = hits
        .iter()
        .filter(|h| h.status == 200 && is_k(&h.key))
        .map(|h| h.key.as_str())
        .collect();
    assert_eq!(
        k_order,
        ["m-0", "m-10", "m-20", "m-30", "m-40"],
        "K's records in their order, the parked ones after m-0"
    );
    app.assert_each_key_once();
    let m0: Vec<(u32, u16)> = hits
        .iter()
        .filter(|h| h.key == "m-0")
        .map(|h| (h.attempt, h.status))
        .collect();
    assert_eq!(
        m0,
        [(1, 500), (2, 500), (3, 200)],
        "m-0's attempts count across retry queues and the restart"
    );
    let m0_done = hits
        .iter()
        .find(|h| h.key == "m-0" && h.status == 200)
        .map(|h| h.at)
        .unwrap();
    for hit in hits.iter().filter(|h| !is_k(&h.key)) {
        assert!(hit.at < m0_done, "{} waited behind m-0's retries", hit.key);
    }
    assert_eq!(
        hits.len(),
        records.len() + 2,
        "only m-0's two failures repeat"
    );
    wait_until("no key parked", LIMIT, || async {
        second.metric("outrigger_parked_keys", "") == 0.0
    })
    .await;
    second.stop();
    fixture.clean_up().await;
}

/// The retry contract for one broker, in a module of its own: `retry_contract!(kafka,
/// KafkaRetry, OUTRIGGER)`.
#[macro_export]
macro_rules! retry_contract {
    ($name:ident, $fixture:ty, $binary:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_key_retries_in_order_while_others_flow_through_a_sigkill() {
                use $crate::retry::a_key_retries_in_order_while_others_flow_through_a_sigkill as run;
                run::<$fixture>($binary).await;
            }
        }
    };
}
