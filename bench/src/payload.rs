//! The message body: sequence number and publish instant up front, filler to the wanted size.

use std::time::Instant;

use rand::distr::{Alphanumeric, SampleString};

/// Bytes at the start of each body: the sequence number, then the publish time (both u64 LE).
pub const HEADER_LEN: usize = 16;

/// The shared time base of publisher and stub app (all in one process).
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the clock started.
    pub fn now_ns(self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A reusable body of `size` bytes; [`Body::stamp`] fills in each message's header.
pub struct Body(Vec<u8>);

impl Body {
    /// Random alphanumeric filler, so nothing on the way gets an easy compression win.
    pub fn new(size: usize) -> Self {
        let mut bytes = Alphanumeric
            .sample_string(&mut rand::rng(), size.max(HEADER_LEN))
            .into_bytes();
        bytes.truncate(size.max(HEADER_LEN));
        Self(bytes)
    }

    /// The body of message `seq` published at `sent_ns`.
    pub fn stamp(&mut self, seq: u64, sent_ns: u64) -> &[u8] {
        self.0[..8].copy_from_slice(&seq.to_le_bytes());
        self.0[8..HEADER_LEN].copy_from_slice(&sent_ns.to_le_bytes());
        &self.0
    }
}

/// The sequence number and publish time at the start of `body`.
pub fn decode(body: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(body.get(8..HEADER_LEN)?.try_into().ok()?);
    Some((seq, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_body_decodes_and_keeps_its_size() {
        let mut body = Body::new(1024);
        let bytes = body.stamp(42, 7_000_000);
        assert_eq!(bytes.len(), 1024);
        assert_eq!(decode(bytes), Some((42, 7_000_000)));
        assert_eq!(decode(&bytes[..10]), None);
    }
}
