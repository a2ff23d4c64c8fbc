use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn now() -> Instant {
    Instant::now()
}

#[test]
fn a_message_is_next_ahead_or_behind() {
    assert_eq!(place(4, 4), Place::Next);
    assert_eq!(place(6, 4), Place::Ahead);
    assert_eq!(place(3, 4), Place::Behind);
}

#[test]
fn sequence_numbers_are_read_with_a_template() {
    let policy = |t: &str| SequencePolicy {
        field: t.parse().unwrap(),
        first: None,
        gap_timeout: Duration::from_secs(1),
        on_gap: OnGap::Deliver,
        max_per_key: 8,
    };
    let coordinates = outrigger_core::Coordinates::Memory {
        queue: "orders".into(),
        sequence: 1,
    };
    let mut msg = Message::new(
        &br#"{"seq": 42, "s": " 7 ", "f": 1.5, "n": -1}"#[..],
        coordinates,
    );
    msg.headers.push(outrigger_core::Header::new("seq", "9"));
    assert_eq!(policy("{json:/seq}").sequence_of(&msg), Ok(42));
    assert_eq!(
        policy("{json:/s}").sequence_of(&msg),
        Ok(7),
        "surrounding blanks are trimmed"
    );
    assert_eq!(policy("{header:seq}").sequence_of(&msg), Ok(9));
    for (t, text) in [("{json:/f}", "1.5"), ("{json:/n}", "-1")] {
        assert_eq!(
            policy(t).sequence_of(&msg),
            Err(SequenceError::NotANumber(text.to_owned()))
        );
    }
    assert!(matches!(
        policy("{json:/missing}").sequence_of(&msg),
        Err(SequenceError::Missing(_))
    ));
    let big = Message::new(
        format!("{{\"seq\": {}}}", MAX_SEQUENCE + 1),
        msg.coordinates.clone(),
    );
    assert!(
        policy("{json:/seq}").sequence_of(&big).is_err(),
        "past 2^53 is refused"
    );
    assert_eq!(
        policy("{json:/seq}").start(5),
        5,
        "no first: the first seen starts the key"
    );
    let first = SequencePolicy {
        first: Some(1),
        ..policy("{json:/seq}")
    };
    assert_eq!(first.start(5), 1);
}

#[test]
fn held_messages_come_out_in_sequence_order_when_their_turn_comes() {
    let mut r: Reorder<&str, &str> = Reorder::new(10);
    r.hold("a", 5, "a5", 10, HOUR, now()).unwrap();
    r.hold("a", 3, "a3", 10, HOUR, now()).unwrap();
    r.hold("a", 3, "a3-copy", 10, HOUR, now()).unwrap();
    r.hold("b", 2, "b2", 10, HOUR, now()).unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r.ready(&"a", 2, now()), vec![]);
    assert_eq!(r.ready(&"a", 3, now()), vec![(3, "a3"), (3, "a3-copy")]);
    assert_eq!(r.len(), 2);
    assert_eq!(
        r.ready(&"a", 7, now()),
        vec![(5, "a5")],
        "behind ones come out too"
    );
    assert_eq!(r.take(&"b"), vec![(2, "b2")]);
    assert!(r.is_empty() && r.next_deadline().is_none());
}

#[test]
fn the_buffer_is_bounded_per_key_and_in_total() {
    let mut r: Reorder<u8, u64> = Reorder::new(3);
    assert!(r.hold(1, 2, 2, 2, HOUR, now()).is_ok());
    assert!(r.hold(1, 3, 3, 2, HOUR, now()).is_ok());
    assert_eq!(
        r.hold(1, 4, 4, 2, HOUR, now()),
        Err(4),
        "the key's share is full"
    );
    assert!(r.hold(2, 9, 9, 2, HOUR, now()).is_ok());
    assert_eq!(
        r.hold(3, 9, 9, 2, HOUR, now()),
        Err(9),
        "the buffer is full"
    );
    assert_eq!(r.drain().len(), 3);
    assert!(r.is_empty());
}

