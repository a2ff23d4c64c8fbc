//! Batch delivery: several attempts in one `POST`, as a CloudEvents batch
//! (`application/cloudevents-batch+json`, a JSON array of structured events), and a verdict per
//! event in the app's answer.
//!
//! Only the request is shared. Each event is still one message's attempt, made by its own
//! worker with its own claim, attempt count and ordering lane, and each gets its own [`Reply`]
//! back for the classifier: every guarantee holds per event. A lane has one message in flight,
//! so a batch never holds two messages of one lane: the ordering policy splits batches by
//! itself.
//!
//! The app answers either for the whole batch (any status, no verdict list: the reply is every
//! event's reply) or, with a `2xx` and a JSON body, per event:
//!
//! ```json
//! {"results": [{"id": "e-1", "verdict": "ack"},
//!              {"id": "e-2", "verdict": "retry", "retry_after": 5, "reason": "locked"}]}
//! ```
//!
//! A verdict is an action (`ack`, `retry`, `throttle`, `dead-letter`, `drop`) and reaches the
//! classifier the way an `outrigger-action` header does. A JSON body that is not such a list
//! (unparsable, an unknown verdict, an id that is not in the batch or is there twice) is a
//! failed attempt of every event, never an ack; an event the list leaves out is a failed
//! attempt of that event.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_TYPE};
use http::Request;
use http_body_util::Full;
use outrigger_core::{Action, Episode, Message, Reply, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::headers::{is_structured_cloudevent, names};
use super::{Attempt, DeliverySettings, HttpDelivery, MAX_RESPONSE_READ};

/// The content type of a batch request.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// The header a verdict reaches the classifier through, as the app's own would.
const ACTION_HEADER: &str = "outrigger-action";

/// How events are gathered into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Events in one request at most.
    pub max_events: usize,
    /// Bytes of events in one request at most; a larger event goes alone.
    pub max_bytes: usize,
    /// How long the first event of a batch waits for others.
    pub max_wait: Duration,
    /// Batch requests toward the app at once.
    pub concurrency: usize,
}

/// The handle attempts join batches through; the gathering task ends with the last handle.
#[derive(Clone)]
pub(super) struct Batches {
    settings: Arc<DeliverySettings>,
    queue: mpsc::UnboundedSender<Queued>,
}

/// One event waiting for its batch.
struct Queued {
    /// Its CloudEvents id, which its verdict names.
    id: String,
    /// The event, rendered as JSON.
    event: Vec<u8>,
    reply: oneshot::Sender<(Reply, Duration)>,
}

impl Batches {
    /// Starts the task that gathers batches and sends them with `delivery`.
    pub(super) fn start(delivery: HttpDelivery, batching: Batching) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        let settings = delivery.settings.clone();
        tokio::spawn(gather(delivery, batching, queued));
        Self { settings, queue }
    }

    /// Sends one attempt in the next batch and returns its own reply, and how long its batch
    /// took.
    pub(super) async fn send(&self, message: &Message, attempt: Attempt<'_>) -> (Reply, Duration) {
        let started = std::time::Instant::now();
        let (id, event) = match render(&self.settings, message, attempt) {
            Ok(rendered) => rendered,
            Err(why) => return (Reply::Undeliverable(why), started.elapsed()),
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            (
                Reply::Undeliverable("the batching task stopped".to_owned()),
                started.elapsed(),
            )
        };
        if self.queue.send(Queued { id, event, reply }).is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }
}

/// Gathers events into batches and sends each in its own task, `concurrency` at most at once.
///
/// A batch goes out when it is full, or `max_wait` after its first event came; while it waits
/// for a free request slot, what comes meanwhile joins it.
async fn gather(
    delivery: HttpDelivery,
    batching: Batching,
    mut queued: mpsc::UnboundedReceiver<Queued>,
) {
    let slots = Arc::new(Semaphore::new(batching.concurrency.max(1)));
    let malformed = Arc::new(Episode::new(
        "The app's answer to a batch is not a verdict list; its events count a failed attempt.",
        "The app's batch answers are verdict lists again.",
    ));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match queued.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let deadline = Instant::now() + batching.max_wait;
        let mut batch = Batch::new(batching);
        batch.push(first);
        while !batch.full() && carried.is_none() {
            let next = tokio::select! {
                q = queued.recv() => q,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            match next {
                Some(q) => carried = batch.offer(q),
                None => break,
            }
        }
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the batch slots are never closed");
        while !batch.full() && carried.is_none() {
            match queued.try_recv() {
                Ok(q) => carried = batch.offer(q),
                Err(_) => break,
            }
        }
        tokio::spawn(batch.send(delivery.clone(), slot, malformed.clone()));
    }
}

