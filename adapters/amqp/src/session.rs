//! One live connection: the queue checks, the consume channel and consumer, the publisher, and
//! the watcher that keeps the health flag honest while nobody polls the consumer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, Consumer, Event};
use outrigger_core::{HealthFlag, SourceError};
use tokio::task::JoinHandle;

use crate::acks::Acks;
use crate::config::AmqpSettings;
use crate::error::{classify, is_inequivalent, is_not_found};
use crate::publisher::Publisher;
use crate::retry::RetryQueues;

/// How long opening a connection may take before it counts as failed: a black-holed address
/// would otherwise hold `connect` (and every reconnect) for the OS TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The config's names, checked once: lapin panics on an AMQP short string over 255 bytes.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) uri: AMQPUri,
    pub(crate) queue: ShortString,
    pub(crate) dead_letter_queue: ShortString,
    /// The dead-letter queues routes name.
    pub(crate) route_dead_letter_queues: Vec<ShortString>,
    pub(crate) consumer_tag: ShortString,
}

impl Names {
    /// Validates the parts of `config` the broker cannot check for us.
    pub(crate) fn parse(config: &AmqpSettings) -> Result<Self, SourceError> {
        let short = |what: &str, value: &str| {
            ShortString::try_new(value)
                .map_err(|e| SourceError::Rejected(format!("{what} {value:?}: {e}")))
        };
        if config.prefetch == 0 {
            // AMQP reads 0 as "unlimited", which would buffer the whole queue in memory.
            return Err(SourceError::Rejected("prefetch must be at least 1".into()));
        }
        if config.queue.is_empty() || config.dead_letter_queue.is_empty() {
            return Err(SourceError::Rejected(
                "the source queue and the dead-letter queue need names".into(),
            ));
        }
        let route_queues = &config.route_dead_letter_queues;
        if config.queue == config.dead_letter_queue || route_queues.contains(&config.queue) {
            return Err(SourceError::Rejected(format!(
                "queue {:?} cannot be its own dead-letter queue",
                config.queue
            )));
        }
        if route_queues.iter().any(String::is_empty) {
            return Err(SourceError::Rejected(
                "a route's dead-letter queue needs a name".into(),
            ));
        }
        Ok(Self {
            uri: config.url.parse().map_err(|e| {
                SourceError::Rejected(format!(
                    "invalid AMQP URL {:?}: {e}",
                    crate::config::redact_password(&config.url)
                ))
            })?,
            queue: short("queue name", &config.queue)?,
            dead_letter_queue: short("dead-letter queue name", &config.dead_letter_queue)?,
            route_dead_letter_queues: route_queues
                .iter()
                .map(|q| short("dead-letter queue name", q))
                .collect::<Result<_, _>>()?,
            consumer_tag: short("consumer tag", &config.consumer_tag)?,
        })
    }
}

/// A connected consumer and its publisher. Dropping it cancels the consumer and closes the
/// channels once the last acker of this session is gone (ackers hold channel clones).
pub(crate) struct Session {
    pub(crate) consume: Channel,
    /// The consume channel's acks, coalesced.
    pub(crate) acks: Acks,
    pub(crate) consumer: Consumer,
    pub(crate) publisher: Arc<Publisher>,
    watcher: JoinHandle<()>,
}

impl Session {
    /// Connects, checks both queues, declares the delay queues (retry mode `queue`), and
    /// starts consuming with `prefetch` unacked deliveries.
    pub(crate) async fn open(
        config: &AmqpSettings,
        names: &Names,
        retry: Option<&RetryQueues>,
        health: &HealthFlag,
    ) -> Result<Self, SourceError> {
        let connection = connect(&names.uri).await?;

        check_queues(&connection, config, names).await?;
        if let Some(retry) = retry {
            retry.declare(&connection).await?;
        }

        let consume = connection
            .create_channel()
            .await
            .map_err(|e| classify("opening the consume channel", &e))?;
        consume
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| classify("setting the prefetch", &e))?;
        // Subscribed before consuming so no failure from here on goes unseen.
        let events = connection.events_listener();
        let connection_status = connection.status().clone();
        let channel_status = consume.status().clone();
        let publisher = Arc::new(Publisher::open(connection).await?);
        let consumer = consume
            .basic_consume(
                names.queue.clone(),
                names.consumer_tag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify(&format!("consuming queue {:?}", names.queue.as_str()), &e))?;

