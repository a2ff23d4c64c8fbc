//! Kafka: raw rdkafka consumers (consume → POST → store offset, auto-commit), one unordered and
//! one with a record in flight per partition, then the sidecar with Redis dedup in `partition`
//! and in `key` ordering mode, each on a topic and in a consumer group of its own. Each of the
//! four runs gets a tansu broker of its own, unless `--kafka-bootstrap` names a broker for all
//! of them.

mod broker;
mod raw;
mod tansu;

use std::collections::BTreeMap;

use broker::{Batch, Cluster};
use raw::{RawConsumer, RawSpec, Shape};
use tansu::Tansu;

use crate::report::{BrokerKind, Report, Side, SidecarResult};
use crate::run::{Bench, Plan};
use crate::sidecar::{self, Ordering, PolicySpec, SourceSpec};

/// Messages per throughput run unless `--messages` says otherwise: enough that each run lasts
/// several seconds, so start-up and the first fetches weigh little in its rate.
const DEFAULT_MESSAGES: usize = 100_000;

/// `fetch.wait.max.ms` of both consumers on tansu. tansu holds a fetch that found nothing for
/// the whole wait even when records arrive meanwhile (Kafka answers at once), so with
/// librdkafka's 500 ms the latency runs would measure tansu's wait and nothing else.
const TANSU_FETCH_WAIT_MS: &str = "10";

/// Runs the four sides and cleans up brokers, topics and dedup records, whatever happened.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let args = bench.args;
    let kafka = Kafka {
        bench,
        plan: bench.plan(DEFAULT_MESSAGES, None),
        properties: properties(args.kafka_bootstrap.is_none(), &args.kafka_properties),
        namespace: format!("outrigger-bench-{}-kafka", bench.tag),
    };
    let result = async {
        let raw = kafka
            .raw(Shape::Unordered {
                in_flight: args.prefetch,
            })
            .await?;
        let raw_ordered = kafka
            .raw(Shape::Ordered {
                partitions: args.partitions,
            })
            .await?;
        let mut sidecars = Vec::new();
        for ordering in [Ordering::Partition, Ordering::Key] {
            sidecars.push(kafka.sidecar(ordering).await?);
        }
        let setup = match args.kafka_bootstrap {
            Some(_) => "Kafka",
            None => "Kafka (tansu, one broker per run)",
        };
        Ok::<_, anyhow::Error>(Report {
            broker: BrokerKind::Kafka,
            setup: format!(
                "{setup}: {} keys in {} partitions",
                args.keys, args.partitions
            ),
            messages: kafka.plan.messages,
            size: args.size,
            prefetch: args.prefetch,
            paced_messages: kafka.plan.paced_messages,
            rate: kafka.plan.rate,
            partitions_keys: Some((args.partitions, args.keys)),
            raw,
            raw_ordered: Some(raw_ordered),
            sidecars,
        })
    }
    .await;
    bench.purge(&kafka.namespace).await;
    result
}

/// What the Kafka runs share.
struct Kafka<'a> {
    bench: &'a Bench<'a>,
    plan: Plan,
    /// librdkafka properties of both consumers.
    properties: Vec<(String, String)>,
    /// The sidecars' dedup namespace.
    namespace: String,
}

