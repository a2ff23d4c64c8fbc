//! The chaos test: the faults users really have, all at once, through the real binary, and a
//! count at the end of what a user would notice.
//!
//! N business keys (healthy ones, transient ones the app fails a few times, poison ones it
//! always refuses with a 400) plus about 10% duplicate copies are published while, each on a
//! timer of its own: the sidecar is SIGKILLed and restarted with the same policy, the dedup
//! Redis (a `redis-server` of the run's own with `appendfsync always`) is SIGKILLed and
//! restarted on its port and directory, the sidecar's broker connections are cut, and the
//! app goes away (connections refused) for seconds at a time. Then the faults stop, the
//! sidecar drains, and the app's own ledger and the dead-letter queue are counted: keys lost,
//! keys applied twice (in the documented crash window, or outside it), poison missing from
//! the DLQ, healthy keys in the DLQ, dead letters written twice (in the window, or outside
//! it). Every count but the window's must be zero.
//!
//! The documented window: the app applied a message and the sidecar died before it recorded
//! the completion. A key applied twice is counted in it only when a sidecar died after its
//! first application (or a moment before it: a request the dead sidecar had written can still
//! reach the app's handler) and before its second, and the second came under a higher fence.
//! Its twin for dead letters: the broker stored a dead letter and the sidecar died, or lost
//! the confirm with its connection, before the store recorded it (RabbitMQ, Kafka; Redis
//! Streams writes the dead letter and acks in one script, and NATS's dead-letter stream drops
//! the second copy by its id), counted the same way from the app's refusals.
//!
//! CI runs 3,000 keys per broker, a minute or two each. The full size, one broker at a time,
//! without a test harness timeout:
//!
//! ```text
//! OUTRIGGER_CHAOS_MESSAGES=100000 cargo test -p outrigger --test chaos -- --test-threads=1 --nocapture
//! ```
//!
//! (a test name after `--`, like `rabbitmq`, runs one broker). `OUTRIGGER_CHAOS_RATE` sets the
//! publishing rate (messages a second; default: the keys over a minute, at most 400),
//! `OUTRIGGER_CHAOS_SEED` replays a run's keys and fault timings, `OUTRIGGER_CHAOS_KEEP=1`
//! keeps the run's files (fault log, the app's requests, dead letters, each sidecar's log)
//! also when it passes; a failed run always keeps them and says where.
//! `OUTRIGGER_CHAOS_RETRY=queue` runs retry mode `queue` (retry queues and parked keys).
//!
//! A broker is one fixture of [`chaos::broker::ChaosBroker`] and one test below.

mod support;

mod chaos {
    pub mod amqp;
    pub mod broker;
    pub mod faults;
    pub mod kafka;
    pub mod ledger;
    pub mod nats;
    pub mod redis_streams;
    pub mod report;
    pub mod run;
    pub mod workload;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_under_chaos_loses_nothing_and_repeats_only_in_the_crash_window() {
    chaos::run::run::<chaos::amqp::Amqp>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_under_chaos_loses_nothing_and_repeats_only_in_the_crash_window() {
    chaos::run::run::<chaos::kafka::Kafka>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_under_chaos_loses_nothing_and_repeats_only_in_the_crash_window() {
    chaos::run::run::<chaos::redis_streams::RedisStreams>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_under_chaos_loses_nothing_and_repeats_only_in_the_crash_window() {
    chaos::run::run::<chaos::nats::Nats>().await;
}
