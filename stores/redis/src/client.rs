//! From a [`RedisStoreConfig`] to a Redis client (standalone or cluster): the URLs, the login
//! and the TLS files, each problem named by its `dedup.redis.*` setting. `outrigger check` and
//! the store's `connect` both come through here, so they refuse the same configs with the same
//! words.

use std::path::Path;
use std::time::Duration;

use outrigger_core::{KeyPath, Problems};
use redis::cluster::ClusterClient;
use redis::{ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{RedisStoreConfig, RedisTls};

const URL: &str = "dedup.redis.url";
const CLUSTER: &str = "dedup.redis.cluster";
const USERNAME: &str = "dedup.redis.username";
const PASSWORD: &str = "dedup.redis.password";
const TLS: &str = "dedup.redis.tls";
const CA_FILE: &str = "dedup.redis.tls.ca_file";
const CERT_FILE: &str = "dedup.redis.tls.cert_file";
const KEY_FILE: &str = "dedup.redis.tls.key_file";
const NAMESPACE: &str = "dedup.redis.namespace";
const TIMEOUT: &str = "dedup.redis.timeout";

/// A client for one standalone server, or for a cluster.
// Made once per store and consumed by `connect`: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Client {
    Standalone(redis::Client),
    Cluster(ClusterClient),
}

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
    login(config, &mut p);
    let cluster = config.is_cluster();
    let nodes: Vec<(KeyPath, &str)> = if cluster {
        let at = KeyPath::parse(CLUSTER);
        (config.cluster.iter().enumerate())
            .map(|(i, url)| (at.index(i), url.as_str()))
            .collect()
    } else {
        vec![(KeyPath::parse(URL), config.url.as_str())]
    };
    let parsed: Vec<Option<ConnectionInfo>> = (nodes.iter())
        .map(|(at, url)| connection_info(config, at, url, cluster, &mut p))
        .collect();
    let infos: Vec<&ConnectionInfo> = parsed.iter().flatten().collect();
    let passwordless = infos
        .iter()
        .any(|i| i.redis_settings().password().is_none());
    if config.username.is_some() && passwordless {
        p.at(&[USERNAME], NO_PASSWORD);
    }
    let tls_nodes = (infos.iter())
        .filter(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }))
        .count();
    if tls_nodes > 0 && tls_nodes < infos.len() {
        p.at(
            &[CLUSTER],
            "mixes rediss:// and redis:// nodes: a cluster's nodes are all TLS or none",
        );
    }
    let certificates = match &config.tls {
        Some(tls) if tls_nodes > 0 => certificates(tls, &mut p),
        Some(tls) if !infos.is_empty() => {
            let which = if cluster {
                "the nodes of dedup.redis.cluster are not rediss://"
            } else {
                "dedup.redis.url does not start with rediss://"
            };
            p.at(
                &[first_set(tls)],
                format!("TLS settings need a rediss:// URL: {which}"),
            );
            None
        }
        _ => None,
    };
    if !p.is_empty() || parsed.iter().any(Option::is_none) {
        return Err(p);
    }
    let infos = parsed.into_iter().flatten();
    let client = if cluster {
        cluster_client(infos.collect(), certificates, config.timeout).map(Client::Cluster)
    } else {
        let info = infos.into_iter().next().expect("one URL, parsed");
        match certificates {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
        .map(Client::Standalone)
    };
    client.map_err(|e| {
        // Not expected once every part parsed; the client's words never quote the password.
        let at = if cluster { CLUSTER } else { URL };
        p.at(&[at], format!("not a valid Redis connection: {e}"));
        p
    })
}

const NO_PASSWORD: &str = "a user needs a password to log in: set dedup.redis.password (better \
                           from OUTRIGGER__DEDUP__REDIS__PASSWORD) or write it in the URL";

/// Reconnections and redirections (MOVED, ASK) one cluster call may take before it fails.
/// Few: every call is bounded by the store's timeout anyway, and the next call tries again.
const CLUSTER_RETRIES: u32 = 3;

fn cluster_client(
    nodes: Vec<ConnectionInfo>,
    certificates: Option<TlsCertificates>,
    timeout: Duration,
) -> redis::RedisResult<ClusterClient> {
    let mut builder = ClusterClient::builder(nodes)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(CLUSTER_RETRIES);
    if let Some(certificates) = certificates {
        builder = builder.certs(certificates);
    }
    builder.build()
}

/// `username` and `password`, when set, must say something.
fn login(config: &RedisStoreConfig, p: &mut Problems) {
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
}

/// `url` (the setting at `at`) parsed, with `username` and `password` in place of its own.
fn connection_info(
    config: &RedisStoreConfig,
    at: &KeyPath,
    url: &str,
    cluster: bool,
    p: &mut Problems,
) -> Option<ConnectionInfo> {
    let problem = |p: &mut Problems, message: &str| p.at_paths(vec![at.clone()], message);
    let schemes: &[&str] = if cluster {
        &["redis://", "rediss://"]
    } else {
        &["redis://", "rediss://", "redis+unix://", "unix://"]
    };
    if !schemes.iter().any(|s| url.starts_with(s)) {
        let expected = if cluster {
            "expected a redis:// URL (rediss:// for TLS) of a cluster node"
        } else {
            "expected a redis:// URL (rediss:// for TLS, redis+unix:// for a socket)"
        };
        problem(p, expected);
        return None;
    }
    let info = match url.into_connection_info() {
        Ok(info) => info,
        Err(e) => {
            // The client's words name the part at fault, never the password.
            problem(p, &format!("not a valid Redis URL: {e}"));
            return None;
        }
    };
    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        problem(
            p,
            "#insecure (no certificate check) is not supported: set dedup.redis.tls.ca_file to \
             the CA that signed the server's certificate",
        );
    }
    if cluster && info.redis_settings().db() != 0 {
        problem(p, "a Redis Cluster has database 0 only: leave the /db out");
    }
    let mut redis = info.redis_settings().clone();
    if let Some(username) = &config.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password);
    }
    if redis.username().is_some() && redis.password().is_none() {
        // Blamed on the URL that names the user; `username` alone is blamed once, by `build`.
        if config.username.is_none() {
            problem(p, NO_PASSWORD);
        }
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
