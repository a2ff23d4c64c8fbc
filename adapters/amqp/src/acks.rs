//! Acks of one channel, coalesced: deliveries settled together go out as one
//! `basic.ack(multiple)` where their delivery tags allow it.
//!
//! A multiple ack acknowledges every delivery up to its tag, so it may only cover tags that are
//! all settled. The channel's unsettled tags are tracked from delivery on; an ack whose tag is
//! below every unsettled one joins the run that one multiple ack covers, and any other ack goes
//! out alone at once. Nothing waits for a run to grow: acks made at the same moment (the
//! completions of a store call returning together) share one frame, a lone ack costs what it
//! always did.

use std::collections::BTreeSet;
use std::sync::Arc;

use lapin::options::BasicAckOptions;
use lapin::Channel;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// The unsettled deliveries of a channel and the task that sends its acks.
#[derive(Clone)]
pub(crate) struct Acks {
    unsettled: Arc<Mutex<BTreeSet<u64>>>,
    requests: mpsc::UnboundedSender<(u64, oneshot::Sender<Result<(), lapin::Error>>)>,
}

impl Acks {
    /// Acks for `channel`; the task ends with the last handle.
    pub(crate) fn new(channel: Channel) -> Self {
        let unsettled = Arc::new(Mutex::new(BTreeSet::new()));
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(send(channel, unsettled.clone(), queue));
        Self {
            unsettled,
            requests,
        }
    }

    /// A delivery with `tag` was handed out and is not settled.
    pub(crate) fn delivered(&self, tag: u64) {
        self.unsettled.lock().insert(tag);
    }

    /// Deliveries handed out and not settled yet.
    pub(crate) fn unsettled(&self) -> usize {
        self.unsettled.lock().len()
    }

    /// The delivery `tag` was settled another way (requeued, or its channel is gone).
    pub(crate) fn forget(&self, tag: u64) {
        self.unsettled.lock().remove(&tag);
    }

    /// Acks `tag`; done once the ack (alone or in a multiple one) is on its way to the broker.
    pub(crate) async fn ack(&self, tag: u64) -> Result<(), lapin::Error> {
        let (done, answer) = oneshot::channel();
        let stopped = || -> lapin::Error {
            lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "acks stopped")
                .into()
        };
        if self.requests.send((tag, done)).is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

type Waiting = (u64, oneshot::Sender<Result<(), lapin::Error>>);

async fn send(
    channel: Channel,
    unsettled: Arc<Mutex<BTreeSet<u64>>>,
    mut queue: mpsc::UnboundedReceiver<Waiting>,
) {
    let mut batch: Vec<Waiting> = Vec::new();
    while queue.recv_many(&mut batch, 1024).await > 0 {
        batch.sort_unstable_by_key(|(tag, _)| *tag);
        let (run, alone) = split(&mut unsettled.lock(), &batch);
        let mut results: Vec<(u64, Result<(), lapin::Error>)> = Vec::new();
        if let Some(last) = run {
            let multiple = BasicAckOptions { multiple: true };
            let sent = channel.basic_ack(last, multiple).await;
            for (tag, _) in batch.iter().filter(|(tag, _)| *tag <= last) {
                results.push((*tag, sent.clone()));
            }
        }
        for tag in alone {
            let sent = channel.basic_ack(tag, BasicAckOptions::default()).await;
            results.push((tag, sent));
        }
        for (tag, done) in batch.drain(..) {
            let result = results
                .iter()
                .find(|(t, _)| *t == tag)
                .map_or(Ok(()), |(_, r)| r.clone());
            let _ = done.send(result);
        }
    }
}

/// Which acks of a sorted batch one multiple ack covers (those below every tag still
/// unsettled: its last tag), and which go alone. Takes them all out of `unsettled`.
fn split(unsettled: &mut BTreeSet<u64>, batch: &[Waiting]) -> (Option<u64>, Vec<u64>) {
    for (tag, _) in batch {
        unsettled.remove(tag);
    }
    let floor = unsettled.first().copied().unwrap_or(u64::MAX);
    let run = batch
        .iter()
        .map(|(tag, _)| *tag)
        .take_while(|tag| *tag < floor)
        .last();
    // A multiple ack of a single delivery is no saving; it goes alone like the rest.
    let covered = batch.iter().take_while(|(tag, _)| *tag < floor).count();
    if covered < 2 {
        return (None, batch.iter().map(|(tag, _)| *tag).collect());
    }
    let alone = batch
        .iter()
        .map(|(tag, _)| *tag)
        .filter(|tag| *tag >= floor)
        .collect();
    (run, alone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(tags: &[u64]) -> Vec<Waiting> {
        tags.iter().map(|t| (*t, oneshot::channel().0)).collect()
    }

    #[test]
    fn settled_tags_below_every_unsettled_one_share_a_multiple_ack() {
        let mut unsettled: BTreeSet<u64> = (1..=10).collect();
        // 1, 2, 3 settled together, 7 too; 4 is still out: 1..=3 in one, 7 alone.
        let (run, alone) = split(&mut unsettled, &waiting(&[1, 2, 3, 7]));
        assert_eq!((run, alone), (Some(3), vec![7]));
        assert_eq!(
            unsettled.iter().copied().collect::<Vec<_>>(),
            [4, 5, 6, 8, 9, 10]
        );
        // A single ack is sent alone.
        let (run, alone) = split(&mut unsettled, &waiting(&[4]));
        assert_eq!((run, alone), (None, vec![4]));
        // Everything left, at once: one multiple ack up to 10.
        let (run, alone) = split(&mut unsettled, &waiting(&[5, 6, 8, 9, 10]));
        assert_eq!((run, alone), (Some(10), vec![]));
        assert!(unsettled.is_empty());
    }

    #[test]
    fn a_multiple_ack_never_covers_an_unsettled_tag() {
        let mut unsettled: BTreeSet<u64> = [2, 5, 6].into_iter().collect();
        let (run, alone) = split(&mut unsettled, &waiting(&[5, 6]));
        assert_eq!((run, alone), (None, vec![5, 6]), "2 is still out");
    }
}
