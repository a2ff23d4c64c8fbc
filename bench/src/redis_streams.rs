//! Redis Streams: a raw consumer (XREADGROUP → POST → XACK, as many in flight as `--prefetch`),
//! then the sidecar with Redis dedup, each on a stream and in a consumer group of its own, on
//! the Redis of `--redis-url` (the one the dedup records go to as well).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::app::AppClient;
use crate::payload::{Body, Clock};
use crate::report::{BrokerKind, Report};
use crate::run::{Bench, Plan};
use crate::sidecar::{self, PolicySpec, SourceSpec};

/// Messages per throughput run unless `--messages` says otherwise.
const DEFAULT_MESSAGES: usize = 50_000;
/// Entries one pipelined round of the backlog adds.
const PUBLISH_BATCH: usize = 1000;
/// The payload field, the sidecar's default.
const PAYLOAD: &str = "payload";

/// Runs both sides and deletes the streams and dedup records, whatever happened.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let args = bench.args;
    let plan = bench.plan(DEFAULT_MESSAGES, None);
    let streams = Streams::connect(&args.redis_url).await?;
    let tag = &bench.tag;
    let raw_stream = format!("outrigger-bench-{tag}-raw");
    let sidecar_stream = format!("outrigger-bench-{tag}-sidecar");
    let group = format!("outrigger-bench-{tag}");
    let namespace = format!("outrigger-bench-{tag}-redis-streams");

    let result = async {
        eprintln!("Redis Streams at {}", args.redis_url);
        streams.create(&raw_stream, &group).await?;
        publish_backlog(bench, plan, &streams, &raw_stream).await?;
        let app = bench.stub.url();
        let (raw, consumer) = bench
            .measure_raw(
                plan,
                "raw",
                RawConsumer::start(&args.redis_url, &raw_stream, &group, args.prefetch, &app),
                RawConsumer::acked,
                streams.publish_paced(&raw_stream, paced(bench, plan), plan.rate, bench.clock),
            )
            .await?;
        consumer.stop();

        streams.create(&sidecar_stream, &group).await?;
        publish_backlog(bench, plan, &streams, &sidecar_stream).await?;
        let spec = PolicySpec {
            source: SourceSpec::RedisStreams {
                url: &args.redis_url,
                stream: &sidecar_stream,
                group: &group,
            },
            app_url: &app,
            redis_url: &args.redis_url,
            namespace: &namespace,
            prefetch: args.prefetch,
            admin: sidecar::free_port()?,
            batch: None,
        };
        let sidecar = bench
            .measure_sidecar(
                plan,
                "sidecar",
                &spec,
                streams.publish_paced(&sidecar_stream, paced(bench, plan), plan.rate, bench.clock),
            )
            .await?;
        Ok::<_, anyhow::Error>(Report {
            broker: BrokerKind::RedisStreams,
            setup: "Redis Streams".to_owned(),
            messages: plan.messages,
            size: args.size,
            prefetch: args.prefetch,
            paced_messages: plan.paced_messages,
            rate: plan.rate,
            partitions_keys: None,
            raw,
            raw_ordered: None,
            sidecars: vec![sidecar],
        })
    }
    .await;

    eprintln!("cleaning up streams and dedup records");
    streams
        .delete(&[
            &raw_stream,
            &sidecar_stream,
            &format!("{sidecar_stream}.dlq"),
        ])
        .await;
    bench.purge(&namespace).await;
    result
}

/// The size of one phase's batch.
fn paced(bench: &Bench<'_>, plan: Plan) -> (usize, usize) {
    (plan.paced_messages, bench.args.size as usize)
}

async fn publish_backlog(
    bench: &Bench<'_>,
    plan: Plan,
    streams: &Streams,
    stream: &str,
) -> anyhow::Result<()> {
    eprintln!("publishing {} messages to {stream}", plan.messages);
    streams
        .publish_backlog(stream, plan.messages, bench.args.size as usize, bench.clock)
        .await
}

/// One connection for setup and publishing.
struct Streams {
    connection: MultiplexedConnection,
}

