//! Which Redis failures are worth a retry.

use outrigger_core::StoreError;
use redis::{RedisError, RetryMethod};

/// Maps a Redis failure to the store error kinds: anything a later call may get past (I/O,
/// timeouts, failover, loading, a busy script, auth until an operator fixes it) is
/// `Unavailable`; an answer the protocol cannot use is `Protocol`.
pub(crate) fn store_error(err: RedisError) -> StoreError {
    let transient = !matches!(err.retry_method(), RetryMethod::NoRetry)
        || matches!(err.code(), Some("BUSY" | "OOM" | "NOAUTH" | "WRONGPASS"));
    if transient {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Protocol(err.to_string())
    }
}
