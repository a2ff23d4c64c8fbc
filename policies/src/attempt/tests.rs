//! The attempt machine against a simulated clock and store: budgets, throttling, age, the
//! app's `Retry-After` and queue mode, over arbitrary sequences of replies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use outrigger_core::{
    Action, Coordinates, Message, Release, Reply, Response, Trail, TransportError,
    TransportErrorKind,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::backoff::{Backoff, BackoffKind};
use crate::classify::Matched;

fn policy(max_attempts: u32, max_age: Duration, queue: Option<Vec<Duration>>) -> AttemptPolicy {
    policy_with(max_attempts, max_age, queue, true)
}

fn policy_with(
    max_attempts: u32,
    max_age: Duration,
    queue: Option<Vec<Duration>>,
    app_faults: bool,
) -> AttemptPolicy {
    AttemptPolicy {
        retry: RetryPolicy {
            max_attempts,
            max_age: Some(max_age),
            backoff: Backoff {
                kind: BackoffKind::Exponential,
                initial: Duration::from_millis(200),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.2,
            },
        },
        queue: queue.map(|tiers| RetryTiers {
            tiers,
            dead_letter_parked: false,
        }),
        redeliver: false,
        app_faults,
    }
}

fn origin() -> Coordinates {
    Coordinates::Kafka {
        topic: "orders".into(),
        partition: 1,
        offset: 7,
    }
}

fn reply(status: u16) -> Reply {
    Reply::Response(Response {
        status,
        headers: vec![],
        body_excerpt: Bytes::from_static(b"busy"),
    })
}

fn verdict(action: Action, retry_after: Option<Duration>) -> Verdict {
    Verdict {
        action,
        retry_after,
        matched: Matched::Default,
    }
}

const T0: SystemTime = UNIX_EPOCH;

#[test]
fn a_success_completes_and_a_drop_completes_too() {
    let p = policy(5, Duration::from_secs(3600), None);
    let mut s = Attempts::start(&Message::new("x", origin()), T0);
    let a = s.begin(None);
    let mut rng = StdRng::seed_from_u64(1);
    let (ok, ack, drop) = (
        reply(200),
        verdict(Action::Ack, None),
        verdict(Action::Drop, None),
    );
    let tried = |verdict| Tried {
        attempt: a,
        reply: &ok,
        verdict,
        key: None,
    };
    let step = p.after(&mut s, tried(&ack), T0, &mut rng);
    assert_eq!(step, Next::Complete(Done::Delivered));
    let step = p.after(&mut s, tried(&drop), T0, &mut rng);
    assert_eq!(step, Next::Complete(Done::Dropped));
    assert_eq!(step.release(), None);
}

#[test]
fn a_retry_copy_continues_its_origins_attempts_and_age() {
    let seen = T0 + Duration::from_secs(100);
    let mut copy = Message::new(
        "x",
        Coordinates::Kafka {
            topic: "orders.retry.1".into(),
            partition: 1,
            offset: 3,
        },
    );
    copy.coordinates = origin();
    copy.trail = Some(Trail {
        origin: origin(),
        hop: 2,
        attempts: 2,
        tier: 1,
        first_seen: seen,
        first_failure: Some(seen),
        due: None,
    });
    let mut s = Attempts::start(&copy, seen + Duration::from_secs(50));
    assert_eq!(s.begin(None), 3);
    assert_eq!(
        s.age(seen + Duration::from_secs(60)),
        Duration::from_secs(60)
    );
    let p = policy(
        5,
        Duration::from_secs(3600),
        Some(vec![Duration::from_secs(1)]),
    );
    let now = seen + Duration::from_secs(60);
    let tried = Tried {
        attempt: 3,
        reply: &reply(500),
        verdict: &verdict(Action::Retry, None),
        key: Some("k"),
    };
    let step = p.after(&mut s, tried, now, &mut StdRng::seed_from_u64(2));
    let Next::RetryQueue(trail) = step else {
        panic!("expected a retry copy, got {step:?}");
    };
    assert_eq!((trail.hop, trail.attempts, trail.tier), (3, 3, 0));
    assert_eq!((trail.first_seen, trail.first_failure), (seen, Some(seen)));
    assert_eq!(trail.origin, origin());
}

#[test]
fn the_tier_follows_the_attempt_and_the_apps_retry_after() {
    let q = RetryTiers {
        tiers: vec![
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(60),
        ],
        dead_letter_parked: false,
    };
    assert_eq!(q.tier_for(1, None), 0);
    assert_eq!(q.tier_for(2, None), 1);
    assert_eq!(q.tier_for(3, None), 2);
    assert_eq!(q.tier_for(9, None), 2);
    assert_eq!(q.tier_for(1, Some(Duration::from_secs(5))), 1);
    assert_eq!(q.tier_for(1, Some(Duration::from_secs(600))), 2);
    assert_eq!(q.tier_for(3, Some(Duration::from_millis(10))), 2);
}

