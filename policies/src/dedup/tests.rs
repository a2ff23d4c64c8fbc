use std::time::Duration;

use outrigger_core::{Claim, Completion, Release};
use proptest::prelude::*;

use super::{millis, DedupRecord, DedupState};

const LEASE: Duration = Duration::from_millis(1_000);
const NOW: u64 = 1_700_000_000_000;

fn record(state: DedupState, fence: u64, attempts: u32) -> DedupRecord {
    DedupRecord {
        state,
        fence,
        attempts,
        lease_until_ms: NOW + millis(LEASE),
        generation: 0,
    }
}

#[test]
fn a_dead_lettered_key_is_recognised_until_a_newer_resubmission_revives_it() {
    let held = record(DedupState::Claimed, 3, 2);
    let step = DedupRecord::dead_lettered(Some(&held), 2, 0);
    assert_eq!(
        step.answer,
        Completion::Fenced { current: 3 },
        "a stale holder"
    );
    let step = DedupRecord::dead_lettered(Some(&held), 3, 0);
    assert_eq!(step.answer, Completion::Completed);
    let dead = step.write.expect("written");
    assert_eq!((dead.state, dead.attempts), (DedupState::DeadLettered, 0));
    let again = DedupRecord::dead_lettered(Some(&dead), 3, 0);
    assert_eq!((again.answer, again.write), (Completion::Completed, None));
    let claim = DedupRecord::claim(Some(&dead), NOW, LEASE);
    assert_eq!(claim.answer, Claim::DeadLettered { generation: 0 });
    assert_eq!(claim.write, None);
    assert!(
        !DedupRecord::revive(Some(&dead), 0).answer,
        "the same generation stays dead"
    );
    let revived = DedupRecord::revive(Some(&dead), 1);
    assert!(revived.answer);
    let claim = DedupRecord::claim(revived.write.as_ref(), NOW, LEASE);
    assert_eq!(
        claim.answer,
        Claim::Acquired {
            fence: 4,
            attempt: 1
        }
    );
}

#[test]
fn first_claim_acquires_fence_one() {
    let step = DedupRecord::claim(None, NOW, LEASE);
    assert_eq!(
        step.answer,
        Claim::Acquired {
            fence: 1,
            attempt: 1
        }
    );
    assert_eq!(step.write, Some(record(DedupState::Claimed, 1, 1)));
}

#[test]
fn live_lease_is_busy_for_the_time_left() {
    let held = record(DedupState::Claimed, 1, 1);
    let step = DedupRecord::claim(Some(&held), NOW + 400, LEASE);
    assert_eq!(
        step.answer,
        Claim::Busy {
            retry_in: Duration::from_millis(600)
        }
    );
    assert_eq!(step.write, None);
}

#[test]
fn lease_ends_at_lease_until() {
    let held = record(DedupState::Claimed, 1, 1);
    let step = DedupRecord::claim(Some(&held), held.lease_until_ms, LEASE);
    assert_eq!(
        step.answer,
        Claim::Acquired {
            fence: 2,
            attempt: 2
        }
    );
}

#[test]
fn done_is_never_claimed_again() {
    let done = record(DedupState::Done, 3, 2);
    let step = DedupRecord::claim(Some(&done), NOW + 10 * millis(LEASE), LEASE);
    assert_eq!(step.answer, Claim::Done);
    assert_eq!(step.write, None);
}

#[test]
fn released_key_is_claimed_with_the_next_fence() {
    let released = record(DedupState::Released, 4, 2);
    let step = DedupRecord::claim(Some(&released), NOW, LEASE);
    assert_eq!(
        step.answer,
        Claim::Acquired {
            fence: 5,
            attempt: 3
        }
    );
}

#[test]
fn complete_is_a_compare_and_set_on_the_fence() {
    let held = record(DedupState::Claimed, 2, 2);
    let stale = DedupRecord::complete(Some(&held), 1);
    assert_eq!(stale.answer, Completion::Fenced { current: 2 });
    assert_eq!(stale.write, None);

    let step = DedupRecord::complete(Some(&held), 2);
    assert_eq!(step.answer, Completion::Completed);
    assert_eq!(step.write, Some(record(DedupState::Done, 2, 2)));
}

