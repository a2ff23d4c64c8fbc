//! Ordering: which messages must not overtake each other, and the lanes that enforce it.
//!
//! Every message maps to at most one *lane* (a partition, or a key). Within a lane messages run
//! one at a time, in arrival order; different lanes run in parallel. A message with no lane
//! runs as soon as it arrives. In-place retries keep their lane busy, so a failing message holds
//! back exactly what must wait for it: its partition in `partition` mode, its key in `key` mode.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
pub use outrigger_core::OrderingMode;

/// A lane: the partition or key a message must keep its order within.
pub type Lane = Bytes;

/// Per-lane queues: at most one item active per lane, the rest waiting in arrival order.
#[derive(Debug)]
pub struct Lanes<T> {
    /// Lanes with an active item, and what waits behind it.
    busy: HashMap<Lane, VecDeque<T>>,
    waiting: usize,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Self {
            busy: HashMap::new(),
            waiting: 0,
        }
    }
}

impl<T> Lanes<T> {
    /// Offers an item. Returns it back when it may start now; otherwise it waits in its lane.
    #[must_use = "an item returned by offer must be started"]
    pub fn offer(&mut self, lane: Option<&Lane>, item: T) -> Option<T> {
        let Some(lane) = lane else {
            return Some(item);
        };
        match self.busy.get_mut(lane) {
            Some(queue) => {
                queue.push_back(item);
                self.waiting += 1;
                None
            }
            None => {
                self.busy.insert(lane.clone(), VecDeque::new());
                Some(item)
            }
        }
    }

    /// The active item of `lane` finished. Returns the next item of that lane to start, which
    /// keeps the lane busy; `None` frees the lane.
    #[must_use = "an item returned by finish must be started"]
    pub fn finish(&mut self, lane: &Lane) -> Option<T> {
        let queue = self.busy.get_mut(lane)?;
        match queue.pop_front() {
            Some(next) => {
                self.waiting -= 1;
                Some(next)
            }
            None => {
                self.busy.remove(lane);
                None
            }
        }
    }

    /// Whether an item offered to `lane` now would wait.
    pub fn is_busy(&self, lane: Option<&Lane>) -> bool {
        lane.is_some_and(|lane| self.busy.contains_key(lane))
    }

    /// Items waiting behind an active one.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Lanes with an active item.
    pub fn busy_lanes(&self) -> usize {
        self.busy.len()
    }

    /// Takes every waiting item out (shutdown); active lanes stay busy until they finish.
    pub fn drain_waiting(&mut self) -> Vec<T> {
        self.waiting = 0;
        self.busy.values_mut().flat_map(|q| q.drain(..)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lane(n: u8) -> Lane {
        Bytes::from(vec![n])
    }

    #[test]
    fn one_active_per_lane_in_arrival_order() {
        let mut lanes = Lanes::default();
        assert!(!lanes.is_busy(Some(&lane(1))));
        assert_eq!(lanes.offer(Some(&lane(1)), "a1"), Some("a1"));
        assert!(lanes.is_busy(Some(&lane(1))) && !lanes.is_busy(None));
        assert_eq!(lanes.offer(Some(&lane(1)), "a2"), None);
        assert_eq!(lanes.offer(Some(&lane(2)), "b1"), Some("b1"));
        assert_eq!(lanes.offer(None, "free"), Some("free"));
        assert_eq!(lanes.offer(Some(&lane(1)), "a3"), None);
        assert_eq!(lanes.waiting(), 2);
        assert_eq!(lanes.finish(&lane(1)), Some("a2"));
        assert_eq!(lanes.finish(&lane(2)), None);
        assert_eq!(lanes.finish(&lane(1)), Some("a3"));
        assert_eq!(lanes.finish(&lane(1)), None);
        assert_eq!((lanes.waiting(), lanes.busy_lanes()), (0, 0));
        assert!(!lanes.is_busy(Some(&lane(1))));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Offer(Option<u8>),
        Finish(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => proptest::option::weighted(0.8, 0u8..5).prop_map(Op::Offer),
            2 => (0usize..8).prop_map(Op::Finish),
        ]
    }

    proptest! {
        /// Per lane, items start in the order they were offered; never two active in a lane;
        /// once everything active finishes, every offered item has started exactly once.
        #[test]
        fn lanes_keep_order_and_lose_nothing(ops in proptest::collection::vec(op(), 0..200)) {
            let mut lanes: Lanes<(Option<u8>, usize)> = Lanes::default();
            let mut active: Vec<(Option<u8>, usize)> = Vec::new();
            let mut started: Vec<(Option<u8>, usize)> = Vec::new();
            let mut offered = 0usize;
            let start = |item: (Option<u8>, usize), active: &mut Vec<_>, started: &mut Vec<_>| {
                if let Some(l) = item.0 {
                    prop_assert!(active.iter().all(|(a, _): &(Option<u8>, usize)| *a != Some(l)), "two active in lane {}", l);
                }
                active.push(item);
                started.push(item);
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Offer(l) => {
                        let item = (l, offered);
                        offered += 1;
                        if let Some(now) = lanes.offer(l.map(lane).as_ref(), item) {
                            start(now, &mut active, &mut started)?;
                        }
                    }
                    Op::Finish(i) if !active.is_empty() => {
                        let (l, _) = active.remove(i % active.len());
                        if let Some(l) = l {
                            if let Some(next) = lanes.finish(&lane(l)) {
                                start(next, &mut active, &mut started)?;
                            }
                        }
                    }
                    Op::Finish(_) => {}
                }
            }
            while let Some((l, _)) = active.pop() {
                if let Some(l) = l {
                    if let Some(next) = lanes.finish(&lane(l)) {
                        start(next, &mut active, &mut started)?;
                    }
                }
            }
            prop_assert_eq!(started.len(), offered);
            prop_assert_eq!(lanes.waiting(), 0);
            for l in 0u8..5 {
                let seq: Vec<usize> = started.iter().filter(|(x, _)| *x == Some(l)).map(|(_, n)| *n).collect();
                prop_assert!(seq.windows(2).all(|w| w[0] < w[1]), "lane {} out of order: {:?}", l, seq);
            }
        }
    }
}
