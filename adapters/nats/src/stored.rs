//! A message as its stream stored it, read with `STREAM.MSG.GET`: subject, sequence, time,
//! payload and every header, repeated values included.
//!
//! async-nats' own raw get keeps only the last value of a repeated header, which would lose
//! the others from a dead letter read back; this reads the stored header block itself.

use std::time::SystemTime;

use async_nats::Client;
use bytes::Bytes;
use outrigger_core::{Header, SourceError};
use serde::Deserialize;

use crate::connection::REQUEST_TIMEOUT;

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The subject it was published on.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// When the stream stored it.
    pub time: Option<SystemTime>,
    /// Its headers, sorted by name, repeated values in the order stored.
    pub headers: Vec<Header>,
    /// Its payload.
    pub payload: Bytes,
}

#[derive(Deserialize)]
struct Response {
    message: Option<Raw>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct Raw {
    subject: String,
    seq: u64,
    #[serde(default)]
    hdrs: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// JetStream's "no message found".
const NO_MESSAGE_FOUND: u64 = 10037;

/// The first message of `stream` at or after `sequence` on a subject matching `subject`;
/// `None` when there is none.
pub async fn first_at_or_after(
    client: &Client,
    stream: &str,
    sequence: u64,
    subject: &str,
) -> Result<Option<StoredMessage>, SourceError> {
    let body = serde_json::json!({ "seq": sequence, "next_by_subj": subject });
    let request = async_nats::Request::new()
        .payload(Bytes::from(body.to_string()))
        .timeout(Some(REQUEST_TIMEOUT));
    let answer = client
        .send_request(format!("$JS.API.STREAM.MSG.GET.{stream}"), request)
        .await
        .map_err(|e| SourceError::Connection(format!("reading stream {stream:?}: {e}")))?;
    let response: Response = serde_json::from_slice(&answer.payload).map_err(|e| {
        SourceError::Connection(format!("reading stream {stream:?}: unexpected answer: {e}"))
    })?;
    if let Some(error) = response.error {
        if error.err_code == NO_MESSAGE_FOUND {
            return Ok(None);
        }
        return Err(SourceError::Rejected(format!(
            "reading stream {stream:?}: {} (error code {})",
            error.description, error.err_code
        )));
    }
    let Some(raw) = response.message else {
        return Ok(None);
    };
    let broken = |what: &str| {
        SourceError::Connection(format!(
            "reading stream {stream:?}: message {} has a broken {what}",
            raw.seq
        ))
    };
    let headers = match &raw.hdrs {
        Some(encoded) => {
            let block = decode_base64(encoded).ok_or_else(|| broken("header block"))?;
            parse_headers(&block).ok_or_else(|| broken("header block"))?
        }
        None => Vec::new(),
    };
    let payload = match &raw.data {
        Some(encoded) => Bytes::from(decode_base64(encoded).ok_or_else(|| broken("payload"))?),
        None => Bytes::new(),
    };
    Ok(Some(StoredMessage {
        time: raw
            .time
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
        subject: raw.subject,
        sequence: raw.seq,
        headers,
        payload,
    }))
}

/// A `NATS/1.0` header block: every `name: value` line, continuation lines joined, values
/// trimmed as the client trims them; sorted by name, repeated values in their order.
pub(crate) fn parse_headers(block: &[u8]) -> Option<Vec<Header>> {
    let text = std::str::from_utf8(block).ok()?;
    let mut lines = text.split("\r\n").peekable();
    if !lines.next()?.starts_with("NATS/1.0") {
        return None;
    }
    let mut out: Vec<Header> = Vec::new();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        let mut value = value.trim().to_owned();
        while let Some(more) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push(' ');
            value.push_str(more.trim());
        }
        out.push(Header::new(name.to_owned(), Bytes::from(value)));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some(out)
}

/// Standard base64 with padding, as the JetStream API writes it.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let body = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(&bytes);
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..=take]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("/w==").unwrap(), [0xff]);
        assert!(decode_base64("a$==").is_none());
    }

    #[test]
    fn a_header_block_keeps_repeated_values() {
        let block = b"NATS/1.0\r\ntrace: t-1\r\nmulti: one\r\nmulti:  two \r\nempty:\r\n\r\n";
        let headers = parse_headers(block).unwrap();
        let shown: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|h| (h.name.as_str(), &h.value[..]))
            .collect();
        assert_eq!(
            shown,
            [
                ("empty", &b""[..]),
                ("multi", b"one"),
                ("multi", b"two"),
                ("trace", b"t-1")
            ]
        );
        assert!(parse_headers(b"HTTP/1.1\r\n").is_none());
    }
}
