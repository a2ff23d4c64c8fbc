//! The pull loop: asks the durable consumer for messages in batches no larger than what may
//! still be unsettled, with server heartbeats and an expiry, and hands each message on with
//! its acker.
//!
//! One inbox serves every pull request of the loop, so a message of a request the loop gave
//! up on (no heartbeat came, the connection was replaced) still arrives and is handed on, or
//! naked at once when there is no room for it: nothing pulled waits out `ack_wait` unseen.
//! async-nats' own batch iterator is not used: after a heartbeat it waits for its timer
//! instead of the next message.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::AckKind;
use async_nats::{Client, StatusCode, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use outrigger_core::{Delivery, Episode, SourceError};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ack;
use crate::acker::{NatsAcker, Parts};
use crate::headers::{self, Position};
use crate::retry;
use crate::shared::Shared;

/// How long one pull request waits at the server for messages before it expires. Short,
/// because stopping waits for the request to end (see [`Pull::request`]); an idle consumer
/// costs one small request per sidecar this often.
const EXPIRES: Duration = Duration::from_secs(5);
/// How often the server says it still holds the request while it has nothing to send.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Wait before asking again after the server refused a request (leadership change, limits).
const REFUSED_BACKOFF: Duration = Duration::from_millis(500);

/// What one pull request asks for: within the consumer's own limits, which the server
/// enforces by refusing every request above them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Requests {
    /// Messages asked for at most: the prefetch, or the consumer's `max_batch` if lower.
    pub(crate) max_batch: usize,
    /// How long a request waits at the server: [`EXPIRES`], or the consumer's `max_expires`
    /// if shorter.
    pub(crate) expires: Duration,
    /// How often the server says it still holds the request: [`HEARTBEAT`], or half the
    /// expiry if that is shorter (the server refuses a heartbeat of more than half of it).
    pub(crate) heartbeat: Duration,
}

impl Requests {
    /// Requests of up to `prefetch` messages, within a consumer's `max_batch` and
    /// `max_expires` (0 for either: no limit).
    pub(crate) fn within(prefetch: usize, max_batch: i64, max_expires: Duration) -> Self {
        let max_batch = match usize::try_from(max_batch) {
            Ok(limit) if limit > 0 => prefetch.min(limit),
            _ => prefetch,
        };
        let expires = if max_expires.is_zero() {
            EXPIRES
        } else {
            EXPIRES.min(max_expires)
        };
        Self {
            max_batch: max_batch.max(1),
            expires,
            heartbeat: HEARTBEAT.min(expires / 2),
        }
    }