/// The events of one request.
struct Batch {
    limits: Batching,
    events: Vec<Queued>,
    bytes: usize,
    ids: HashSet<String>,
}

impl Batch {
    fn new(limits: Batching) -> Self {
        Self {
            limits,
            events: Vec::new(),
            bytes: 0,
            ids: HashSet::new(),
        }
    }

    fn full(&self) -> bool {
        self.events.len() >= self.limits.max_events
    }

    fn push(&mut self, q: Queued) {
        self.bytes += q.event.len();
        self.ids.insert(q.id.clone());
        self.events.push(q);
    }

    /// Takes `q` if it fits; gives it back for the next batch if it does not (too many bytes,
    /// or its id is taken: verdicts name events by id). An event whose attempt was given up
    /// on meanwhile is dropped.
    fn offer(&mut self, q: Queued) -> Option<Queued> {
        if q.reply.is_closed() {
            return None;
        }
        if self.bytes + q.event.len() > self.limits.max_bytes || self.ids.contains(&q.id) {
            return Some(q);
        }
        self.push(q);
        None
    }

    /// Sends the batch and hands each event its reply.
    async fn send(
        self,
        delivery: HttpDelivery,
        _slot: OwnedSemaphorePermit,
        malformed: Arc<Episode>,
    ) {
        let events: Vec<Queued> = self
            .events
            .into_iter()
            .filter(|q| !q.reply.is_closed())
            .collect();
        if events.is_empty() {
            return;
        }
        let mut body = Vec::with_capacity(self.bytes + events.len() + 1);
        body.push(b'[');
        for (i, q) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&q.event);
        }
        body.push(b']');
        let request = Request::post(delivery.settings.url.clone())
            .header(CONTENT_TYPE, BATCH_CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)));
        let (reply, took) = match request {
            Ok(request) => delivery.exchange(request, MAX_RESPONSE_READ).await,
            Err(e) => (
                Reply::Undeliverable(format!("cannot build the batch request: {e}")),
                Duration::ZERO,
            ),
        };
        let ids: Vec<&str> = events.iter().map(|q| q.id.as_str()).collect();
        let n = ids.len();
        let replies = split(&reply, &ids, delivery.settings.excerpt);
        match &replies {
            Split::Malformed(why, _) => malformed.failed(why),
            Split::PerEvent(_) => malformed.recovered(),
            Split::Whole(_) => {}
        }
        for (q, reply) in events.into_iter().zip(replies.into_replies(n)) {
            let _ = q.reply.send((reply, took));
        }
    }
}

/// What the app's answer to a batch means for its events.
#[derive(Debug)]
enum Split {
    /// The same reply for every event.
    Whole(Reply),
    /// A reply per event, in the batch's order.
    PerEvent(Vec<Reply>),
    /// A verdict list that could not be used: every event failed this attempt.
    Malformed(String, Reply),
}

impl Split {
    fn into_replies(self, n: usize) -> Vec<Reply> {
        match self {
            Split::Whole(reply) | Split::Malformed(_, reply) => vec![reply; n],
            Split::PerEvent(replies) => replies,
        }
    }
}