#[test]
fn a_gap_is_due_at_its_deadline_which_moves_when_part_of_it_is_released() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r: Reorder<u8, u64> = Reorder::new(10);
    r.hold(1, 3, 3, 10, s(1), t0).unwrap();
    r.hold(1, 6, 6, 10, s(1), t0 + s(4)).unwrap();
    r.hold(2, 4, 4, 10, s(2), t0).unwrap();
    assert_eq!(r.next_deadline(), Some(t0 + s(1)), "the first hold sets it");
    assert_eq!(r.due(t0 + s(1)), vec![1]);
    assert_eq!(r.ready(&1, 3, t0 + s(8)), vec![(3, 3)]);
    assert_eq!(r.next_deadline(), Some(t0 + s(2)));
    assert!(r.due(t0 + s(8)).contains(&2));
    assert!(!r.due(t0 + s(8)).contains(&1), "a new gap, a new deadline");
    assert!(r.due(t0 + s(9)).contains(&1));
}

#[test]
fn a_given_up_gap_skips_to_the_lowest_or_dead_letters_every_waiting_one() {
    let waiting = || vec![(5, "a5"), (6, "a6"), (9, "a9")];
    assert_eq!(
        resolve(OnGap::Deliver, 4, waiting()),
        vec![
            ("a5", Resolution::Skip { missing: 4 }),
            ("a6", Resolution::Follow),
            ("a9", Resolution::Follow)
        ]
    );
    assert!(resolve(OnGap::DeadLetter, 4, waiting())
        .iter()
        .all(|(_, how)| *how == Resolution::Expire { missing: 4 }));
}

/// One message of the model: a key, its sequence, and its idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Msg {
    key: u8,
    seq: u64,
    id: (u8, u64),
}

/// The model of a sidecar in front of a broker, with what survives a crash (the store, the
/// broker's unsettled messages) apart from what does not (the buffer).
struct Model {
    policy: SequencePolicy,
    /// Store: next expected per key, and the ids done.
    expected: HashMap<u8, u64>,
    done: HashSet<(u8, u64)>,
    /// Broker: taken and not settled, in the order taken.
    unsettled: Vec<Msg>,
    /// The sidecar's buffer.
    reorder: Reorder<u8, Msg>,
    delivered: HashMap<u8, Vec<u64>>,
    dead_lettered: HashSet<(u8, u64)>,
}

impl Model {
    fn new(on_gap: OnGap, max_per_key: usize, max_total: usize) -> Self {
        Model {
            policy: SequencePolicy {
                field: "{key}".parse().unwrap(),
                first: Some(1),
                gap_timeout: Duration::from_secs(1),
                on_gap,
                max_per_key,
            },
            expected: HashMap::new(),
            done: HashSet::new(),
            unsettled: Vec::new(),
            reorder: Reorder::new(max_total),
            delivered: HashMap::new(),
            dead_lettered: HashSet::new(),
        }
    }

    fn expected(&self, key: u8, seq: u64) -> u64 {
        self.expected
            .get(&key)
            .copied()
            .unwrap_or(self.policy.start(seq))
    }

    fn settle(&mut self, m: Msg) {
        let at = self.unsettled.iter().position(|u| *u == m).unwrap();
        self.unsettled.remove(at);
    }

    /// The sidecar takes `m` from the broker.
    fn take(&mut self, m: Msg) {
        self.unsettled.push(m);
        self.gate(m, Resolution::Follow);
    }