    /// Without a message or heartbeat for this long (three heartbeats), a request is taken as
    /// lost.
    fn silence(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// What the pull loop needs besides the shared state.
pub(crate) struct Pull {
    pub(crate) shared: Arc<Shared>,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    pub(crate) next_subject: String,
    pub(crate) requests: Requests,
    pub(crate) key_header: String,
    pub(crate) reconnected: Arc<Notify>,
    pub(crate) out: mpsc::Sender<Delivery<NatsAcker>>,
    /// Where a failure no retry can fix is left for `recv`.
    pub(crate) failure: Arc<Mutex<Option<SourceError>>>,
    pub(crate) stop: CancellationToken,
}

/// How one pull request ended.
enum Ended {
    /// Every message asked for came, or the request expired: ask again.
    Done,
    /// The server refused the request, for this reason: ask again after a pause.
    Refused(String),
    /// The loop must stop.
    Stop,
}

impl Pull {
    /// Runs until stopped, or until the consumer is gone.
    pub(crate) async fn run(self) {
        // Refusals (a limit of the consumer, a stream without leader) are logged when they
        // start and every 30s while they last, not once per request.
        let refused = Episode::new(
            "JetStream refuses the pull requests; asking again.",
            "JetStream takes the pull requests again.",
        );
        let inbox = self.shared.client.new_inbox();
        let mut subscription = match self.shared.client.subscribe(inbox.clone()).await {
            Ok(s) => s,
            Err(e) => {
                self.fail(SourceError::Connection(format!(
                    "subscribing to the pull inbox: {e}"
                )));
                return;
            }
        };
        loop {
            let Some(permits) = self.room().await else {
                return;
            };
            match self.request(&mut subscription, &inbox, permits).await {
                Ended::Done => refused.recovered(),
                Ended::Refused(why) => {
                    refused.failed(&why);
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(REFUSED_BACKOFF) => {}
                    }
                }
                Ended::Stop => return,
            }
        }
    }

    /// Waits until at least one more message may be unsettled and the byte limit has room;
    /// then takes up to a request's worth of permits. `None` once stopped.
    async fn room(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        loop {
            let room = self.shared.room.notified();
            if !self.shared.bytes_full() {
                break;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = room => {}
            }
        }
        let first = tokio::select! {
            _ = self.stop.cancelled() => return None,
            permit = self.shared.permits.clone().acquire_owned() => permit.ok()?,
        };
        let mut permits = vec![first];
        while permits.len() < self.requests.max_batch {
            match self.shared.permits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        Some(permits)
    }

    /// Sends one pull request for as many messages as there are permits, and hands on what
    /// comes until it ends.
    ///
    /// Stopping waits for the request to end: while it is open at the server, a message
    /// naked back (the ones pulled and not handed out) would be handed to it again, into an
    /// inbox nobody reads, and wait out `ack_wait`. What comes meanwhile is kept and naked
    /// once the request is over, when the next consumer's pull gets it at once.
    async fn request(
        &self,
        subscription: &mut Subscriber,
        inbox: &str,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) -> Ended {
        let body = serde_json::json!({
            "batch": permits.len(),
            "expires": self.requests.expires.as_nanos() as u64,
            "idle_heartbeat": self.requests.heartbeat.as_nanos() as u64,
        });
        let sent = self
            .shared
            .client
            .publish_with_reply(
                self.next_subject.clone(),
                inbox.to_owned(),
                Bytes::from(body.to_string()),
            )
            .await;
        if let Err(error) = sent {
            debug!(%error, "Pull request not sent.");
            return Ended::Refused(format!("the pull request was not sent: {error}"));
        }
        let mut silent_until = Instant::now() + self.requests.silence();
        let mut stopping: Option<Vec<String>> = None;
        let ended = loop {
            let message = tokio::select! {
                _ = self.stop.cancelled(), if stopping.is_none() => {
                    stopping = Some(Vec::new());
                    continue;
                }
                _ = self.reconnected.notified() => {
                    debug!("Reconnected; asking again.");
                    break Ended::Done;
                }
                _ = tokio::time::sleep_until(silent_until) => {
                    debug!("No heartbeat from the pull request; asking again.");
                    break Ended::Done;
                }
                message = subscription.next() => message,
            };
            let Some(message) = message else {
                self.fail(SourceError::Connection("the pull inbox closed".to_owned()));
                break Ended::Stop;
            };
            silent_until = Instant::now() + self.requests.silence();
            match message.status {
                None | Some(StatusCode::OK) => {
                    if let Some(held) = stopping.as_mut() {
                        held.extend(message.reply.map(|r| r.to_string()));
                        // Its last message ends the request; one of an earlier request does not.
                        if permits.pop().is_some() && permits.is_empty() {
                            break Ended::Stop;
                        }
                        continue;
                    }
                    let permit = match permits.pop() {
                        Some(p) => Some(p),
                        // A message of an earlier request: taken if there is room.
                        None => self.shared.permits.clone().try_acquire_owned().ok(),
                    };
                    if !self.hand_on(message, permit).await {
                        break Ended::Stop;
                    }
                    if permits.is_empty() {
                        break Ended::Done;
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => break Ended::Done,
                Some(status) => {
                    let description = message.description.unwrap_or_default();
                    if description
                        .to_ascii_lowercase()
                        .contains("consumer deleted")
                    {
                        self.fail(SourceError::Rejected(
                            "the durable consumer was deleted while in use".to_owned(),
                        ));
                        break Ended::Stop;
                    }
                    debug!(%status, description, "Pull request refused; asking again.");
                    break Ended::Refused(format!("{status} {description}"));
                }
            }
        };
        match stopping {
            Some(held) => {
                let naks = held
                    .into_iter()
                    .map(|reply| nak(&self.shared.client, reply));
                futures_util::future::join_all(naks).await;
                Ended::Stop
            }
            None => ended,
        }
    }

    /// Hands one message on with its acker, or naks it when there is no room. False when the
    /// source is gone.
    async fn hand_on(
        &self,
        message: async_nats::Message,
        permit: Option<OwnedSemaphorePermit>,
    ) -> bool {
        let Some(reply) = message.reply.as_ref().map(|r| r.to_string()) else {
            debug!(subject = %message.subject, "A message without ack subject in the pull inbox; ignored.");
            return true;
        };
        let Some(permit) = permit else {
            nak(&self.shared.client, reply).await;
            return true;
        };
        let js = async_nats::jetstream::Message {
            message,
            context: self.shared.jetstream.clone(),
        };
        let Some(position) = Position::of(&js) else {
            warn!(
                reply,
                "A message whose ack subject says nothing about it; naked."
            );
            nak(&self.shared.client, reply).await;
            return true;
        };
        let message = js.message;
        let own = format!("{}@{}", position.stream, position.sequence);
        let mut subject = message.subject.to_string();
        let mut all = headers::from_map(message.headers.as_ref());
        let mut map = message.headers;
        let mut position = position;
        let mut trail = None;
        if self.shared.retry_stream.as_deref() == Some(position.stream.as_str()) {
            match retry::read(&subject, &all, &position, SystemTime::now()) {
                // JetStream does the waiting: the copy comes back when it is due, and takes no
                // room meanwhile.
                retry::Copy::Early(wait) => {
                    drop(permit);
                    if let Err(error) =
                        ack::confirmed(&self.shared.client, &reply, AckKind::Nak(Some(wait))).await
                    {
                        debug!(%error, "Could not put back a retry copy not due yet; JetStream redelivers it after ack_wait.");
                    }
                    return true;
                }
                retry::Copy::Due(origin) => {
                    let origin = *origin;
                    subject = origin.subject;
                    all = origin.headers;
                    map = origin.map;
                    position = origin.position;
                    trail = Some(origin.trail);
                }
                retry::Copy::Unreadable(why) => {
                    warn!(copy = %own, why, "Unreadable retry trail; delivering the copy as it is.");
                }
            }
        }
        let mut core = headers::to_message(
            &subject,
            all,
            message.payload.clone(),
            &position,
            &self.key_header,
        );
        if trail.is_some() {
            // JetStream counts every nak of the copy while it waited: none was an attempt, and
            // the trail carries the attempts spent.
            core.deliveries = None;
            core.redelivered = false;
            core.trail = trail;
        }
        let acker = NatsAcker::new(
            self.shared.clone(),
            Parts {
                reply,
                own,
                subject,
                headers: map,
                payload: message.payload,
                coordinates: core.coordinates.clone(),
                permit,
            },
        );
        self.out
            .send(Delivery {
                message: core,
                acker,
            })
            .await
            .is_ok()
    }

    fn fail(&self, error: SourceError) {
        warn!(%error, "Pulling from JetStream stopped.");
        *self.failure.lock() = Some(error);
    }
}

async fn nak(client: &Client, reply: String) {
    if let Err(error) = ack::confirmed(client, &reply, AckKind::Nak(None)).await {
        debug!(%error, "Could not nak a message without room; JetStream redelivers it after ack_wait.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stay_within_the_consumers_limits() {
        let free = Requests::within(64, 0, Duration::ZERO);
        assert_eq!(
            (free.max_batch, free.expires, free.heartbeat),
            (64, EXPIRES, HEARTBEAT)
        );
        assert_eq!(free.silence(), Duration::from_secs(3));
        let loose = Requests::within(64, 1000, Duration::from_secs(60));
        assert_eq!(loose, free, "limits above ours change nothing");
        let tight = Requests::within(64, 1, Duration::from_secs(1));
        assert_eq!(
            (tight.max_batch, tight.expires, tight.heartbeat),
            (1, Duration::from_secs(1), Duration::from_millis(500))
        );
        assert_eq!(tight.silence(), Duration::from_millis(1500));
        assert_eq!(
            Requests::within(64, 2, Duration::from_secs(3)).heartbeat,
            HEARTBEAT
        );
        assert_eq!(Requests::within(64, -1, Duration::ZERO).max_batch, 64);
    }
}