impl Kafka<'_> {
    /// The raw consumer of `shape`, in a group named after its topic.
    async fn raw(&self, shape: Shape) -> anyhow::Result<Side> {
        let site = self.open(&shape.label().replace(' ', "-")).await?;
        let result = async {
            let app = self.bench.stub.url();
            let spec = RawSpec {
                bootstrap: &site.bootstrap,
                topic: &site.topic,
                group: &site.topic,
                shape,
                properties: &self.properties,
            };
            let paced = self.batch(&site.topic, self.plan.paced_messages);
            let (side, consumer) = self
                .bench
                .measure_raw(
                    site.plan(self.plan),
                    shape.label(),
                    RawConsumer::start(&spec, &app),
                    RawConsumer::delivered,
                    site.cluster
                        .publish_paced(&paced, self.plan.rate, self.bench.clock),
                )
                .await?;
            consumer.stop().await;
            Ok(side)
        }
        .await;
        site.close().await;
        result
    }

    /// The sidecar in `ordering` mode, in a group named after its topic.
    async fn sidecar(&self, ordering: Ordering) -> anyhow::Result<SidecarResult> {
        let site = self.open(ordering.as_str()).await?;
        let result = async {
            let args = self.bench.args;
            let app = self.bench.stub.url();
            let spec = PolicySpec {
                source: SourceSpec::Kafka {
                    bootstrap: &site.bootstrap,
                    topic: &site.topic,
                    group: &site.topic,
                    ordering,
                    per_partition: per_partition(args.prefetch, args.partitions),
                    properties: &self.properties,
                },
                app_url: &app,
                redis_url: &args.redis_url,
                namespace: &self.namespace,
                prefetch: args.prefetch,
                admin: sidecar::free_port()?,
                batch: None,
            };
            let paced = self.batch(&site.topic, self.plan.paced_messages);
            self.bench
                .measure_sidecar(
                    site.plan(self.plan),
                    ordering.as_str(),
                    &spec,
                    site.cluster
                        .publish_paced(&paced, self.plan.rate, self.bench.clock),
                )
                .await
        }
        .await;
        site.close().await;
        result
    }

    /// A broker with the run's topic created and its backlog produced.
    async fn open(&self, run: &str) -> anyhow::Result<Site> {
        let args = self.bench.args;
        let topic = format!("outrigger-bench-{}-{run}", self.bench.tag);
        let (tansu, bootstrap) = match &args.kafka_bootstrap {
            Some(bootstrap) => (None, bootstrap.clone()),
            None => {
                let tansu = Tansu::start(&args.tansu).await?;
                let bootstrap = tansu.bootstrap.clone();
                (Some(tansu), bootstrap)
            }
        };
        let site = Site {
            cluster: Cluster::connect(&bootstrap)?,
            tansu,
            bootstrap,
            topic,
        };
        match self.fill(&site).await {
            Ok(()) => Ok(site),
            Err(error) => {
                site.close().await;
                Err(error)
            }
        }
    }

    async fn fill(&self, site: &Site) -> anyhow::Result<()> {
        let args = self.bench.args;
        let topic = &site.topic;
        site.cluster.create_topic(topic, args.partitions).await?;
        eprintln!(
            "producing {} records to {topic} at {} ({} keys, {} partitions)",
            self.plan.messages, site.bootstrap, args.keys, args.partitions
        );
        let started = std::time::Instant::now();
        let batch = self.batch(topic, self.plan.messages);
        site.cluster
            .publish_backlog(&batch, self.bench.clock)
            .await?;
        eprintln!(
            "  produced at {:.0} msg/s",
            self.plan.messages as f64 / started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn batch<'b>(&self, topic: &'b str, messages: usize) -> Batch<'b> {
        Batch {
            topic,
            messages,
            size: self.bench.args.size as usize,
            keys: self.bench.args.keys,
            partitions: self.bench.args.partitions,
        }
    }
}

/// One run's broker and topic. A tansu of its own holds nothing from earlier runs: tansu's
/// in-memory store slows down as it fills, and the runs would not be alike.
struct Site {
    cluster: Cluster,
    tansu: Option<Tansu>,
    bootstrap: String,
    topic: String,
}

impl Site {
    /// `plan` with this run's broker process, whose CPU is then measured.
    fn plan(&self, plan: Plan) -> Plan {
        Plan {
            broker_pid: self.tansu.as_ref().and_then(Tansu::pid),
            ..plan
        }
    }

    /// Stops the run's tansu (its topics were in memory), or deletes the run's topics from
    /// the given broker.
    async fn close(self) {
        match self.tansu {
            Some(tansu) => {
                drop(self.cluster);
                tansu.stop().await;
            }
            None => {
                let dlq = format!("{}.dlq", self.topic);
                self.cluster.delete_topics(&[&self.topic, &dlq]).await;
            }
        }
    }
}

/// The consumers' librdkafka properties: `--kafka-property` over the bench's own for tansu.
fn properties(on_tansu: bool, given: &[(String, String)]) -> Vec<(String, String)> {
    let mut properties = BTreeMap::new();
    if on_tansu {
        properties.insert(
            "fetch.wait.max.ms".to_owned(),
            TANSU_FETCH_WAIT_MS.to_owned(),
        );
    }
    properties.extend(given.iter().cloned());
    properties.into_iter().collect()
}

/// `backpressure.max_in_flight_per_partition`: the in-flight limit shared evenly, so one
/// partition cannot take every slot yet together they can fill them (16 for 64 over 4).
fn per_partition(in_flight: u16, partitions: u16) -> u16 {
    in_flight.div_ceil(partitions.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_limit_is_shared_evenly_over_partitions() {
        assert_eq!(per_partition(64, 4), 16);
        assert_eq!(per_partition(64, 5), 13);
        assert_eq!(per_partition(3, 8), 1);
        assert_eq!(per_partition(64, 1), 64);
    }

    #[test]
    fn given_properties_win_over_the_tansu_defaults() {
        let given = [("fetch.wait.max.ms".to_owned(), "100".to_owned())];
        assert_eq!(properties(true, &given), given);
        assert_eq!(
            properties(true, &[]),
            [("fetch.wait.max.ms".to_owned(), "10".to_owned())]
        );
        assert!(properties(false, &[]).is_empty());
    }
}