#[test]
fn complete_without_record_is_fenced_at_zero() {
    let step = DedupRecord::complete(None, 1);
    assert_eq!(step.answer, Completion::Fenced { current: 0 });
    assert_eq!(step.write, None);
}

#[test]
fn repeated_completion_by_the_same_fence_is_completed() {
    let done = record(DedupState::Done, 2, 2);
    let step = DedupRecord::complete(Some(&done), 2);
    assert_eq!(step.answer, Completion::Completed);
    assert_eq!(step.write, None);
    let stale = DedupRecord::complete(Some(&done), 1);
    assert_eq!(stale.answer, Completion::Fenced { current: 2 });
}

#[test]
fn completion_after_own_release_is_fenced() {
    let released = record(DedupState::Released, 2, 2);
    let step = DedupRecord::complete(Some(&released), 2);
    assert_eq!(step.answer, Completion::Fenced { current: 2 });
    assert_eq!(step.write, None);
}

#[test]
fn release_kinds_adjust_attempts() {
    let held = record(DedupState::Claimed, 3, 2);
    for (how, attempts) in [
        (Release::Retry, 2),
        (Release::Refund, 1),
        (Release::Reset, 0),
    ] {
        let step = DedupRecord::release(Some(&held), 3, how);
        assert!(step.answer);
        assert_eq!(step.write, Some(record(DedupState::Released, 3, attempts)));
    }
    let first = record(DedupState::Claimed, 1, 0);
    let step = DedupRecord::release(Some(&first), 1, Release::Refund);
    assert_eq!(step.write.map(|r| r.attempts), Some(0));
}

#[test]
fn release_by_a_stale_or_finished_holder_changes_nothing() {
    for current in [
        record(DedupState::Claimed, 3, 2),
        record(DedupState::Released, 2, 2),
        record(DedupState::Done, 2, 2),
    ] {
        let fence = if current.state == DedupState::Claimed {
            2
        } else {
            current.fence
        };
        let step = DedupRecord::release(Some(&current), fence, Release::Reset);
        assert!(!step.answer);
        assert_eq!(step.write, None);
    }
    assert!(!DedupRecord::release(None, 1, Release::Retry).answer);
}

#[test]
fn live_claim_outlives_a_shorter_ttl() {
    let held = record(DedupState::Claimed, 1, 1);
    let ttl = Duration::from_millis(10);
    assert_eq!(held.expires_at_ms(NOW, ttl), held.lease_until_ms);
    let done = record(DedupState::Done, 1, 1);
    assert_eq!(done.expires_at_ms(NOW, ttl), NOW + 10);
}

const ACTORS: usize = 3;
const PROP_LEASE_MS: u64 = 100;

#[derive(Clone, Copy, Debug)]
enum Op {
    Claim(usize),
    Complete(usize),
    Release(usize, Release),
    DeadLetter(usize, u32),
    Revive(u32),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let how = prop_oneof![
        Just(Release::Retry),
        Just(Release::Refund),
        Just(Release::Reset)
    ];
    prop_oneof![
        3 => (0..ACTORS).prop_map(Op::Claim),
        2 => (0..ACTORS).prop_map(Op::Complete),
        2 => (0..ACTORS, how).prop_map(|(actor, how)| Op::Release(actor, how)),
        1 => (0..ACTORS, 0u32..3).prop_map(|(actor, g)| Op::DeadLetter(actor, g)),
        1 => (0u32..4).prop_map(Op::Revive),
        2 => (0..=2 * PROP_LEASE_MS).prop_map(Op::Advance),
    ]
}

