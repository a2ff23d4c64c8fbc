//! `[dedup.redis]`: the login and TLS settings, what `check` says about them, and that no
//! password ever shows in an error or a `Debug`.

use std::path::PathBuf;

use super::{load, load_env, places, rejected, MINIMAL};

const SECRET: &str = "hunter2-Redis";

#[test]
fn login_and_tls_settings_reach_the_store_config() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    // Parsed, not verified: any PEM certificate block does.
    std::fs::write(&ca, PEM_CERTIFICATE).unwrap();
    let text = format!(
        "{MINIMAL}[dedup.redis]\nurl = \"rediss://cache:6380\"\nusername = \"app\"\n\
         [dedup.redis.tls]\nca_file = {ca:?}\n"
    );
    let c = load_env(&text, &[("OUTRIGGER__DEDUP__REDIS__PASSWORD", SECRET)]).unwrap();
    let store = c.dedup.redis_store(&c.source);
    assert_eq!(store.username.as_deref(), Some("app"));
    assert_eq!(store.password.as_deref(), Some(SECRET));
    assert_eq!(store.tls.and_then(|t| t.ca_file), Some(PathBuf::from(&ca)));
    assert!(
        c.summary().contains("via redis over TLS"),
        "{}",
        c.summary()
    );
    for debug in [
        format!("{c:?}"),
        format!("{:?}", c.dedup.redis_store(&c.source)),
    ] {
        assert!(!debug.contains(SECRET), "{debug}");
    }
}

#[test]
fn tls_settings_need_a_rediss_url_and_readable_files() {
    let text = format!(
        "{MINIMAL}[dedup.redis]\nurl = \"redis://cache:6379\"\n\
         [dedup.redis.tls]\nca_file = \"/nowhere/ca.pem\"\n"
    );
    let errors = rejected(&text);
    assert_eq!(
        places(&errors),
        [(6, 1, "dedup.redis.tls.ca_file", Some("\"/nowhere/ca.pem\""))]
    );
    assert!(errors[0]
        .message
        .starts_with("TLS settings need a rediss:// URL"));

    let errors = rejected(&text.replace("redis://", "rediss://"));
    assert_eq!(
        places(&errors),
        [(6, 1, "dedup.redis.tls.ca_file", Some("\"/nowhere/ca.pem\""))]
    );
    assert!(
        errors[0]
            .message
            .starts_with("cannot read /nowhere/ca.pem: "),
        "{errors:?}"
    );

    let text = format!(
        "{MINIMAL}[dedup.redis]\nurl = \"rediss://cache\"\ntls = {{ key_file = \"k.pem\" }}\n"
    );
    let errors = rejected(&text);
    assert_eq!(errors[0].path, "dedup.redis.tls.key_file", "{errors:?}");
    assert!(errors[0]
        .message
        .contains("needs dedup.redis.tls.cert_file"));
}

#[test]
fn passwords_never_show_in_errors() {
    // Every error here is about a setting that holds the password, or a URL that does.
    let text =
        format!("{MINIMAL}[dedup.redis]\nurl = \"http://app:{SECRET}@cache\"\npassword = \"\"\n");
    let errors = rejected(&text);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["dedup.redis.url", "dedup.redis.password"],
        "{errors:?}"
    );
    assert_eq!(errors[0].value.as_deref(), Some("\"http://***@cache\""));
    assert_eq!(errors[1].value, None);
    let wrong_type = rejected(&format!(
        "{MINIMAL}[dedup.redis]\npassword = [\"{SECRET}\"]\n"
    ));
    let from_env = load_env(
        MINIMAL,
        &[
            (
                "OUTRIGGER__DEDUP__REDIS__URL",
                &format!("redis://app:{SECRET}@cache:x"),
            ),
            ("OUTRIGGER__DEDUP__REDIS__PASSWORD", ""),
        ],
    )
    .unwrap_err()
    .errors;
    assert_eq!(from_env.len(), 2, "{from_env:?}");
    for error in errors.iter().chain(&wrong_type).chain(&from_env) {
        let line = error.to_string();
        assert!(!line.contains(SECRET), "{line}");
    }
}

