//! Ordering: which messages must not overtake each other, and the lanes that enforce it.
//!
//! Every message maps to at most one *lane* (a partition, or a key). Within a lane messages run
//! one at a time, in arrival order; different lanes run in parallel. A message with no lane
//! runs as soon as it arrives. In-place retries keep their lane busy, so a failing message holds
//! back exactly what must wait for it: its partition in `partition` mode, its key in `key` mode.
//!
//! A lane may also be wider than one: in `none` mode with a per-key limit, a key's lane runs up
//! to that many of its messages at once (in any order among them) and holds back the rest, so
//! one hot key cannot take every delivery slot.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
pub use outrigger_core::OrderingMode;

/// A lane: the partition or key a message must keep its order within.
pub type Lane = Bytes;

/// Per-lane queues: at most `width` items active per lane (one, for ordering), the rest
/// waiting in arrival order.
#[derive(Debug)]
pub struct Lanes<T> {
    /// Lanes with an active item: how many are active, and what waits behind them.
    busy: HashMap<Lane, Busy<T>>,
    waiting: usize,
}

#[derive(Debug)]
struct Busy<T> {
    active: usize,
    queue: VecDeque<T>,
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
    /// Offers an item to a lane running `width` items at once (at least 1). Returns it back
    /// when it may start now; otherwise it waits in its lane.
    #[must_use = "an item returned by offer must be started"]
    pub fn offer(&mut self, lane: Option<&Lane>, width: usize, item: T) -> Option<T> {
        let Some(lane) = lane else {
            return Some(item);
        };
        match self.busy.get_mut(lane) {
            Some(busy) if busy.active >= width.max(1) => {
                busy.queue.push_back(item);
                self.waiting += 1;
                None
            }
            Some(busy) => {
                busy.active += 1;
                Some(item)
            }
            None => {
                let queue = VecDeque::new();
                self.busy.insert(lane.clone(), Busy { active: 1, queue });
                Some(item)
            }
        }
    }

    /// Offers items (in their order) that go before everything waiting in their lane: ones
    /// whose turn came while they waited elsewhere. Returns those that may start now (the
    /// first, when the lane is free; all of them without a lane); the rest wait.
    #[must_use = "items returned by offer_first must be started"]
    pub fn offer_first(&mut self, lane: Option<&Lane>, width: usize, items: Vec<T>) -> Vec<T> {
        let Some(lane) = lane else {
            return items;
        };
        let mut items = items.into_iter();
        let mut start = Vec::new();
        if !self.would_wait(Some(lane), width) {
            start.extend(
                items
                    .next()
                    .and_then(|first| self.offer(Some(lane), width, first)),
            );
        }
        let rest: Vec<T> = items.collect();
        if let Some(busy) = self.busy.get_mut(lane) {
            self.waiting += rest.len();
            for item in rest.into_iter().rev() {
                busy.queue.push_front(item);
            }
        }
        start
    }

    /// Whether an item offered to `lane` of `width` now would wait.
    pub fn would_wait(&self, lane: Option<&Lane>, width: usize) -> bool {
        lane.and_then(|lane| self.busy.get(lane))
            .is_some_and(|busy| busy.active >= width.max(1))
    }

    /// An active item of `lane` finished. Returns the next item of that lane to start in its
    /// place; `None` when nothing waits (the lane is freed once none is active).
    #[must_use = "an item returned by finish must be started"]
    pub fn finish(&mut self, lane: &Lane) -> Option<T> {
        let busy = self.busy.get_mut(lane)?;
        match busy.queue.pop_front() {
            Some(next) => {
                self.waiting -= 1;
                Some(next)
            }
            None => {
                busy.active -= 1;
                if busy.active == 0 {
                    self.busy.remove(lane);
                }
                None
            }
        }
    }

