//! Where Redis is, how the store logs in, and the protocol timings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use outrigger_core::Problem;
use serde::Deserialize;

/// How to reach Redis and how long claims and records last.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// A `redis://` (or `rediss://` for TLS, `redis+unix://`) URL, credentials included; not
    /// used when `cluster` names nodes.
    pub url: String,
    /// Some nodes of a Redis Cluster, `redis://host:port` each (`rediss://` for TLS, all
    /// alike): the store learns the others, and where each slot lives, from them. Empty: the
    /// standalone server at `url`.
    pub cluster: Vec<String>,
    /// The ACL user to log in as, in place of the URL's.
    pub username: Option<String>,
    /// The password to log in with, in place of the URL's.
    pub password: Option<String>,
    /// The CA and client certificate of a `rediss://` connection; `None` trusts the webpki
    /// roots and presents no certificate.
    pub tls: Option<RedisTls>,
    /// Separates the records of one service from another's in a shared Redis; must not contain
    /// `:`, so that no namespace/key pair can spell another's Redis key.
    pub namespace: String,
    /// How long a claim holds a key before another replica may take it over.
    pub lease: Duration,
    /// How long a record is kept after its last write; a done key is skipped for this long.
    pub ttl: Duration,
    /// The longest one store call may take, connecting included; past it the call fails as
    /// unavailable.
    pub timeout: Duration,
}

/// `[dedup.redis.tls]`: the files of a `rediss://` connection, PEM, read when the store is
/// created (and by `outrigger check`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTls {
    /// The CA certificate(s) that signed the server's certificate; without it, the public
    /// webpki roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate, for a server started with `tls-auth-clients yes` (with
    /// `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl RedisStoreConfig {
    /// Every problem that would make [`RedisStore::connect`](crate::RedisStore::connect)
    /// refuse this config, named by the `dedup.redis.*` setting at fault. Reads the TLS files;
    /// connects to nothing.
    pub fn problems(&self) -> Vec<Problem> {
        match crate::client::build(self) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_vec(),
        }
    }

    /// Whether the connections are TLS.
    pub fn is_tls(&self) -> bool {
        match self.cluster.first() {
            Some(node) => node.starts_with("rediss://"),
            None => self.url.starts_with("rediss://"),
        }
    }

    /// Whether the store speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }
}

impl fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("url", &redacted(&self.url))
            .field(
                "cluster",
                &self.cluster.iter().map(|n| redacted(n)).collect::<Vec<_>>(),
            )
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("namespace", &self.namespace)
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The URL with its user-info part hidden, since it may carry a password and configs get
/// logged.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        assert_eq!(
            redacted("redis://user:secret@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
        let config = RedisStoreConfig {
            url: "rediss://app:in-url@cache:6380".into(),
            cluster: vec!["rediss://app:in-node@node-1:6380".into()],
            username: Some("app".into()),
            password: Some("in-field".into()),
            tls: None,
            namespace: "ns".into(),
            lease: Duration::from_secs(1),
            ttl: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("in-url") && !debug.contains("in-field"),
            "{debug}"
        );
        assert!(debug.contains("rediss://***@cache:6380"), "{debug}");
    }
}
