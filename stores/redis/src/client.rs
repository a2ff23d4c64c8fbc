//! From a [`RedisStoreConfig`] to a Redis client: the URL, the login and the TLS files, each
//! problem named by its `dedup.redis.*` setting. `outrigger check` and the store's `connect`
//! both come through here, so they refuse the same configs with the same words.

use std::path::Path;

use outrigger_core::Problems;
use redis::{
    Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{RedisStoreConfig, RedisTls};

const URL: &str = "dedup.redis.url";
const USERNAME: &str = "dedup.redis.username";
const PASSWORD: &str = "dedup.redis.password";
const TLS: &str = "dedup.redis.tls";
const CA_FILE: &str = "dedup.redis.tls.ca_file";
const CERT_FILE: &str = "dedup.redis.tls.cert_file";
const KEY_FILE: &str = "dedup.redis.tls.key_file";
const NAMESPACE: &str = "dedup.redis.namespace";
const TIMEOUT: &str = "dedup.redis.timeout";

/// The client `config` describes, or every problem with it. Reads the TLS files; connects to
/// nothing.
pub(crate) fn build(config: &RedisStoreConfig) -> Result<Client, Problems> {
    let mut p = Problems::default();
    if config.namespace.contains(':') {
        p.at(
            &[NAMESPACE],
            format!(
                "{:?} must not contain ':', which would let one namespace spell another's keys",
                config.namespace
            ),
        );
    }
    p.positive(TIMEOUT, config.timeout);
    let info = connection_info(config, &mut p);
    let certificates = match (&config.tls, &info) {
        (Some(tls), Some(info)) => {
            if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
                certificates(tls, &mut p)
            } else {
                p.at(
                    &[first_set(tls)],
                    "TLS settings need a rediss:// URL: dedup.redis.url does not start with \
                     rediss://",
                );
                None
            }
        }
        _ => None,
    };
    let Some(info) = info.filter(|_| p.is_empty()) else {
        return Err(p);
    };
    let client = match certificates {
        Some(certificates) => Client::build_with_tls(info, certificates),
        None => Client::open(info),
    };
    client.map_err(|e| {
        // Not expected once every part parsed; the client's words never quote the password.
        p.at(&[URL], format!("not a valid Redis connection: {e}"));
        p
    })
}

/// The URL parsed, with `username` and `password` in place of its own.
fn connection_info(config: &RedisStoreConfig, p: &mut Problems) -> Option<ConnectionInfo> {
    let blank = |s: &Option<String>| s.as_deref().is_some_and(|s| s.trim().is_empty());
    if blank(&config.username) {
        p.at(
            &[USERNAME],
            "must not be empty; leave it out to log in as the URL's user (or as `default`)",
        );
    }
    if config.password.as_deref() == Some("") {
        p.at(
            &[PASSWORD],
            "must not be empty; leave it out for a server without AUTH",
        );
    }
    let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
    if !schemes.iter().any(|s| config.url.starts_with(s)) {
        p.at(
            &[URL],
            "expected a redis:// URL (rediss:// for TLS, redis+unix:// for a socket)",
        );
        return None;
    }
    let info = match config.url.as_str().into_connection_info() {
        Ok(info) => info,
        Err(e) => {
            // The client's words name the part at fault, never the password.
            p.at(&[URL], format!("not a valid Redis URL: {e}"));
            return None;
        }
    };
    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        p.at(
            &[URL],
            "#insecure (no certificate check) is not supported: set dedup.redis.tls.ca_file to \
             the CA that signed the server's certificate",
        );
    }
    let mut redis = info.redis_settings().clone();
    if let Some(username) = &config.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password);
    }
    if redis.username().is_some() && redis.password().is_none() {
        let at = if config.username.is_some() {
            USERNAME
        } else {
            URL
        };
        p.at(
            &[at],
            "a user needs a password to log in: set dedup.redis.password (better from \
             OUTRIGGER__DEDUP__REDIS__PASSWORD) or write it in the URL",
        );
    }
    Some(info.set_redis_settings(redis))
}

/// The CA and client certificate, read and parsed.
fn certificates(tls: &RedisTls, p: &mut Problems) -> Option<TlsCertificates> {
    let mut found = Problems::default();
    let root_cert =
        (tls.ca_file.as_deref()).and_then(|file| pem(file, CA_FILE, &mut found, certificates_in));
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert = pem(cert, CERT_FILE, &mut found, certificates_in);
            let key = pem(key, KEY_FILE, &mut found, private_key_in);
            cert.zip(key)
                .map(|(client_cert, client_key)| ClientTlsConfig {
                    client_cert,
                    client_key,
                })
        }
        (Some(_), None) => {
            found.at(
                &[CERT_FILE],
                "needs dedup.redis.tls.key_file, its private key",
            );
            None
        }
        (None, Some(_)) => {
            found.at(
                &[KEY_FILE],
                "needs dedup.redis.tls.cert_file, the certificate it goes with",
            );
            None
        }
        (None, None) => None,
    };
    let complete = found.is_empty();
    p.extend(found);
    complete.then_some(TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// The file's bytes, once `check` found in them what the setting needs.
fn pem(
    file: &Path,
    path: &str,
    p: &mut Problems,
    check: fn(&[u8]) -> Result<(), String>,
) -> Option<Vec<u8>> {
    if file.as_os_str().is_empty() {
        p.at(&[path], "must not be empty; name a PEM file");
        return None;
    }
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            p.at(&[path], format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    match check(&bytes) {
        Ok(()) => Some(bytes),
        Err(why) => {
            p.at(&[path], format!("{}: {why}", file.display()));
            None
        }
    }
}

fn certificates_in(bytes: &[u8]) -> Result<(), String> {
    let certificates = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

fn private_key_in(bytes: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(bytes)
        .map(drop)
        .map_err(|e| format!("holds no PEM private key: {e}"))
}

/// The first TLS setting written, to blame for TLS on a plain URL.
fn first_set(tls: &RedisTls) -> &'static str {
    [
        (CA_FILE, &tls.ca_file),
        (CERT_FILE, &tls.cert_file),
        (KEY_FILE, &tls.key_file),
    ]
    .into_iter()
    .find_map(|(path, file)| file.is_some().then_some(path))
    .unwrap_or(TLS)
}
