//! Batch delivery end to end: RabbitMQ → Redis dedup → several events in one `POST` as a
//! CloudEvents batch, and the app's verdict per event, through the real binary.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use outrigger_testkit::nats::{self, Streams};
use parking_lot::Mutex;
use serde_json::{json, Value};
use support::{interleaved, unique, wait_until, Policy, Rabbit, Sidecar, OUTRIGGER};

const SETTLED: &str = "outrigger_messages_settled_total";
const LIMIT: Duration = Duration::from_secs(60);

/// One event of a batch, as the app read it.
#[derive(Clone, Debug)]
struct Event {
    id: String,
    key: String,
    attempt: u64,
    data: Value,
}

/// What the app answers to one batch: status, content type, body.
type Answer = (u16, &'static str, String);
type Behaviour = dyn Fn(&[Event], usize) -> Answer + Send + Sync;

/// An app that reads CloudEvents batches and answers as the test says.
#[derive(Clone)]
struct BatchApp {
    addr: SocketAddr,
    batches: Arc<Mutex<Vec<Vec<Event>>>>,
    content_types: Arc<Mutex<Vec<String>>>,
}

impl BatchApp {
    async fn start(behaviour: impl Fn(&[Event], usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Self {
            addr,
            batches: Arc::default(),
            content_types: Arc::default(),
        };
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let router = axum::Router::new()
            .fallback(handle)
            .with_state((app.clone(), behaviour));
        tokio::spawn(async move { axum::serve(listener, router).await });
        app
    }

    fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    fn batches(&self) -> Vec<Vec<Event>> {
        self.batches.lock().clone()
    }

    /// Every event the app was sent, per key, in arrival order.
    fn by_key(&self) -> HashMap<String, Vec<Event>> {
        let mut out: HashMap<String, Vec<Event>> = HashMap::new();
        for e in self.batches().into_iter().flatten() {
            out.entry(e.key.clone()).or_default().push(e);
        }
        out
    }
}

async fn handle(
    State((app, behaviour)): State<(BatchApp, Arc<Behaviour>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let events: Vec<Event> = match serde_json::from_slice::<Vec<Value>>(&body) {
        Ok(events) => events
            .into_iter()
            .map(|e| Event {
                id: e["id"].as_str().unwrap_or_default().to_owned(),
                key: e["outriggerkey"].as_str().unwrap_or_default().to_owned(),
                attempt: e["outriggerattempt"].as_u64().unwrap_or_default(),
                data: match e["data_base64"].as_str() {
                    // A payload without a JSON content type comes as base64.
                    Some(b64) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .ok()
                        .and_then(|raw| serde_json::from_slice(&raw).ok())
                        .unwrap_or_default(),
                    None => e["data"].clone(),
                },
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let nth = {
        let mut batches = app.batches.lock();
        batches.push(events.clone());
        app.content_types.lock().push(content_type);
        batches.len()
    };
    let (status, content_type, body) = behaviour(&events, nth);
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        [("content-type", content_type)],
        body,
    )
        .into_response()
}

/// A verdict list naming each event's verdict by what `verdict` says of it.
fn verdicts(events: &[Event], verdict: impl Fn(&Event) -> Value) -> Answer {
    let results: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut v = verdict(e);
            v["id"] = json!(e.id);
            v
        })
        .collect();
    (
        200,
        "application/json",
        json!({ "results": results }).to_string(),
    )
}

fn batch_policy(queue: &str, app: &BatchApp) -> Policy {
    Policy::amqp(queue, &app.url(), &unique("ns"))
        .set("delivery.batch.max_events", 16)
        .set("delivery.batch.max_wait", "50ms")
        .set("backpressure.max_in_flight", 64)
}

/// Publishes `{"n": i}` keyed `key` for each key, in order.
async fn publish(rabbit: &Rabbit, queue: &str, keys: &[String]) {
    for (i, key) in keys.iter().enumerate() {
        rabbit
            .publish_keyed(queue, key, json!({ "n": i }).to_string().as_bytes())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_of_a_batch_meets_its_own_verdict() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("batch-verdicts");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let app = BatchApp::start(|events, _| {
        verdicts(events, |e| match e.key.split('-').next().unwrap() {
            "ok" => json!({"verdict": "ack"}),
            "flaky" if e.attempt == 1 => json!({"verdict": "retry", "reason": "row locked"}),
            "flaky" => json!({"verdict": "ack"}),
            "bad" => json!({"verdict": "dead-letter", "reason": "no such sku"}),
            "skip" => json!({"verdict": "drop"}),
            other => panic!("unexpected key kind {other}"),
        })
    })
    .await;
    let mut keys = Vec::new();
    for i in 0..10 {
        for kind in ["ok", "flaky", "bad", "skip"] {
            keys.push(format!("{kind}-{i}"));
        }
    }
    // Published before the sidecar starts, so that batches fill.
    publish(&rabbit, &queue, &keys).await;
    let sidecar = Sidecar::start(OUTRIGGER, batch_policy(&queue, &app));
    wait_until("all 40 messages settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 40.0
    })
    .await;
    wait_until("ten dead letters", LIMIT, || async {
        rabbit.depth(&dlq).await == 10
    })
    .await;
    let settled = |outcome: &str| sidecar.metric(SETTLED, &format!("outcome=\"{outcome}\""));
    let (delivered, dropped, dead_lettered) = (
        settled("delivered"),
        settled("dropped"),
        settled("dead_lettered"),
    );
    sidecar.stop();

    assert!(app
        .content_types
        .lock()
        .iter()
        .all(|ct| ct == "application/cloudevents-batch+json"));
    let largest = app.batches().iter().map(Vec::len).max().unwrap();
    assert!(
        largest > 1,
        "events shared requests: largest batch {largest}"
    );
    assert!(largest <= 16, "no batch past max_events: {largest}");
    let by_key = app.by_key();
    for key in &keys {
        let attempts: Vec<u64> = by_key[key].iter().map(|e| e.attempt).collect();
        let expected: &[u64] = if key.starts_with("flaky") {
            &[1, 2]
        } else {
            &[1]
        };
        assert_eq!(attempts, expected, "{key}");
    }
    assert_eq!((delivered, dropped, dead_lettered), (20.0, 10.0, 10.0));
    let dead = rabbit.drain(&dlq).await;
    for m in &dead {
        let key = m.header("idempotency-key").unwrap();
        assert!(key.starts_with("bad-"), "only the bad ones: {key}");
        let response = m.header("outrigger-dlq-response").unwrap();
        assert!(
            response.contains("no such sku"),
            "the app's reason: {response}"
        );
        assert_eq!(m.header("outrigger-dlq-attempts").as_deref(), Some("1"));
    }
    assert_eq!(rabbit.depth(&queue).await, 0, "the queue ends empty");
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_holds_two_messages_of_one_key_and_keys_keep_their_order() {
    // NATS: its messages carry their key in a header, so key order has many keys to keep.
    let streams = Streams::new("batch-order").await;
    let app = BatchApp::start(|events, _| {
        verdicts(events, |e| match (e.data["seq"].as_u64(), e.attempt) {
            // Each entity's first message fails once: its later ones wait for it.
            (Some(0), 1) => json!({"verdict": "retry"}),
            _ => json!({"verdict": "ack"}),
        })
    })
    .await;
    let messages = interleaved(5, 6);
    for (entity, id, body) in &messages {
        streams
            .publish(
                &[("idempotency-key", id), ("outrigger-key", entity)],
                body.clone(),
            )
            .await;
    }
    let policy = nats::policy(&streams, &nats::url(), &app.url(), &unique("ns"), &[])
        .set("ordering.mode", "key")
        .set("delivery.batch.max_events", 16)
        .set("delivery.batch.max_wait", "50ms");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    wait_until("every message settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= messages.len() as f64
    })
    .await;
    sidecar.stop();

    let batches = app.batches();
    assert!(
        batches.iter().any(|b| b.len() > 1),
        "events shared requests: {batches:?}"
    );
    let mut acked: HashMap<String, Vec<u64>> = HashMap::new();
    for batch in &batches {
        let entities: Vec<&str> = batch
            .iter()
            .map(|e| e.data["entity"].as_str().unwrap())
            .collect();
        let mut unique_entities = entities.clone();
        unique_entities.sort();
        unique_entities.dedup();
        assert_eq!(
            unique_entities.len(),
            entities.len(),
            "one message per key in a batch: {entities:?}"
        );
        for e in batch {
            let seq = e.data["seq"].as_u64().unwrap();
            if !(seq == 0 && e.attempt == 1) {
                let entity = e.data["entity"].as_str().unwrap().to_owned();
                acked.entry(entity).or_default().push(seq);
            }
        }
    }
    assert_eq!(acked.len(), 5, "every entity reached the app");
    for (entity, seqs) in &acked {
        assert_eq!(
            seqs,
            &(0..6).collect::<Vec<u64>>(),
            "{entity}: once each, in order"
        );
    }
    streams.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_verdict_list_fails_the_whole_batch_and_acks_nothing() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("batch-malformed");
    rabbit.declare(&queue).await;
    let app = BatchApp::start(|events, _| {
        if events.iter().any(|e| e.attempt == 1) {
            // A 2xx with a JSON body that is not a verdict list.
            (200, "application/json", r#"{"status":"ok"}"#.to_owned())
        } else {
            verdicts(events, |_| json!({"verdict": "ack"}))
        }
    })
    .await;
    let keys: Vec<String> = (0..12).map(|i| format!("order-{i}")).collect();
    publish(&rabbit, &queue, &keys).await;
    let sidecar = Sidecar::start(OUTRIGGER, batch_policy(&queue, &app));
    wait_until("all 12 messages settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 12.0
    })
    .await;
    let logs = sidecar.logs();
    let sidecar_delivered = sidecar.metric(SETTLED, r#"outcome="delivered""#);
    sidecar.stop();
    let by_key = app.by_key();
    for key in &keys {
        // Every batch holding a first attempt was answered so: each key failed its first
        // attempt, and was acked by a later one.
        let attempts: Vec<u64> = by_key[key].iter().map(|e| e.attempt).collect();
        assert_eq!(attempts[0], 1, "{key}: {attempts:?}");
        assert!(
            attempts.len() >= 2 && attempts.windows(2).all(|w| w[1] == w[0] + 1),
            "{key}: the malformed answer was a failed attempt, then a later one acked: \
             {attempts:?}"
        );
    }
    assert_eq!(sidecar_delivered, 12.0, "nothing dead-lettered or dropped");
    assert!(
        logs.contains("not a verdict list"),
        "the operator is told why: {logs}"
    );
    assert_eq!(rabbit.depth(&queue).await, 0);
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}
