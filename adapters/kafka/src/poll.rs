//! The poll thread: the one place the consumer is polled, so the one place rebalance callbacks
//! run. It keeps polling while every partition is paused: that is what keeps the member in its
//! group (`max.poll.interval.ms`) and rebalances served while the app is slow.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use outrigger_core::SourceError;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use crate::context::Consumer;
use crate::record;
use crate::state::Shared;

/// The longest a poll blocks: how quickly the thread notices a stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Starts the poll thread. It owns `consumer` and drops it (leaving the group, committing the
/// watermarks in the revoke) after a stop, then signals `closed`.
pub(crate) fn spawn(
    consumer: Arc<Consumer>,
    shared: Arc<Shared>,
    closed: oneshot::Sender<()>,
) -> Result<(), SourceError> {
    std::thread::Builder::new()
        .name("outrigger-kafka".into())
        .spawn(move || run(consumer, shared, closed))
        .map(drop)
        .map_err(|e| SourceError::Connection(format!("starting the Kafka poll thread: {e}")))
}

fn run(consumer: Arc<Consumer>, shared: Arc<Shared>, closed: oneshot::Sender<()>) {
    while !shared.shutdown.load(Ordering::Acquire) {
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Ok(message)) => {
                shared.health.set(true);
                let fetched = record::fetched(&message);
                drop(message);
                shared.accept(&consumer, fetched);
            }
            Some(Err(error)) => on_error(&shared, error),
        }
    }
    // Ackers take the consumer only under the lock and let go before releasing it, so after
    // this the poll thread holds the last reference and the close below runs here.
    let taken = shared.state.lock().consumer.take();
    drop(taken);
    drop(consumer);
    let _ = closed.send(());
}

/// Consumer errors: fatal ones and refusals end the source, the rest librdkafka recovers from.
fn on_error(shared: &Shared, error: KafkaError) {
    match &error {
        KafkaError::MessageConsumptionFatal(code) => {
            error!(%error, "The Kafka consumer failed fatally.");
            shared.fail(SourceError::Rejected(format!(
                "Kafka consumer failed: {code}"
            )));
        }
        KafkaError::MessageConsumption(code) => match code {
            RDKafkaErrorCode::AllBrokersDown => {
                warn!("All Kafka brokers are down; librdkafka keeps reconnecting.");
                shared.health.set(false);
            }
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication => {
                error!(%error, "Kafka refused the consumer.");
                shared.fail(SourceError::Rejected(format!(
                    "Kafka refused the consumer: {code}"
                )));
            }
            RDKafkaErrorCode::PartitionEOF
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve => {
                debug!(%error, "Kafka consumer error; librdkafka recovers.")
            }
            _ => warn!(%error, "Kafka consumer error; librdkafka retries."),
        },
        _ => warn!(%error, "Kafka consumer error."),
    }
}
