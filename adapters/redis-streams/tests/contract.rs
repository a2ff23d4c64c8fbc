//! The source contract against the machine's Redis (127.0.0.1:6379, or
//! `OUTRIGGER_TEST_REDIS_URL`). Each point gets a stream, group and dead-letter stream of its
//! own, deleted when it passed. Sources connect through a proxy of the test's own, which cuts
//! their connections on cue; the fixture itself talks to Redis directly.

mod support;

use std::time::Duration;

use outrigger_core::{Message, SourceContext};
use outrigger_redis_streams::{RedisStreams, RedisStreamsConfig};
use outrigger_testkit::{AfterCut, Faults, Outgoing, Proxy, Redelivery, SourceFixture};
use support::{Names, Redis};

/// A stream, group and dead-letter stream of the point's own, and a proxy in front of Redis.
struct RedisStreamsContract {
    redis: Redis,
    names: Names,
    proxy: Proxy,
}

impl SourceFixture for RedisStreamsContract {
    type Broker = RedisStreams;
    const DEADLINE: Duration = support::DEADLINE;
    /// A requeued or dropped delivery is handed out again by the same source, at once.
    const REDELIVERY: Redelivery = Redelivery::SameSource;
    /// Redis counts hand-outs; the source says so from the second on.
    const MARKS_REDELIVERED: bool = true;

    async fn new(_faults: Faults) -> Self {
        let redis = Redis::connect().await;
        let names = Names::new("contract");
        redis.create_group(&names.stream, &names.group).await;
        // The source declares nothing (the default context): the fixture creates it.
        redis.create_empty(&names.dead_letters).await;
        Self {
            redis,
            names,
            proxy: Proxy::start(support::address()).await,
        }
    }

    /// One consumer name for every source of a point: a restarted sidecar is the same consumer.
    fn config(&self) -> RedisStreamsConfig {
        self.names
            .config(&format!("redis://{}", self.proxy.addr), "contract-consumer")
    }

    fn context(&self) -> SourceContext {
        let mut context = SourceContext {
            declare_dead_letters: false,
            ..SourceContext::default()
        };
        context.limits.prefetch = Some(10);
        context
    }

    /// Payload, key and headers as fields, in that order; Redis gives the entry its id, so a
    /// producer's message id is not sent.
    async fn publish(&self, message: Outgoing) {
        let fields = support::fields_of(&message);
        let borrowed: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        self.redis.add(&self.names.stream, &borrowed).await;
    }

    async fn dead_letters(&self) -> Vec<Message> {
        let stream = &self.names.dead_letters;
        let mut cmd = redis::cmd("TYPE");
        cmd.arg(stream);
        let kind: String = self.redis.run(&cmd).await;
        if kind != "stream" {
            return Vec::new();
        }
        self.redis
            .range(stream)
            .await
            .iter()
            .map(|(id, fields)| support::to_message(stream, id, fields))
            .collect()
    }

    /// A consumer's pending entries outlive its connection: what was handed out before the cut
    /// is acknowledged after it.
    fn cut_connections(&self) -> AfterCut {
        self.proxy.cut();
        AfterCut::Kept
    }

    /// The dead-letter key becomes a string: `XADD` fails with WRONGTYPE.
    async fn break_dead_letter_writes(&self) {
        let stream = &self.names.dead_letters;
        self.redis.del(&[stream]).await;
        let mut cmd = redis::cmd("SET");
        cmd.arg(stream).arg("not a stream");
        let _: redis::Value = self.redis.run(&cmd).await;
    }

    async fn heal_dead_letter_writes(&self) {
        self.redis.del(&[&self.names.dead_letters]).await;
        self.redis.create_empty(&self.names.dead_letters).await;
    }

    async fn clean_up(self) {
        self.names.clean_up(&self.redis).await;
    }
}

outrigger_testkit::source_contract!(RedisStreamsContract);
