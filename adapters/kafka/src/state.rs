//! The bookkeeping shared by the poll thread, `recv`, the ackers and the rebalance callbacks:
//! which partitions are assigned, what each has handed out and settled, and which are held back.
//!
//! One mutex guards it all. Nothing holds it across an `.await` or a broker round trip; the
//! librdkafka calls made under it (store an offset, read a partition's queue) are local.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{HealthFlag, Message, SourceError};
use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::debug;

use crate::backpressure::{Gate, Limits};
use crate::context::{Consumer, PartitionQueue};
use crate::dead_letter::DeadLetters;
use crate::partition::{PartitionState, Ticket, TopicPartition};
use crate::record::{Fetched, Original};
use crate::retry::RetryTopics;
use crate::wake::Wake;

/// Where the poll thread reads one partition's records: the bookkeeping's `F`.
pub(crate) struct Feed {
    /// Its records, split off the consumer's queue before librdkafka starts fetching it. The
    /// poll thread reads it only while both gates are open; while it does not, librdkafka
    /// stops fetching once this queue holds its prefetch. `None` once the source stops (the
    /// queue holds a reference to the consumer) or when librdkafka could not split it: its
    /// records then come with the consumer's own queue.
    pub(crate) queue: Option<PartitionQueue>,
    /// A retry copy read before it is due: held, with the rest of its partition behind it,
    /// until then (the records of a tier fall due in the order they were written).
    pub(crate) delayed: Option<Fetched>,
}

impl Feed {
    /// A partition's feed from its own queue, if it has one, holding nothing back yet.
    pub(crate) fn new(queue: Option<PartitionQueue>) -> Self {
        Self {
            queue,
            delayed: None,
        }
    }
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("split", &self.queue.is_some())
            .field("delayed", &self.delayed.as_ref().map(|r| r.offset))
            .finish()
    }
}

/// A record taken in and waiting for `recv`, which hands it out with its acker. One released
/// unseen settles nothing: it is [`Shared::release`]d, as a dropped acker would be.
#[derive(Debug)]
pub(crate) struct Buffered {
    pub(crate) ticket: Ticket,
    pub(crate) message: Message,
    pub(crate) original: Original,
}

/// Everything behind the mutex.
pub(crate) struct State {
    /// The consumer, for storing offsets from any thread and splitting partition queues.
    /// `None` once the poll thread is closing it: the close must drop the last reference, on
    /// the poll thread.
    pub(crate) consumer: Option<Arc<Consumer>>,
    pub(crate) partitions: BTreeMap<TopicPartition, PartitionState<Feed>>,
    /// Fetched records waiting for `recv`, in fetch order.
    pub(crate) buffer: VecDeque<Buffered>,
    /// Records fetched and not settled, over all partitions and assignments.
    pub(crate) in_flight: usize,
    /// Their payload bytes.
    pub(crate) bytes: u64,
    /// Closed while the global count or byte limit is reached.
    pub(crate) global: Gate,
    pub(crate) generations: u64,
    /// An error no retry fixes (fatal consumer error, refused authorization), for `recv`.
    pub(crate) failure: Option<SourceError>,
}

/// The state and the signals around it, shared by every part of one source.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Signalled whenever a record settles or is released; a revoke waits on it.
    pub(crate) settled: Condvar,
    /// Wakes `recv` when a record is buffered or the source failed.
    pub(crate) ready: Notify,
    /// Wakes the poll thread: records arrived, a gate opened, or the source stops.
    pub(crate) wake: Arc<Wake>,
    /// Counts the events the consumer's queue served through a callback (logs, statistics,
    /// rebalances, commit results): a poll that served one returns nothing, like an empty one,
    /// and the poll thread must tell them apart.
    pub(crate) events: AtomicU64,
    /// Tells the poll thread to leave the group and end.
    pub(crate) shutdown: AtomicBool,
    pub(crate) limits: Limits,
    pub(crate) revoke_timeout: Duration,
    pub(crate) health: HealthFlag,
    pub(crate) dead_letters: DeadLetters,
    /// The retry topics, in retry mode `queue`.
    pub(crate) retry: Option<RetryTopics>,
}

