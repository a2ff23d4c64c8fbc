//! Maps lapin's errors onto the core's [`SourceError`], which says whether a retry can help.

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::ErrorKind;
use outrigger_core::SourceError;

/// A broker-level error, prefixed with what the adapter was doing.
///
/// Refusals (missing queue, access refused, inequivalent declare, forbidden vhost) are
/// [`SourceError::Rejected`]: they come back the same until an operator acts. Everything else,
/// sockets and heartbeats included, is [`SourceError::Connection`].
pub(crate) fn classify(doing: &str, error: &lapin::Error) -> SourceError {
    let text = format!("{doing}: {error}");
    if is_refusal(error) {
        SourceError::Rejected(text)
    } else {
        SourceError::Connection(text)
    }
}

/// True when the broker answered NOT_FOUND (404), e.g. to a passive declare of a missing queue.
pub(crate) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// The broker refused a declare because the queue exists with other arguments.
pub(crate) fn is_inequivalent(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

fn is_refusal(error: &lapin::Error) -> bool {
    let ErrorKind::ProtocolError(e) = error.kind() else {
        return false;
    };
    matches!(
        e.kind(),
        AMQPErrorKind::Soft(
            AMQPSoftError::NOTFOUND
                | AMQPSoftError::ACCESSREFUSED
                | AMQPSoftError::PRECONDITIONFAILED
        ) | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH)
    )
}

#[cfg(test)]
mod tests {
    use lapin::protocol::AMQPError;

    use super::*;

    fn protocol(kind: AMQPErrorKind) -> lapin::Error {
        ErrorKind::ProtocolError(AMQPError::new(kind, "from the broker".into())).into()
    }

    #[test]
    fn refusals_are_not_retryable_and_the_rest_is() {
        let missing = protocol(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND));
        assert!(is_not_found(&missing));
        assert!(!classify("checking", &missing).is_retryable());
        let denied = protocol(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED));
        assert!(
            matches!(classify("connecting", &denied), SourceError::Rejected(t) if t.starts_with("connecting: "))
        );
        let forced = protocol(AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED));
        assert!(classify("consuming", &forced).is_retryable());
        let heartbeat: lapin::Error = ErrorKind::MissingHeartbeatError.into();
        assert!(!is_not_found(&heartbeat));
        assert!(classify("consuming", &heartbeat).is_retryable());
    }
}
