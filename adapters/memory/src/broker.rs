//! The shared queues behind every [`MemorySource`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use outrigger_core::{Coordinates, DeadLetter, Header, Message, SourceError};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::source::MemorySource;

/// A message to publish: the producer's side of a [`Message`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// The body.
    pub payload: Bytes,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Partitioning key.
    pub key: Option<Bytes>,
    /// Producer message id.
    pub message_id: Option<String>,
    /// Content type of the payload.
    pub content_type: Option<String>,
}

impl Outgoing {
    /// A message with only a payload.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets the partitioning key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the message id.
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }
}

/// An in-process broker of named queues; clones share the same queues.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    fail_dead_letters: bool,
}

#[derive(Default)]
struct Queue {
    /// Last sequence handed out; sequences start at 1.
    last_sequence: u64,
    ready: VecDeque<Stored>,
    unacked: HashMap<u64, Stored>,
    /// Woken on every change a waiting consumer may care about: a new ready message, or the
    /// last unacked one settled (the queue may now be drained).
    notify: Arc<Notify>,
}

/// A message as the queue holds it: the original, untouched by consumers.
struct Stored {
    message: Message,
    sequence: u64,
    delivered: bool,
}

impl Stored {
    /// The copy a consumer or an inspector sees.
    fn view(&self) -> Message {
        let mut m = self.message.clone();
        m.redelivered = self.delivered;
        m
    }
}

/// What a consumer found in its queue.
// Returned once and matched at once: boxing would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Take {
    /// The next message, now unacked, and its sequence number.
    Message(Message, u64),
    /// Nothing ready, but unacked messages may come back.
    Empty,
    /// Nothing ready and nothing unacked: the queue is finished.
    Drained,
}

impl Queue {
    fn push_back(&mut self, name: &str, out: Outgoing) -> u64 {
        self.last_sequence += 1;
        let sequence = self.last_sequence;
        let message = Message {
            payload: out.payload,
            headers: out.headers,
            key: out.key,
            message_id: out.message_id,
            content_type: out.content_type,
            timestamp: Some(SystemTime::now()),
            coordinates: Coordinates::Memory {
                queue: name.to_owned(),
                sequence,
            },
            redelivered: false,
            deliveries: None,
            trail: None,
        };
        self.ready.push_back(Stored {
            message,
            sequence,
            delivered: false,
        });
        self.notify.notify_waiters();
        sequence
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a message to `queue` (created on first use) and returns its sequence number.
    pub fn publish(&self, queue: &str, msg: Outgoing) -> u64 {
        let mut state = self.state.lock();
        state.queue(queue).push_back(queue, msg)
    }

    /// A consumer of `queue` whose dead letters go to `dead_letter_queue`.
    pub fn source(&self, queue: &str, dead_letter_queue: &str) -> MemorySource {
        let notify = self.state.lock().queue(queue).notify.clone();
        MemorySource::new(self.clone(), queue, dead_letter_queue, notify)
    }

    /// A snapshot of the ready messages of `queue`, in delivery order (for inspecting a DLQ).
    pub fn ready(&self, queue: &str) -> Vec<Message> {
        let state = self.state.lock();
        state
            .queues
            .get(queue)
            .map(|q| q.ready.iter().map(Stored::view).collect())
            .unwrap_or_default()
    }

    /// How many messages of `queue` are ready and how many are handed out unacked.
    pub fn depth(&self, queue: &str) -> (usize, usize) {
        let state = self.state.lock();
        state
            .queues
            .get(queue)
            .map_or((0, 0), |q| (q.ready.len(), q.unacked.len()))
    }

    /// Fault injection: while on, dead-letter settlements fail with [`SourceError::Publish`] and
    /// ack nothing, as a broker that does not confirm the dead-letter write.
    pub fn set_fail_dead_letters(&self, fail: bool) {
        self.state.lock().fail_dead_letters = fail;
    }

    /// Hands out the next ready message of `queue`.
    pub(crate) fn take(&self, queue: &str) -> Take {
        let mut state = self.state.lock();
        let q = state.queue(queue);
        match q.ready.pop_front() {
            Some(mut stored) => {
                let message = stored.view();
                let sequence = stored.sequence;
                stored.delivered = true;
                q.unacked.insert(sequence, stored);
                Take::Message(message, sequence)
            }
            None if q.unacked.is_empty() => Take::Drained,
            None => Take::Empty,
        }
    }

    /// Removes an unacked message for good.
    pub(crate) fn ack(&self, queue: &str, sequence: u64) {
        let mut state = self.state.lock();
        let q = state.queue(queue);
        q.unacked.remove(&sequence);
        q.notify.notify_waiters();
    }

    /// Puts an unacked message back at the front of the queue.
    pub(crate) fn requeue(&self, queue: &str, sequence: u64) {
        let mut state = self.state.lock();
        let q = state.queue(queue);
        if let Some(stored) = q.unacked.remove(&sequence) {
            q.ready.push_front(stored);
        }
        q.notify.notify_waiters();
    }

    /// Writes the dead letter to `dead_letter_queue`, then acks the original; on failure
    /// nothing changes.
    pub(crate) fn dead_letter(
        &self,
        queue: &str,
        sequence: u64,
        dead_letter_queue: &str,
        dl: &DeadLetter,
    ) -> Result<(), SourceError> {
        let mut state = self.state.lock();
        if state.fail_dead_letters {
            return Err(SourceError::Publish(format!(
                "memory broker refused the dead letter to {dead_letter_queue:?} (fault injection)"
            )));
        }
        let Some(stored) = state.queue(queue).unacked.remove(&sequence) else {
            return Err(SourceError::Rejected(format!(
                "message {sequence} of {queue:?} is not awaiting settlement"
            )));
        };
        let original = stored.message;
        let mut headers = original.headers;
        headers.extend(
            dl.context_headers(&original.coordinates)
                .into_iter()
                .map(|(name, value)| Header::new(name, value)),
        );
        let record = Outgoing {
            payload: original.payload,
            headers,
            key: original.key,
            message_id: original.message_id,
            content_type: original.content_type,
        };
        state
            .queue(dead_letter_queue)
            .push_back(dead_letter_queue, record);
        state.queue(queue).notify.notify_waiters();
        Ok(())
    }
}

impl State {
    fn queue(&mut self, name: &str) -> &mut Queue {
        self.queues.entry(name.to_owned()).or_default()
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        let mut names: Vec<&String> = state.queues.keys().collect();
        names.sort();
        f.debug_struct("MemoryBroker")
            .field("queues", &names)
            .finish_non_exhaustive()
    }
}
