//! What a source, its reader, its keeper and its ackers share.

use std::sync::Arc;

use bytes::Bytes;
use outrigger_core::{Delivery, HealthFlag, SourceError};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::acker::RedisStreamsAcker;
use crate::client::Redis;
use crate::config::RedisStreamsSettings;
use crate::ledger::Ledger;
use crate::mapping::{size, Mapping};

/// What the reader hands to `recv`: a delivery, or why there will be none.
pub(crate) type Item = Result<Delivery<RedisStreamsAcker>, SourceError>;

/// The state of one source.
#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: RedisStreamsSettings,
    pub mapping: Mapping,
    /// The dead-letter stream of each source stream, by index.
    pub dead_letters: Vec<String>,
    pub redis: Redis,
    pub ledger: Ledger,
    /// Where a requeued delivery goes to be handed out again.
    pub again: mpsc::Sender<Item>,
    pub health: HealthFlag,
}

/// One entry the source holds: what a delivery of it is made from, again if need be.
#[derive(Debug)]
pub(crate) struct Held {
    /// The index of its stream.
    pub stream: usize,
    /// Its id.
    pub id: String,
    /// Its fields, byte for byte.
    pub fields: Vec<(Bytes, Bytes)>,
}

impl Shared {
    /// The name of stream `index`.
    pub fn stream(&self, index: usize) -> &str {
        &self.settings.streams[index]
    }

    /// The index of stream `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.settings.streams.iter().position(|s| s == name)
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

    /// Holds entry `id` of stream `index` and makes its delivery; `None` when it is held
    /// already (handed out, or waiting to be).
    pub fn take(
        self: &Arc<Self>,
        index: usize,
        id: String,
        fields: Vec<(Bytes, Bytes)>,
        deliveries: u32,
    ) -> Option<Delivery<RedisStreamsAcker>> {
        if !self.ledger.hold(index, &id, size(&fields)) {
            return None;
        }
        let held = Arc::new(Held {
            stream: index,
            id,
            fields,
        });
        Some(self.delivery(held, deliveries, false))
    }
}
