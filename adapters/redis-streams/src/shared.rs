//! What a source, its reader, its keeper and its ackers share.

use std::sync::Arc;

use std::time::SystemTime;

use bytes::Bytes;
use outrigger_core::retry::headers::is_retry;
use outrigger_core::{Coordinates, Delivery, Header, HealthFlag, SourceError, Trail};
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::warn;

use crate::acker::RedisStreamsAcker;
use crate::client::Redis;
use crate::config::RedisStreamsSettings;
use crate::ledger::Ledger;
use crate::mapping::{fields_of, message_id, size, Mapping};

/// What the reader hands to `recv`: a delivery, or why there will be none.
pub(crate) type Item = Result<Delivery<RedisStreamsAcker>, SourceError>;

/// The state of one source.
#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: RedisStreamsSettings,
    pub mapping: Mapping,
    /// Every stream read, by index: the source streams, then (retry mode `queue`) their retry
    /// streams, tier by tier within each source stream.
    pub streams: Vec<String>,
    /// Of each stream read, the index of its source stream and, for a retry stream, its tier.
    pub origins: Vec<Origin>,
    /// The dead-letter stream of each stream read, by index: a retry stream's is its source
    /// stream's.
    pub dead_letters: Vec<String>,
    pub redis: Redis,
    pub ledger: Ledger,
    /// Where a requeued delivery goes to be handed out again.
    pub again: mpsc::Sender<Item>,
    pub health: HealthFlag,
}

/// Of a stream read: the index of its source stream and, for a retry stream, its tier.
pub(crate) type Origin = (usize, Option<usize>);

/// One entry the source holds: what a delivery of it is made from, again if need be.
#[derive(Debug)]
pub(crate) struct Held {
    /// The index of its stream.
    pub stream: usize,
    /// Its id.
    pub id: String,
    /// Its fields, byte for byte; a retry copy's without its `outrigger-retry-*` fields.
    pub fields: Vec<(Bytes, Bytes)>,
    /// A retry copy's trail: where it came from, when it is due.
    pub trail: Option<Trail>,
}

impl Held {
    /// When a retry copy is due; `None` for any other entry.
    pub fn due(&self) -> Option<SystemTime> {
        self.trail.as_ref().and_then(|t| t.due)
    }
}

impl Shared {
    /// The streams read of `settings`, their origins and dead-letter streams: what
    /// [`streams`](Self::streams), [`origins`](Self::origins) and
    /// [`dead_letters`](Self::dead_letters) hold.
    pub fn layout(settings: &RedisStreamsSettings) -> (Vec<String>, Vec<Origin>, Vec<String>) {
        let mut streams = settings.streams.clone();
        let mut origins: Vec<_> = (0..streams.len()).map(|i| (i, None)).collect();
        for (source, tier, name) in settings.retry_streams() {
            streams.push(name);
            origins.push((source, Some(tier)));
        }
        let dead_letters = origins
            .iter()
            .map(|(source, _)| settings.dead_letter_stream_for(&settings.streams[*source]))
            .collect();
        (streams, origins, dead_letters)
    }

    /// The name of stream `index`.
    pub fn stream(&self, index: usize) -> &str {
        &self.streams[index]
    }

    /// The index of stream `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s == name)
    }

    /// Whether stream `index` is a retry stream.
    pub fn is_retry(&self, index: usize) -> bool {
        self.origins[index].1.is_some()
    }

    /// The index of the retry stream of tier `tier` of the source stream of stream `index`.
    pub fn retry_stream(&self, index: usize, tier: usize) -> Option<usize> {
        let source = self.origins[index].0;
        self.origins.iter().position(|o| *o == (source, Some(tier)))
    }

    /// What the source holds of entry `id` of stream `index`: a retry copy's trail read from
    /// its fields, and those fields taken off. A copy whose trail cannot be read is handed out
    /// as an entry of its own, with a warning.
    pub fn held(&self, index: usize, id: String, fields: Vec<(Bytes, Bytes)>) -> Held {
        let trail = if self.is_retry(index) {
            let headers: Vec<Header> = fields
                .iter()
                .map(|(n, v)| Header::new(String::from_utf8_lossy(n).into_owned(), v.clone()))
                .collect();
            match Trail::from_headers(&headers) {
                Some(Ok(trail)) => Some(trail),
                Some(Err(error)) => {
                    warn!(%error, stream = self.stream(index), id, "Unreadable retry trail; delivering the entry as it is.");
                    None
                }
                None => None,
            }
        } else {
            None
        };
        let fields = match trail {
            Some(_) => fields_of(&fields, is_retry),
            None => fields,
        };
        Held {
            stream: index,
            id,
            fields,
            trail,
        }
    }

    /// A delivery of `held`, handed out for the `deliveries`-th time; `again` when this
    /// sidecar handed it out before.
    pub fn delivery(
        self: &Arc<Self>,
        held: Arc<Held>,
        deliveries: u32,
        again: bool,
    ) -> Delivery<RedisStreamsAcker> {
        let mut message = self
            .mapping
            .message(self.stream(held.stream), &held.id, &held.fields);
        message.deliveries = Some(deliveries);
        message.redelivered = again || deliveries > 1;
        if let Some(trail) = &held.trail {
            // A retry copy is its origin again: dedup keys, ordering and dead letters are the
            // original's.
            if let Coordinates::RedisStream { stream, id } = &trail.origin {
                message.message_id = Some(message_id(stream, id));
            }
            message.coordinates = trail.origin.clone();
            message.trail = Some(trail.clone());
        }
        Delivery {
            message,
            acker: RedisStreamsAcker::new(Arc::clone(self), held, deliveries),
        }
    }

    /// Queues `delivery` to be handed out again; when the source is gone, lets go of its entry,
    /// which stays pending for the next consumer.
    pub fn hand_out_again(&self, delivery: Delivery<RedisStreamsAcker>) {
        if let Err(refused) = self.again.try_send(Ok(delivery)) {
            let (TrySendError::Full(item) | TrySendError::Closed(item)) = refused;
            if let Ok(delivery) = item {
                let (stream, id) = delivery.acker.forget();
                self.ledger.release(stream, &id);
            }
        }
    }

    /// Holds `held` and makes its delivery; `None` when it is held already (handed out, or
    /// waiting to be).
    pub fn take(
        self: &Arc<Self>,
        held: Held,
        deliveries: u32,
    ) -> Option<Delivery<RedisStreamsAcker>> {
        if !self.ledger.hold(held.stream, &held.id, size(&held.fields)) {
            return None;
        }
        Some(self.delivery(Arc::new(held), deliveries, false))
    }
}
