//! `.creds` files against a nats-server of the test's own in operator (JWT) mode: an operator,
//! its system account and an account with JetStream, minted here (see `jwt`) and preloaded
//! into the server's memory resolver, as `nsc` and a deployment would set them up. The other
//! ways to authenticate are in `security.rs`.
//!
//! The file is read again at every connect, so one renewed in place is used once the old
//! JWT expires and the server closes the connection.

mod jwt;

use std::time::{Duration, Instant};

use outrigger_core::{Acker, Settlement, Source, SourceContext, SourceError};
use outrigger_nats::{NatsConfig, NatsSettings, NatsSource};
use outrigger_testkit::dead_letter;
use outrigger_testkit::nats::{Nats, NatsServer, Streams, DEADLINE};
use outrigger_testkit::source::{assert_quiet, recv};
use outrigger_testkit::wait_until;

use jwt::{Account, Operator, User};

/// A server that trusts one operator, and the account the tests' users belong to.
struct Trusted {
    server: NatsServer,
    operator: Operator,
    account: Account,
}

impl Trusted {
    /// Starts a server trusting a new operator, with `account` (signed by it) and the system
    /// account in its memory resolver.
    async fn start(operator: Operator, account: Account) -> Self {
        let system = operator.account("SYS", false);
        let conf = format!(
            "operator: {:?}\nsystem_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {}: {:?}\n  {}: {:?}\n}}\n",
            operator.jwt(&system),
            system.key.public_key(),
            system.key.public_key(),
            system.jwt,
            account.key.public_key(),
            account.jwt,
        );
        let server = NatsServer::start(&conf).await;
        Self {
            server,
            operator,
            account,
        }
    }

    async fn new() -> Self {
        let operator = Operator::new();
        let account = operator.account("APP", true);
        Self::start(operator, account).await
    }

    /// Writes `user`'s creds file into the server's scratch directory.
    fn creds_file(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let file = self.server.path(name);
        std::fs::write(&file, contents).unwrap();
        file
    }

    /// The fixture's own connection, as a user of the account.
    async fn fixture(&self) -> Nats {
        let user = self.account.user("fixture", None);
        let client = async_nats::ConnectOptions::with_credentials(&user.creds())
            .unwrap()
            .connect(self.server.url())
            .await
            .expect("the fixture connects with its creds");
        Nats {
            js: async_nats::jetstream::new(client.clone()),
            client,
        }
    }

    /// The source's config for `streams`, authenticating with `user`'s creds file.
    fn config(&self, streams: &Streams, user: &User) -> NatsConfig {
        NatsConfig {
            credentials_file: Some(self.creds_file("sidecar.creds", &user.creds())),
            ..streams.config(&self.server.url())
        }
    }
}

async fn connect(config: &NatsConfig) -> Result<NatsSource, SourceError> {
    NatsSource::connect(NatsSettings::from_config(config, &SourceContext::default())).await
}

/// Connects and expects a refusal no retry cures, given at once rather than after retries.
async fn refused(config: &NatsConfig, why: &str) -> String {
    let started = Instant::now();
    let result = connect(config).await;
    let took = started.elapsed();
    let text = match result {
        Err(SourceError::Rejected(text)) => text,
        Err(other) => panic!("{why}: refused, but as {other:?}"),
        Ok(_) => panic!("{why}: connected"),
    };
    assert!(
        took < Duration::from_secs(3),
        "{why}: refused at the first answer, not after retries ({took:?})"
    );
    text
}

#[tokio::test]
async fn a_creds_file_consumes_acks_and_dead_letters_in_operator_mode() {
    let trusted = Trusted::new().await;
    let streams = Streams::on(trusted.fixture().await, "creds").await;
    let user = trusted.account.user("sidecar", None);
    let config = trusted.config(&streams, &user);
    streams.publish(&[], "first").await;
    streams.publish(&[], "second").await;

    let mut source = connect(&config).await.expect("connects with its creds");
    let first = recv(&mut source, DEADLINE).await;
    assert_eq!(&first.message.payload[..], b"first");
    first.acker.settle(Settlement::Ack).await.unwrap();
    let second = recv(&mut source, DEADLINE).await;
    assert_eq!(&second.message.payload[..], b"second");
    second
        .acker
        .settle(Settlement::dead_letter(dead_letter()))
        .await
        .unwrap();
    let dead = streams.dead_letters().await;
    assert_eq!(dead.len(), 1, "the dead letter is stored");
    assert_eq!(&dead[0].payload[..], b"second");
    streams.wait_all_acked().await;
    source.stop().await;
}

