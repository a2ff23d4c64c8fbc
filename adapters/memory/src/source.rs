//! A consumer of one memory queue and the handle that settles its deliveries.

use std::fmt;
use std::sync::Arc;

use outrigger_core::{Acker, Delivery, HealthFlag, Settlement, Source, SourceError, Unsettled};
use tokio::sync::Notify;

use crate::broker::{MemoryBroker, Take};

/// Consumes one queue of a [`MemoryBroker`]; several sources on one queue compete for messages.
#[derive(Debug)]
pub struct MemorySource {
    broker: MemoryBroker,
    queue: String,
    dead_letter_queue: String,
    notify: Arc<Notify>,
    stopped: bool,
    health: HealthFlag,
}

impl MemorySource {
    pub(crate) fn new(
        broker: MemoryBroker,
        queue: &str,
        dead_letter_queue: &str,
        notify: Arc<Notify>,
    ) -> Self {
        Self {
            broker,
            queue: queue.to_owned(),
            dead_letter_queue: dead_letter_queue.to_owned(),
            notify,
            stopped: false,
            // Nothing to lose a connection to.
            health: HealthFlag::new(true),
        }
    }
}

impl Source for MemorySource {
    type Acker = MemoryAcker;

    /// Waits for a ready message; `None` once stopped or once the queue is drained (nothing
    /// ready, nothing unacked). Cancel-safe: a message is taken only in a step that returns it.
    async fn recv(&mut self) -> Result<Option<Delivery<MemoryAcker>>, SourceError> {
        loop {
            if self.stopped {
                return Ok(None);
            }
            // Registered before looking, so a publish or settlement between the look and the
            // wait still wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.broker.take(&self.queue) {
                Take::Message(message, sequence) => {
                    let acker = MemoryAcker {
                        broker: self.broker.clone(),
                        queue: self.queue.clone(),
                        dead_letter_queue: self.dead_letter_queue.clone(),
                        sequence,
                        settled: false,
                    };
                    return Ok(Some(Delivery { message, acker }));
                }
                Take::Drained => return Ok(None),
                Take::Empty => notified.await,
            }
        }
    }

    async fn stop(&mut self) {
        self.stopped = true;
    }

    fn health(&self) -> HealthFlag {
        self.health.clone()
    }
}

/// Settles one memory delivery; dropping it unsettled requeues the message.
#[must_use = "dropping an unsettled acker requeues the message"]
pub struct MemoryAcker {
    broker: MemoryBroker,
    queue: String,
    dead_letter_queue: String,
    sequence: u64,
    settled: bool,
}

impl MemoryAcker {
    /// The sequence number of the message this acker settles.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl Acker for MemoryAcker {
    async fn settle(mut self, settlement: Settlement) -> Result<(), Box<Unsettled<Self>>> {
        let result = match &settlement {
            Settlement::Ack => {
                self.broker.ack(&self.queue, self.sequence);
                Ok(())
            }
            Settlement::Requeue => {
                self.broker.requeue(&self.queue, self.sequence);
                Ok(())
            }
            Settlement::DeadLetter {
                context,
                destination,
            } => {
                // In process any name is a queue: a route's destination needs no declaring.
                let to = destination.as_deref().unwrap_or(&self.dead_letter_queue);
                self.broker
                    .dead_letter(&self.queue, self.sequence, to, context)
            }
            Settlement::Retry(_) => Err(SourceError::Rejected(
                "the memory broker has no retry queues".to_owned(),
            )),
            Settlement::Redeliver(_) => Err(SourceError::Rejected(
                "the memory broker has no delayed redelivery".to_owned(),
            )),
        };
        match result {
            Ok(()) => {
                self.settled = true;
                Ok(())
            }
            Err(error) => Err(Box::new(Unsettled {
                acker: self,
                settlement,
                error,
            })),
        }
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // The contract of every adapter: a message nobody settled goes back to the broker.
        if !self.settled {
            self.broker.requeue(&self.queue, self.sequence);
        }
    }
}

impl fmt::Debug for MemoryAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAcker")
            .field("queue", &self.queue)
            .field("sequence", &self.sequence)
            .field("settled", &self.settled)
            .finish()
    }
}
