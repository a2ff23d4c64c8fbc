//! Secured Redis: `rediss://` with a CA file and a client certificate, and ACL users with a
//! password, against a `redis-server` of each test's own (TLS only, on a free port, with a
//! throwaway CA made here). The store contract runs over the most secured of them: TLS,
//! client certificate required, an ACL user and the `default` user switched off.

mod common;

use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{DedupStore, StoreError};
use outrigger_redis::{RedisStore, RedisStoreConfig, RedisTls};
use outrigger_testkit::redis_server::{RedisServer, ServerTls};
use outrigger_testkit::tls::Certificates;
use outrigger_testkit::{Lifetimes, StoreFixture};

const USER: &str = "outrigger";
const PASSWORD: &str = "s3cret-Pa55";

/// `--user` and `--user default off`: only `USER` with `PASSWORD` gets in.
fn acl() -> [&'static str; 10] {
    [
        "--user",
        "outrigger",
        "on",
        ">s3cret-Pa55",
        "~*",
        "&*",
        "+@all",
        "--user",
        "default",
        "off",
    ]
}

fn config(url: String, tls: Option<RedisTls>) -> RedisStoreConfig {
    RedisStoreConfig {
        url,
        cluster: Vec::new(),
        username: None,
        password: None,
        tls,
        namespace: common::namespace(),
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(120),
        timeout: Duration::from_secs(2),
    }
}

/// The CA file alone: the server is trusted, the client shows no certificate.
fn trusting(ca: &Certificates) -> Option<RedisTls> {
    Some(RedisTls {
        ca_file: Some(ca.ca.clone()),
        ..RedisTls::default()
    })
}

/// The CA file and the client certificate.
fn with_client_cert(ca: &Certificates) -> Option<RedisTls> {
    Some(RedisTls {
        ca_file: Some(ca.ca.clone()),
        cert_file: Some(ca.client_cert.clone()),
        key_file: Some(ca.client_key.clone()),
    })
}

/// What a claim through `config` fails with; panics if it succeeds or fails otherwise.
async fn unavailable(config: RedisStoreConfig) -> String {
    let store = RedisStore::connect(config).await.expect("a valid config");
    match store.claim("k").await {
        Err(StoreError::Unavailable(why)) => why,
        other => panic!("expected the store to be unavailable, got {other:?}"),
    }
}

/// The contract over TLS with a client certificate and an ACL login.
struct SecuredContract {
    store: Arc<RedisStore>,
    _server: RedisServer,
    _certificates: Certificates,
}

impl StoreFixture for SecuredContract {
    type Store = RedisStore;

    async fn open(lifetimes: Lifetimes) -> Self {
        let certificates = Certificates::generate();
        let server = RedisServer::start_tls(ServerTls::from(&certificates, true), &acl()).await;
        let config = RedisStoreConfig {
            username: Some(USER.into()),
            password: Some(PASSWORD.into()),
            lease: lifetimes.lease,
            ttl: lifetimes.ttl,
            ..config(server.url(), with_client_cert(&certificates))
        };
        let store = RedisStore::connect(config).await.expect("a valid config");
        Self {
            store: Arc::new(store),
            _server: server,
            _certificates: certificates,
        }
    }

    fn store(&self) -> Arc<RedisStore> {
        Arc::clone(&self.store)
    }
}

outrigger_testkit::store_contract!(SecuredContract);

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_saying_why() {
    let certificates = Certificates::generate();
    let server = RedisServer::start_tls(ServerTls::from(&certificates, false), &[]).await;
    let trusted = RedisStore::connect(config(server.url(), trusting(&certificates)))
        .await
        .unwrap();
    assert_eq!(trusted.ping().await, Ok(()));

    let other_ca = Some(RedisTls {
        ca_file: Some(certificates.other_ca.clone()),
        ..RedisTls::default()
    });
    let untrusted = "the Redis server's TLS certificate is not trusted: set \
                     dedup.redis.tls.ca_file to the CA that signed it";
    let why = unavailable(config(server.url(), other_ca)).await;
    assert!(why.starts_with(untrusted), "{why}");
    // Without a CA file only the public roots are trusted, and they did not sign it either.
    let why = unavailable(config(server.url(), None)).await;
    assert!(why.starts_with(untrusted), "{why}");
}

#[tokio::test]
async fn a_server_that_verifies_clients_takes_the_certificate_and_refuses_none() {
    let certificates = Certificates::generate();
    let server = RedisServer::start_tls(ServerTls::from(&certificates, true), &[]).await;
    let store = RedisStore::connect(config(server.url(), with_client_cert(&certificates)))
        .await
        .unwrap();
    assert_eq!(store.ping().await, Ok(()));

    let why = unavailable(config(server.url(), trusting(&certificates))).await;
    assert!(
        why.starts_with("the Redis server refused the client's TLS certificate (or its absence)"),
        "{why}"
    );
}

