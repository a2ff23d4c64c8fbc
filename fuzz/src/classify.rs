//! The app's reply: status ranges as a policy writes them (`404`, `"4xx"`, `"400-499"`),
//! `Retry-After` values, and the classifier over a response with any headers and body.
//!
//! Input: NUL-separated fields: a status range, a `Retry-After` value, the response status,
//! the body, then response headers `name=value`.
//!
//! Properties: no panic; a range that parses is within 100..=599 and prints as text that
//! parses to the same range; a delay in whole seconds is that many seconds; the verdict's
//! delay is what `parse_retry_after` makes of the reply's header, and the action is the one
//! an `outrigger-action` header names, else the matching rule's.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use outrigger_core::{Action, Reply, Response};
use outrigger_policies::classify::ACTION_HEADER;
use outrigger_policies::{classify::parse_retry_after, Classifier, Matched, Rule, StatusRange};

use super::input::{fields, text};

/// Runs one input.
pub fn run(data: &[u8]) {
    let parts = fields(data);
    let field = |i: usize| text(parts.get(i).copied().unwrap_or_default());
    // A fixed clock, so a crash found with an HTTP-date replays the same way later.
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    let range = field(0).parse::<StatusRange>().ok();
    if let Some(range) = range {
        assert!(100 <= range.lo() && range.lo() <= range.hi() && range.hi() <= 599);
        assert!(range.contains(range.lo()) && range.contains(range.hi()));
        assert_eq!(range.to_string().parse(), Ok(range));
    }

    let retry_after = field(1);
    let delay = parse_retry_after(&retry_after, now);
    let digits = retry_after.trim();
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let secs = digits.parse().unwrap_or(u64::MAX);
        assert_eq!(delay, Some(Duration::from_secs(secs)));
    }

    let status = field(2).trim().parse().unwrap_or(200);
    let mut headers: Vec<(String, String)> = vec![("retry-after".into(), retry_after)];
    headers.extend(parts.iter().skip(4).map(|f| {
        let f = text(f);
        match f.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), v.to_owned()),
            None => (f.to_ascii_lowercase(), String::new()),
        }
    }));
    let reply = Reply::Response(Response {
        status,
        headers,
        body_excerpt: Bytes::from(field(3)),
    });
    let rules: Vec<Rule> = range
        .map(|r| Rule {
            status: vec![r],
            ..Rule::new(Action::Drop)
        })
        .into_iter()
        .collect();
    let verdict = Classifier::new(rules).classify_at(&reply, now);
    let Reply::Response(response) = &reply else {
        unreachable!("built as a response")
    };
    assert_eq!(verdict.retry_after, delay);
    let named = response
        .header(ACTION_HEADER)
        .and_then(|v| v.parse::<Action>().ok());
    match (named, verdict.matched) {
        (Some(action), Matched::ActionHeader) => assert_eq!(verdict.action, action),
        (None, Matched::Rule(0)) => assert_eq!(verdict.action, Action::Drop),
        (None, Matched::Default) => {
            assert!(range.is_none_or(|r| !r.contains(status)));
        }
        (named, matched) => panic!("header {named:?}, but decided by {matched:?}"),
    }
}
