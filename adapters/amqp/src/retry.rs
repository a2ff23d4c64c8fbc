//! Retry mode `queue` on RabbitMQ: one delay queue per tier, `<queue>.retry.<n>`, whose
//! per-queue message TTL is the tier's delay and which dead-letters expired copies back to the
//! source queue through the default exchange.
//!
//! RabbitMQ does the waiting: a copy is published (confirmed) to its tier's queue, nobody
//! consumes that queue, and the copy moves back to the source queue once the TTL is over, where
//! the source's own consumer reads it like any message and `copy` turns it into its origin
//! again. The TTL is the queue's, never the message's: RabbitMQ expires messages only at the
//! head of a queue, which is the oldest one when every message has the same TTL, and a
//! per-message TTL would hold a short copy behind a long one.
//!
//! A quorum delay queue dead-letters `at-least-once` (the broker moves the copy with publisher
//! confirms, keeping it until the source queue took it), which RabbitMQ only does with
//! `x-overflow = reject-publish`. A classic one dead-letters `at-most-once`.

pub(crate) mod copy;

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Connection;
use outrigger_core::SourceError;

use crate::config::{AmqpSettings, RetryQueueType};
use crate::error::{classify, is_inequivalent};

/// The delay queues of the source queue, and their delays.
#[derive(Debug)]
pub(crate) struct RetryQueues {
    source: ShortString,
    tiers: Vec<(ShortString, Duration)>,
    kind: RetryQueueType,
}

impl RetryQueues {
    /// The delay queues `settings` asks for; `None` outside retry mode `queue`.
    pub(crate) fn new(settings: &AmqpSettings) -> Result<Option<Self>, SourceError> {
        if settings.retry_tiers.is_empty() {
            return Ok(None);
        }
        let short = |name: String| {
            ShortString::try_new(name.as_str())
                .map_err(|e| SourceError::Rejected(format!("delay queue name {name:?}: {e}")))
        };
        let tiers = settings
            .retry_tiers
            .iter()
            .enumerate()
            .map(|(tier, delay)| {
                let name = AmqpSettings::retry_queue_for(&settings.queue, tier);
                Ok((short(name)?, *delay))
            })
            .collect::<Result<Vec<_>, SourceError>>()?;
        Ok(Some(Self {
            source: short(settings.queue.clone())?,
            tiers,
            kind: settings.retry_queue_type,
        }))
    }

    /// The queue of `tier` and its delay.
    pub(crate) fn tier(&self, tier: usize) -> Result<&(ShortString, Duration), SourceError> {
        self.tiers.get(tier).ok_or_else(|| {
            SourceError::Rejected(format!(
                "no retry tier {} (there are {})",
                tier + 1,
                self.tiers.len()
            ))
        })
    }

    /// Declares every delay queue, or finds it declared as this source needs it. One declared
    /// with other arguments (another TTL, dead-lettering elsewhere, another type) is refused:
    /// its copies would come back at the wrong time, or never.
    pub(crate) async fn declare(&self, connection: &Connection) -> Result<(), SourceError> {
        for (n, (queue, delay)) in self.tiers.iter().enumerate() {
            let arguments = self.arguments(*delay);
            // A failed declare closes its channel: each gets a throwaway one.
            let declared = async {
                let channel = connection.create_channel().await?;
                channel
                    .queue_declare(
                        queue.clone(),
                        QueueDeclareOptions::durable(),
                        arguments.clone(),
                    )
                    .await?;
                let _ = channel.close(200, "OK".into()).await;
                Ok::<(), lapin::Error>(())
            };
            match declared.await {
                Ok(()) => {}
                Err(e) if is_inequivalent(&e) => {
                    return Err(SourceError::Rejected(format!(
                        "delay queue {:?} of retry tier {} exists, declared otherwise than this \
                         source needs ({}): {e}; delete it (it holds copies waiting for their \
                         retry: move them to {:?} first) or let the sidecar declare it",
                        queue.as_str(),
                        n + 1,
                        self.describe(*delay),
                        self.source.as_str()
                    )))
                }
                Err(e) => {
                    return Err(classify(
                        &format!("declaring delay queue {:?}", queue.as_str()),
                        &e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// What a delay queue of `delay` is declared with, in words.
    fn describe(&self, delay: Duration) -> String {
        format!(
            "durable, {}, x-message-ttl {} ms, dead-lettering to {:?} through the default exchange{}",
            self.kind.as_str(),
            delay.as_millis(),
            self.source.as_str(),
            match self.kind {
                RetryQueueType::Quorum => ", at-least-once, x-overflow reject-publish",
                RetryQueueType::Classic => "",
            }
        )
    }

    /// The arguments of a delay queue of `delay`.
    fn arguments(&self, delay: Duration) -> FieldTable {
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text(self.kind.as_str()));
        // Validation keeps a tier within i32 milliseconds.
        let ms = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(ms));
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert(
            "x-dead-letter-routing-key".into(),
            text(self.source.as_str()),
        );
        if self.kind == RetryQueueType::Quorum {
            args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            args.insert("x-overflow".into(), text("reject-publish"));
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_queue_dead_letters_to_the_source_after_its_tier() {
        let settings = AmqpSettings {
            retry_tiers: vec![Duration::from_secs(1), Duration::from_millis(1500)],
            ..AmqpSettings::new("amqp://r", "orders")
        };
        let queues = RetryQueues::new(&settings).unwrap().unwrap();
        let (name, delay) = queues.tier(1).unwrap();
        assert_eq!(
            (name.as_str(), *delay),
            ("orders.retry.2", Duration::from_millis(1500))
        );
        assert!(queues.tier(2).is_err());
        let args = queues.arguments(*delay);
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-message-ttl"), Some(AMQPValue::LongInt(1500)));
        assert_eq!(
            get("x-dead-letter-routing-key"),
            Some(AMQPValue::LongString("orders".into()))
        );
        assert_eq!(
            get("x-dead-letter-strategy"),
            Some(AMQPValue::LongString("at-least-once".into()))
        );
        let classic = RetryQueues::new(&AmqpSettings {
            retry_queue_type: RetryQueueType::Classic,
            ..settings
        })
        .unwrap()
        .unwrap();
        let args = classic.arguments(Duration::from_secs(1));
        assert_eq!(args.inner().get("x-dead-letter-strategy"), None);
        assert!(RetryQueues::new(&AmqpSettings::new("amqp://r", "orders"))
            .unwrap()
            .is_none());
    }
}