/// The app's answer to the batch of events `ids`, split into each event's reply.
fn split(reply: &Reply, ids: &[&str], excerpt: usize) -> Split {
    let Reply::Response(response) = reply else {
        return Split::Whole(reply.clone());
    };
    let is_json = response
        .header(CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    let has_body = response
        .body_excerpt
        .iter()
        .any(|b| !b.is_ascii_whitespace());
    if !(200..300).contains(&response.status) || !is_json || !has_body {
        return Split::Whole(Reply::Response(Response {
            body_excerpt: cut(response.body_excerpt.clone(), excerpt),
            ..response.clone()
        }));
    }
    match verdicts(&response.body_excerpt, ids) {
        Ok(verdicts) => Split::PerEvent(
            verdicts
                .into_iter()
                .map(|v| Reply::Response(v.reply(response.status, excerpt)))
                .collect(),
        ),
        Err(why) => {
            let detail = format!(
                "outrigger: the app's answer to a batch of {} events is not a verdict list \
                 ({why}); it began: {}",
                ids.len(),
                String::from_utf8_lossy(&cut(response.body_excerpt.clone(), 256)),
            );
            let reply = Reply::Response(Response {
                status: response.status,
                headers: vec![(ACTION_HEADER.to_owned(), Action::Retry.as_str().to_owned())],
                body_excerpt: cut(Bytes::from(detail), excerpt),
            });
            Split::Malformed(why, reply)
        }
    }
}

/// The app's answer with a verdict per event.
#[derive(Deserialize)]
struct Answer {
    results: Vec<Verdict>,
}

/// The app's verdict on one event.
#[derive(Clone, Debug, Deserialize)]
struct Verdict {
    id: String,
    verdict: String,
    #[serde(default)]
    retry_after: Option<RetryAfter>,
    #[serde(default)]
    reason: Option<String>,
}

/// Seconds, or what a `Retry-After` header holds.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum RetryAfter {
    Seconds(u64),
    Header(String),
}

/// What one event's verdict says, or that the answer left it out.
enum EventVerdict {
    Given(Action, Verdict),
    Missing,
}

impl EventVerdict {
    /// The event's reply: its verdict as an `outrigger-action`, its `retry_after` as a
    /// `Retry-After`, its reason as the body a dead letter shows.
    fn reply(self, status: u16, excerpt: usize) -> Response {
        let (action, body, retry_after) = match self {
            EventVerdict::Given(action, v) => {
                let mut body = serde_json::json!({"id": v.id, "verdict": action.as_str()});
                if let Some(reason) = v.reason {
                    body["reason"] = Value::String(reason);
                }
                let retry_after = v.retry_after.map(|r| match r {
                    RetryAfter::Seconds(s) => s.to_string(),
                    RetryAfter::Header(h) => h,
                });
                (action, body.to_string(), retry_after)
            }
            EventVerdict::Missing => (
                Action::Retry,
                "outrigger: the app's answer to the batch has no verdict for this event".to_owned(),
                None,
            ),
        };
        let mut headers = vec![
            (
                CONTENT_TYPE.as_str().to_owned(),
                "application/json".to_owned(),
            ),
            (ACTION_HEADER.to_owned(), action.as_str().to_owned()),
        ];
        if let Some(r) = retry_after {
            headers.push(("retry-after".to_owned(), r));
        }
        Response {
            status,
            headers,
            body_excerpt: cut(Bytes::from(body), excerpt),
        }
    }
}

/// Each event's verdict, in the order of `ids`; an error when the body is not a usable list.
fn verdicts(body: &[u8], ids: &[&str]) -> Result<Vec<EventVerdict>, String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not a results list: {e}"))?;
    let mut given: Vec<Option<(Action, Verdict)>> = vec![None; ids.len()];
    for v in answer.results {
        let Some(i) = ids.iter().position(|id| *id == v.id) else {
            return Err(format!("id {:?} is not an event of the batch", v.id));
        };
        if given[i].is_some() {
            return Err(format!("id {:?} has two verdicts", v.id));
        }
        let action = v
            .verdict
            .parse::<Action>()
            .map_err(|e| format!("event {:?}: {e}", v.id))?;
        given[i] = Some((action, v));
    }
    Ok(given
        .into_iter()
        .map(|g| match g {
            Some((action, v)) => EventVerdict::Given(action, v),
            None => EventVerdict::Missing,
        })
        .collect())
}

fn cut(bytes: Bytes, at: usize) -> Bytes {
    if bytes.len() > at {
        bytes.slice(..at)
    } else {
        bytes
    }
}