/// One answer of the app in a scripted run.
#[derive(Clone, Debug)]
enum Answer {
    Ok,
    Drop,
    Reject,
    Fail(Option<u64>),
    Throttle(Option<u64>),
    /// The app could not be reached (connection refused).
    Unreachable,
}

fn answer() -> impl Strategy<Value = Answer> {
    let after = proptest::option::of(0u64..120_000);
    prop_oneof![
        1 => Just(Answer::Ok),
        1 => Just(Answer::Drop),
        1 => Just(Answer::Reject),
        5 => after.clone().prop_map(Answer::Fail),
        4 => after.prop_map(Answer::Throttle),
        3 => Just(Answer::Unreachable),
    ]
}

/// Plays `answers` through the machine, with a store that counts an attempt only when its
/// claim is released as `Retry`, and a clock the waits move on. Checks every step as it goes;
/// returns the last one.
fn play(
    p: &AttemptPolicy,
    answers: &[Answer],
    seed: u64,
    with_store: bool,
) -> Result<(Next, Vec<(u32, Next)>), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut now = T0;
    let mut state = Attempts::start(&Message::new("x", origin()), now);
    let mut stored_spent = 0u32;
    let mut first_failure: Option<SystemTime> = None;
    let mut trace = Vec::new();
    let max_age = p.retry.max_age.expect("the runs set an age limit");
    for (n, a) in answers
        .iter()
        .chain(std::iter::repeat(&Answer::Ok))
        .enumerate()
    {
        prop_assert!(
            n < answers.len() + 1,
            "the run did not end on its first success"
        );
        // Without a store (dedup off) the machine counts attempts itself.
        let attempt = state.begin(with_store.then_some(stored_spent + 1));
        prop_assert!(
            attempt <= p.retry.max_attempts,
            "attempt {} past the budget of {}",
            attempt,
            p.retry.max_attempts
        );
        let (r, v) = match a {
            Answer::Ok => (reply(200), verdict(Action::Ack, None)),
            Answer::Drop => (reply(200), verdict(Action::Drop, None)),
            Answer::Reject => (reply(400), verdict(Action::DeadLetter, None)),
            Answer::Fail(ms) => (
                reply(500),
                verdict(Action::Retry, ms.map(Duration::from_millis)),
            ),
            Answer::Throttle(ms) => (
                reply(429),
                verdict(Action::Throttle, ms.map(Duration::from_millis)),
            ),
            // The classifier's default for a connection error is a retry.
            Answer::Unreachable => (
                Reply::Failed(TransportError {
                    kind: TransportErrorKind::Connect,
                    detail: "connection refused".into(),
                    elapsed: Duration::ZERO,
                }),
                verdict(Action::Retry, None),
            ),
        };
        // Unreachable counts as a failure only when the app's faults are the message's.
        let failed = matches!(a, Answer::Fail(_) | Answer::Reject)
            || (matches!(a, Answer::Unreachable) && !p.app_faults);
        if failed {
            first_failure.get_or_insert(now);
        }
        let tried = Tried {
            attempt,
            reply: &r,
            verdict: &v,
            key: Some("k"),
        };
        let step = p.after(&mut state, tried, now, &mut rng);
        trace.push((attempt, step.clone()));
        match (&step, a) {
            (Next::Complete(Done::Delivered), Answer::Ok)
            | (Next::Complete(Done::Dropped), Answer::Drop) => return Ok((step, trace)),
            (Next::DeadLetter(dl), _) => {
                prop_assert_eq!(dl.attempts, attempt);
                prop_assert_eq!(Some(dl.first_failure), first_failure.or(Some(now)));
                prop_assert!(dl.first_failure <= dl.last_failure);
                prop_assert_eq!(dl.key.as_deref(), Some("k"));
                let fail_after = match a {
                    Answer::Fail(ms) => Some(ms.map(Duration::from_millis)),
                    Answer::Unreachable if !p.app_faults => Some(None),
                    _ => None,
                };
                match a {
                    Answer::Reject => prop_assert_eq!(&dl.reason, "app answered HTTP 400"),
                    Answer::Unreachable if p.app_faults => prop_assert!(
                        dl.reason.starts_with(
                            "gave up when the retry age limit ran out: could not connect"
                        ),
                        "{}",
                        dl.reason
                    ),
                    Answer::Fail(_) | Answer::Unreachable => {
                        let wait = fail_after.flatten();
                        if attempt >= p.retry.max_attempts {
                            let want = format!("gave up after {attempt} attempts");
                            prop_assert!(dl.reason.starts_with(&want), "{}", dl.reason);
                        } else {
                            prop_assert!(
                                dl.reason
                                    .starts_with("gave up when the retry age limit ran out"),
                                "{}",
                                dl.reason
                            );
                            // Only a wait past the age limit exhausts it early.
                            if let Some(wait) = wait {
                                prop_assert!(state.age(now) + wait > max_age);
                            }
                        }
                    }
                    Answer::Throttle(_) => prop_assert!(
                        dl.reason
                            .starts_with("still throttled when the retry age limit ran out"),
                        "{}",
                        dl.reason
                    ),
                    other => prop_assert!(false, "dead letter after {:?}", other),
                }
                // The claim is kept: the key is recorded as dead-lettered once the dead letter
                // is written.
                prop_assert_eq!(step.release(), None);
                return Ok((step, trace));
            }
            (Next::RetryQueue(trail), Answer::Fail(_) | Answer::Unreachable) => {
                prop_assert!(!p.app_faults || matches!(a, Answer::Fail(_)));
                let ms = match a {
                    Answer::Fail(ms) => *ms,
                    _ => None,
                };
                let queue = p.queue.as_ref().expect("queue mode");
                prop_assert_eq!(
                    trail.tier,
                    queue.tier_for(attempt, ms.map(Duration::from_millis))
                );
                prop_assert_eq!((trail.hop, trail.attempts), (1, attempt));
                prop_assert_eq!(trail.first_seen, T0);
                prop_assert_eq!(trail.first_failure, first_failure);
                prop_assert!(attempt < p.retry.max_attempts);
                prop_assert_eq!(step.release(), Some(Release::Retry));
                return Ok((step, trace));
            }
            (
                Next::Again {
                    release,
                    delay,
                    wait,
                },
                _,
            ) => {
                let (want, asked) = match a {
                    Answer::Fail(ms) => (Wait::Retry, *ms),
                    Answer::Throttle(ms) => (Wait::Throttle, *ms),
                    Answer::Unreachable if p.app_faults => (Wait::AppDown, None),
                    Answer::Unreachable => (Wait::Retry, None),
                    other => return Err(TestCaseError::fail(format!("a wait after {other:?}"))),
                };
                prop_assert_eq!(*wait, want);
                let throttled = want != Wait::Retry;
                prop_assert!(
                    p.queue.is_none() || throttled,
                    "queue mode retried in place"
                );
                if let Some(ms) = asked {
                    prop_assert_eq!(*delay, Duration::from_millis(ms), "Retry-After wins");
                }
                prop_assert!(
                    state.age(now) + *delay <= max_age,
                    "a wait that outlives the age limit"
                );
                if throttled {
                    // A throttle or an unreachable app spends no attempt: the next one has the
                    // same number.
                    prop_assert_eq!(*release, Release::Refund);
                } else {
                    prop_assert_eq!(*release, Release::Retry);
                    prop_assert!(attempt < p.retry.max_attempts);
                    stored_spent = attempt;
                }
                now += *delay;
            }
            // Redeliver mode: handed back to the broker, delivered again after the delay (the
            // store, or the broker's delivery count, carries the attempts across).
            (Next::Redeliver(delay), Answer::Fail(_) | Answer::Unreachable) => {
                prop_assert!(p.redeliver, "a redelivery in another mode");
                prop_assert!(!p.app_faults || matches!(a, Answer::Fail(_)));
                if let Answer::Fail(Some(ms)) = a {
                    prop_assert_eq!(*delay, Duration::from_millis(*ms), "Retry-After wins");
                }
                prop_assert!(
                    state.age(now) + *delay <= max_age,
                    "a redelivery that outlives the age limit"
                );
                prop_assert_eq!(step.release(), Some(Release::Retry));
                prop_assert!(attempt < p.retry.max_attempts);
                stored_spent = attempt;
                now += *delay;
            }
            (step, a) => prop_assert!(false, "{:?} after {:?}", step, a),
        }
    }
    unreachable!("the answers end in a success")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// In place: every rule holds at every step, the run ends once, and the attempts spent
    /// are the failures that counted, never the throttles.
    #[test]
    fn in_place_retries_keep_every_budget(
        answers in proptest::collection::vec(answer(), 0..30),
        max_attempts in 1u32..8,
        max_age_s in 1u64..600,
        seed in any::<u64>(),
        with_store in any::<bool>(),
        app_faults in any::<bool>(),
    ) {
        let p = policy_with(max_attempts, Duration::from_secs(max_age_s), None, app_faults);
        let (last, trace) = play(&p, &answers, seed, with_store)?;
        let failures_before_last = trace
            .iter()
            .filter(|(_, s)| matches!(s, Next::Again { wait: Wait::Retry, .. }))
            .count() as u32;
        let (last_attempt, _) = trace.last().expect("at least one attempt");
        prop_assert_eq!(*last_attempt, failures_before_last + 1);
        prop_assert!(matches!(last, Next::Complete(_) | Next::DeadLetter(_)));
    }

    /// Redeliver mode: a retry the budgets allow goes back to the broker with its delay, never
    /// waits in place; throttling and an unreachable app still wait here, spending nothing.
    #[test]
    fn redeliver_mode_hands_retries_back_to_the_broker(
        answers in proptest::collection::vec(answer(), 0..30),
        max_attempts in 1u32..8,
        max_age_s in 1u64..600,
        seed in any::<u64>(),
        with_store in any::<bool>(),
    ) {
        let mut p = policy(max_attempts, Duration::from_secs(max_age_s), None);
        p.redeliver = true;
        let (last, trace) = play(&p, &answers, seed, with_store)?;
        let retried_in_place = trace
            .iter()
            .any(|(_, s)| matches!(s, Next::Again { wait: Wait::Retry, .. }));
        prop_assert!(!retried_in_place);
        let redeliveries = trace
            .iter()
            .filter(|(_, s)| matches!(s, Next::Redeliver(_)))
            .count() as u32;
        prop_assert!(redeliveries < max_attempts);
        prop_assert!(matches!(last, Next::Complete(_) | Next::DeadLetter(_)));
    }

    /// Queue mode: the first retryable failure that the budget allows goes to a retry queue
    /// (never an in-place wait), to the tier of its attempt and the app's Retry-After.
    #[test]
    fn queue_mode_writes_a_retry_copy_instead_of_waiting(
        answers in proptest::collection::vec(answer(), 0..30),
        max_attempts in 1u32..8,
        tiers in proptest::collection::vec(1u64..300, 1..5),
        seed in any::<u64>(),
    ) {
        let tiers = tiers.into_iter().map(Duration::from_secs).collect();
        let p = policy(max_attempts, Duration::from_secs(3600), Some(tiers));
        let (last, trace) = play(&p, &answers, seed, true)?;
        let retried_in_place = trace
            .iter()
            .any(|(_, s)| matches!(s, Next::Again { wait: Wait::Retry, .. }));
        prop_assert!(!retried_in_place);
        if let Next::RetryQueue(trail) = last {
            prop_assert!(trail.attempts < max_attempts);
        }
    }
}