    /// Items waiting behind active ones.
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
        self.busy
            .values_mut()
            .flat_map(|b| b.queue.drain(..))
            .collect()
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
        assert!(!lanes.would_wait(Some(&lane(1)), 1));
        assert_eq!(lanes.offer(Some(&lane(1)), 1, "a1"), Some("a1"));
        assert!(lanes.would_wait(Some(&lane(1)), 1) && !lanes.would_wait(None, 1));
        assert_eq!(lanes.offer(Some(&lane(1)), 1, "a2"), None);
        assert_eq!(lanes.offer(Some(&lane(2)), 1, "b1"), Some("b1"));
        assert_eq!(lanes.offer(None, 1, "free"), Some("free"));
        assert_eq!(lanes.offer(Some(&lane(1)), 1, "a3"), None);
        assert_eq!(lanes.waiting(), 2);
        assert_eq!(lanes.finish(&lane(1)), Some("a2"));
        assert_eq!(lanes.finish(&lane(2)), None);
        assert_eq!(lanes.finish(&lane(1)), Some("a3"));
        assert_eq!(lanes.finish(&lane(1)), None);
        assert_eq!((lanes.waiting(), lanes.busy_lanes()), (0, 0));
        assert!(!lanes.would_wait(Some(&lane(1)), 1));
    }

    #[test]
    fn an_item_offered_first_goes_before_the_waiting_ones() {
        let mut lanes = Lanes::default();
        let a = Some(lane(1));
        assert_eq!(
            lanes.offer_first(a.as_ref(), 1, vec!["a1", "a2"]),
            vec!["a1"],
            "an idle lane"
        );
        assert_eq!(lanes.offer(a.as_ref(), 1, "a5"), None);
        assert!(lanes
            .offer_first(a.as_ref(), 1, vec!["a3", "a4"])
            .is_empty());
        assert_eq!(lanes.waiting(), 4);
        for next in ["a3", "a4", "a2", "a5"] {
            assert_eq!(lanes.finish(&lane(1)), Some(next));
        }
        assert_eq!(lanes.finish(&lane(1)), None);
        assert_eq!((lanes.waiting(), lanes.busy_lanes()), (0, 0));
        assert_eq!(
            lanes.offer_first(None, 1, vec!["f1", "f2"]),
            vec!["f1", "f2"]
        );
        assert!(lanes.offer_first(a.as_ref(), 1, Vec::new()).is_empty());
    }

    #[test]
    fn a_wide_lane_runs_its_width_and_queues_the_rest() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.offer(Some(&lane(1)), 2, "a1"), Some("a1"));
        assert!(!lanes.would_wait(Some(&lane(1)), 2));
        assert_eq!(lanes.offer(Some(&lane(1)), 2, "a2"), Some("a2"));
        assert!(lanes.would_wait(Some(&lane(1)), 2));
        assert_eq!(lanes.offer(Some(&lane(1)), 2, "a3"), None);
        assert_eq!(lanes.offer(Some(&lane(1)), 2, "a4"), None);
        assert_eq!(lanes.finish(&lane(1)), Some("a3"), "in a2's place or a1's");
        assert_eq!(lanes.finish(&lane(1)), Some("a4"));
        assert_eq!(lanes.finish(&lane(1)), None);
        assert_eq!(lanes.busy_lanes(), 1, "a4 is still active");
        assert_eq!(lanes.finish(&lane(1)), None);
        assert_eq!((lanes.waiting(), lanes.busy_lanes()), (0, 0));
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
        /// Per lane, items start in the order they were offered; never more active in a lane
        /// than its width (lane l is l + 1 wide when `wide`, else 1); once everything active
        /// finishes, every offered item has started exactly once.
        #[test]
        fn lanes_keep_order_and_lose_nothing(ops in proptest::collection::vec(op(), 0..200), wide: bool) {
            let width = |l: u8| if wide { usize::from(l) + 1 } else { 1 };
            let mut lanes: Lanes<(Option<u8>, usize)> = Lanes::default();
            let mut active: Vec<(Option<u8>, usize)> = Vec::new();
            let mut started: Vec<(Option<u8>, usize)> = Vec::new();
            let mut offered = 0usize;
            let start = |item: (Option<u8>, usize), active: &mut Vec<_>, started: &mut Vec<_>| {
                if let Some(l) = item.0 {
                    let now = active.iter().filter(|(a, _): &&(Option<u8>, usize)| *a == Some(l)).count();
                    prop_assert!(now < width(l), "more than {} active in lane {}", width(l), l);
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
                        if let Some(now) = lanes.offer(l.map(lane).as_ref(), l.map_or(1, width), item) {
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
