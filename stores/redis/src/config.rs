//! Where Redis is and the protocol timings.

use std::fmt;
use std::time::Duration;

/// How to reach Redis and how long claims and records last.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// A `redis://` (or `rediss://`, `redis+unix://`) URL, credentials included.
    pub url: String,
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

impl fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("url", &redacted(&self.url))
            .field("namespace", &self.namespace)
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The URL with its user-info part hidden, since it may carry a password and configs get logged.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn debug_hides_credentials() {
        assert_eq!(
            redacted("redis://user:secret@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
    }
}