/// One attempt of `message` as a structured CloudEvent: the attributes binary mode sends as
/// headers, Outrigger's own as extension attributes (`outriggerattempt`, `outriggerkey`,
/// `outriggerfence`), trace context and forwarded headers likewise, and the payload as `data`
/// (JSON or text) or `data_base64`. Returns its id and the JSON.
fn render(
    settings: &DeliverySettings,
    message: &Message,
    attempt: Attempt<'_>,
) -> Result<(String, Vec<u8>), String> {
    let mut headers = HeaderMap::new();
    settings.headers.apply(&mut headers, message, attempt);
    let mut event = if is_structured_cloudevent(message) {
        match serde_json::from_slice(&message.payload) {
            Ok(Value::Object(event)) => event,
            _ => {
                return Err(
                    "a structured CloudEvent whose payload is not a JSON object cannot go in a \
                     batch"
                        .to_owned(),
                )
            }
        }
    } else {
        let mut event = Map::new();
        for (name, value) in &headers {
            if let (Some(attr), Ok(value)) = (name.as_str().strip_prefix("ce-"), value.to_str()) {
                event.insert(attr.to_owned(), Value::String(value.to_owned()));
            }
        }
        data(&mut event, message);
        event
    };
    for (name, value) in &headers {
        let Ok(text) = value.to_str() else { continue };
        let (attr, value) = match name.as_str() {
            n if n == CONTENT_TYPE.as_str() || n.starts_with("ce-") => continue,
            names::ATTEMPT => ("outriggerattempt".to_owned(), Value::from(attempt.attempt)),
            names::IDEMPOTENCY_KEY => ("outriggerkey".to_owned(), Value::from(text)),
            names::FENCE => ("outriggerfence".to_owned(), Value::from(text)),
            // Extension attribute names are lower-case letters and digits.
            other => (
                other
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>(),
                Value::from(text),
            ),
        };
        if !attr.is_empty() && !event.contains_key(&attr) {
            event.insert(attr, value);
        }
    }
    let id = match event.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err("a structured CloudEvent without an id cannot go in a batch".to_owned()),
    };
    let json = serde_json::to_vec(&event).map_err(|e| format!("cannot render the event: {e}"))?;
    Ok((id, json))
}

