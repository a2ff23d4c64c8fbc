//! Which Redis failures are worth a retry, and what a refused login or TLS handshake means.

use outrigger_core::StoreError;
use redis::{ErrorKind, RedisError, RetryMethod};

/// Maps a Redis failure to the store error kinds: anything a later call may get past (I/O,
/// timeouts, failover, loading, a busy script, a refused login or certificate until an
/// operator fixes it) is `Unavailable`; an answer the protocol cannot use is `Protocol`.
pub(crate) fn store_error(err: RedisError) -> StoreError {
    let transient = !matches!(err.retry_method(), RetryMethod::NoRetry)
        || matches!(err.code(), Some("BUSY" | "OOM" | "NOAUTH" | "WRONGPASS"))
        || err.kind() == ErrorKind::AuthenticationFailed;
    let text = match hint(&err) {
        Some(hint) => format!("{hint}: {err}"),
        None => err.to_string(),
    };
    if transient {
        StoreError::Unavailable(text)
    } else {
        StoreError::Protocol(text)
    }
}

/// What an operator should look at, for the failures whose own words do not say: a refused
/// login, an untrusted server certificate, a refused client certificate. The settings are
/// named; their values (a password) never are.
fn hint(err: &RedisError) -> Option<&'static str> {
    if err.kind() == ErrorKind::AuthenticationFailed || err.code() == Some("WRONGPASS") {
        return Some(
            "Redis refused the login: check the user and password (dedup.redis.username and \
             dedup.redis.password, or the URL's)",
        );
    }
    if err.code() == Some("NOAUTH") {
        return Some(
            "Redis wants a login: set dedup.redis.username and dedup.redis.password (or write \
             them in the URL)",
        );
    }
    // rustls's words, carried in an I/O error.
    let text = err.to_string();
    if text.contains("invalid peer certificate") {
        return Some(
            "the Redis server's TLS certificate is not trusted: set dedup.redis.tls.ca_file to \
             the CA that signed it",
        );
    }
    let client_refused = [
        "CertificateRequired",
        "BadCertificate",
        "UnknownCA",
        "AccessDenied",
    ];
    if text.contains("received fatal alert") && client_refused.iter().any(|a| text.contains(a)) {
        return Some(
            "the Redis server refused the client's TLS certificate (or its absence): check \
             dedup.redis.tls.cert_file and dedup.redis.tls.key_file",
        );
    }
    None
}