/// A user the server cannot trust is refused at connect, as a refusal: its account unknown to
/// the server, its JWT expired, its key not the one the JWT names, or revoked by its account.
#[tokio::test]
async fn a_creds_file_the_server_does_not_trust_is_refused_at_once() {
    let operator = Operator::new();
    let account = operator.account("APP", true);
    let revoked = account.user("revoked", None);
    // Revoked: every JWT of that user issued until now.
    let account = account.revoking(&operator.key, "APP", &[(&revoked, jwt::now())]);
    let trusted = Trusted::start(operator, account).await;
    let streams = Streams::on(trusted.fixture().await, "creds-refused").await;

    let stranger = trusted
        .operator
        .account("OTHER", true)
        .user("stranger", None);
    let expired = trusted.account.user("expired", Some(jwt::now() - 60));
    let someone = trusted.account.user("someone", None);
    let wrong_key = jwt::creds(
        &someone.jwt,
        &trusted.account.user("other", None).key.seed().unwrap(),
    );
    for (why, contents, says) in [
        (
            "an account the server does not know",
            stranger.creds(),
            "authorization violation",
        ),
        (
            "a seed that is not the JWT's user",
            wrong_key,
            "authorization violation",
        ),
        ("a revoked user", revoked.creds(), "authorization violation"),
        // Told apart before the server is asked: it would only say "authorization violation".
        ("an expired user JWT", expired.creds(), "expired at"),
    ] {
        let config = NatsConfig {
            credentials_file: Some(trusted.creds_file("refused.creds", &contents)),
            ..streams.config(&trusted.server.url())
        };
        let text = refused(&config, why).await;
        assert!(text.contains(says), "{why}: {text}");
        assert!(
            text.contains("source.nats.credentials_file"),
            "{why}: names the setting: {text}"
        );
        let seed = contents.lines().find(|l| l.starts_with("SU")).unwrap();
        assert!(
            !text.contains(seed) && !text.contains("eyJ"),
            "{why}: no secret in the message: {text}"
        );
    }
    // The server itself refuses the expired JWT, too: the check above only names the reason.
    let client = async_nats::ConnectOptions::with_credentials(&expired.creds())
        .unwrap()
        .connect(trusted.server.url())
        .await;
    assert!(client.is_err(), "the server refuses an expired user JWT");

    // The same server takes a good user, so the refusals were about the users.
    let good = trusted.account.user("good", None);
    let mut source = connect(&trusted.config(&streams, &good)).await.unwrap();
    source.stop().await;
}

/// A user JWT that expires while the source runs: the server closes the connection, and
/// every reconnect is refused while the file holds the old JWT; renewed in place, the file is
/// read again at the next reconnect, and what was published meanwhile comes through.
#[tokio::test]
async fn a_creds_file_renewed_in_place_is_used_once_the_old_jwt_expires() {
    let trusted = Trusted::new().await;
    let streams = Streams::on(trusted.fixture().await, "creds-renewed").await;
    let user = trusted.account.user("sidecar", Some(jwt::now() + 3));
    let config = trusted.config(&streams, &user);
    let mut source = connect(&config)
        .await
        .expect("connects before the JWT expires");
    let health = source.health();
    streams.publish(&[], "before").await;
    let d = recv(&mut source, DEADLINE).await;
    d.acker.settle(Settlement::Ack).await.unwrap();

    wait_until(
        "the server closes the expired user's connection",
        DEADLINE,
        || async { !health.is_up() },
    )
    .await;
    streams.publish(&[], "meanwhile").await;
    assert_quiet(
        &mut source,
        Duration::from_secs(2),
        "no reconnect with the expired JWT",
    )
    .await;
    assert!(!health.is_up(), "every reconnect refused");

    let renewed = trusted.account.renew(&user, "sidecar", None);
    trusted.creds_file("sidecar.creds", &renewed.creds());
    let d = recv(&mut source, DEADLINE).await;
    assert_eq!(&d.message.payload[..], b"meanwhile");
    assert!(health.is_up(), "reconnected with the renewed file");
    d.acker.settle(Settlement::Ack).await.unwrap();
    streams.wait_all_acked().await;
    source.stop().await;
}

#[tokio::test]
async fn a_creds_file_that_cannot_be_read_is_refused_with_the_settings_name() {
    let trusted = Trusted::new().await;
    let streams = Streams::on(trusted.fixture().await, "creds-unreadable").await;
    let user = trusted.account.user("sidecar", None);
    let not_creds = trusted.creds_file("seed-only.creds", &user.key.seed().unwrap());
    for (why, file) in [
        ("a missing file", trusted.server.path("nowhere.creds")),
        ("a directory", trusted.server.path("")),
        ("a file without a JWT block", not_creds),
    ] {
        let config = NatsConfig {
            credentials_file: Some(file),
            ..streams.config(&trusted.server.url())
        };
        let text = refused(&config, why).await;
        assert!(
            text.contains("source.nats.credentials_file"),
            "{why}: names the setting: {text}"
        );
    }
}
