//! The faults users really have, through the real binary on RabbitMQ and Redis: a store
//! outage longer than the lease, SIGHUP, a first start, what the logs say, bad input, and an
//! app with a small listen backlog.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString};
use lapin::BasicProperties;
use support::{unique, wait_until, Policy, Proxy, Rabbit, Reply, Sidecar, TestApp, OUTRIGGER};

const SETTLED: &str = "outrigger_messages_settled_total";
const LIMIT: Duration = Duration::from_secs(60);

async fn redis() -> SocketAddr {
    tokio::net::lookup_host("127.0.0.1:6379")
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// The app answered, the completion could not be recorded (Redis went away), the lease ran
/// out while Redis stayed away, and a copy of the same key arrived meanwhile: the copy is not
/// delivered again, because the unrecorded completion goes to the store first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_longer_than_the_lease_delivers_no_key_twice() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("outage");
    rabbit.declare(&queue).await;
    let proxy = Arc::new(Proxy::start(redis().await).await);
    let cut = proxy.clone();
    // The app takes Redis away while it handles the first copy, before it answers.
    let app = TestApp::start(move |_, nth| {
        if nth == 1 {
            cut.refuse();
            cut.cut();
        }
        Reply::status(200)
    })
    .await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("dedup.redis.url", format!("redis://{}", proxy.addr))
        .set("dedup.redis.timeout", "300ms")
        .set("delivery.timeout", "1s")
        .set("dedup.lease", "2s");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    rabbit.publish_keyed(&queue, "order-1", b"first").await;
    wait_until("the first copy delivered", LIMIT, || async {
        app.successes().get("order-1") == Some(&1)
    })
    .await;
    rabbit.publish_keyed(&queue, "order-1", b"a copy").await;
    // Longer than the lease: the first claim is long expired when Redis comes back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.allow();
    wait_until("both copies settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 2.0
    })
    .await;
    assert_eq!(app.successes().get("order-1"), Some(&1), "delivered once");
    assert_eq!(sidecar.metric(SETTLED, r#"outcome="duplicate""#), 1.0);
    let logs = sidecar.logs();
    let down = logs
        .matches("Dedup store unreachable; holding messages until it is back.")
        .count();
    assert!(
        (1..=2).contains(&down),
        "logged once, not per call ({down}):\n{logs}"
    );
    assert_eq!(
        logs.matches("Dedup store reachable again.").count(),
        1,
        "{logs}"
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

/// SIGHUP never stops the sidecar: it checks the policy file again and says what it found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_checks_the_policy_and_keeps_running() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("hup");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"));
    let mut sidecar = Sidecar::start(OUTRIGGER, policy.clone());
    wait_until("ready", LIMIT, || async {
        sidecar.get("/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await;
    let file = sidecar.dir().join("policy.toml");
    let hup = |sidecar: &Sidecar| {
        assert_eq!(signal(sidecar.pid(), "HUP"), 0);
    };

    hup(&sidecar);
    wait_until("the unchanged file checked", LIMIT, || async {
        sidecar
            .logs()
            .contains("SIGHUP: the policy file is valid and unchanged.")
    })
    .await;

    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n[nonsense]\nx = 1\n")).unwrap();
    hup(&sidecar);
    wait_until("the invalid file refused", LIMIT, || async {
        sidecar
            .logs()
            .contains("SIGHUP: the policy file is invalid; the running policy stays.")
    })
    .await;
    assert!(
        sidecar.logs().contains("unknown key `nonsense`"),
        "{}",
        sidecar.logs()
    );

    std::fs::write(
        &file,
        policy
            .clone()
            .set("retry.max_attempts", 9)
            .set("admin.listen", sidecar.admin.to_string())
            .text(),
    )
    .unwrap();
    hup(&sidecar);
    wait_until("the change named", LIMIT, || async {
        sidecar.logs().contains("changed=\"retry\"") || sidecar.logs().contains("changed=retry")
    })
    .await;

    // Still consuming after three SIGHUPs.
    rabbit.publish_keyed(&queue, "after-hup", b"{}").await;
    wait_until("delivered after SIGHUP", LIMIT, || async {
        app.successes().get("after-hup") == Some(&1)
    })
    .await;
    assert!(
        sidecar.wait_exit(Duration::from_millis(10)).is_none(),
        "still running"
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

/// `kill -<signal> <pid>` through the `kill` command: no unsafe code in the tests.
fn signal(pid: u32, signal: &str) -> i32 {
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

/// A first start against a queue whose dead-letter queue does not exist yet logs no ERROR, no
/// colour codes into a file, and the address the admin listener really bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_logs_no_error_and_the_bound_address() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("first-start");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"));
    let sidecar = Sidecar::start_listening(OUTRIGGER, policy, "127.0.0.1:0".parse().unwrap());
    wait_until("consuming", LIMIT, || async {
        sidecar.logs().contains("Consuming.")
    })
    .await;
    rabbit.publish_keyed(&queue, "k", b"{}").await;
    wait_until("delivered", LIMIT, || async {
        app.successes().get("k") == Some(&1)
    })
    .await;
    let logs = sidecar.logs();
    assert!(
        !logs.contains("ERROR"),
        "no ERROR on a first start:\n{logs}"
    );
    assert!(
        !logs.contains('\u{1b}'),
        "no ANSI colour codes in a file:\n{logs}"
    );
    let ready = logs
        .lines()
        .find(|l| l.contains("Admin listener ready."))
        .expect("the admin listener says where it is");
    assert!(ready.contains("127.0.0.1:"), "{ready}");
    assert!(
        !ready.contains("127.0.0.1:0 ") && !ready.ends_with("127.0.0.1:0"),
        "{ready}"
    );
    assert!(
        rabbit.depth(&format!("{queue}.dlq")).await == 0,
        "the DLQ was declared"
    );
    let mut sidecar = sidecar;
    sidecar.kill();
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

/// Bad input gets a clear outcome, never a crash or a loss: a payload past
/// `delivery.max_message_size`, a key that cannot be made, dead-lettered with the reason;
/// odd header bytes and malformed CloudEvents attributes do not stop a delivery; a fallback
/// key or `on_missing_key = "deliver"` delivers instead; bytes that are not UTF-8 and empty
/// payloads are delivered as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_outcome() {
    let rabbit = Rabbit::connect().await;
    let app = TestApp::accepting().await;

    // Keyed on a JSON field, with no fallback: what has no such field is dead-lettered.
    let queue = unique("bad-input");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("dedup.key", "{json:/id}")
        .set("delivery.max_message_size", "1KiB")
        .set(
            "delivery.forward_headers",
            toml_edit::Array::from_iter(["x-odd"]),
        );
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    rabbit
        .publish(&queue, b"not json at all", BasicProperties::default())
        .await;
    rabbit
        .publish(&queue, br#"{"other":1}"#, BasicProperties::default())
        .await;
    let big = format!(r#"{{"id":"big","pad":"{}"}}"#, "x".repeat(2048));
    rabbit
        .publish(&queue, big.as_bytes(), BasicProperties::default())
        .await;
    let mut odd = FieldTable::default();
    odd.insert(
        "x-odd".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0x00, 0x0a, 0xff])),
    );
    odd.insert(
        "ce_id".into(),
        AMQPValue::LongString(LongString::from(b"bad\nid".to_vec())),
    );
    odd.insert(
        "ce_time".into(),
        AMQPValue::LongString(LongString::from(b"yesterday".to_vec())),
    );
    rabbit
        .publish(
            &queue,
            br#"{"id":"odd"}"#,
            BasicProperties::default()
                .with_headers(odd)
                .with_message_id("m-odd".into()),
        )
        .await;
    wait_until("all four settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 4.0
    })
    .await;
    let hits = app.hits();
    let delivered = |key: &str| hits.iter().find(|h| h.key == key).cloned();
    let odd = delivered("odd").expect("odd headers do not stop a delivery");
    assert!(
        odd.headers.get("x-odd").is_none(),
        "a header value HTTP cannot carry is dropped"
    );
    assert_eq!(
        odd.headers["ce-id"], "m-odd",
        "a malformed ce_id gives way to the message id"
    );
    assert!(humantime::parse_rfc3339_weak(odd.headers["ce-time"].to_str().unwrap()).is_ok());
    assert!(delivered("big").is_none(), "too large: never sent");
    let dead = rabbit.drain(&dlq).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| m.header("outrigger-dlq-reason").unwrap_or_default())
        .collect();
    assert_eq!(dead.len(), 3, "{reasons:?}");
    for (needle, class) in [
        ("payload is not JSON", "decode"),
        ("/id is not in the payload", "decode"),
        ("exceeds delivery.max_message_size (1024 bytes)", "decode"),
    ] {
        let m = dead
            .iter()
            .find(|m| {
                m.header("outrigger-dlq-reason")
                    .is_some_and(|r| r.contains(needle))
            })
            .unwrap_or_else(|| panic!("no dead letter saying {needle:?}: {reasons:?}"));
        assert_eq!(m.header("outrigger-dlq-class").as_deref(), Some(class));
    }
    assert!(
        dead.iter().any(|m| m.body == b"not json at all"),
        "kept byte for byte"
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;

    // A fallback key, then delivery without dedup, each count as the policy says; bytes
    // that are not UTF-8 (so no JSON) and an empty payload go as they are.
    let queue = unique("fallback");
    rabbit.declare(&queue).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns"))
        .set("dedup.key", "{json:/id}")
        .set("dedup.fallback_key", "{header:idempotency-key}")
        .set("dedup.on_missing_key", "deliver");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    let binary: &[u8] = b"\xff\xfe\x00\x80 not text";
    rabbit.publish_keyed(&queue, "binary", binary).await;
    rabbit.publish_keyed(&queue, "empty", b"").await;
    rabbit
        .publish(&queue, b"neither", BasicProperties::default())
        .await;
    wait_until("all three delivered", LIMIT, || async {
        sidecar.metric("outrigger_messages_delivered_total", "") >= 3.0
    })
    .await;
    let hits = app.hits();
    let body = |key: &str| hits.iter().find(|h| h.key == key).map(|h| h.body.clone());
    assert_eq!(
        body("binary").as_deref(),
        Some(binary),
        "byte for byte, by the fallback key"
    );
    assert_eq!(
        body("empty").as_deref(),
        Some(&b""[..]),
        "an empty payload is delivered"
    );
    let unkeyed = app
        .hits()
        .into_iter()
        .find(|h| &h.body[..] == b"neither")
        .unwrap();
    assert!(unkeyed.headers.get("outrigger-idempotency-key").is_none());
    assert_eq!(
        sidecar.metric("outrigger_delivered_without_key_total", ""),
        1.0
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

/// What pika sends by default: no message id. Under the default `{message_id}` key such a
/// message is dead-lettered saying so, and `check` warned about it beforehand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_an_id_under_the_default_key_is_explained() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("no-id");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let app = TestApp::accepting().await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns")).set("dedup.key", "{message_id}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy.text()).unwrap();
    let out = std::process::Command::new(OUTRIGGER)
        .args(["check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: dedup.key uses {message_id}, which amqp messages carry only"),
        "{stdout}"
    );

    let sidecar = Sidecar::start(OUTRIGGER, policy);
    rabbit
        .publish(&queue, b"{}", BasicProperties::default())
        .await;
    rabbit
        .publish(
            &queue,
            b"{}",
            BasicProperties::default().with_message_id("m-1".into()),
        )
        .await;
    wait_until("both settled", LIMIT, || async {
        sidecar.metric(SETTLED, "") >= 2.0
    })
    .await;
    assert_eq!(app.successes().get("m-1"), Some(&1));
    let dead = rabbit.drain(&dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("outrigger-dlq-reason").as_deref(),
        Some("message cannot be delivered: message has no broker message id")
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
}

/// An app as modest as Python's `ThreadingHTTPServer` (listen backlog 5, HTTP/1.0 answers,
/// so a connection per request) is not overrun by the default 64 in flight: no delivery times
/// out, and it gets exactly one request per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modest_app_is_not_overrun() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("requests.log");
    let script = dir.path().join("app.py");
    std::fs::write(
        &script,
        r#"
import sys, time, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
ledger = open(sys.argv[2], "a", buffering=1)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(0.02)
        with lock:
            ledger.write(self.headers.get("outrigger-idempotency-key", "") + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    request_queue_size = 5

server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()
"#,
    )
    .unwrap();
    let port = support::free_port().port();
    let _python = Child(
        std::process::Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&ledger)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs"),
    );
    wait_until("the Python app listens", LIMIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;

    let rabbit = Rabbit::connect().await;
    let queue = unique("modest");
    rabbit.declare(&queue).await;
    for i in 0..100 {
        rabbit.publish_keyed(&queue, &format!("m-{i}"), b"{}").await;
    }
    // The policy's defaults for everything about delivery and backpressure (64 in flight).
    let policy = Policy::amqp(&queue, &format!("http://127.0.0.1:{port}/"), &unique("ns"))
        .set("delivery.timeout", "10s")
        .set("dedup.lease", "60s");
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    let delivered = tokio::time::timeout(LIMIT, async {
        while sidecar.metric("outrigger_messages_delivered_total", "") < 100.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if delivered.is_err() {
        let metrics = sidecar.get("/metrics").map(|(_, m)| m).unwrap_or_default();
        let useful: Vec<&str> = metrics
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("outrigger_") && !l.contains("bucket"))
            .collect();
        panic!(
            "not all 100 delivered in {LIMIT:?}:\n{}\n{}",
            useful.join("\n"),
            sidecar.logs()
        );
    }
    let received = std::fs::read_to_string(&ledger).unwrap();
    let mut keys: Vec<&str> = received.lines().collect();
    assert_eq!(keys.len(), 100, "one request per message");
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 100);
    assert_eq!(
        sidecar.metric("outrigger_delivery_attempts_total", r#"class="timeout""#),
        0.0,
        "a connect the backlog delays is not a delivery timeout"
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&format!("{queue}.dlq")).await;
}

/// A child process killed when the test ends, passed or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
