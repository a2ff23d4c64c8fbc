//! Authentication and TLS against a nats-server of the test's own, started with a config
//! file on a free port: user/password, token and NKey, and TLS with a throwaway CA made here
//! with openssl (server certificate, then a client certificate the server verifies). `.creds`
//! files, which need a server in operator mode, are in `creds.rs`.

use std::path::Path;
use std::process::Command;

use outrigger_core::{Acker, Settlement, Source, SourceContext, SourceError};
use outrigger_nats::{NatsConfig, NatsSettings, NatsSource, TlsConfig};
use outrigger_testkit::nats::{Nats, NatsServer, Streams, DEADLINE};
use outrigger_testkit::source::recv;

async fn connect(config: &NatsConfig) -> Result<NatsSource, SourceError> {
    NatsSource::connect(NatsSettings::from_config(config, &SourceContext::default())).await
}

/// A message published (by the fixture, with its own credentials) comes through the source.
async fn consumes(streams: &Streams, config: &NatsConfig) {
    streams.publish(&[], "secret stuff").await;
    let mut source = connect(config)
        .await
        .expect("connects with its credentials");
    let d = recv(&mut source, DEADLINE).await;
    assert_eq!(&d.message.payload[..], b"secret stuff");
    d.acker.settle(Settlement::Ack).await.unwrap();
    source.stop().await;
}

/// The fixture's own connection, with `options`.
async fn fixture(options: async_nats::ConnectOptions, server: &NatsServer) -> Nats {
    let client = options
        .connect(server.url())
        .await
        .expect("the fixture connects");
    Nats {
        js: async_nats::jetstream::new(client.clone()),
        client,
    }
}

fn rejected(result: Result<NatsSource, SourceError>, why: &str) -> String {
    match result {
        Err(SourceError::Rejected(text)) => text,
        Err(other) => panic!("{why}: refused, but as {other:?}"),
        Ok(_) => panic!("{why}: connected"),
    }
}

#[tokio::test]
async fn user_and_password() {
    let server = NatsServer::start("authorization { user: app, password: \"s3cret\" }").await;
    let fixture = fixture(
        async_nats::ConnectOptions::new().user_and_password("app".into(), "s3cret".into()),
        &server,
    )
    .await;
    let streams = Streams::on(fixture, "user").await;
    let config = NatsConfig {
        user: Some("app".into()),
        password: Some("s3cret".into()),
        ..streams.config(&server.url())
    };
    consumes(&streams, &config).await;
    let wrong = NatsConfig {
        password: Some("guess".into()),
        ..config.clone()
    };
    let text = rejected(connect(&wrong).await, "a wrong password");
    assert!(text.contains("authorization violation"), "{text}");
    assert!(!text.contains("guess") && !format!("{wrong:?}").contains("guess"));
    // In the URL, as NATS users often write them (async-nats alone would ignore them).
    let in_url = streams.config(&format!("nats://app:s3cret@{}", server.addr));
    assert!(!format!("{in_url:?}").contains("s3cret"));
    consumes(&streams, &in_url).await;
}

#[tokio::test]
async fn token() {
    let server = NatsServer::start("authorization { token: \"t0ken-42\" }").await;
    let fixture = fixture(
        async_nats::ConnectOptions::new().token("t0ken-42".into()),
        &server,
    )
    .await;
    let streams = Streams::on(fixture, "token").await;
    let config = NatsConfig {
        token: Some("t0ken-42".into()),
        ..streams.config(&server.url())
    };
    consumes(&streams, &config).await;
    let none = streams.config(&server.url());
    rejected(connect(&none).await, "no token");
}

#[tokio::test]
async fn nkey_seed_file() {
    let user = nkeys::KeyPair::new_user();
    let conf = format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    );
    let server = NatsServer::start(&conf).await;
    let seed_file = server.path("user.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().unwrap())).unwrap();
    let fixture = fixture(
        async_nats::ConnectOptions::new().nkey(user.seed().unwrap()),
        &server,
    )
    .await;
    let streams = Streams::on(fixture, "nkey").await;
    let config = NatsConfig {
        nkey_seed_file: Some(seed_file),
        ..streams.config(&server.url())
    };
    consumes(&streams, &config).await;
    let missing = NatsConfig {
        nkey_seed_file: Some(server.path("nowhere.nk")),
        ..config
    };
    let text = rejected(connect(&missing).await, "a missing seed file");
    assert!(text.contains("source.nats.nkey_seed_file"), "{text}");
    let creds = NatsConfig {
        credentials_file: Some(server.path("nowhere.creds")),
        ..streams.config(&server.url())
    };
    let text = rejected(connect(&creds).await, "a missing credentials file");
    assert!(text.contains("source.nats.credentials_file"), "{text}");
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=outrigger test CA",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={who}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ]);
    }
}

#[tokio::test]
async fn tls_with_a_ca_file_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let file = |name: &str| dir.path().join(name);
    let conf = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}",
        file("server.pem"),
        file("server.key"),
        file("ca.pem")
    );
    let server = NatsServer::start(&conf).await;
    let options = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(file("ca.pem"))
        .add_client_certificate(file("client.pem"), file("client.key"));
    let fixture = fixture(options, &server).await;
    let streams = Streams::on(fixture, "tls").await;
    let config = NatsConfig {
        tls: Some(TlsConfig {
            ca_file: Some(file("ca.pem")),
            cert_file: Some(file("client.pem")),
            key_file: Some(file("client.key")),
        }),
        ..streams.config(&server.url())
    };
    consumes(&streams, &config).await;

    // Without the CA the server's certificate is not trusted; without the client
    // certificate the server refuses the client.
    let untrusted = NatsConfig {
        tls: Some(TlsConfig {
            ca_file: None,
            ..config.tls.clone().unwrap()
        }),
        ..config.clone()
    };
    assert!(connect(&untrusted).await.is_err(), "an untrusted server");
    let anonymous = NatsConfig {
        tls: Some(TlsConfig {
            ca_file: Some(file("ca.pem")),
            cert_file: None,
            key_file: None,
        }),
        ..config.clone()
    };
    assert!(
        connect(&anonymous).await.is_err(),
        "a client without certificate"
    );
    let missing = NatsConfig {
        tls: Some(TlsConfig {
            ca_file: Some(file("nowhere.pem")),
            ..config.tls.clone().unwrap()
        }),
        ..config
    };
    let text = rejected(connect(&missing).await, "a missing CA file");
    assert!(text.contains("source.nats.tls.ca_file"), "{text}");
}
