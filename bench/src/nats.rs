//! NATS JetStream: a raw async-nats consumer (pull → POST → ack, as many in flight as
//! `--prefetch`), then the sidecar with Redis dedup under ordering `key` (`--keys` keys in the
//! `outrigger-key` header) and `none`, each on a stream and durable consumer of its own, on the
//! server of `--nats-url`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::app::AppClient;
use crate::payload::{Body, Clock};
use crate::report::{BrokerKind, Report};
use crate::run::{Bench, Plan};
use crate::sidecar::{self, PolicySpec, SourceSpec};

/// Messages per throughput run unless `--messages` says otherwise.
const DEFAULT_MESSAGES: usize = 20_000;
/// Publishes in flight before their acks are awaited.
const PUBLISH_WINDOW: usize = 1000;
/// The consumer every run uses on its own stream.
const CONSUMER: &str = "outrigger-bench";
/// The ordering modes the sidecar runs under, one column each.
const ORDERINGS: [sidecar::Ordering; 2] = [sidecar::Ordering::Key, sidecar::Ordering::None];

/// Runs every side and deletes the streams and dedup records, whatever happened.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let args = bench.args;
    let plan = bench.plan(DEFAULT_MESSAGES, None);
    let nats = Nats::connect(&args.nats_url).await?;
    let tag = &bench.tag;
    let stream_of = |side: &str| format!("outrigger-bench-{tag}-{side}");
    let namespace = |side: &str| format!("outrigger-bench-{tag}-nats-{side}");
    let mut created = Vec::new();

    let result = async {
        eprintln!("NATS JetStream at {}", args.nats_url);
        let raw_stream = stream_of("raw");
        nats.create(&raw_stream).await?;
        created.push(raw_stream.clone());
        nats.publish_backlog(bench, plan, &raw_stream).await?;
        let app = bench.stub.url();
        let (raw, consumer) = bench
            .measure_raw(
                plan,
                "raw",
                RawConsumer::start(&nats, &raw_stream, args.prefetch, &app),
                RawConsumer::acked,
                nats.publish_paced(bench, plan, &raw_stream),
            )
            .await?;
        consumer.stop();

        let mut sidecars = Vec::new();
        for ordering in ORDERINGS {
            let stream = stream_of(ordering.as_str());
            nats.create(&stream).await?;
            created.push(stream.clone());
            created.push(format!("{stream}_dlq"));
            nats.publish_backlog(bench, plan, &stream).await?;
            let namespace = namespace(ordering.as_str());
            let spec = PolicySpec {
                source: SourceSpec::Nats {
                    url: &args.nats_url,
                    stream: &stream,
                    consumer: CONSUMER,
                    ordering,
                },
                app_url: &app,
                redis_url: &args.redis_url,
                namespace: &namespace,
                prefetch: args.prefetch,
                admin: sidecar::free_port()?,
                batch: None,
            };
            let result = bench
                .measure_sidecar(
                    plan,
                    ordering.as_str(),
                    &spec,
                    nats.publish_paced(bench, plan, &stream),
                )
                .await;
            bench.purge(&namespace).await;
            sidecars.push(result?);
        }
        Ok::<_, anyhow::Error>(Report {
            broker: BrokerKind::Nats,
            setup: "NATS JetStream, one subject".to_owned(),
            messages: plan.messages,
            size: args.size,
            prefetch: args.prefetch,
            paced_messages: plan.paced_messages,
            rate: plan.rate,
            partitions_keys: None,
            raw,
            raw_ordered: None,
            sidecars,
        })
    }
    .await;

    eprintln!("cleaning up streams and dedup records");
    for stream in created {
        let _ = nats.js.delete_stream(&stream).await;
    }
    result
}

/// One connection for setup and publishing.
struct Nats {
    js: jetstream::Context,
}