#[tokio::test]
async fn an_acl_user_logs_in_from_the_url_or_the_settings_and_a_wrong_password_is_refused() {
    let certificates = Certificates::generate();
    let server = RedisServer::start_tls(ServerTls::from(&certificates, false), &acl()).await;
    let port = server.addr.port();

    let in_url = config(
        format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{port}"),
        trusting(&certificates),
    );
    assert!(!format!("{in_url:?}").contains(PASSWORD));
    let store = RedisStore::connect(in_url).await.unwrap();
    assert!(!format!("{store:?}").contains(PASSWORD));
    assert!(store.claim("k").await.is_ok());

    let in_settings = RedisStoreConfig {
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        ..config(server.url(), trusting(&certificates))
    };
    assert!(!format!("{in_settings:?}").contains(PASSWORD));
    let store = RedisStore::connect(in_settings.clone()).await.unwrap();
    assert!(store.claim("k").await.is_ok());

    // The settings win over the URL's credentials.
    let overridden = RedisStoreConfig {
        url: format!("rediss://{USER}:stale@127.0.0.1:{port}"),
        ..in_settings.clone()
    };
    let store = RedisStore::connect(overridden).await.unwrap();
    assert!(store.claim("k").await.is_ok());

    let wrong = "n0t-the-Pa55";
    let refused = RedisStoreConfig {
        password: Some(wrong.into()),
        ..in_settings.clone()
    };
    let why = unavailable(refused).await;
    assert!(
        why.starts_with("Redis refused the login: check the user and password"),
        "{why}"
    );
    assert!(!why.contains(wrong) && !why.contains(PASSWORD), "{why}");

    // The `default` user is off: no login at all is refused too.
    let anonymous = config(server.url(), trusting(&certificates));
    let why = unavailable(anonymous).await;
    assert!(why.starts_with("Redis wants a login"), "{why}");
}

#[tokio::test]
async fn bad_tls_and_login_settings_are_refused_naming_the_setting() {
    let certificates = Certificates::generate();
    let not_pem = certificates.path("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = certificates.path("missing.pem");
    let tls = |ca: &std::path::Path| {
        Some(RedisTls {
            ca_file: Some(ca.to_owned()),
            ..RedisTls::default()
        })
    };
    let cases = [
        (
            config("rediss://127.0.0.1:1".into(), tls(&missing)),
            "dedup.redis.tls.ca_file: cannot read",
        ),
        (
            config("rediss://127.0.0.1:1".into(), tls(&not_pem)),
            "dedup.redis.tls.ca_file: ",
        ),
        (
            config("redis://127.0.0.1:1".into(), trusting(&certificates)),
            "dedup.redis.tls.ca_file: TLS settings need a rediss:// URL",
        ),
        (
            config(
                "rediss://127.0.0.1:1".into(),
                Some(RedisTls {
                    cert_file: Some(certificates.client_cert.clone()),
                    ..RedisTls::default()
                }),
            ),
            "dedup.redis.tls.cert_file: needs dedup.redis.tls.key_file",
        ),
        (
            config(
                "rediss://127.0.0.1:1".into(),
                Some(RedisTls {
                    cert_file: Some(certificates.client_cert.clone()),
                    key_file: Some(certificates.client_cert.clone()),
                    ..RedisTls::default()
                }),
            ),
            "dedup.redis.tls.key_file: ",
        ),
        (
            config("rediss://127.0.0.1:1/#insecure".into(), None),
            "dedup.redis.url: #insecure (no certificate check) is not supported",
        ),
        (
            RedisStoreConfig {
                username: Some(USER.into()),
                ..config("redis://127.0.0.1:1".into(), None)
            },
            "dedup.redis.username: a user needs a password",
        ),
    ];
    for (config, says) in cases {
        let problems: Vec<String> = config.problems().iter().map(|p| p.to_string()).collect();
        assert!(
            problems.iter().any(|p| p.starts_with(says)),
            "{config:?}: {problems:?} lacks {says:?}"
        );
        match RedisStore::connect(config).await {
            Err(StoreError::Protocol(why)) => assert!(why.contains(says), "{why}"),
            other => panic!("connect took a config check refuses: {other:?}"),
        }
    }
    assert_eq!(
        config(
            "rediss://127.0.0.1:1".into(),
            with_client_cert(&certificates)
        )
        .problems(),
        []
    );
}
