//! One connection to NATS: authentication and TLS from the config, reconnects with backoff
//! reported once, and the health flag and reconnect signal the source watches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
use outrigger_core::{Episode, HealthFlag, SourceError};
use tokio::sync::Notify;
use tracing::debug;

use crate::config::NatsConfig;
use crate::creds::{self, Creds};

/// First delay after a failed reconnect: quick enough to ride out a server restart blip.
const FIRST_RECONNECT: Duration = Duration::from_millis(100);
/// Longest delay: a server that is down for minutes is tried every few seconds, no slower.
const MAX_RECONNECT: Duration = Duration::from_secs(5);
/// How long the first connect may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request (an ack, a publish, an API call) waits for the server's answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected client, with what its events keep up to date.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) jetstream: async_nats::jetstream::Context,
    /// Up while connected.
    pub(crate) health: HealthFlag,
    /// Notified each time the client connected again after losing the server: a pull request
    /// of the old connection may be gone, so the source asks again at once.
    pub(crate) reconnected: Arc<Notify>,
}

/// Connects to the config's servers. An unreachable server is [`SourceError::Connection`];
/// refused credentials, unreadable secret files and a TLS setup that cannot work are
/// [`SourceError::Rejected`].
pub(crate) async fn connect(
    config: &NatsConfig,
    what: &'static str,
) -> Result<Connection, SourceError> {
    let health = HealthFlag::new(false);
    let reconnected = Arc::new(Notify::new());
    let episode = Arc::new(Episode::new(
        "NATS connection lost; reconnecting with backoff.",
        "Reconnected to NATS.",
    ));
    let options = options(config, what).await?;
    // Set while the server is lost, so that only a connect after a loss counts as a reconnect.
    let lost = Arc::new(AtomicBool::new(false));
    let events = {
        let (health, reconnected, episode) = (health.clone(), reconnected.clone(), episode);
        move |event: Event| {
            let (health, reconnected, episode, lost) = (
                health.clone(),
                reconnected.clone(),
                episode.clone(),
                lost.clone(),
            );
            async move {
                match event {
                    Event::Connected => {
                        health.set(true);
                        episode.recovered();
                        // One pull loop listens; a reconnect while it is busy handing a
                        // message on is kept for it rather than missed.
                        if lost.swap(false, Ordering::SeqCst) {
                            reconnected.notify_one();
                        }
                    }
                    Event::Disconnected => {
                        lost.store(true, Ordering::SeqCst);
                        health.set(false);
                        episode.failed(&"the connection to the server broke");
                    }
                    Event::Closed => health.set(false),
                    other => debug!(event = %other, "NATS client event."),
                }
            }
        }
    };
    let options = options
        .event_callback(events)
        .reconnect_delay_callback(reconnect_delay)
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT));
    let servers: Vec<async_nats::ServerAddr> = config
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            SourceError::Config(vec![outrigger_core::Problem {
                paths: vec![outrigger_core::KeyPath::parse("source.nats.servers")],
                message: format!("not a valid NATS server URL: {e}"),
            }])
        })?;
    let client = options.connect(servers).await.map_err(|e| {
        let text = format!("connecting to NATS: {e}");
        match e.kind() {
            ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                SourceError::Rejected(format!("{text}; {}", refused(config)))
            }
            ConnectErrorKind::Tls | ConnectErrorKind::ServerParse => SourceError::Rejected(text),
            _ => SourceError::Connection(text),
        }
    })?;
    health.set(true);
    let mut jetstream = async_nats::jetstream::new(client.clone());
    jetstream.set_timeout(REQUEST_TIMEOUT);
    Ok(Connection {
        client,
        jetstream,
        health,
        reconnected,
    })
}

/// Authentication and TLS as the config says; secrets are read from their files here.
async fn options(config: &NatsConfig, what: &str) -> Result<ConnectOptions, SourceError> {
    let mut options = match &config.credentials_file {
        Some(file) => {
            // Read now to refuse what cannot work with its reason; read again at each connect.
            let reading = |why: String| {
                SourceError::Rejected(format!(
                    "reading source.nats.credentials_file {}: {why}",
                    file.display()
                ))
            };
            let creds = Creds::read(file).await.map_err(reading)?;
            if let Some(at) = creds.expired() {
                return Err(SourceError::Rejected(format!(
                    "the user JWT in source.nats.credentials_file {} expired at {}, and the \
                     server refuses it; issue new credentials (nsc generate creds)",
                    file.display(),
                    humantime::format_rfc3339_seconds(at)
                )));
            }
            creds::options(file.clone())
        }
        None => ConnectOptions::new(),
    }
    .name(format!("{} ({what})", config.name));
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    // async-nats does not read credentials from a URL; NATS users write them there.
    match config.url_credentials() {
        Some((user, Some(password))) => options = options.user_and_password(user, password),
        Some((token, None)) => options = options.token(token),
        None => {}
    }
    if let Some(file) = &config.nkey_seed_file {
        let seed = tokio::fs::read_to_string(file).await.map_err(|e| {
            SourceError::Rejected(format!(
                "reading source.nats.nkey_seed_file {}: {e}",
                file.display()
            ))
        })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(tls) = &config.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            readable(ca, "source.nats.tls.ca_file").await?;
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            readable(cert, "source.nats.tls.cert_file").await?;
            readable(key, "source.nats.tls.key_file").await?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options)
}

/// Which credentials the server refused, for the message that says so.
fn refused(config: &NatsConfig) -> String {
    if let Some(file) = &config.credentials_file {
        format!(
            "the server refused the user JWT and key of source.nats.credentials_file {} (its \
             account unknown to the server, the user revoked, or a seed that is not the JWT's \
             user: the server's log says which)",
            file.display()
        )
    } else if let Some(file) = &config.nkey_seed_file {
        format!(
            "the server refused the NKey of source.nats.nkey_seed_file {}",
            file.display()
        )
    } else if config.user.is_some() {
        "the server refused source.nats.user and source.nats.password".to_owned()
    } else if config.token.is_some() {
        "the server refused source.nats.token".to_owned()
    } else if config.url_credentials().is_some() {
        "the server refused the credentials in source.nats.servers".to_owned()
    } else {
        "the server requires credentials and none are set (source.nats.user, token, \
         credentials_file or nkey_seed_file)"
            .to_owned()
    }
}

/// A file the client will read when it connects: refused now, with the setting's name, rather
/// than as a TLS error later.
async fn readable(file: &std::path::Path, setting: &str) -> Result<(), SourceError> {
    tokio::fs::metadata(file)
        .await
        .map(|_| ())
        .map_err(|e| SourceError::Rejected(format!("reading {setting} {}: {e}", file.display())))
}

/// 100ms doubling to 5s between reconnect attempts.
fn reconnect_delay(attempts: usize) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST_RECONNECT
        .saturating_mul(2u32.saturating_pow(doublings.min(16)))
        .min(MAX_RECONNECT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_from_100ms_to_5s() {
        assert_eq!(reconnect_delay(0), FIRST_RECONNECT);
        assert_eq!(reconnect_delay(1), FIRST_RECONNECT);
        assert_eq!(reconnect_delay(2), Duration::from_millis(200));
        assert_eq!(reconnect_delay(6), Duration::from_millis(3200));
        assert_eq!(reconnect_delay(7), MAX_RECONNECT);
        assert_eq!(reconnect_delay(usize::MAX), MAX_RECONNECT);
    }
}
