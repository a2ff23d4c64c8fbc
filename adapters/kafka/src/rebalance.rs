//! Partitions coming and going: on assign, fresh trackers and each partition's records split
//! into a queue of its own; on revoke, stop handing out, let in-flight records settle for a
//! while, commit the watermark, forget the partition.
//!
//! Both run on the poll thread, inside librdkafka's rebalance callback, so the group waits for
//! the commit: the next owner starts exactly at this owner's watermark. Eager and cooperative
//! assignment both work: only the partitions listed change.

use std::collections::BTreeSet;
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::context::Consumer;
use crate::partition::{PartitionState, TopicPartition};
use crate::state::{Feed, Shared, State};

impl Shared {
    /// New partitions, before librdkafka assigns them: each gets a fresh tracker under a new
    /// generation, and its records a queue of their own that wakes the poll thread.
    ///
    /// Holding a partition back is then only a matter of not reading its queue: librdkafka
    /// stops fetching it once its prefetch is queued, and hands that prefetch over the moment
    /// the queue is read again. Pausing the partition instead would throw the prefetch away on
    /// every pause and fetch nothing after the resume until librdkafka's fetcher looks at the
    /// partition again, up to a second later.
    pub(crate) fn assign(&self, list: &TopicPartitionList) {
        let mut st = self.state.lock();
        let consumer = st.consumer.clone();
        for tp in partitions(list) {
            // No consumer only while the source closes; records then go nowhere anyway.
            let queue = consumer.as_ref().and_then(|consumer| {
                let Some(mut queue) = consumer.split_partition_queue(&tp.topic, tp.partition)
                else {
                    warn!(
                        topic = tp.topic,
                        partition = tp.partition,
                        "Could not give a Kafka partition its own queue; its records come with the consumer's."
                    );
                    return None;
                };
                let wake = self.wake.clone();
                queue.set_nonempty_callback(move || wake.notify());
                Some(queue)
            });
            st.generations += 1;
            let p = PartitionState::new(st.generations, Feed::new(queue));
            st.partitions.insert(tp, p);
        }
        drop(consumer);
        drop(st);
        self.health.set(true);
        info!(partitions = list.count(), "Kafka partitions assigned.");
    }

    /// Partitions leaving: nothing more of them is handed out, their in-flight records get up
    /// to `revoke_timeout` to settle, then their watermarks are stored and committed
    /// synchronously and their trackers dropped. Ackers still out afterwards settle into
    /// nothing; their records are read again by the next owner.
    pub(crate) fn revoke(&self, consumer: &Consumer, list: &TopicPartitionList) {
        let revoked: BTreeSet<TopicPartition> = partitions(list).collect();
        let lost = consumer.assignment_lost();
        let mut st = self.state.lock();
        for tp in &revoked {
            if let Some(p) = st.partitions.get_mut(tp) {
                p.revoking = true;
            }
        }
        let released = st.take_buffered(&revoked);
        drop(st);
        self.release(released);

        let mut st = self.state.lock();
        if lost {
            // Another member owns them already: waiting or committing would only fail.
            warn!(partitions = revoked.len(), "Kafka partitions were lost (session timed out); their in-flight records will be redelivered.");
        } else {
            let deadline = Instant::now() + self.revoke_timeout;
            let in_flight = |st: &State| -> usize {
                revoked
                    .iter()
                    .filter_map(|tp| st.partitions.get(tp))
                    .map(|p| p.in_flight)
                    .sum()
            };
            while in_flight(&st) > 0 {
                if self.settled.wait_until(&mut st, deadline).timed_out() {
                    warn!(
                        in_flight = in_flight(&st),
                        "Revoke timeout passed with records in flight; they will be redelivered to the next owner."
                    );
                    break;
                }
            }
        }
        let mut commit = TopicPartitionList::new();
        for tp in &revoked {
            let Some(watermark) = st.partitions.get(tp).and_then(|p| p.watermark.watermark())
            else {
                continue;
            };
            if commit
                .add_partition_offset(&tp.topic, tp.partition, Offset::Offset(watermark))
                .is_err()
            {
                debug!(
                    topic = tp.topic,
                    partition = tp.partition,
                    "Could not list an offset to commit."
                );
            }
        }
        drop(st);

        if !lost && commit.count() > 0 {
            if let Err(error) = consumer.store_offsets(&commit) {
                debug!(%error, "Storing revoked partitions' offsets failed.");
            }
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => self.observe_commit(&commit),
                Err(error) => {
                    warn!(%error, "Committing the watermark of revoked Kafka partitions failed; the next owner may see records again.")
                }
            }
        }

        let mut st = self.state.lock();
        for tp in &revoked {
            st.partitions.remove(tp);
        }
        drop(st);
        info!(partitions = revoked.len(), "Kafka partitions revoked.");
    }
}

/// The partitions of a list, as keys.
fn partitions(list: &TopicPartitionList) -> impl Iterator<Item = TopicPartition> + '_ {
    list.elements().into_iter().map(|e| TopicPartition {
        topic: e.topic().to_owned(),
        partition: e.partition(),
    })
}
