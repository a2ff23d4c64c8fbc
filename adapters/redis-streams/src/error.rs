//! Redis failures as [`SourceError`]s: which a later call may get past, which no retry cures.

use outrigger_core::SourceError;
use redis::{ErrorKind, RedisError, RetryMethod};

/// A failure of `doing` (a sentence fragment: "reading stream orders").
///
/// - The connection broke, timed out or the server is loading, failing over or busy:
///   [`SourceError::Connection`], a later call may succeed.
/// - Refused credentials or permissions, a key of another type, a missing group, a command the
///   server does not know: [`SourceError::Rejected`], until an operator changes something.
pub(crate) fn source_error(doing: &str, e: &RedisError) -> SourceError {
    let text = format!("{doing}: {e}");
    if is_transient(e) {
        SourceError::Connection(text)
    } else {
        SourceError::Rejected(text)
    }
}

/// A failed write of a dead letter, a tombstone or a resubmitted copy: always
/// [`SourceError::Publish`], whatever broke, since the entry it replaces stays where it was.
pub(crate) fn publish_error(doing: &str, e: &RedisError) -> SourceError {
    SourceError::Publish(format!("{doing}: {e}"))
}

/// Whether trying again (after a reconnect) can succeed.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    // Denied access is an operator's to fix: the broker refuses the consumer.
    if e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
    {
        return false;
    }
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.kind() == ErrorKind::Parse
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect | RetryMethod::WaitAndRetry | RetryMethod::RetryImmediately
        )
        || matches!(e.code(), Some("BUSY" | "OOM" | "LOADING" | "MASTERDOWN"))
}

/// Whether the server says a stream has no such group (or no such key at all).
pub(crate) fn is_no_group(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// A reply that is not shaped as the command's documentation says: a server this adapter does
/// not understand, reported as a connection failure so that it is logged and retried.
pub(crate) fn odd_reply(doing: &str, what: impl std::fmt::Display) -> SourceError {
    SourceError::Connection(format!("{doing}: unexpected reply from Redis: {what}"))
}