impl Shared {
    pub(crate) fn new(
        limits: Limits,
        revoke_timeout: Duration,
        health: HealthFlag,
        dead_letters: DeadLetters,
        retry: Option<RetryTopics>,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                consumer: None,
                partitions: BTreeMap::new(),
                buffer: VecDeque::new(),
                in_flight: 0,
                bytes: 0,
                global: Gate::default(),
                generations: 0,
                failure: None,
            }),
            settled: Condvar::new(),
            ready: Notify::new(),
            wake: Arc::new(Wake::default()),
            events: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            limits,
            revoke_timeout,
            health,
            dead_letters,
            retry,
        }
    }

    /// Takes a fetched record (poll thread): tracks it, closes the gates it fills, and queues
    /// it for `recv`, which the caller then wakes. A record of a partition that is not ours any
    /// more, or one fetched twice, is dropped unseen.
    pub(crate) fn accept(&self, st: &mut State, fetched: Fetched) {
        let Fetched {
            tp,
            offset,
            message,
            original,
            due: _,
        } = fetched;
        let bytes = message.payload.len() as u64;
        let limits = self.limits;
        if self.shutdown.load(Ordering::Acquire) {
            // Stopping: `begin_stop` emptied the buffer and nothing may refill it.
            return;
        }
        let Some(p) = st.partitions.get_mut(&tp) else {
            debug!(
                topic = tp.topic,
                partition = tp.partition,
                offset,
                "Dropped a record of a partition no longer assigned."
            );
            return;
        };
        if p.revoking || !p.watermark.deliver(offset) {
            debug!(
                topic = tp.topic,
                partition = tp.partition,
                offset,
                "Dropped a record fetched twice or during a revoke."
            );
            return;
        }
        p.in_flight += 1;
        p.gate.update(
            limits.partition_full(p.in_flight),
            limits.partition_drained(p.in_flight),
        );
        let generation = p.generation;
        st.in_flight += 1;
        st.bytes += bytes;
        let (in_flight, total) = (st.in_flight, st.bytes);
        st.global.update(
            limits.global_full(in_flight, total),
            limits.global_drained(in_flight, total),
        );
        let ticket = Ticket {
            tp,
            generation,
            offset,
            bytes,
        };
        st.buffer.push_back(Buffered {
            ticket,
            message,
            original,
        });
    }

    /// Ends an acker's record: `settled` (acked or dead-lettered) moves the watermark and
    /// stores it; otherwise (requeue, dropped acker) it stays below the watermark, to be read
    /// again after the next rebalance or restart. Either way it stops counting as in flight.
    pub(crate) fn finish(&self, ticket: &Ticket, settled: bool) {
        let limits = self.limits;
        let mut st = self.state.lock();
        st.in_flight -= 1;
        st.bytes -= ticket.bytes;
        let (in_flight, total) = (st.in_flight, st.bytes);
        let mut opened = st.global.update(
            limits.global_full(in_flight, total),
            limits.global_drained(in_flight, total),
        );
        // Cloned under the lock and dropped before it is released: never the last reference.
        let consumer = st.consumer.clone();
        if let Some(p) = st.current_mut(ticket) {
            p.in_flight -= 1;
            p.dead_letter_failed.remove(&ticket.offset);
            if settled && p.watermark.settle(ticket.offset) {
                if let (Some(consumer), Some(watermark)) = (&consumer, p.watermark.watermark()) {
                    store(consumer, &ticket.tp, watermark);
                }
            }
            opened |= p.gate.update(
                limits.partition_full(p.in_flight),
                limits.partition_drained(p.in_flight),
            );
        }
        drop(consumer);
        drop(st);
        self.settled.notify_all();
        // A settlement only ever opens a gate: the poll thread may take records again.
        if opened {
            self.wake.notify();
        }
    }

    /// Notes that the dead-letter write of this record failed; it stays unsettled and holds
    /// the partition's commit until a retry succeeds.
    pub(crate) fn dead_letter_failed(&self, ticket: &Ticket) {
        if let Some(p) = self.state.lock().current_mut(ticket) {
            p.dead_letter_failed.insert(ticket.offset);
        }
    }

    /// Whether the record's partition is still in the assignment it was fetched in.
    pub(crate) fn is_current(&self, ticket: &Ticket) -> bool {
        self.state.lock().current_mut(ticket).is_some()
    }

    /// Records an error no retry fixes, for `recv` to return.
    pub(crate) fn fail(&self, error: SourceError) {
        self.health.set(false);
        self.state.lock().failure.get_or_insert(error);
        self.ready.notify_one();
    }

    /// Releases buffered records unseen: each stops counting as in flight and stays below the
    /// watermark, as if its acker had been dropped. Takes the lock: call it without.
    pub(crate) fn release(&self, records: impl IntoIterator<Item = Buffered>) {
        for record in records {
            self.finish(&record.ticket, false);
        }
    }

    /// Stops handing out records and tells the poll thread to leave the group. Buffered
    /// records are released unseen: they stay below the watermark.
    pub(crate) fn begin_stop(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.wake.notify();
        let released = std::mem::take(&mut self.state.lock().buffer);
        self.release(released);
    }
}

impl State {
    /// Buffered records of these partitions, taken out of the buffer. [`Shared::release`]
    /// them outside the lock.
    pub(crate) fn take_buffered(&mut self, of: &BTreeSet<TopicPartition>) -> Vec<Buffered> {
        let mut taken = Vec::new();
        for record in std::mem::take(&mut self.buffer) {
            if of.contains(&record.ticket.tp) {
                taken.push(record);
            } else {
                self.buffer.push_back(record);
            }
        }
        taken
    }

    /// Every partition's queue, taken out for the poll thread to drop before the consumer:
    /// each holds a reference to it.
    pub(crate) fn take_queues(&mut self) -> Vec<PartitionQueue> {
        self.partitions
            .values_mut()
            .filter_map(|p| p.feed.queue.take())
            .collect()
    }

    /// The partition of a ticket, if it is still in the assignment the ticket was made in.
    fn current_mut(&mut self, ticket: &Ticket) -> Option<&mut PartitionState<Feed>> {
        self.partitions
            .get_mut(&ticket.tp)
            .filter(|p| p.generation == ticket.generation)
    }
}

/// Stores `offset` as the next to commit for `tp`; the auto-commit picks it up.
pub(crate) fn store(consumer: &Consumer, tp: &TopicPartition, offset: i64) {
    let mut list = TopicPartitionList::new();
    if list
        .add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset))
        .is_ok()
    {
        // Fails only for a partition being unassigned; its revoke commits explicitly.
        if let Err(error) = consumer.store_offsets(&list) {
            debug!(topic = tp.topic, partition = tp.partition, offset, %error, "Storing an offset failed.");
        }
    }
}
