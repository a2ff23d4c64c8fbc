//! The librdkafka properties of the consumer, the dead-letter producer and the admin client.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// How often librdkafka reports statistics: the high watermark and committed offset behind
/// [`PartitionStats`](crate::PartitionStats) and the broker states behind the health flag.
/// Often enough for a 15s Prometheus scrape; the JSON costs little at this rate.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// How long a dead-letter write may take, retries included, before the settlement fails and
/// the pipeline tries again. librdkafka's own default (300s) would hold a settlement through a
/// long outage with nothing to show for it.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);

/// librdkafka's prefetch of one partition, in KiB: about one fetch of it
/// (`max.partition.fetch.bytes`, 1 MiB by default). Every partition has its own queue, which
/// librdkafka stops fetching into at this size, so the prefetch grows with the partitions
/// assigned (about twice this each, with the fetch in flight), not with `max_buffered_bytes`.
const PREFETCH_KIB: u64 = 1024;

/// How soon librdkafka fetches a partition again after its queue reached the limits above
/// (its default, 1 s, suits a prefetch of 100,000 records). With a prefetch of one fetch, that
/// second is a stall each time the sidecar drains a queue: about 1,000 records per partition
/// per second at most. A short wait costs a timer check per full partition.
const FETCH_QUEUE_BACKOFF: Duration = Duration::from_millis(10);

/// The group consumer: manual offset store, auto-commit of stored offsets every
/// `commit_interval`, bounded prefetch per partition.
pub(crate) fn consumer(config: &KafkaSettings) -> ClientConfig {
    let mut c = common(config);
    c.set("group.id", &config.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            millis(config.commit_interval).to_string(),
        )
        .set("auto.offset.reset", config.start_from.as_reset())
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", PREFETCH_KIB.to_string())
        .set(
            "queued.min.messages",
            config.prefetch_per_partition.to_string(),
        )
        .set(
            "fetch.queue.backoff.ms",
            millis(FETCH_QUEUE_BACKOFF).to_string(),
        )
        .set(
            "statistics.interval.ms",
            millis(STATISTICS_INTERVAL).to_string(),
        );
    user(c, config)
}

/// The dead-letter producer: every in-sync replica confirms, idempotent so its own retries
/// write no duplicates.
pub(crate) fn producer(config: &KafkaSettings) -> ClientConfig {
    let mut c = common(config);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            millis(DEAD_LETTER_TIMEOUT).to_string(),
        )
        // A dead letter is written alone and awaited; batching would only delay it.
        .set("linger.ms", "0");
    user(c, config)
}

/// The admin client that checks topics and creates dead-letter topics.
pub(crate) fn admin(config: &KafkaSettings) -> ClientConfig {
    user(common(config), config)
}

fn common(config: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", "outrigger");
    c
}

/// The user's properties go last and win, except the reserved ones that
/// [`KafkaConfig::validate`](crate::KafkaConfig::validate) refuses before any client is built.
fn user(mut c: ClientConfig, config: &KafkaSettings) -> ClientConfig {
    for (key, value) in &config.properties {
        c.set(key, value);
    }
    c
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_stores_offsets_by_hand_and_commits_on_the_interval() {
        let mut config = KafkaSettings::new("b:9092", ["t"], "g");
        config.commit_interval = Duration::from_millis(250);
        config
            .properties
            .insert("security.protocol".into(), "SSL".into());
        config
            .properties
            .insert("queued.max.messages.kbytes".into(), "2048".into());
        let c = consumer(&config);
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.auto.commit"), Some("true"));
        assert_eq!(c.get("auto.commit.interval.ms"), Some("250"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("security.protocol"), Some("SSL"));
        assert_eq!(
            c.get("queued.max.messages.kbytes"),
            Some("2048"),
            "user wins"
        );
    }

    #[test]
    fn prefetch_is_about_one_fetch_per_partition_whatever_the_byte_limit() {
        let mut config = KafkaSettings::new("b:9092", ["t"], "g");
        for max_buffered_bytes in [1, 8 * 1024 * 1024, u64::MAX] {
            config.max_buffered_bytes = max_buffered_bytes;
            let c = consumer(&config);
            assert_eq!(c.get("queued.max.messages.kbytes"), Some("1024"));
            assert_eq!(c.get("queued.min.messages"), Some("1000"));
            assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        }
    }

    #[test]
    fn producer_waits_for_all_replicas() {
        let c = producer(&KafkaSettings::new("b:9092", ["t"], "g"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("group.id"), None);
    }
}
