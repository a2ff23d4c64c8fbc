use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{Arrival, Chain, Finish, Turn};

fn dead(reason: &str, follow: bool) -> Finish {
    Finish::DeadLettered {
        reason: reason.to_owned(),
        follow,
    }
}

#[test]
fn nothing_parked_is_free_and_a_failure_starts_a_chain() {
    let mut chain = Chain::default();
    assert_eq!(chain.arrive("o/0@1"), Arrival::Free);
    assert!(!chain.is_parked());
    chain.failed("o/0@1", 0, 1);
    assert!(chain.is_parked());
    assert_eq!(
        chain.arrive("o/0@2"),
        Arrival::Park {
            tier: Some(0),
            hop: 0
        }
    );
    assert_eq!(chain.entries().collect::<Vec<_>>(), ["o/0@1", "o/0@2"]);
}

#[test]
fn only_the_live_head_runs_and_followers_wait_behind_its_tier() {
    let mut chain = Chain::default();
    chain.failed("a", 0, 1);
    let _ = chain.arrive("b");
    assert_eq!(chain.turn("a", 1), Turn::Run);
    assert_eq!(chain.turn("b", 0), Turn::Wait { tier: Some(0) });
    // The head fails again: its new copy, hop 2, is live; the old one is stale.
    chain.failed("a", 1, 2);
    assert_eq!(chain.turn("a", 1), Turn::Stale);
    assert_eq!(chain.turn("a", 2), Turn::Run);
    assert_eq!(chain.turn("b", 0), Turn::Wait { tier: Some(1) });
    chain.finish("a", Finish::Done);
    // b is head now; whatever copy of it comes round runs.
    assert_eq!(chain.turn("b", 0), Turn::Run);
    assert_eq!(chain.turn("a", 2), Turn::Stale);
    chain.finish("b", Finish::Done);
    assert!(chain.is_empty());
}

#[test]
fn a_dead_lettered_head_takes_its_followers_when_the_policy_says_so() {
    let mut chain = Chain::default();
    chain.failed("a", 0, 1);
    let _ = chain.arrive("b");
    chain.finish("a", dead("gave up", true));
    assert_eq!(
        chain.turn("a", 1),
        Turn::Redo {
            reason: "gave up".into()
        }
    );
    chain.cleared("a");
    assert_eq!(chain.turn("b", 0), Turn::Follow { head: "a".into() });
    chain.finish("b", dead("followed a", false));
    chain.cleared("b");
    assert!(chain.is_empty());

    let mut chain = Chain::default();
    chain.failed("a", 0, 1);
    let _ = chain.arrive("b");
    chain.finish("a", dead("gave up", false));
    chain.cleared("a");
    assert_eq!(chain.turn("b", 0), Turn::Run);
}

#[test]
fn a_message_read_again_from_the_source_keeps_its_place() {
    let mut chain = Chain::default();
    chain.failed("a", 2, 3);
    let _ = chain.arrive("b");
    assert_eq!(
        chain.arrive("a"),
        Arrival::Park {
            tier: Some(2),
            hop: 3
        }
    );
    assert_eq!(
        chain.arrive("b"),
        Arrival::Park {
            tier: Some(2),
            hop: 0
        }
    );
    assert_eq!(chain.entries().count(), 2);
}

#[test]
fn the_stored_form_reads_back() {
    let mut chain = Chain::default();
    chain.failed("kafka:o/1@5", 1, 2);
    let _ = chain.arrive("kafka:o/1@9");
    chain.finish("kafka:o/1@5", dead("x", true));
    assert_eq!(Chain::decode(&chain.encode()).unwrap(), chain);
}