/// What one actor believes: the last fence it was given and whether it still holds it.
#[derive(Clone, Copy, Debug, Default)]
struct Actor {
    fence: u64,
    lease_until_ms: u64,
    holding: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn protocol_invariants_hold(ops in prop::collection::vec(op(), 1..60)) {
        let lease = Duration::from_millis(PROP_LEASE_MS);
        let mut now = NOW;
        let mut stored: Option<DedupRecord> = None;
        let mut actors = [Actor::default(); ACTORS];
        let mut highest_fence = 0;
        let mut done = false;
        // The generation the key was dead-lettered as, while it is.
        let mut dead: Option<u32> = None;
        // Counted independently of the model: claims minus refunds, zeroed by a reset.
        let mut attempts: u32 = 0;

        for op in ops {
            match op {
                Op::Claim(me) => {
                    let step = DedupRecord::claim(stored.as_ref(), now, lease);
                    match step.answer {
                        Claim::Acquired { fence, attempt } => {
                            prop_assert!(!done, "a done key was acquired again");
                            prop_assert!(dead.is_none(), "a dead-lettered key was acquired");
                            prop_assert!(fence > highest_fence, "fence {fence} after {highest_fence}");
                            highest_fence = fence;
                            let live_other = actors.iter().enumerate().any(|(i, a)| {
                                i != me && a.holding && a.lease_until_ms > now
                            });
                            prop_assert!(!live_other, "two live holders at {now}");
                            attempts += 1;
                            prop_assert_eq!(attempt, attempts);
                            actors[me] = Actor {
                                fence,
                                lease_until_ms: now + PROP_LEASE_MS,
                                holding: true,
                            };
                        }
                        Claim::Busy { retry_in } => {
                            prop_assert!(!done);
                            prop_assert!(!retry_in.is_zero());
                            let holder = actors.iter().any(|a| a.holding && a.lease_until_ms > now);
                            prop_assert!(holder, "busy without a live holder");
                        }
                        Claim::Done => prop_assert!(done, "done before any completion"),
                        Claim::DeadLettered { generation } => {
                            prop_assert_eq!(Some(generation), dead);
                        }
                    }
                    if !matches!(step.answer, Claim::Acquired { .. }) {
                        prop_assert_eq!(step.write, None);
                    }
                    stored = step.write.or(stored);
                }
                Op::Complete(me) => {
                    let fence = actors[me].fence;
                    let step = DedupRecord::complete(stored.as_ref(), fence);
                    let current = stored.map_or(0, |r| r.fence);
                    if fence != current {
                        prop_assert_eq!(step.answer, Completion::Fenced { current });
                        prop_assert_eq!(step.write, None);
                    }
                    if step.answer == Completion::Completed {
                        prop_assert_eq!(fence, current);
                        done = true;
                        actors[me].holding = false;
                    }
                    stored = step.write.or(stored);
                }
                Op::Release(me, how) => {
                    let step = DedupRecord::release(stored.as_ref(), actors[me].fence, how);
                    if step.answer {
                        prop_assert!(!done);
                        actors[me].holding = false;
                        attempts = match how {
                            Release::Retry => attempts,
                            Release::Refund => attempts.saturating_sub(1),
                            Release::Reset => 0,
                        };
                    } else {
                        prop_assert_eq!(step.write, None);
                    }
                    stored = step.write.or(stored);
                }
                Op::DeadLetter(me, generation) => {
                    let fence = actors[me].fence;
                    let step = DedupRecord::dead_lettered(stored.as_ref(), fence, generation);
                    let holder = stored
                        .is_some_and(|r| r.state == DedupState::Claimed && r.fence == fence);
                    if holder {
                        prop_assert_eq!(step.answer, Completion::Completed);
                        dead = Some(generation);
                        attempts = 0;
                        actors[me].holding = false;
                    } else {
                        prop_assert_eq!(step.write, None);
                    }
                    stored = step.write.or(stored);
                }
                Op::Revive(generation) => {
                    let step = DedupRecord::revive(stored.as_ref(), generation);
                    let revives = dead.is_some_and(|g| g < generation);
                    prop_assert_eq!(step.answer, revives);
                    if revives {
                        dead = None;
                        attempts = 0;
                    } else {
                        prop_assert_eq!(step.write, None);
                    }
                    stored = step.write.or(stored);
                }
                Op::Advance(ms) => now += ms,
            }
            if let Some(record) = stored {
                prop_assert_eq!(record.fence, highest_fence);
                prop_assert_eq!(record.attempts, attempts);
                prop_assert_eq!(record.state == DedupState::Done, done);
                prop_assert_eq!(record.state == DedupState::DeadLettered, dead.is_some());
            }
        }
    }
}