        health.set(true);
        let health = health.clone();
        let watcher = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                // Errors also come from other channels; only ours and the connection matter.
                if matches!(event, Event::Error(_))
                    && !(connection_status.connected() && channel_status.connected())
                {
                    health.set(false);
                }
            }
        });
        Ok(Self {
            acks: Acks::new(consume.clone()),
            consume,
            consumer,
            publisher,
            watcher,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Opens a connection, bounded by [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(uri: &AMQPUri) -> Result<Connection, SourceError> {
    let connect = Connection::connect_uri(uri.clone(), ConnectionProperties::default());
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            SourceError::Connection(format!(
                "connecting to the broker timed out after {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| classify("connecting to the broker", &e))
}

/// Checks that the source queue exists and that every dead-letter queue (the source's and
/// those routes name) exists or is declared.
///
/// A failed declare closes the channel it ran on, so each attempt that may fail gets a
/// throwaway channel, never the consume or publish channel.
async fn check_queues(
    connection: &Connection,
    config: &AmqpSettings,
    names: &Names,
) -> Result<(), SourceError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    declare(connection, &names.queue, passive)
        .await
        .map_err(|e| missing_or(&e, "source", &names.queue))?;
    let route_queues = names.route_dead_letter_queues.iter();
    for queue in std::iter::once(&names.dead_letter_queue).chain(route_queues) {
        dead_letter_queue(connection, config, queue).await?;
    }
    Ok(())
}

/// Checks that one dead-letter queue exists, declaring it first when the policy says so.
async fn dead_letter_queue(
    connection: &Connection,
    config: &AmqpSettings,
    queue: &ShortString,
) -> Result<(), SourceError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    if !config.declare_dead_letter_queue {
        return declare(connection, queue, passive)
            .await
            .map_err(|e| missing_or(&e, "dead-letter", queue));
    }
    // Declared (durable) rather than looked up first: a lookup of a missing queue closes its
    // channel, which the client logs as an error on every first start. A queue an operator
    // created with arguments of their own (quorum type, length limits) refuses the plain
    // declare as inequivalent: it exists, which is all that is needed.
    match declare(connection, queue, QueueDeclareOptions::durable()).await {
        Ok(()) => Ok(()),
        Err(e) if is_inequivalent(&e) => declare(connection, queue, passive)
            .await
            .map_err(|e| missing_or(&e, "dead-letter", queue)),
        Err(e) => Err(classify(
            &format!("declaring the dead-letter queue {:?}", queue.as_str()),
            &e,
        )),
    }
}

async fn declare(
    connection: &Connection,
    queue: &ShortString,
    options: QueueDeclareOptions,
) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(queue.clone(), options, FieldTable::default())
        .await?;
    // Best effort: the channel has done its job, and dropping it closes it anyway.
    let _ = channel.close(200, "OK".into()).await;
    Ok(())
}

fn missing_or(error: &lapin::Error, role: &str, queue: &ShortString) -> SourceError {
    if is_not_found(error) {
        SourceError::Rejected(format!("{role} queue {:?} does not exist", queue.as_str()))
    } else {
        classify(
            &format!("checking {role} queue {:?}", queue.as_str()),
            error,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(config: AmqpSettings) -> String {
        match Names::parse(&config) {
            Err(SourceError::Rejected(text)) => text,
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_defaults() {
        let names =
            Names::parse(&AmqpSettings::new("amqp://127.0.0.1:5672/%2f", "orders")).unwrap();
        assert_eq!(names.dead_letter_queue.as_str(), "orders.dlq");
    }

    #[test]
    fn refuses_what_the_broker_would_choke_on() {
        let base = AmqpSettings::new("amqp://u:secret@127.0.0.1:5672/%2f", "orders");
        assert!(rejected(AmqpSettings {
            prefetch: 0,
            ..base.clone()
        })
        .contains("prefetch"));
        let long = "q".repeat(256);
        assert!(rejected(AmqpSettings {
            queue: long,
            ..base.clone()
        })
        .contains("queue name"));
        let same = AmqpSettings {
            dead_letter_queue: "orders".into(),
            ..base.clone()
        };
        assert!(rejected(same).contains("its own dead-letter queue"));
        let bad = rejected(AmqpSettings {
            url: "http://u:secret@host".into(),
            ..base
        });
        assert!(
            bad.contains("invalid AMQP URL") && !bad.contains("secret"),
            "{bad}"
        );
    }
}
