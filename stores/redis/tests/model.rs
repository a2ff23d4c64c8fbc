//! The Redis scripts answer exactly as the pure model in `outrigger_policies::dedup`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use outrigger_core::{Claim, Completion, DedupStore, Release};
use outrigger_policies::dedup::DedupRecord;
use proptest::prelude::*;

/// Long enough that no lease ends during a case, so the server's clock cannot make the store
/// and the model disagree.
const LEASE: Duration = Duration::from_secs(300);
const KEYS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Copy, Debug)]
enum Op {
    Claim(usize),
    Complete(usize, u64),
    Release(usize, u64, Release),
    DeadLettered(usize, u64, u32),
    Revive(usize, u32),
}

/// The answers compared; `Busy` loses its `retry_in`, which depends on the server's clock.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Claim(Option<Claim>),
    Complete(Completion),
    Release(bool),
    Revive(bool),
}

fn claim_answer(claim: Claim) -> Answer {
    match claim {
        Claim::Busy { .. } => Answer::Claim(None),
        other => Answer::Claim(Some(other)),
    }
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    // Fences from 0 to a little past what a case hands out: stale, current and unknown ones.
    let fence = 0u64..6;
    let how = prop_oneof![
        Just(Release::Retry),
        Just(Release::Refund),
        Just(Release::Reset)
    ];
    prop_oneof![
        3 => key.clone().prop_map(Op::Claim),
        2 => (key.clone(), fence.clone()).prop_map(|(k, f)| Op::Complete(k, f)),
        3 => (key.clone(), fence.clone(), how).prop_map(|(k, f, h)| Op::Release(k, f, h)),
        1 => (key.clone(), fence, 0u32..3).prop_map(|(k, f, g)| Op::DeadLettered(k, f, g)),
        1 => (key, 0u32..4).prop_map(|(k, g)| Op::Revive(k, g)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn redis_store_answers_like_the_model(ops in prop::collection::vec(op(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ns = common::namespace();
        let (store_answers, model_answers) = runtime.block_on(async {
            let store = common::store(&ns, LEASE).await;
            let mut model: HashMap<usize, DedupRecord> = HashMap::new();
            let mut from_store = Vec::new();
            let mut from_model = Vec::new();
            for op in &ops {
                match *op {
                    Op::Claim(k) => {
                        from_store.push(claim_answer(store.claim(KEYS[k]).await.unwrap()));
                        let step = DedupRecord::claim(model.get(&k), 0, LEASE);
                        from_model.push(claim_answer(step.answer));
                        if let Some(record) = step.write { model.insert(k, record); }
                    }
                    Op::Complete(k, fence) => {
                        from_store.push(Answer::Complete(store.complete(KEYS[k], fence).await.unwrap()));
                        let step = DedupRecord::complete(model.get(&k), fence);
                        from_model.push(Answer::Complete(step.answer));
                        if let Some(record) = step.write { model.insert(k, record); }
                    }
                    Op::Release(k, fence, how) => {
                        from_store.push(Answer::Release(store.release(KEYS[k], fence, how).await.unwrap()));
                        let step = DedupRecord::release(model.get(&k), fence, how);
                        from_model.push(Answer::Release(step.answer));
                        if let Some(record) = step.write { model.insert(k, record); }
                    }
                    Op::DeadLettered(k, fence, generation) => {
                        let answer = store.dead_lettered(KEYS[k], fence, generation).await.unwrap();
                        from_store.push(Answer::Complete(answer));
                        let step = DedupRecord::dead_lettered(model.get(&k), fence, generation);
                        from_model.push(Answer::Complete(step.answer));
                        if let Some(record) = step.write { model.insert(k, record); }
                    }
                    Op::Revive(k, generation) => {
                        from_store.push(Answer::Revive(store.revive(KEYS[k], generation).await.unwrap()));
                        let step = DedupRecord::revive(model.get(&k), generation);
                        from_model.push(Answer::Revive(step.answer));
                        if let Some(record) = step.write { model.insert(k, record); }
                    }
                }
            }
            common::cleanup(&ns).await;
            (from_store, from_model)
        });
        prop_assert_eq!(store_answers, model_answers);
    }
}
