//! RabbitMQ: a raw lapin consumer (consume → POST → ack), then the sidecar with Redis dedup,
//! each on a queue of its own.

mod broker;
mod raw;

use broker::{Batch, Broker};
use raw::RawConsumer;

use crate::report::{BrokerKind, Report};
use crate::run::{Bench, Plan};
use crate::sidecar::{self, PolicySpec, SourceSpec};

/// Messages per throughput run unless `--messages` says otherwise: RabbitMQ takes them fast.
const DEFAULT_MESSAGES: usize = 50_000;
/// Events per request of the batch delivery run.
const BATCH: u16 = 32;

/// Runs both sides and cleans up the queues and dedup records, whatever happened.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let args = bench.args;
    let plan = bench.plan(DEFAULT_MESSAGES, None);
    let broker = Broker::connect(&args.amqp_url).await?;
    let tag = &bench.tag;
    let raw_queue = format!("outrigger-bench-{tag}-raw");
    let sidecar_queue = format!("outrigger-bench-{tag}-sidecar");
    let batch_queue = format!("outrigger-bench-{tag}-batch");
    let namespace = format!("outrigger-bench-{tag}");

    let result = async {
        eprintln!("RabbitMQ at {}", args.amqp_url);
        broker.declare(&raw_queue).await?;
        publish_backlog(bench, plan, &broker, &raw_queue).await?;
        let app = bench.stub.url();
        let paced = paced_batch(bench, plan, &raw_queue);
        let (raw, consumer) = bench
            .measure_raw(
                plan,
                "raw",
                RawConsumer::start(&args.amqp_url, &raw_queue, args.prefetch, &app),
                RawConsumer::acked,
                broker.publish_paced(&paced, plan.rate, bench.clock),
            )
            .await?;
        consumer.stop().await;

        let on = |queue, batch| -> anyhow::Result<PolicySpec<'_>> {
            Ok(PolicySpec {
                source: SourceSpec::Amqp {
                    url: &args.amqp_url,
                    queue,
                },
                app_url: &app,
                redis_url: &args.redis_url,
                namespace: &namespace,
                prefetch: args.prefetch,
                admin: sidecar::free_port()?,
                batch,
            })
        };
        let sidecar =
            measure_sidecar(bench, plan, &broker, "sidecar", &on(&sidecar_queue, None)?).await?;
        // The same again with batch delivery, on a queue of its own.
        let spec = on(&batch_queue, Some(BATCH))?;
        let batched = measure_sidecar(bench, plan, &broker, "batch 32", &spec).await?;
        Ok::<_, anyhow::Error>(Report {
            broker: BrokerKind::Amqp,
            setup: "RabbitMQ".to_owned(),
            messages: plan.messages,
            size: args.size,
            prefetch: args.prefetch,
            paced_messages: plan.paced_messages,
            rate: plan.rate,
            partitions_keys: None,
            raw,
            raw_ordered: None,
            sidecars: vec![sidecar, batched],
        })
    }
    .await;

    eprintln!("cleaning up queues and dedup records");
    broker.delete(&raw_queue).await;
    broker.delete(&sidecar_queue).await;
    broker.delete(&format!("{sidecar_queue}.dlq")).await;
    broker.delete(&batch_queue).await;
    broker.delete(&format!("{batch_queue}.dlq")).await;
    broker.close().await;
    bench.purge(&namespace).await;
    result
}

/// Publishes a backlog to the spec's queue, then measures the sidecar over it.
async fn measure_sidecar(
    bench: &Bench<'_>,
    plan: Plan,
    broker: &Broker,
    label: &'static str,
    spec: &PolicySpec<'_>,
) -> anyhow::Result<crate::report::SidecarResult> {
    let SourceSpec::Amqp { queue, .. } = spec.source else {
        anyhow::bail!("an amqp policy");
    };
    broker.declare(queue).await?;
    publish_backlog(bench, plan, broker, queue).await?;
    let paced = paced_batch(bench, plan, queue);
    bench
        .measure_sidecar(
            plan,
            label,
            spec,
            broker.publish_paced(&paced, plan.rate, bench.clock),
        )
        .await
}

async fn publish_backlog(
    bench: &Bench<'_>,
    plan: Plan,
    broker: &Broker,
    queue: &str,
) -> anyhow::Result<()> {
    eprintln!("publishing {} messages to {queue}", plan.messages);
    let batch = Batch {
        queue,
        id_prefix: format!("{queue}-backlog"),
        messages: plan.messages,
        size: bench.args.size as usize,
    };
    broker.publish_backlog(&batch, bench.clock).await
}

fn paced_batch<'a>(bench: &Bench<'_>, plan: Plan, queue: &'a str) -> Batch<'a> {
    Batch {
        queue,
        id_prefix: format!("{queue}-paced"),
        messages: plan.paced_messages,
        size: bench.args.size as usize,
    }
}
