//! A confirmed copy of a fetched record in another topic: the write that dead letters and
//! retry copies share.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::logging::LogContext;
use crate::record::Original;

/// How long a write may wait for room in the producer's local queue. The queue holds only
/// dead letters and retry copies, so it is full only when the broker has been unreachable for
/// a while.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes a copy of `original` to `topic` and waits until every in-sync replica has it: the
/// original key, value (null stays null) and headers in their order, then `extra` headers.
/// The copy goes to `partition` when `topic` has that many partitions (copies of one
/// partition stay in order), else wherever the producer's partitioner puts its key.
pub(crate) async fn write_copy(
    producer: &FutureProducer<LogContext>,
    topic: &str,
    partitions: i32,
    partition: i32,
    original: &Original,
    extra: &[(&str, String)],
) -> Result<(), KafkaError> {
    let headers = original
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_deref()))
        .chain(
            extra
                .iter()
                .map(|(name, value)| (*name, Some(value.as_bytes()))),
        )
        .fold(
            OwnedHeaders::new_with_capacity(original.headers.len() + extra.len()),
            |headers, (key, value)| headers.insert(Header { key, value }),
        );
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(key) = &original.key {
        record = record.key(key);
    }
    if let Some(value) = &original.value {
        record = record.payload(value);
    }
    if partition < partitions {
        record = record.partition(partition);
    }
    producer
        .send(record, Timeout::After(ENQUEUE_TIMEOUT))
        .await
        .map(drop)
        .map_err(|(error, _)| error)
}