impl Nats {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = async_nats::connect(url)
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
        Ok(Self {
            js: jetstream::new(client),
        })
    }

    /// A stream capturing `<stream>.in`.
    async fn create(&self, stream: &str) -> anyhow::Result<()> {
        self.js
            .create_stream(stream::Config {
                name: stream.to_owned(),
                subjects: vec![format!("{stream}.in")],
                ..stream::Config::default()
            })
            .await
            .with_context(|| format!("creating stream {stream}"))?;
        Ok(())
    }

    /// The headers of message `seq`: its key, one of `--keys`.
    fn headers(bench: &Bench<'_>, seq: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "outrigger-key",
            format!("k{}", seq % bench.args.keys as usize).as_str(),
        );
        headers
    }

    /// `plan.messages` messages as fast as JetStream acks them, a window at a time.
    async fn publish_backlog(
        &self,
        bench: &Bench<'_>,
        plan: Plan,
        stream: &str,
    ) -> anyhow::Result<()> {
        eprintln!("publishing {} messages to {stream}", plan.messages);
        let subject = format!("{stream}.in");
        let mut body = Body::new(bench.args.size as usize);
        let mut seq = 0;
        while seq < plan.messages {
            let mut acks = Vec::new();
            for _ in 0..PUBLISH_WINDOW.min(plan.messages - seq) {
                let payload = Bytes::copy_from_slice(body.stamp(seq as u64, bench.clock.now_ns()));
                let ack = self
                    .js
                    .publish_with_headers(subject.clone(), Self::headers(bench, seq), payload)
                    .await
                    .with_context(|| format!("publishing to {subject}"))?;
                acks.push(ack);
                seq += 1;
            }
            for ack in acks {
                ack.await
                    .with_context(|| format!("JetStream did not take a message to {subject}"))?;
            }
        }
        Ok(())
    }

    /// `--paced-messages` messages at `--rate` a second, each stamped when it is sent.
    async fn publish_paced(
        &self,
        bench: &Bench<'_>,
        plan: Plan,
        stream: &str,
    ) -> anyhow::Result<()> {
        let subject = format!("{stream}.in");
        let mut body = Body::new(bench.args.size as usize);
        let start = tokio::time::Instant::now();
        let clock: Clock = bench.clock;
        let mut acks = Vec::new();
        for seq in 0..plan.paced_messages {
            tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / plan.rate)).await;
            let payload = Bytes::copy_from_slice(body.stamp(seq as u64, clock.now_ns()));
            acks.push(
                self.js
                    .publish_with_headers(subject.clone(), Self::headers(bench, seq), payload)
                    .await
                    .with_context(|| format!("publishing to {subject}"))?,
            );
        }
        for ack in acks {
            ack.await
                .with_context(|| format!("JetStream did not take a message to {subject}"))?;
        }
        Ok(())
    }
}

/// The baseline: pulls as many messages as it has free slots, POSTs each concurrently, and
/// acks each on 2xx (a plain `+ACK`, not waiting for the server's confirmation). No
/// in-progress, no dedup, no dead letters (the stub app answers 2xx).
struct RawConsumer {
    acked: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawConsumer {
    async fn start(nats: &Nats, stream: &str, in_flight: u16, app: &str) -> anyhow::Result<Self> {
        let client = AppClient::new(app)?;
        let consumer = nats
            .js
            .get_stream(stream)
            .await?
            .create_consumer(pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: i64::from(in_flight),
                ..pull::Config::default()
            })
            .await
            .context("creating the raw consumer")?;
        let acked = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(Semaphore::new(usize::from(in_flight)));
        let counter = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                // Pull only what there are slots for: no message waits in the consumer.
                let Ok(first) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut permits = vec![first];
                while let Ok(p) = slots.clone().try_acquire_owned() {
                    permits.push(p);
                }
                let batch = consumer
                    .fetch()
                    .max_messages(permits.len())
                    .expires(Duration::from_millis(100))
                    .messages()
                    .await;
                let Ok(mut batch) = batch else {
                    return;
                };
                while let Some(Ok(message)) = batch.next().await {
                    let Some(permit) = permits.pop() else {
                        break;
                    };
                    let (client, counter) = (client.clone(), counter.clone());
                    tokio::spawn(async move {
                        if client.post(message.payload.clone()).await && message.ack().await.is_ok()
                        {
                            counter.fetch_add(1, Ordering::AcqRel);
                        }
                        drop(permit);
                    });
                }
            }
        });
        Ok(Self { acked, task })
    }

    /// Messages acked so far.
    fn acked(&self) -> usize {
        self.acked.load(Ordering::Acquire)
    }

    fn stop(self) {
        self.task.abort();
    }
}
