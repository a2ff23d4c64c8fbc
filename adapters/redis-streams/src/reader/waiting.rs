//! The retry copies the reader took in before they were due, per stream, in the order they
//! fall due. While a stream has one, it is read no further; the reader hands each out once it
//! is due and there is room.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use crate::shared::Held;

/// The waiting copies of every stream read, with their hand-outs so far.
#[derive(Debug)]
pub(super) struct Waiting(Vec<VecDeque<(Held, u32)>>);

impl Waiting {
    /// None waiting, of `streams` streams.
    pub fn new(streams: usize) -> Self {
        Self((0..streams).map(|_| VecDeque::new()).collect())
    }

    /// Whether no copy of stream `index` waits: it may be read.
    pub fn is_empty(&self, index: usize) -> bool {
        self.0[index].is_empty()
    }

    /// Adds `held` in the order copies fall due (a copy claimed from a peer may be older than
    /// those waiting); one without a due time is due now.
    pub fn insert(&mut self, held: Held, deliveries: u32) {
        let queue = &mut self.0[held.stream];
        let at_time = due(&held);
        let at = queue
            .iter()
            .position(|(other, _)| due(other) > at_time)
            .unwrap_or(queue.len());
        queue.insert(at, (held, deliveries));
    }

    /// When the first waiting copy is due.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.0
            .iter()
            .filter_map(|q| q.front())
            .map(|(h, _)| due(h))
            .min()
    }

    /// The first copy of stream `index`, when it is due at `now`.
    pub fn pop_due(&mut self, index: usize, now: SystemTime) -> Option<(Held, u32)> {
        let queue = &mut self.0[index];
        if due(&queue.front()?.0) > now {
            return None;
        }
        queue.pop_front()
    }

    /// Of the copies of stream `index` that wait, those among `ids`, by the count each had
    /// before this read: a read of the pending list counted one more hand-out of each.
    pub fn read_again<'a>(
        &self,
        index: usize,
        ids: impl Iterator<Item = &'a str>,
    ) -> BTreeMap<u32, Vec<String>> {
        let ids: Vec<&str> = ids.collect();
        let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (held, deliveries) in &self.0[index] {
            if ids.contains(&held.id.as_str()) {
                out.entry(deliveries.saturating_sub(1))
                    .or_default()
                    .push(held.id.clone());
            }
        }
        out
    }
}

fn due(held: &Held) -> SystemTime {
    held.due().unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use outrigger_core::{Coordinates, Trail};

    use super::*;

    fn copy(id: &str, due_s: Option<u64>) -> Held {
        Held {
            stream: 1,
            id: id.to_owned(),
            fields: Vec::new(),
            trail: Some(Trail {
                origin: Coordinates::RedisStream {
                    stream: "orders".into(),
                    id: "1-0".into(),
                },
                hop: 1,
                attempts: 1,
                tier: 0,
                first_seen: UNIX_EPOCH,
                first_failure: None,
                due: due_s.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            }),
        }
    }

    #[test]
    fn copies_leave_in_the_order_they_fall_due_and_not_before() {
        let mut w = Waiting::new(2);
        assert!(w.is_empty(1));
        w.insert(copy("2-0", Some(20)), 1);
        w.insert(copy("1-0", Some(10)), 2);
        w.insert(copy("3-0", Some(20)), 1);
        assert!(!w.is_empty(1) && w.is_empty(0));
        assert_eq!(w.next_due(), Some(UNIX_EPOCH + Duration::from_secs(10)));
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert!(w.pop_due(1, at(9)).is_none(), "not due yet");
        assert_eq!(
            w.pop_due(1, at(10)).map(|(h, n)| (h.id, n)),
            Some(("1-0".into(), 2))
        );
        assert!(w.pop_due(1, at(19)).is_none());
        let ids: Vec<String> = std::iter::from_fn(|| w.pop_due(1, at(20)))
            .map(|(h, _)| h.id)
            .collect();
        assert_eq!(ids, ["2-0", "3-0"], "a tie keeps the order they came in");
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn a_copy_without_a_due_time_is_due_now_and_reads_again_are_set_back() {
        let mut w = Waiting::new(2);
        w.insert(copy("5-0", Some(50)), 3);
        w.insert(copy("6-0", None), 1);
        assert_eq!(w.next_due(), Some(UNIX_EPOCH));
        let again = w.read_again(1, ["5-0", "9-0"].into_iter());
        assert_eq!(again, BTreeMap::from([(2, vec!["5-0".to_owned()])]));
    }
}