    /// The worker's gate and what follows it, as the pipeline runs them.
    fn gate(&mut self, m: Msg, how: Resolution) {
        let expected = self.expected(m.key, m.seq);
        match how {
            Resolution::Expire { .. } => return self.finish(m, false),
            Resolution::Skip { .. } if m.seq > expected => {
                self.expected.insert(m.key, m.seq);
                return self.gate(m, Resolution::Follow);
            }
            _ => {}
        }
        match place(m.seq, expected) {
            Place::Next => self.finish(m, true),
            Place::Behind => self.finish(m, false),
            Place::Ahead => {
                if let Err(m) =
                    self.reorder
                        .hold(m.key, m.seq, m, self.policy.max_per_key, HOUR, now())
                {
                    // Full: the key's gap is given up now, with this one among its waiting.
                    let mut waiting = self.reorder.take(&m.key);
                    waiting.push((m.seq, m));
                    waiting.sort_by_key(|(seq, _)| *seq);
                    self.give_up(m.key, waiting);
                }
            }
        }
    }

    fn give_up(&mut self, key: u8, waiting: Vec<(u64, Msg)>) {
        let expected = self.expected(key, waiting[0].0);
        for (m, how) in resolve(self.policy.on_gap, expected, waiting) {
            self.gate(m, how);
        }
    }

    /// Settles `m`: delivered if it is next (and not a duplicate), else dead-lettered unless its
    /// id is done; then its key moves on and what waited for it runs.
    fn finish(&mut self, m: Msg, next: bool) {
        if self.done.contains(&m.id) {
            // A duplicate: acked as such.
        } else if next {
            self.delivered.entry(m.key).or_default().push(m.seq);
            self.done.insert(m.id);
        } else {
            self.dead_lettered.insert(m.id);
            self.done.insert(m.id);
        }
        let moved = self.expected(m.key, m.seq).max(m.seq + 1);
        self.expected.insert(m.key, moved);
        self.settle(m);
        let expected = self.expected(m.key, m.seq);
        for (_, ready) in self.reorder.ready(&m.key, expected, now()) {
            self.gate(ready, Resolution::Follow);
        }
    }

    /// A SIGKILL: the buffer is gone; the broker hands every unsettled message out again.
    fn crash(&mut self, order: &[usize]) -> Vec<Msg> {
        self.reorder.drain();
        let mut again = std::mem::take(&mut self.unsettled);
        let n = again.len();
        for (i, &j) in order.iter().enumerate().take(n) {
            again.swap(i, j % n.max(1));
        }
        again
    }