#[test]
fn in_redeliver_mode_a_redelivered_message_is_as_old_as_its_publication() {
    let mut p = policy(5, Duration::from_secs(3600), None);
    let published = T0;
    let now = T0 + Duration::from_secs(600);
    let mut m = Message::new("x", origin());
    m.timestamp = Some(published);
    // The first hand-out: its age counts from now, as in every mode.
    p.redeliver = true;
    m.deliveries = Some(1);
    assert_eq!(p.start(&m, now).age(now), Duration::ZERO);
    // Redelivered: from its publication, so max_age bounds it across redeliveries.
    m.deliveries = Some(3);
    assert_eq!(p.start(&m, now).age(now), Duration::from_secs(600));
    // In place, a redelivery (a crash) does not age it.
    p.redeliver = false;
    assert_eq!(p.start(&m, now).age(now), Duration::ZERO);
}

#[test]
fn a_message_handed_out_past_its_budget_is_dead_lettered_before_it_is_delivered() {
    let p = policy(3, Duration::from_secs(3600), None);
    let mut m = Message::new("x", origin());
    // Redelivered for the fourth time: three earlier hand-outs ended without an outcome.
    m.deliveries = Some(4);
    let mut s = Attempts::start(&m, T0);
    let attempt = s.begin(None);
    assert_eq!(attempt, 4);
    let Some(Next::DeadLetter(dl)) = p.before(&s, attempt, Some("k"), T0) else {
        panic!("expected a dead letter");
    };
    assert_eq!((dl.attempts, dl.class.as_str()), (3, "exhausted"));
    assert!(
        dl.reason.starts_with("gave up after 3 attempts"),
        "{}",
        dl.reason
    );
    // A store that counted more wins; one that counted fewer (lost its record) does not.
    let mut s = Attempts::start(&Message::new("x", origin()), T0);
    assert_eq!(s.begin(Some(2)), 2);
    assert!(p.before(&s, 2, None, T0).is_none());
    let mut s = Attempts::start(&m, T0);
    assert_eq!(s.begin(Some(1)), 4);
}
