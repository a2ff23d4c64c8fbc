//! What only the app's own integration tests need beside the test kit: the binary cargo built
//! for them, and `outrigger dlq` as an operator runs it. Everything else (the recording app,
//! policies, the sidecar process, RabbitMQ and Kafka, the proxy, waits) is the kit's,
//! re-exported here.

#![allow(dead_code, unused_imports)]

pub mod dlq;

pub use dlq::{
    app_refusing_a_and_b, app_until_fixed, ids, keys, kill_a_resubmit_halfway, lines_starting,
    resubmit_100_paced, set, wait_resubmitted_once, Dlq,
};
pub use outrigger_testkit::{
    free_port, kafka, unique, wait_until, Hit, Policy, Proxy, Rabbit, Reply, Sidecar, TestApp,
};

/// The `outrigger` binary cargo built for these tests.
pub const OUTRIGGER: &str = env!("CARGO_BIN_EXE_outrigger");

/// Messages `{"entity": E, "seq": N}` for `entities` entities, `per_entity` each, interleaved
/// as a producer writes them: (entity, idempotency key, body), in publish order.
pub fn interleaved(entities: usize, per_entity: usize) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for seq in 0..per_entity {
        for e in 0..entities {
            let entity = format!("entity-{e}");
            out.push((
                entity.clone(),
                format!("{entity}-{seq}"),
                format!(r#"{{"entity":"{entity}","seq":{seq}}}"#),
            ));
        }
    }
    out
}

/// An app that fails the first attempt of every entity's message 0 (a 500, retried in place)
/// and accepts the rest.
pub async fn app_failing_each_entitys_first_message_once() -> TestApp {
    TestApp::start(|key, nth| {
        if key.ends_with("-0") && nth == 1 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await
}

/// Each entity's requests reached the app in publish order, a retried one before anything
/// after it, and each message succeeded once: order kept through in-place retries.
pub fn assert_each_entitys_order(hits: &[Hit], entities: usize, per_entity: usize) {
    let mut seen: std::collections::HashMap<String, Vec<(u64, u16)>> = Default::default();
    for hit in hits {
        let body: serde_json::Value = serde_json::from_slice(&hit.body).expect("a JSON body");
        let entity = body["entity"].as_str().expect("entity").to_owned();
        seen.entry(entity)
            .or_default()
            .push((body["seq"].as_u64().expect("seq"), hit.status));
    }
    assert_eq!(seen.len(), entities, "every entity reached the app");
    for (entity, requests) in &seen {
        let seqs: Vec<u64> = requests.iter().map(|(s, _)| *s).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "{entity} out of order: {seqs:?}"
        );
        let ok: Vec<u64> = requests
            .iter()
            .filter(|(_, status)| *status == 200)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(
            ok,
            (0..per_entity as u64).collect::<Vec<_>>(),
            "{entity}: each message once, in order"
        );
        assert_eq!(
            requests[0],
            (0, 500),
            "{entity}: its first message was retried"
        );
    }
}
