//! Kafka side of the bench: create and delete topics, produce backlogs and paced streams.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{anyhow, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::payload::{Body, Clock};

/// Records produced before waiting for the oldest one's acknowledgement.
const PRODUCE_WINDOW: usize = 1000;
/// How long the broker may take over a topic operation.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// An admin client and a producer on one cluster.
pub struct Cluster {
    admin: AdminClient<DefaultClientContext>,
    producer: FutureProducer,
}

/// What to produce: `messages` bodies of `size` bytes, record `seq` keyed `key-<seq % keys>`.
pub struct Batch<'a> {
    /// The topic.
    pub topic: &'a str,
    /// How many.
    pub messages: usize,
    /// Body size in bytes.
    pub size: usize,
    /// Distinct record keys.
    pub keys: u32,
    /// Partitions of the topic: key `k` goes to partition `k % partitions`, so every
    /// partition holds the same number of keys and messages.
    pub partitions: u16,
}

impl Cluster {
    /// Clients for the brokers at `bootstrap` (no connection is made until they are used).
    pub fn connect(bootstrap: &str) -> anyhow::Result<Self> {
        let admin = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .context("creating the Kafka admin client")?;
        // Records sent together share a batch, as from any busy producer. The Kafka tests
        // write one record per batch because tansu 0.6 answers a fetch only with the batches
        // that start at or after the fetch offset, which strands a consumer resuming inside a
        // batch (a committed offset after a restart or a rebalance). Each bench run is one
        // consumer in a fresh group, reading from offset 0 and never resuming, so it always
        // fetches from a batch's start. And it must batch: tansu lists every stored batch of
        // a partition on each fetch that finds records, so 20,000 one-record batches made the
        // latency runs measure that listing (p50 in the hundreds of ms instead of ~20 ms).
        // No linger: a paced record leaves at once; a backlog batches what queued meanwhile.
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()
            .context("creating the Kafka producer")?;
        Ok(Self { admin, producer })
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1).
    pub async fn create_topic(&self, topic: &str, partitions: u16) -> anyhow::Result<()> {
        let new = NewTopic::new(topic, i32::from(partitions), TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        for result in self.admin.create_topics([&new], &options).await? {
            result.map_err(|(topic, error)| anyhow!("creating topic {topic}: {error}"))?;
        }
        Ok(())
    }

    /// Deletes topics; a failure is only worth a warning.
    pub async fn delete_topics(&self, topics: &[&str]) {
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        match self.admin.delete_topics(topics, &options).await {
            Ok(results) => {
                for (topic, error) in results.into_iter().filter_map(Result::err) {
                    eprintln!("warning: deleting topic {topic}: {error}");
                }
            }
            Err(error) => eprintln!("warning: deleting topics {topics:?}: {error}"),
        }
    }

    /// Produces the whole batch as fast as acknowledgements allow (a window of them pending).
    pub async fn publish_backlog(&self, batch: &Batch<'_>, clock: Clock) -> anyhow::Result<()> {
        let mut record = Records::new(batch);
        let mut pending = VecDeque::with_capacity(PRODUCE_WINDOW);
        for seq in 0..batch.messages {
            if pending.len() == PRODUCE_WINDOW {
                if let Some(oldest) = pending.pop_front() {
                    settle(oldest, batch.topic).await?;
                }
            }
            pending.push_back(self.send(batch.topic, &mut record, seq, clock)?);
        }
        for delivery in pending {
            settle(delivery, batch.topic).await?;
        }
        Ok(())
    }

    /// Produces the batch at `rate` messages per second, each stamped when it is sent.
    pub async fn publish_paced(
        &self,
        batch: &Batch<'_>,
        rate: f64,
        clock: Clock,
    ) -> anyhow::Result<()> {
        let mut record = Records::new(batch);
        let mut pending = Vec::with_capacity(batch.messages);
        let start = tokio::time::Instant::now();
        for seq in 0..batch.messages {
            tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / rate)).await;
            pending.push(self.send(batch.topic, &mut record, seq, clock)?);
        }
        for delivery in pending {
            settle(delivery, batch.topic).await?;
        }
        Ok(())
    }

    fn send(
        &self,
        topic: &str,
        records: &mut Records,
        seq: usize,
        clock: Clock,
    ) -> anyhow::Result<DeliveryFuture> {
        let (key, partition, body) = records.get(seq, clock.now_ns());
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(key)
            .payload(body);
        self.producer
            .send_result(record)
            .map_err(|(error, _)| anyhow!("producing to {topic}: {error}"))
    }
}

/// Keys, their partitions and a reusable body for a batch.
struct Records {
    keys: Vec<(Vec<u8>, i32)>,
    body: Body,
}

impl Records {
    fn new(batch: &Batch<'_>) -> Self {
        let keys = (0..batch.keys.max(1))
            .map(|k| {
                let partition = k % u32::from(batch.partitions.max(1));
                (format!("key-{k}").into_bytes(), partition as i32)
            })
            .collect();
        Self {
            keys,
            body: Body::new(batch.size),
        }
    }

    /// Record `seq`'s key, partition and body, stamped with `sent_ns`.
    fn get(&mut self, seq: usize, sent_ns: u64) -> (&[u8], i32, &[u8]) {
        let (key, partition) = &self.keys[seq % self.keys.len()];
        (key, *partition, self.body.stamp(seq as u64, sent_ns))
    }
}

/// Waits for one acknowledgement; a failed produce is an error.
async fn settle(delivery: DeliveryFuture, topic: &str) -> anyhow::Result<()> {
    delivery
        .await
        .context("the producer went away")?
        .map_err(|(error, _)| anyhow!("producing to {topic}: {error}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cycle_and_spread_evenly_over_partitions() {
        let batch = Batch {
            topic: "t",
            messages: 12,
            size: 32,
            keys: 6,
            partitions: 3,
        };
        let mut records = Records::new(&batch);
        let placed: Vec<(String, i32)> = (0..8)
            .map(|seq| {
                let (key, partition, _) = records.get(seq, 0);
                (String::from_utf8(key.to_vec()).unwrap(), partition)
            })
            .collect();
        assert_eq!(placed[0], ("key-0".into(), 0));
        assert_eq!(placed[4], ("key-4".into(), 1));
        assert_eq!(placed[5], ("key-5".into(), 2));
        assert_eq!(placed[6], ("key-0".into(), 0), "keys cycle");
        let (_, _, body) = records.get(7, 99);
        assert_eq!(crate::payload::decode(body), Some((7, 99)));
    }
}
