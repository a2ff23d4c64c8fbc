//! The commit watermark of one partition: the offset below which every delivered record is settled.
//!
//! Kafka commits one offset per partition, "everything before this is done", while the sidecar
//! settles records out of order. The watermark is what may be committed: the smallest delivered
//! offset not yet settled, or one past the highest delivered offset when all are settled.
//!
//! Only delivered offsets count. A compacted topic or transaction markers leave offsets the
//! consumer never sees; they sit between delivered ones and must not hold the watermark back, so
//! nothing here assumes offsets are consecutive.

use std::collections::BTreeSet;

/// Delivered-but-unsettled offsets of one partition, and how far delivery has gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Watermark {
    /// Delivered offsets not settled yet. Bounded by the in-flight limits, plus requeued ones.
    unsettled: BTreeSet<i64>,
    /// One past the highest offset delivered; `None` before the first delivery.
    next: Option<i64>,
}

impl Watermark {
    /// A tracker that has seen no delivery yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records `offset` as delivered and unsettled.
    ///
    /// Returns false, recording nothing, for an offset at or below one delivered before: a
    /// record fetched twice in one assignment must not be handed out twice, and its first
    /// delivery already holds the watermark.
    pub(crate) fn deliver(&mut self, offset: i64) -> bool {
        if offset < 0 || self.next.is_some_and(|next| offset < next) {
            return false;
        }
        self.unsettled.insert(offset);
        self.next = Some(offset + 1);
        true
    }

    /// Marks a delivered offset settled; returns whether the watermark moved.
    ///
    /// Settling an offset twice, one never delivered, or one below the watermark changes
    /// nothing: late and duplicate settlements are harmless.
    pub(crate) fn settle(&mut self, offset: i64) -> bool {
        let before = self.watermark();
        self.unsettled.remove(&offset) && self.watermark() != before
    }

    /// The offset to commit: every delivered offset below it is settled. `None` before the
    /// first delivery, when there is nothing of ours to commit.
    pub(crate) fn watermark(&self) -> Option<i64> {
        self.unsettled.first().copied().or(self.next)
    }

    /// How many delivered offsets are not settled.
    #[cfg(test)]
    pub(crate) fn unsettled(&self) -> usize {
        self.unsettled.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nothing_delivered_means_nothing_to_commit() {
        let w = Watermark::new();
        assert_eq!(w.watermark(), None);
    }

    #[test]
    fn a_slow_record_holds_the_watermark_until_it_settles() {
        let mut w = Watermark::new();
        for offset in 10..15 {
            assert!(w.deliver(offset));
        }
        assert_eq!(w.watermark(), Some(10));
        for offset in [10, 11, 13, 14] {
            w.settle(offset);
        }
        assert_eq!(w.watermark(), Some(12), "12 is unsettled");
        assert!(w.settle(12));
        assert_eq!(w.watermark(), Some(15));
        assert_eq!(w.unsettled(), 0);
    }

    #[test]
    fn gaps_between_delivered_offsets_do_not_stall_it() {
        // 3, 4 and 8 were compacted away (or were transaction markers).
        let mut w = Watermark::new();
        for offset in [2, 5, 6, 7, 9] {
            assert!(w.deliver(offset));
        }
        for offset in [2, 5, 6, 7] {
            w.settle(offset);
        }
        assert_eq!(w.watermark(), Some(9));
        w.settle(9);
        assert_eq!(w.watermark(), Some(10));
    }

    #[test]
    fn redelivery_of_an_old_offset_is_refused() {
        let mut w = Watermark::new();
        assert!(w.deliver(4));
        assert!(w.deliver(5));
        assert!(!w.deliver(5));
        assert!(!w.deliver(3));
        assert!(!w.deliver(-1));
        assert_eq!(w.unsettled(), 2);
    }

    #[test]
    fn late_and_duplicate_settlements_are_harmless() {
        let mut w = Watermark::new();
        w.deliver(0);
        w.deliver(1);
        assert!(w.settle(0));
        assert!(!w.settle(0), "second settle of 0");
        assert!(!w.settle(7), "never delivered");
        assert_eq!(w.watermark(), Some(1));
        assert!(w.settle(1));
        assert_eq!(w.watermark(), Some(2));
    }

    /// Strictly increasing offsets with random gaps, and a random order to settle a random
    /// subset of them in, with duplicates and settles of never-delivered offsets mixed in.
    fn scenario() -> impl Strategy<Value = (Vec<i64>, Vec<i64>)> {
        (0i64..1_000, prop::collection::vec(1i64..4, 1..60)).prop_flat_map(|(start, steps)| {
            let offsets: Vec<i64> = steps
                .iter()
                .scan(start, |at, step| {
                    let offset = *at;
                    *at += step;
                    Some(offset)
                })
                .collect();
            let last = *offsets.last().unwrap();
            let settles = prop::collection::vec(
                prop_oneof![
                    8 => prop::sample::select(offsets.clone()),
                    1 => (start - 5)..(last + 5),
                ],
                0..120,
            );
            (Just(offsets), settles)
        })
    }

    proptest! {
        #[test]
        fn watermark_is_the_smallest_unsettled_delivered_offset((offsets, settles) in scenario()) {
            let mut w = Watermark::new();
            for &offset in &offsets {
                prop_assert!(w.deliver(offset));
            }
            let mut settled = std::collections::BTreeSet::new();
            let mut previous = w.watermark();
            for offset in settles {
                w.settle(offset);
                if offsets.contains(&offset) {
                    settled.insert(offset);
                }
                let smallest_unsettled = offsets.iter().copied().find(|o| !settled.contains(o));
                let expected = smallest_unsettled.unwrap_or(offsets.last().unwrap() + 1);
                prop_assert_eq!(w.watermark(), Some(expected));
                // Never past an unsettled offset, and never backwards.
                for &o in &offsets {
                    if !settled.contains(&o) {
                        prop_assert!(expected <= o);
                    }
                }
                prop_assert!(w.watermark() >= previous);
                previous = w.watermark();
            }
        }

        #[test]
        fn settling_everything_reaches_the_end((offsets, _) in scenario(), seed in any::<u64>()) {
            let mut w = Watermark::new();
            for &offset in &offsets {
                w.deliver(offset);
            }
            let mut order = offsets.clone();
            // A seeded shuffle, so the order is random but reproducible from the seed.
            let mut state = seed | 1;
            for i in (1..order.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            for offset in order.iter().chain(order.iter()) {
                w.settle(*offset);
            }
            prop_assert_eq!(w.watermark(), Some(offsets.last().unwrap() + 1));
            prop_assert_eq!(w.unsettled(), 0);
        }

        #[test]
        fn deliveries_interleaved_with_settles_keep_the_invariant(
            ops in prop::collection::vec((any::<bool>(), 1i64..3, any::<prop::sample::Index>()), 1..200)
        ) {
            let mut w = Watermark::new();
            let mut delivered: Vec<i64> = Vec::new();
            let mut settled = std::collections::BTreeSet::new();
            let mut at = 100;
            for (deliver, step, pick) in ops {
                if deliver || delivered.is_empty() {
                    prop_assert!(w.deliver(at));
                    delivered.push(at);
                    at += step;
                } else {
                    let offset = *pick.get(&delivered);
                    w.settle(offset);
                    settled.insert(offset);
                }
                let expected = delivered
                    .iter()
                    .copied()
                    .find(|o| !settled.contains(o))
                    .unwrap_or(delivered.last().unwrap() + 1);
                prop_assert_eq!(w.watermark(), Some(expected));
            }
        }
    }
}