#[test]
fn a_user_without_a_password_cannot_log_in() {
    let errors = rejected(&format!(
        "{MINIMAL}[dedup.redis]\nurl = \"redis://cache\"\nusername = \"app\"\n"
    ));
    assert_eq!(errors[0].path, "dedup.redis.username");
    assert!(errors[0].message.contains("a user needs a password"));
    let c = load(&format!(
        "{MINIMAL}[dedup.redis]\nurl = \"redis://app:{SECRET}@cache\"\n"
    ))
    .unwrap();
    assert!(!format!("{c:?}").contains(SECRET));
}

/// A PEM certificate block: `check` reads the file and decodes the PEM; only a handshake would
/// tell that the DER inside is made up.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----
MIIBeTCCAR+gAwIBAgIUXqr1hCPc6wDmeA4RCrR5l2lBS1AwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdCBDQTAeFw0yNDAxMDEwMDAwMDBaFw0zNDAxMDEwMDAw
MDBaMBIxEDAOBgNVBAMMB3Rlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAT0dIz0KSnWH6l4fCx9UeJP6Q2dX3W7i0jF3b8iM1q0S0XxwQn3Jb1mQ9Kq0FqI
pZ3cF9bYh4u7m0lq0a1m5vXso1MwUTAdBgNVHQ4EFgQUq2F1zH7dYc4xA8m9aQ2k
6pK7F1wwHwYDVR0jBBgwFoAUq2F1zH7dYc4xA8m9aQ2k6pK7F1wwDwYDVR0TAQH/
BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA7l0mZ3a3o5Q0d1sXxq1y2bq2QWq9
h0T0eX0q6Yy7bM0CIBvZ0n6S2b7x3d2b2Yy0eT2w7a5qY6m1e2h7k4b3c1d5
-----END CERTIFICATE-----
";

#[test]
fn a_cluster_is_named_by_its_nodes_from_the_file_or_the_environment() {
    let text = format!(
        "{MINIMAL}[dedup.redis]\ncluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\n"
    );
    let c = load(&text).unwrap();
    let store = c.dedup.redis_store(&c.source);
    assert!(store.is_cluster());
    assert_eq!(store.cluster.len(), 2);
    assert!(
        c.summary().contains("via redis cluster;"),
        "{}",
        c.summary()
    );
    let c = load_env(
        MINIMAL,
        &[(
            "OUTRIGGER__DEDUP__REDIS__CLUSTER",
            "[\"rediss://a:7000\", \"rediss://b:7000\"]",
        )],
    )
    .unwrap();
    assert_eq!(
        c.dedup.redis.cluster,
        ["rediss://a:7000", "rediss://b:7000"]
    );
    assert!(c.summary().contains("via redis cluster over TLS"));
    let with_secret = load(&format!(
        "{MINIMAL}[dedup.redis]\ncluster = [\"redis://app:{SECRET}@a:7000\"]\n"
    ))
    .unwrap();
    assert!(!format!("{with_secret:?}").contains(SECRET));
}

#[test]
fn cluster_nodes_are_checked_one_by_one_and_not_beside_a_url() {
    let text = format!(
        "{MINIMAL}[dedup.redis]\nurl = \"redis://cache\"\n\
         cluster = [\"redis://a:7000\", \"redis+unix:///tmp/r.sock\", \"rediss://c:7000/2\"]\n"
    );
    let errors = rejected(&text);
    let found: Vec<(usize, usize, &str)> = places(&errors)
        .into_iter()
        .map(|(line, column, path, _)| (line, column, path))
        .collect();
    assert_eq!(
        found,
        [
            (4, 1, "dedup.redis.url"),
            (5, 1, "dedup.redis.cluster"),
            (5, 30, "dedup.redis.cluster[1]"),
            (5, 58, "dedup.redis.cluster[2]"),
        ],
        "{errors:#?}"
    );
    let says = |i: usize| errors[i].message.as_str();
    assert!(says(0).contains("both say where Redis is"));
    assert!(says(1).contains("mixes rediss:// and redis:// nodes"));
    assert!(says(2).contains("expected a redis:// URL (rediss:// for TLS) of a cluster node"));
    assert!(says(3).contains("database 0 only"));
}
