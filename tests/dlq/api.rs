//! The admin API's `/dlq` routes, on a listener bound beyond loopback with a token.

use crate::*;

const TOKEN: &str = "s3cret-token";

/// One HTTP/1.0 request: (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_requests_without_the_token_and_works_with_it() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dlq-api");
    let dlq = format!("{queue}.dlq");
    rabbit.declare(&queue).await;
    let (app, fixed) = app_until_fixed(|_| Some(Reply::status(400))).await;
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns")).set("admin.token", TOKEN);
    let port = support::free_port().port();
    let sidecar =
        Sidecar::start_listening(OUTRIGGER, policy, SocketAddr::from(([0, 0, 0, 0], port)));
    for i in 0..3 {
        rabbit.publish_keyed(&queue, &format!("k-{i}"), b"{}").await;
    }
    wait_until("three dead letters", LIMIT, || async {
        rabbit.depth(&dlq).await == 3
    })
    .await;
    let admin = sidecar.admin;
    let call = |method: &str, path: &str, token: Option<&str>, body: &str| {
        http(admin, method, path, token, body)
    };

    for token in [None, Some("wrong")] {
        assert_eq!(call("GET", "/dlq", token, "").0, 401);
        assert_eq!(call("GET", "/dlq/anything", token, "").0, 401);
        assert_eq!(
            call("POST", "/dlq/purge", token, r#"{"everything":true}"#).0,
            401
        );
        assert_eq!(call("POST", "/dlq/resubmit", token, "{}").0, 401);
    }
    assert_eq!(
        rabbit.depth(&dlq).await,
        3,
        "refused requests changed nothing"
    );
    assert_eq!(rabbit.depth(&queue).await, 0, "and sent nothing");
    assert_eq!(call("GET", "/healthz", None, "").0, 200, "probes stay open");

    let token = Some(TOKEN);
    let (status, body) = call("GET", "/dlq?status=4xx", token, "");
    assert_eq!(status, 200, "{body}");
    let listed = json(&body);
    assert_eq!(listed["count"], 3);
    let id_of = |key: &str| {
        listed["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (status, body) = call("GET", "/dlq?status=99x", token, "");
    assert_eq!(status, 400);
    assert!(body.contains("status"), "{body}");
    let (status, body) = call("GET", &format!("/dlq/{}", id_of("k-0")), token, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["key"], "k-0");
    assert_eq!(call("GET", "/dlq/0000000000000000", token, "").0, 404);

    fixed.store(true, Ordering::SeqCst);
    let request = format!(r#"{{"ids":["{}"],"by":"api-test"}}"#, id_of("k-0"));
    let (status, body) = call("POST", "/dlq/resubmit", token, &request);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["resubmitted"], 1);
    wait_until("k-0 delivered", LIMIT, || async {
        app.successes().get("k-0") == Some(&1)
    })
    .await;

    let (status, body) = call("POST", "/dlq/purge", token, "{}");
    assert_eq!(status, 400, "a purge must say what: {body}");
    let (status, body) = call(
        "POST",
        "/dlq/purge",
        token,
        r#"{"everything":true,"dry_run":true}"#,
    );
    assert_eq!(
        (status, json(&body)["selected"].clone()),
        (200, 2.into()),
        "{body}"
    );
    assert_eq!(rabbit.depth(&dlq).await, 2);
    let (status, body) = call("POST", "/dlq/purge", token, r#"{"key":"k-*"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["purged"], 2);
    assert_eq!(rabbit.depth(&dlq).await, 0);

    let (_, metrics) = call("GET", "/metrics", token, "");
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(
        value("outrigger_dlq_resubmitted_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(value("outrigger_dlq_purged_total"), Some(2.0));
    assert_eq!(
        value("outrigger_dead_lettered_total"),
        Some(3.0),
        "by class: {metrics}"
    );
    sidecar.stop();
    rabbit.delete(&queue).await;
    rabbit.delete(&dlq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_works_on_a_routes_dead_letters_when_asked() {
    let rabbit = Rabbit::connect().await;
    let queue = unique("dlq-api-route");
    let (dlq, refunds_dlq) = (format!("{queue}.dlq"), format!("{queue}.refunds.dlq"));
    rabbit.declare(&queue).await;
    let (app, fixed) = app_until_fixed(|_| Some(Reply::status(400))).await;
    let routes = format!(
        "[[routes]]\nname = \"refunds\"\nmatch = {{ headers = {{ x-kind = \"refund\" }} }}\n\
         [routes.dead_letter]\ndestination = \"{refunds_dlq}\"\n"
    );
    let policy = Policy::amqp(&queue, &app.url(), &unique("ns")).with_toml(&routes);
    let sidecar = Sidecar::start(OUTRIGGER, policy);
    rabbit
        .publish_keyed_with(&queue, "refund-0", &[("x-kind", "refund")], b"{}")
        .await;
    rabbit.publish_keyed(&queue, "order-0", b"{}").await;
    wait_until("a dead letter in each queue", LIMIT, || async {
        rabbit.depth(&refunds_dlq).await == 1 && rabbit.depth(&dlq).await == 1
    })
    .await;
    let admin = sidecar.admin;
    let call = |method: &str, path: &str, body: &str| http(admin, method, path, None, body);
    let keys = |body: &str| -> Vec<String> {
        json(body)["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, body) = call("GET", "/dlq", "");
    assert_eq!(
        (status, keys(&body)),
        (200, vec!["order-0".to_owned()]),
        "{body}"
    );
    let (status, body) = call("GET", "/dlq?route=refunds", "");
    assert_eq!(
        (status, keys(&body)),
        (200, vec!["refund-0".to_owned()]),
        "{body}"
    );
    assert_eq!(json(&body)["queue"], refunds_dlq.as_str());
    let id = json(&body)["records"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/dlq/{id}?destination={refunds_dlq}");
    let (status, body) = call("GET", &path, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["key"], "refund-0");

    let (status, body) = call("GET", "/dlq?route=nope", "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no route is named \\\"nope\\\""), "{body}");
    let (status, body) = call("GET", "/dlq?route=refunds&destination=x", "");
    assert_eq!(status, 400, "{body}");

    fixed.store(true, Ordering::SeqCst);
    let (status, body) = call("POST", "/dlq/resubmit", r#"{"route":"refunds"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["resubmitted"], 1);
    wait_until("refund-0 delivered", LIMIT, || async {
        app.successes().get("refund-0") == Some(&1)
    })
    .await;
    assert_eq!(rabbit.depth(&refunds_dlq).await, 0);
    assert_eq!(rabbit.depth(&dlq).await, 1, "the policy's own stays");
    sidecar.stop();
    for q in [&queue, &dlq, &refunds_dlq] {
        rabbit.delete(q).await;
    }
}
