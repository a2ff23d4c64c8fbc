//! `examples/postgres-app`: the key and the fence stored in the same transaction as the effect
//! turn a redelivery after the crash window into a no-op, and a stale writer is refused. Runs
//! the app (Python, psycopg) against PostgreSQL on 127.0.0.1:5432, each test in a database of
//! its own, and once through the real sidecar, killed inside the crash window.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outrigger_ops_tests::http::{request, Response, Swallower};
use outrigger_ops_tests::rabbit::{self, Rabbit};
use outrigger_ops_tests::sidecar::{free_port, get, Sidecar};
use outrigger_ops_tests::{repo, tools, unique, wait};

/// A database of its own on the local PostgreSQL, dropped at the end.
struct Db {
    name: String,
}

impl Db {
    fn create() -> Self {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", 5432)).is_ok(),
            "the example app's tests need PostgreSQL on 127.0.0.1:5432 with trust auth \
             (the machine's own; `apt-get install postgresql` elsewhere)"
        );
        let name = unique("outrigger_example").replace('-', "_");
        Self::admin(&format!("CREATE DATABASE {name}"));
        Self { name }
    }

    fn admin(sql: &str) {
        tools::success(tools::command("psql").args([
            "-h",
            "127.0.0.1",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ]));
    }

    fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port=5432 dbname={}", self.name)
    }

    /// One value, as psql prints it (empty for no row).
    fn query(&self, sql: &str) -> String {
        tools::success(tools::command("psql").args([
            "-h",
            "127.0.0.1",
            "-d",
            &self.name,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ]))
        .trim()
        .to_owned()
    }

    fn balance(&self, account: &str) -> i64 {
        self.query(&format!(
            "SELECT coalesce((SELECT balance FROM accounts WHERE account = '{account}'), 0)"
        ))
        .parse()
        .unwrap()
    }

    fn ledger_rows(&self) -> i64 {
        self.query("SELECT count(*) FROM ledger").parse().unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        Self::admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// The example app, listening on 127.0.0.1:<free port>, killed when dropped.
struct App {
    child: Child,
    addr: SocketAddr,
}

impl App {
    fn start(db: &Db) -> Self {
        let python = tools::python_with_psycopg();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut child = Command::new(python)
            .arg(repo().join("examples/postgres-app/app.py"))
            .env("DATABASE_URL", db.conninfo())
            .env("HOST", "127.0.0.1")
            .env("PORT", addr.port().to_string())
            .env("LOG_LEVEL", "WARNING")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the example app");
        wait::until(
            "the example app's /healthz",
            Duration::from_secs(30),
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("the example app exited: {status}");
                }
                matches!(get(addr, "/healthz", None), Ok((200, _))).then_some(())
            },
        );
        Self { child, addr }
    }

    /// Delivers an event as the sidecar does.
    fn deliver(&self, key: &str, fence: u64, event: &str) -> Response {
        let fence = fence.to_string();
        request(
            self.addr,
            "POST",
            "/",
            &[
                ("content-type", "application/json"),
                ("outrigger-idempotency-key", key),
                ("outrigger-fence", &fence),
                ("outrigger-attempt", "1"),
            ],
            event.as_bytes(),
        )
        .expect("the app answers")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event(id: &str, account: &str, amount: i64) -> String {
    format!(r#"{{"event_id": "{id}", "account": "{account}", "amount": {amount}}}"#)
}

fn result(r: &Response) -> String {
    let body: serde_json::Value =
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.body));
    body["result"].as_str().unwrap().to_owned()
}

#[test]
fn a_redelivery_with_a_higher_fence_after_the_crash_window_is_a_no_op() {
    let db = Db::create();
    let app = App::start(&db);
    let credit = event("evt-1", "acct-1", 25);
    let first = app.deliver("evt-1", 1, &credit);
    assert_eq!((first.status, result(&first).as_str()), (200, "applied"));
    // The sidecar died before recording the completion: the same event comes again, with the
    // same key and the fence of a new claim.
    let again = app.deliver("evt-1", 2, &credit);
    assert_eq!((again.status, result(&again).as_str()), (200, "duplicate"));
    assert_eq!(
        again.header("outrigger-action"),
        None,
        "a plain 200 acks it"
    );
    assert_eq!(db.balance("acct-1"), 25, "applied once");
    assert_eq!(db.ledger_rows(), 1);
    assert_eq!(
        db.query("SELECT fence FROM outrigger_keys WHERE idempotency_key = 'evt-1'"),
        "2",
        "the highest fence seen is kept"
    );
}

#[test]
fn a_stale_fence_is_refused_while_a_newer_claim_of_the_key_is_in_progress() {
    let db = Db::create();
    let app = App::start(&db);
    let debit = event("evt-debit", "acct-2", -40);
    // Claim 5 finds no funds yet: the key is in progress (fence 5 seen, nothing applied).
    let waiting = app.deliver("evt-debit", 5, &debit);
    assert_eq!(
        (waiting.status, result(&waiting).as_str()),
        (409, "insufficient-funds")
    );
    assert_eq!(
        waiting.header("outrigger-action"),
        None,
        "the policy's 409 rule decides"
    );
    let credit = app.deliver("evt-credit", 1, &event("evt-credit", "acct-2", 100));
    assert_eq!(credit.status, 200);
    // A writer still holding claim 4 (its lease ran out) must not apply it, funds or not.
    let stale = app.deliver("evt-debit", 4, &debit);
    assert_eq!(
        (stale.status, result(&stale).as_str()),
        (409, "stale-fence")
    );
    assert_eq!(
        stale.header("outrigger-action"),
        Some("retry"),
        "retry, whatever the policy maps 409 to: the sidecar claims again and then waits for \
         the newer holder or acks a duplicate; never a dead letter"
    );
    assert_eq!(
        db.balance("acct-2"),
        100,
        "the stale writer applied nothing"
    );
    // The newer claim applies it, once.
    let newer = app.deliver("evt-debit", 6, &debit);
    assert_eq!((newer.status, result(&newer).as_str()), (200, "applied"));
    let late = app.deliver("evt-debit", 5, &debit);
    assert_eq!((late.status, result(&late).as_str()), (200, "duplicate"));
    assert_eq!(db.balance("acct-2"), 60);
    assert_eq!(db.ledger_rows(), 2);
}

