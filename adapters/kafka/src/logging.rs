//! librdkafka's log lines into `tracing`, for every client of the adapter.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use tracing::{debug, error, info, warn};

/// The context of the dead-letter producer and the admin client: logs into `tracing`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(%error, reason, "librdkafka reported an error.");
    }
}

/// librdkafka's log lines at the `tracing` level that matches what they mean to an operator:
/// its "error" level covers routine reconnects, so only its critical levels become ERROR.
pub(crate) fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            error!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
            warn!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Notice => info!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
            debug!(target: "librdkafka", facility, "{message}")
        }
    }
}