/// One step of a simulated consumer group working on one key.
#[derive(Clone, Debug)]
enum Op {
    /// The next message arrives from the source.
    Arrive,
    /// Some copy in the retry queues is read (any one: tiers and members interleave freely).
    Read {
        pick: usize,
        outcome: Outcome,
        crash: bool,
    },
    /// A copy is read twice (a crash before its commit).
    Duplicate { pick: usize },
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Success,
    Fail,
    DeadLetter,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Success),
        3 => Just(Outcome::Fail),
        1 => Just(Outcome::DeadLetter),
    ];
    prop_oneof![
        2 => Just(Op::Arrive),
        5 => (any::<usize>(), outcome, prop::bool::weighted(0.15))
            .prop_map(|(pick, outcome, crash)| Op::Read { pick, outcome, crash }),
        1 => any::<usize>().prop_map(|pick| Op::Duplicate { pick }),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Fate {
    Delivered,
    DeadLettered,
}

/// The world around one chain: the source, the copies in retry queues, what happened.
struct World {
    chain: Chain,
    follow: bool,
    next: usize,
    total: usize,
    /// The source's next message again, after a crash before it was acked.
    again: Option<usize>,
    copies: Vec<(usize, u32, usize)>,
    fates: BTreeMap<usize, Fate>,
    /// Messages whose fate is decided, even if its dead letter is not written yet.
    decided: BTreeSet<usize>,
    /// What was parked when a head was dead-lettered with `follow`.
    doomed: Vec<usize>,
}

impl World {
    fn id(n: usize) -> String {
        format!("kafka:orders/0@{n}")
    }

    fn num(entry: &str) -> usize {
        entry.rsplit('@').next().unwrap().parse().unwrap()
    }

    /// Running message `n`: everything that arrived before it has its fate decided (a dead
    /// letter may still be on its way: the app never sees it either way).
    fn run(&mut self, n: usize) -> Result<(), TestCaseError> {
        for earlier in 0..n {
            prop_assert!(
                self.decided.contains(&earlier),
                "message {n} ran before message {earlier} was finished"
            );
        }
        prop_assert!(
            self.fates.get(&n) != Some(&Fate::Delivered),
            "message {n} delivered twice"
        );
        Ok(())
    }

    fn fate(&mut self, n: usize, fate: Fate) -> Result<(), TestCaseError> {
        self.decided.insert(n);
        if let Some(before) = self.fates.insert(n, fate.clone()) {
            prop_assert_eq!(before, fate, "message {} got two different fates", n);
        }
        Ok(())
    }

    fn dead_letter(&mut self, n: usize, crash: bool) -> Result<bool, TestCaseError> {
        let entry = Self::id(n);
        let head = self.chain.entries().next() == Some(entry.as_str());
        if self.follow && head {
            self.doomed
                .extend(self.chain.entries().skip(1).map(Self::num));
        }
        self.chain.finish(&entry, dead("x", self.follow));
        self.decided.insert(n);
        // Recorded, then written: a crash in between leaves it unwritten and the copy unread.
        if crash {
            return Ok(false);
        }
        self.fate(n, Fate::DeadLettered)?;
        self.chain.cleared(&entry);
        Ok(true)
    }

    fn arrive(&mut self, crash: bool, outcome: Outcome) -> Result<(), TestCaseError> {
        let n = match self.again.take() {
            Some(n) => n,
            None if self.next < self.total => {
                self.next += 1;
                self.next - 1
            }
            None => return Ok(()),
        };
        let entry = Self::id(n);
        match self.chain.arrive(&entry) {
            Arrival::Park { tier, hop } => self.copies.push((n, hop, tier.unwrap_or(0))),
            Arrival::Free => {
                self.run(n)?;
                match outcome {
                    Outcome::Success => self.fate(n, Fate::Delivered)?,
                    Outcome::DeadLetter => self.fate(n, Fate::DeadLettered)?,
                    Outcome::Fail => {
                        // Chain first, then the copy: a crash in between reads it again.
                        self.chain.failed(&entry, 0, 1);
                        if crash {
                            self.again = Some(n);
                        } else {
                            self.copies.push((n, 1, 0));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn read(&mut self, pick: usize, outcome: Outcome, crash: bool) -> Result<(), TestCaseError> {
        if self.copies.is_empty() {
            return Ok(());
        }
        let (n, hop, tier) = self.copies.remove(pick % self.copies.len());
        let entry = Self::id(n);
        let keep = match self.chain.turn(&entry, hop) {
            Turn::Stale => false,
            Turn::Wait { tier: to } => {
                self.copies.push((n, hop, to.unwrap_or(tier)));
                false
            }
            Turn::Follow { .. } => {
                prop_assert!(self.follow);
                !self.dead_letter(n, crash)?
            }
            Turn::Redo { .. } => {
                self.fate(n, Fate::DeadLettered)?;
                self.chain.cleared(&entry);
                false
            }
            Turn::Run => {
                self.run(n)?;
                match outcome {
                    Outcome::Success => {
                        self.chain.finish(&entry, Finish::Done);
                        self.fate(n, Fate::Delivered)?;
                        crash
                    }
                    Outcome::DeadLetter => !self.dead_letter(n, crash)?,
                    Outcome::Fail => {
                        // The copy first, then the chain: a crash in between reads the old
                        // copy again.
                        let next = (tier + 1).min(2);
                        self.copies.push((n, hop + 1, next));
                        if !crash {
                            self.chain.failed(&entry, next, hop + 1);
                        }
                        crash
                    }
                }
            }
        };
        if keep {
            self.copies.push((n, hop, tier));
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn a_key_keeps_its_order_and_loses_nothing(
        total in 1usize..8,
        follow in any::<bool>(),
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let mut world = World {
            chain: Chain::default(),
            follow,
            next: 0,
            total,
            again: None,
            copies: Vec::new(),
            fates: BTreeMap::new(),
            decided: BTreeSet::new(),
            doomed: Vec::new(),
        };
        for op in ops {
            match op {
                Op::Arrive => world.arrive(false, Outcome::Fail)?,
                Op::Read { pick, outcome, crash } => world.read(pick, outcome, crash)?,
                Op::Duplicate { pick } => {
                    if !world.copies.is_empty() {
                        let copy = world.copies[pick % world.copies.len()];
                        world.copies.push(copy);
                    }
                }
            }
            // The stored form carries everything.
            prop_assert_eq!(Chain::decode(&world.chain.encode()).unwrap(), world.chain.clone());
        }
        // Then the app is fixed and nothing crashes: everything drains.
        let mut steps = 0;
        while world.next < total || world.again.is_some() || !world.copies.is_empty() {
            steps += 1;
            prop_assert!(steps < 10_000, "the chain did not drain: {:?}", world.chain);
            if world.copies.is_empty() {
                world.arrive(false, Outcome::Success)?;
            } else {
                world.read(0, Outcome::Success, false)?;
            }
        }
        prop_assert!(world.chain.is_empty(), "left behind: {:?}", world.chain);
        for n in 0..total {
            prop_assert!(world.fates.contains_key(&n), "message {} was lost", n);
        }
        for n in &world.doomed {
            prop_assert_eq!(world.fates.get(n), Some(&Fate::DeadLettered), "message {} did not follow its head", n);
        }
    }
}
