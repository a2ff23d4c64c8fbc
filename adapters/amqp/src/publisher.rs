//! Confirmed publishes for dead letters and retry copies, on a channel of their own.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use outrigger_core::SourceError;
use tokio::sync::Mutex;

use crate::error::classify;

/// How long a publish (a dead letter, a retry copy) waits for the broker's confirm. A broker under a resource
/// alarm blocks publishers indefinitely; past this bound the settlement fails and is retried
/// by the caller, rather than pinning the message forever.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes with publisher confirms on one connection, shared by that connection's ackers.
///
/// The channel is separate from the consume channel so that a failed publish (which closes the
/// channel it was sent on) never takes unacked deliveries down with it. When it was closed,
/// the next publish opens a fresh one.
pub(crate) struct Publisher {
    connection: Connection,
    channel: Mutex<Channel>,
}

impl Publisher {
    /// Opens the confirm channel on `connection`, which the publisher then owns.
    pub(crate) async fn open(connection: Connection) -> Result<Self, SourceError> {
        let channel = confirm_channel(&connection).await?;
        Ok(Self {
            connection,
            channel: Mutex::new(channel),
        })
    }

    /// The connection it publishes on.
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The user this connection authenticated as.
    pub(crate) fn user(&self) -> String {
        self.connection.status().username()
    }

    /// Publishes `payload` to `queue` through the default exchange and waits for the confirm.
    ///
    /// `Ok` only when the broker acked it and did not return it as unroutable, i.e. the queue
    /// holds it.
    pub(crate) async fn publish_to_queue(
        &self,
        queue: &ShortString,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), SourceError> {
        let channel = self.channel().await?;
        // Mandatory: without it a publish to a missing queue is silently dropped, yet acked.
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let publish = async {
            channel
                .basic_publish(
                    ShortString::default(),
                    queue.clone(),
                    options,
                    payload,
                    properties,
                )
                .await?
                .await
        };
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, publish)
            .await
            .map_err(|_| {
                SourceError::Publish(format!(
                    "no confirm for the publish to queue {:?} within {CONFIRM_TIMEOUT:?}",
                    queue.as_str()
                ))
            })?
            .map_err(|e| {
                SourceError::Publish(format!("publishing to queue {:?}: {e}", queue.as_str()))
            })?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(SourceError::Publish(format!(
                    "queue {:?} did not take the message: {} {}",
                    queue.as_str(),
                    returned.reply_code,
                    returned.reply_text
                )))
            }
            Confirmation::Nack(None) => Err(SourceError::Publish(format!(
                "the broker nacked the publish to queue {:?}",
                queue.as_str()
            ))),
            Confirmation::NotRequested => Err(SourceError::Publish(
                "the publish channel is not in confirm mode".into(),
            )),
        }
    }

    async fn channel(&self) -> Result<Channel, SourceError> {
        let mut channel = self.channel.lock().await;
        if !channel.status().connected() {
            *channel = confirm_channel(&self.connection).await?;
        }
        Ok(channel.clone())
    }
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, SourceError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| classify("opening the publish channel", &e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| classify("enabling publisher confirms", &e))?;
    Ok(channel)
}