/// The payload as `data`: a JSON value for a JSON content type it parses as, text for a text
/// one, otherwise `data_base64`.
fn data(event: &mut Map<String, Value>, message: &Message) {
    let content_type = message.content_type.as_deref().map(str::to_ascii_lowercase);
    if let Some(ct) = &message.content_type {
        event.insert("datacontenttype".to_owned(), Value::String(ct.clone()));
    }
    let ct = content_type.as_deref().unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    let json = essence == "application/json" || essence.ends_with("+json");
    if json {
        if let Ok(value) = serde_json::from_slice::<Value>(&message.payload) {
            event.insert("data".to_owned(), value);
            return;
        }
    }
    if essence.starts_with("text/") {
        if let Ok(text) = std::str::from_utf8(&message.payload) {
            event.insert("data".to_owned(), Value::String(text.to_owned()));
            return;
        }
    }
    event.insert(
        "data_base64".to_owned(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(&message.payload)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_core::{Coordinates, Header};

    use crate::delivery::HeaderPlan;

    fn settings() -> DeliverySettings {
        DeliverySettings {
            url: "http://127.0.0.1:1/".parse().unwrap(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_connections: 1,
            excerpt: 4096,
            http2: false,
            headers: HeaderPlan {
                forward: vec!["x-tenant".into()],
                ce_source: "/outrigger/amqp/orders".into(),
                ce_type: "outrigger.event".into(),
            },
            batch: None,
        }
    }

    fn message(payload: &'static str, content_type: Option<&str>) -> Message {
        let mut m = Message::new(
            payload,
            Coordinates::Amqp {
                queue: "orders".into(),
                delivery_tag: 1,
            },
        );
        m.message_id = Some("m-1".into());
        m.content_type = content_type.map(str::to_owned);
        m.headers = vec![
            Header::new("x-tenant", "acme"),
            Header::new("x-secret", "no"),
        ];
        m
    }

    fn attempt() -> Attempt<'static> {
        Attempt {
            key: Some("k-1"),
            attempt: 2,
            fence: Some(u64::MAX),
        }
    }

    fn rendered(m: &Message) -> Value {
        let (_, json) = render(&settings(), m, attempt()).unwrap();
        serde_json::from_slice(&json).unwrap()
    }

    #[test]
    fn an_event_carries_the_binary_attributes_and_outriggers_as_extensions() {
        let e = rendered(&message(r#"{"order":7}"#, Some("application/json")));
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], "m-1");
        assert_eq!(e["source"], "/outrigger/amqp/orders");
        assert_eq!(e["type"], "outrigger.event");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"]["order"], 7);
        assert_eq!(e["outriggerattempt"], 2);
        assert_eq!(e["outriggerkey"], "k-1");
        assert_eq!(e["outriggerfence"], u64::MAX.to_string());
        assert_eq!(e["xtenant"], "acme");
        assert!(e.get("xsecret").is_none(), "only forwarded headers: {e}");
        assert!(e.get("data_base64").is_none());
    }

    #[test]
    fn payloads_go_as_json_text_or_base64() {
        let text = rendered(&message("hello", Some("text/plain; charset=utf-8")));
        assert_eq!(text["data"], "hello");
        let bad_json = rendered(&message("{not json", Some("application/json")));
        assert_eq!(bad_json["data_base64"], "e25vdCBqc29u");
        let binary = rendered(&message("\u{1}\u{2}", None));
        assert_eq!(binary["data_base64"], "AQI=");
        assert!(binary.get("datacontenttype").is_none());
    }

    #[test]
    fn a_structured_event_keeps_its_attributes_and_gains_outriggers() {
        let m = message(
            r#"{"specversion":"1.0","id":"ce-9","source":"/shop","type":"order.paid","data":{}}"#,
            Some("application/cloudevents+json"),
        );
        let e = rendered(&m);
        assert_eq!(e["id"], "ce-9");
        assert_eq!(e["type"], "order.paid");
        assert_eq!(e["outriggerattempt"], 2);
        let not_json = message("nope", Some("application/cloudevents+json"));
        let refused = render(&settings(), &not_json, attempt()).unwrap_err();
        assert!(refused.contains("not a JSON object"), "{refused}");
    }

    fn answer(status: u16, content_type: &str, body: &str) -> Reply {
        Reply::Response(Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body_excerpt: Bytes::from(body.to_owned()),
        })
    }

    fn action_of(reply: &Reply) -> Option<&str> {
        match reply {
            Reply::Response(r) => r.header(ACTION_HEADER),
            _ => None,
        }
    }

    #[test]
    fn verdicts_are_matched_to_events_by_id() {
        let body = r#"{"results":[{"id":"b","verdict":"dead_letter","reason":"no such sku"},
                                   {"id":"a","verdict":"ack"},
                                   {"id":"c","verdict":"retry","retry_after":7}]}"#;
        let split = split(
            &answer(200, "application/json", body),
            &["a", "b", "c", "d"],
            4096,
        );
        let Split::PerEvent(replies) = split else {
            panic!("{split:?}")
        };
        let actions: Vec<_> = replies.iter().map(action_of).collect();
        assert_eq!(
            actions,
            [
                Some("ack"),
                Some("dead-letter"),
                Some("retry"),
                Some("retry")
            ]
        );
        let Reply::Response(b) = &replies[1] else {
            unreachable!()
        };
        assert!(String::from_utf8_lossy(&b.body_excerpt).contains("no such sku"));
        let Reply::Response(c) = &replies[2] else {
            unreachable!()
        };
        assert_eq!(c.header("retry-after"), Some("7"));
        let Reply::Response(d) = &replies[3] else {
            unreachable!()
        };
        assert!(String::from_utf8_lossy(&d.body_excerpt).contains("no verdict"));
    }

    #[test]
    fn an_answer_without_verdicts_is_every_events_answer() {
        for reply in [
            answer(200, "text/plain", "ok"),
            answer(204, "application/json", ""),
            answer(503, "application/json", r#"{"results":[]}"#),
            Reply::Undeliverable("x".into()),
        ] {
            let split = split(&reply, &["a", "b"], 4096);
            let Split::Whole(whole) = &split else {
                panic!("{split:?}")
            };
            assert_eq!(whole, &reply);
        }
    }

    #[test]
    fn a_malformed_verdict_list_fails_every_event_and_never_acks() {
        for body in [
            "{not json",
            r#"{"ok":true}"#,
            r#"{"results":[{"id":"a","verdict":"maybe"}]}"#,
            r#"{"results":[{"id":"zz","verdict":"ack"}]}"#,
            r#"{"results":[{"id":"a","verdict":"ack"},{"id":"a","verdict":"ack"}]}"#,
            r#"{"results":{"id":"a","verdict":"ack"}}"#,
        ] {
            let split = split(&answer(200, "application/json", body), &["a", "b"], 4096);
            let Split::Malformed(why, reply) = &split else {
                panic!("{body}: {split:?}")
            };
            assert_eq!(action_of(reply), Some("retry"), "{body}: {why}");
        }
    }
}