#[test]
fn concurrent_deliveries_of_one_key_apply_it_once() {
    let db = Db::create();
    let app = App::start(&db);
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=8)
            .map(|fence| {
                let app = &app;
                s.spawn(move || {
                    let r = app.deliver("evt-race", fence, &event("evt-race", "acct-3", 7));
                    format!("{} {}", r.status, result(&r))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let applied = results.iter().filter(|r| *r == "200 applied").count();
    assert_eq!(applied, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r == "200 applied" || r == "200 duplicate" || r == "409 stale-fence"),
        "{results:?}"
    );
    assert_eq!(db.balance("acct-3"), 7);
    assert_eq!(db.ledger_rows(), 1);
}

#[test]
fn an_event_the_app_cannot_apply_safely_is_dead_lettered() {
    let db = Db::create();
    let app = App::start(&db);
    let no_key = request(app.addr, "POST", "/", &[], event("e", "a", 1).as_bytes()).unwrap();
    assert_eq!(no_key.status, 400);
    assert_eq!(no_key.header("outrigger-action"), Some("dead-letter"));
    let junk = app.deliver("evt-junk", 1, "{not json");
    assert_eq!(
        (junk.status, result(&junk).as_str()),
        (400, "invalid-event")
    );
    assert_eq!(junk.header("outrigger-action"), Some("dead-letter"));
    assert_eq!(db.ledger_rows(), 0);
}

/// The sidecar delivers through a proxy that swallows the app's answer, and is SIGKILLed once
/// the app has committed: the app applied the event, the sidecar recorded nothing. A second
/// sidecar gets the message again from RabbitMQ and, after the first claim's lease, delivers it
/// with the same key and a higher fence; the app answers 200 without applying it again.
#[test]
fn the_crash_window_through_the_real_sidecar_is_a_no_op() {
    let db = Db::create();
    let app = App::start(&db);
    let rabbit = Rabbit::connect();
    let queue = unique("ops-crash-window");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue);
    let swallower = Swallower::start(app.addr);
    let dir = tempfile::tempdir().unwrap();
    let policy = |app: SocketAddr, admin: SocketAddr| {
        format!(
            r#"[source.amqp]
url = "{url}"
queue = "{queue}"

[delivery]
url = "http://{app}/"
timeout = "3s"

[dedup]
key = "{{json:/event_id}}"
store = "redis"
lease = "4s"
ttl = "5m"

[dedup.redis]
url = "redis://127.0.0.1:6379"

[retry]
initial = "100ms"

[admin]
listen = "{admin}"
"#,
            url = rabbit::URL
        )
    };
    let first_admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let first_policy = dir.path().join("first.toml");
    std::fs::write(&first_policy, policy(swallower.addr, first_admin)).unwrap();
    let mut first = Sidecar::start(
        &first_policy,
        first_admin,
        &[],
        &dir.path().join("first.log"),
    );
    first.wait_healthy(Duration::from_secs(30));

    rabbit.publish(&queue, event("evt-crash", "acct-9", 30).as_bytes());
    wait::until(
        "the app to commit the event",
        Duration::from_secs(30),
        || {
            (db.query("SELECT count(*) FROM outrigger_keys WHERE idempotency_key = 'evt-crash' AND applied_at IS NOT NULL") == "1")
            .then_some(())
        },
    );
    first.kill();
    assert_eq!(db.balance("acct-9"), 30);

    let second_admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let second_policy = dir.path().join("second.toml");
    std::fs::write(&second_policy, policy(app.addr, second_admin)).unwrap();
    let mut second = Sidecar::start(
        &second_policy,
        second_admin,
        &[],
        &dir.path().join("second.log"),
    );
    second.wait_healthy(Duration::from_secs(30));
    let settled = wait::poll(Duration::from_secs(60), || {
        let (status, metrics) = get(second_admin, "/metrics", None).ok()?;
        let delivered = metrics.lines().any(|l| {
            l.starts_with("outrigger_messages_settled_total{")
                && l.contains("outcome=\"delivered\"")
                && l.ends_with(" 1")
        });
        (status == 200 && delivered && rabbit.ready(&queue) == 0).then_some(())
    });
    assert!(
        settled.is_some(),
        "the second sidecar did not settle the redelivered event within 60s:\n{}",
        second.log()
    );
    assert_eq!(
        db.balance("acct-9"),
        30,
        "applied once, though delivered twice"
    );
    assert_eq!(db.ledger_rows(), 1);
    let fence: u64 = db
        .query("SELECT fence FROM outrigger_keys WHERE idempotency_key = 'evt-crash'")
        .parse()
        .unwrap();
    assert!(
        fence >= 2,
        "the redelivery came with a newer claim's fence, got {fence}"
    );
    drop(second);
    rabbit.delete(&[&queue, &dlq]);
}