    /// Every gap is given up (its timeout passed).
    fn time_out(&mut self) {
        let keys: Vec<u8> = self.reorder.keys().copied().collect();
        for key in keys {
            let waiting = self.reorder.take(&key);
            if !waiting.is_empty() {
                self.give_up(key, waiting);
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Arrive(usize),
    Crash(Vec<usize>),
    TimeOut,
}

/// Messages 1..=n per key (n from `lens`), each sent once or twice (`copies`), in an order
/// given by `perm` sort keys.
fn messages(lens: &[u64], copies: &[bool]) -> Vec<Msg> {
    let mut out = Vec::new();
    for (k, &n) in lens.iter().enumerate() {
        for seq in 1..=n {
            let key = k as u8;
            let m = Msg {
                key,
                seq,
                id: (key, seq),
            };
            out.push(m);
            if copies[(k * 13 + seq as usize) % copies.len()] {
                out.push(m);
            }
        }
    }
    out
}

fn shuffled<T: Clone>(items: &[T], order: &[u32]) -> Vec<T> {
    let mut tagged: Vec<(u32, usize)> = (0..items.len())
        .map(|i| (order[i % order.len()], i))
        .collect();
    tagged.sort();
    tagged.into_iter().map(|(_, i)| items[i].clone()).collect()
}

/// Runs `events` over the messages, then delivers what is left (crashes redeliver), and
/// returns the model once nothing is unsettled.
fn run(mut model: Model, sent: Vec<Msg>, events: &[Event], lose: &HashSet<usize>) -> Model {
    let mut queue: std::collections::VecDeque<Msg> = sent
        .iter()
        .enumerate()
        .filter(|(i, _)| !lose.contains(i))
        .map(|(_, m)| *m)
        .collect();
    for event in events {
        match event {
            Event::Arrive(n) => {
                for _ in 0..*n {
                    if let Some(m) = queue.pop_front() {
                        model.take(m);
                    }
                }
            }
            Event::Crash(order) => {
                let again = model.crash(order);
                for m in again.into_iter().rev() {
                    queue.push_front(m);
                }
            }
            Event::TimeOut => model.time_out(),
        }
    }
    while let Some(m) = queue.pop_front() {
        model.take(m);
    }
    // Whatever still waits has a gap that never fills: its timeout passes.
    while !model.reorder.is_empty() {
        model.time_out();
    }
    model
}

fn event(timeouts: bool) -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (1usize..5).prop_map(Event::Arrive),
        1 => proptest::collection::vec(0usize..64, 0..40).prop_map(Event::Crash),
        (if timeouts { 1 } else { 0 }) => Just(Event::TimeOut),
    ]
}

proptest! {
    /// Every message arrives (shuffled, some twice), the sidecar is killed at random points and
    /// the broker hands the unsettled ones out again in another order, and no gap times out:
    /// each key's sequences reach the app exactly once each, in order; none is dead-lettered.
    #[test]
    fn shuffled_duplicated_and_crashed_arrivals_are_delivered_once_in_order(
        lens in proptest::collection::vec(1u64..9, 1..4),
        copies in proptest::collection::vec(any::<bool>(), 1..8),
        order in proptest::collection::vec(any::<u32>(), 1..64),
        events in proptest::collection::vec(event(false), 0..30),
    ) {
        let sent = shuffled(&messages(&lens, &copies), &order);
        let model = run(Model::new(OnGap::Deliver, 64, 256), sent, &events, &HashSet::new());
        for (k, &n) in lens.iter().enumerate() {
            let got = model.delivered.get(&(k as u8)).cloned().unwrap_or_default();
            prop_assert_eq!(got, (1..=n).collect::<Vec<_>>(), "key {}", k);
        }
        prop_assert!(model.dead_lettered.is_empty());
        prop_assert!(model.unsettled.is_empty() && model.reorder.is_empty());
    }

    /// Some messages never arrive, gaps time out at random points and the buffer is small (so
    /// it fills): under either gap policy each key's deliveries keep their order, and every
    /// message that arrived is delivered or dead-lettered: none is lost, none delivered twice.
    #[test]
    fn with_gaps_and_a_full_buffer_order_holds_and_nothing_is_lost(
        lens in proptest::collection::vec(1u64..9, 1..4),
        copies in proptest::collection::vec(any::<bool>(), 1..8),
        order in proptest::collection::vec(any::<u32>(), 1..64),
        lost in proptest::collection::hash_set(0usize..40, 0..6),
        events in proptest::collection::vec(event(true), 0..30),
        dead_letter: bool,
        (per_key, total) in (1usize..4, 1usize..6),
    ) {
        let on_gap = if dead_letter { OnGap::DeadLetter } else { OnGap::Deliver };
        let sent = shuffled(&messages(&lens, &copies), &order);
        let arrived: HashSet<(u8, u64)> = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| !lost.contains(i))
            .map(|(_, m)| m.id)
            .collect();
        let model = run(Model::new(on_gap, per_key, total), sent, &events, &lost);
        let mut outcomes: HashSet<(u8, u64)> = model.dead_lettered.clone();
        for (&k, seqs) in &model.delivered {
            prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "key {} out of order: {:?}", k, seqs);
            for &s in seqs {
                prop_assert!(outcomes.insert((k, s)), "({}, {}) delivered and dead-lettered", k, s);
            }
        }
        prop_assert_eq!(outcomes, arrived);
        prop_assert!(model.unsettled.is_empty() && model.reorder.is_empty());
    }
}