impl Streams {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("Redis URL {url}"))?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to Redis at {url}"))?;
        Ok(Self { connection })
    }

    /// The stream with its group, reading from the start.
    async fn create(&self, stream: &str, group: &str) -> anyhow::Result<()> {
        let mut connection = self.connection.clone();
        let _: Value = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut connection)
            .await
            .with_context(|| format!("creating stream {stream}"))?;
        Ok(())
    }

    /// `messages` entries as fast as Redis takes them, a pipelined thousand at a time.
    async fn publish_backlog(
        &self,
        stream: &str,
        messages: usize,
        size: usize,
        clock: Clock,
    ) -> anyhow::Result<()> {
        let mut body = Body::new(size);
        let mut connection = self.connection.clone();
        let mut seq = 0;
        while seq < messages {
            let mut pipe = redis::pipe();
            for _ in 0..PUBLISH_BATCH.min(messages - seq) {
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg(PAYLOAD)
                    .arg(body.stamp(seq as u64, clock.now_ns()))
                    .ignore();
                seq += 1;
            }
            let _: () = pipe
                .query_async(&mut connection)
                .await
                .with_context(|| format!("adding to {stream}"))?;
        }
        Ok(())
    }

    /// The entries of `(messages, size)` at `rate` a second, each stamped when it is sent.
    async fn publish_paced(
        &self,
        stream: &str,
        (messages, size): (usize, usize),
        rate: f64,
        clock: Clock,
    ) -> anyhow::Result<()> {
        let mut body = Body::new(size);
        let mut connection = self.connection.clone();
        let start = tokio::time::Instant::now();
        for seq in 0..messages {
            tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / rate)).await;
            let _: String = redis::cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(PAYLOAD)
                .arg(body.stamp(seq as u64, clock.now_ns()))
                .query_async(&mut connection)
                .await
                .with_context(|| format!("adding to {stream}"))?;
        }
        Ok(())
    }

    /// Deletes the streams; what remains is only worth a warning.
    async fn delete(&self, streams: &[&str]) {
        let mut connection = self.connection.clone();
        let deleted: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(streams)
            .query_async(&mut connection)
            .await;
        if let Err(error) = deleted {
            eprintln!("warning: streams {streams:?} remain: {error}");
        }
    }
}

/// The baseline: reads as many entries as it has free slots, POSTs each concurrently, and
/// acknowledges each on 2xx. It has no redelivery (the stub app answers 2xx).
struct RawConsumer {
    acked: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawConsumer {
    async fn start(
        url: &str,
        stream: &str,
        group: &str,
        in_flight: u16,
        app: &str,
    ) -> anyhow::Result<Self> {
        let client = AppClient::new(app)?;
        let redis = redis::Client::open(url)?;
        // One connection blocks in XREADGROUP, the other acknowledges meanwhile.
        let mut reader = redis.get_multiplexed_async_connection().await?;
        let acker = redis.get_multiplexed_async_connection().await?;
        let acked = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(Semaphore::new(usize::from(in_flight)));
        let (stream, group, counter) = (stream.to_owned(), group.to_owned(), acked.clone());
        let task = tokio::spawn(async move {
            loop {
                // Read only what there are slots for: no entry waits in the consumer.
                let Ok(first) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut permits = vec![first];
                while let Ok(p) = slots.clone().try_acquire_owned() {
                    permits.push(p);
                }
                let read: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(&group)
                    .arg("raw")
                    .arg("COUNT")
                    .arg(permits.len())
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut reader)
                    .await;
                let Ok(read) = read else {
                    return;
                };
                for (id, payload) in entries(read) {
                    let Some(permit) = permits.pop() else {
                        break;
                    };
                    let (client, counter) = (client.clone(), counter.clone());
                    let (mut acker, stream, group) = (acker.clone(), stream.clone(), group.clone());
                    tokio::spawn(async move {
                        if client.post(payload).await {
                            let done: redis::RedisResult<i64> = redis::cmd("XACK")
                                .arg(&stream)
                                .arg(&group)
                                .arg(&id)
                                .query_async(&mut acker)
                                .await;
                            if done.is_ok() {
                                counter.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        drop(permit);
                    });
                }
            }
        });
        Ok(Self { acked, task })
    }

    /// Entries acknowledged so far.
    fn acked(&self) -> usize {
        self.acked.load(Ordering::Acquire)
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// The (id, payload) of each entry of a one-stream `XREADGROUP` reply.
fn entries(read: Value) -> Vec<(String, Bytes)> {
    let Value::Array(streams) = read else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut pair) = stream else {
            continue;
        };
        let Some(Value::Array(list)) = pair.pop() else {
            continue;
        };
        for entry in list {
            let Value::Array(parts) = entry else {
                continue;
            };
            let [Value::BulkString(id), Value::Array(fields)] = parts.as_slice() else {
                continue;
            };
            let payload = fields
                .chunks(2)
                .find(|pair| matches!(&pair[0], Value::BulkString(n) if n == PAYLOAD.as_bytes()))
                .and_then(|pair| match &pair[1] {
                    Value::BulkString(v) => Some(Bytes::copy_from_slice(v)),
                    _ => None,
                });
            if let (Ok(id), Some(payload)) = (String::from_utf8(id.clone()), payload) {
                out.push((id, payload));
            }
        }
    }
    out
}
