//! How the store's failures read. Every one is [`StoreError::Unavailable`]: a retry may help.

use std::fmt;

use outrigger_core::StoreError;

/// A failed disk operation; the path is in the config (and the startup log), not repeated here.
pub(crate) fn disk(err: impl Into<redb::Error>) -> StoreError {
    unavailable(err.into())
}

pub(crate) fn unavailable(err: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded dedup store: {err}"))
}
