//! Acks the server confirms: each is a request to the message's ack subject, which JetStream
//! answers once it has the ack, so an ack lost on the way (a broken connection) is an error
//! here, not a message acked in our books and redelivered in JetStream's.
//!
//! async-nats' own `double_ack` subscribes an inbox per ack and takes a no-responders status
//! (the consumer is gone) for a confirmation; a request through the client's shared inbox
//! does neither.

use async_nats::jetstream::AckKind;
use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use outrigger_core::SourceError;

use crate::connection::REQUEST_TIMEOUT;

/// Sends `kind` to `reply` and waits for the server's confirmation.
pub(crate) async fn confirmed(
    client: &Client,
    reply: &str,
    kind: AckKind,
) -> Result<(), SourceError> {
    let what = name(&kind);
    let request = async_nats::Request::new()
        .payload(Bytes::from(kind))
        .timeout(Some(REQUEST_TIMEOUT));
    match client.send_request(reply.to_owned(), request).await {
        Ok(_) => Ok(()),
        Err(e) => {
            Err(SourceError::Connection(match e.kind() {
                RequestErrorKind::NoResponders => format!(
                    "{what}: no consumer answers on the ack subject (deleted, or its stream is \
                 gone); JetStream will hand the message out again if it still can"
                ),
                RequestErrorKind::TimedOut => {
                    format!("{what}: the server did not confirm it in time; it may redeliver the message")
                }
                _ => format!("{what}: {e}"),
            }))
        }
    }
}

/// Sends `kind` without waiting for a confirmation (in-progress, a dropped handle's nak).
pub(crate) async fn unconfirmed(
    client: &Client,
    reply: &str,
    kind: AckKind,
) -> Result<(), SourceError> {
    let what = name(&kind);
    client
        .publish(reply.to_owned(), Bytes::from(kind))
        .await
        .map_err(|e| SourceError::Connection(format!("{what}: {e}")))
}

fn name(kind: &AckKind) -> &'static str {
    match kind {
        AckKind::Ack => "ack",
        AckKind::Nak(_) => "nak",
        AckKind::Progress => "in-progress",
        AckKind::Next => "ack-next",
        AckKind::Term => "term",
    }
}
