//! Dead letters as people and scripts read them: a table, JSON lines, one record in full.
//!
//! Nothing from a record reaches a terminal unescaped: payloads, headers and response
//! excerpts are the producer's and the app's bytes, and a stray escape sequence in them must
//! not rewrite the operator's screen. Binary payloads are shown as Rust-style escaped bytes
//! (`\xff\x00`), which read back unambiguously.

use std::fmt::Write as _;
use std::time::SystemTime;

use outrigger_core::{DeadLetterRecord, HandledAction};
use serde_json::{json, Map, Value};

/// Widest reason and key shown in the table; `show` prints them whole.
const REASON_WIDTH: usize = 60;
const KEY_WIDTH: usize = 32;

/// The table of `dlq list`, a header line and one line per record. A `HANDLED` column says
/// how each record was handled when any was (Kafka's `list --all`).
pub fn table(records: &[DeadLetterRecord]) -> String {
    let handled = records.iter().any(|r| r.handled.is_some());
    let mut header = vec!["ID", "TIME", "SOURCE", "KEY", "STATUS", "ATTEMPTS"];
    if handled {
        header.push("HANDLED");
    }
    header.push("REASON");
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![
                r.id.clone(),
                seconds(r.time()),
                r.origin.as_ref().map_or("-".into(), ToString::to_string),
                clip(&key(r), KEY_WIDTH),
                r.context.last_status.map_or("-".into(), |s| s.to_string()),
                r.context.attempts.to_string(),
            ];
            if handled {
                row.push(
                    r.handled
                        .as_ref()
                        .map_or("-".into(), |h| action(h.action).into()),
                );
            }
            row.push(clip(&one_line(r.context.reason.as_bytes()), REASON_WIDTH));
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        for (i, (cell, w)) in cells.iter().zip(widths.iter().copied()).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// One record's summary as a JSON object: a line of `dlq list --json`, an item of the API's
/// list.
pub fn summary(r: &DeadLetterRecord) -> Value {
    json!({
        "id": r.id,
        "time": millis(r.time()),
        "first_failure": millis(r.context.first_failure),
        "source": r.origin.as_ref().map(ToString::to_string),
        "key": r.key(),
        "reason": r.context.reason,
        "class": r.context.class,
        "status": r.context.last_status,
        "attempts": r.context.attempts,
        "resubmissions": r.resubmissions,
        "position": r.message.coordinates.to_string(),
        "payload_bytes": r.message.payload.len(),
        "handled": r.handled.as_ref().map(|h| json!({
            "action": action(h.action),
            "at": millis(h.at),
            "by": h.by,
        })),
    })
}

/// One record in full as JSON: the summary plus headers, response excerpt and payload.
///
/// `payload` is always a string, so that it is exactly the producer's (a parsed and
/// re-encoded JSON payload would lose its key order and number spelling): the text when it
/// is UTF-8, escaped bytes when not. `payload_format` says which: `json` (text that parses as
/// JSON), `text` or `binary`.
pub fn detail(r: &DeadLetterRecord) -> Value {
    let mut out = summary(r);
    let payload = &r.message.payload;
    let (payload, format) = match std::str::from_utf8(payload) {
        Ok(text) if is_json(payload) => (text.to_owned(), "json"),
        Ok(text) => (text.to_owned(), "text"),
        Err(_) => (escaped(payload), "binary"),
    };
    let headers: Vec<Value> = r
        .message
        .headers
        .iter()
        .map(|h| json!({ "name": h.name, "value": text_or_escaped(&h.value) }))
        .collect();
    let extra = json!({
        "headers": headers,
        "response": text_or_escaped(&r.context.response_excerpt),
        "content_type": r.message.content_type,
        "message_id": r.message.message_id,
        "payload": payload,
        "payload_format": format,
    });
    if let (Value::Object(out), Value::Object(extra)) = (&mut out, extra) {
        out.extend::<Map<String, Value>>(extra);
    }
    out
}

/// One record in full for a terminal: the failure context, the headers, then the payload
/// (pretty JSON, text, or escaped bytes).
pub fn show(r: &DeadLetterRecord) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<15}{value}");
    };
    field("id", r.id.clone());
    field("position", r.message.coordinates.to_string());
    field(
        "source",
        r.origin.as_ref().map_or("-".into(), ToString::to_string),
    );
    field("key", key(r));
    field("reason", one_line(r.context.reason.as_bytes()));
    field("class", r.context.class.clone());
    field(
        "status",
        r.context.last_status.map_or("-".into(), |s| s.to_string()),
    );
    field("attempts", r.context.attempts.to_string());
    field("first failure", millis(r.context.first_failure));
    field("last failure", millis(r.context.last_failure));
    field("resubmitted", format!("{} time(s) before", r.resubmissions));
    if let Some(h) = &r.handled {
        field(
            "handled",
            format!(
                "{} by {} at {}",
                action(h.action),
                one_line(h.by.as_bytes()),
                millis(h.at)
            ),
        );
    }
    if !r.context.response_excerpt.is_empty() {
        field("response", one_line(&r.context.response_excerpt));
    }
    out.push_str("\nheaders\n");
    for h in &r.message.headers {
        let _ = writeln!(
            out,
            "  {}: {}",
            one_line(h.name.as_bytes()),
            one_line(&h.value)
        );
    }
    let payload = &r.message.payload;
    let kind = r
        .message
        .content_type
        .as_deref()
        .unwrap_or("no content type");
    let _ = writeln!(
        out,
        "\npayload ({} bytes, {})",
        payload.len(),
        one_line(kind.as_bytes())
    );
    match std::str::from_utf8(payload) {
        Ok(text) if is_json(payload) => out.push_str(&block(&pretty_json(text))),
        Ok(text) => out.push_str(&block(text)),
        Err(_) => {
            out.push_str("(not UTF-8; escaped)\n");
            out.push_str(&escaped(payload));
        }
    }
    out.push('\n');
    out
}

/// How a record was handled, as a word.
fn action(action: HandledAction) -> &'static str {
    match action {
        HandledAction::Resubmitted => "resubmitted",
        HandledAction::Purged => "purged",
    }
}

fn is_json(payload: &[u8]) -> bool {
    !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// Valid JSON text indented two spaces a level, every token kept as written: keys in their
/// order, numbers and escapes spelled as the producer spelled them.
fn pretty_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escape = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escape => escape = false,
                '\\' => escape = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Skip to the next token to tell an empty container, kept on one line.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// A record's idempotency key on one line, `-` when it has none.
pub fn key(r: &DeadLetterRecord) -> String {
    r.key().map_or("-".into(), |k| one_line(k.as_bytes()))
}

/// Text on one line: control characters (newlines included) escaped; invalid UTF-8 as `\xNN`.
pub fn one_line(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
        Err(_) => escaped(bytes),
    }
}

/// Multi-line text: newlines and tabs kept, every other control character escaped.
fn block(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Bytes as ASCII with everything else `\xNN` (and `\n`, `\\`, ...).
fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// For JSON output, where the encoder escapes control characters itself.
fn text_or_escaped(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => escaped(bytes),
    }
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

fn seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn millis(t: SystemTime) -> String {
    outrigger_core::dead_letter::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use outrigger_core::{Coordinates, Message};

    use super::*;

    fn record(payload: &'static [u8]) -> DeadLetterRecord {
        let m = Message::new(
            Bytes::from_static(payload),
            Coordinates::Amqp {
                queue: "orders.dlq".into(),
                delivery_tag: 1,
            },
        );
        DeadLetterRecord::from_message("abc".into(), m)
    }

    #[test]
    fn json_payloads_are_pretty_and_binary_ones_escaped() {
        let shown = show(&record(br#"{"id":1,"amount":-5}"#));
        assert!(
            shown.contains("{\n  \"id\": 1,\n  \"amount\": -5\n}"),
            "{shown}"
        );
        let shown = show(&record(b"\xff\x00\x1b[2J"));
        assert!(shown.contains(r"\xff\x00\x1b[2J"), "{shown}");
        assert!(
            !shown.contains('\x1b'),
            "no raw escape reaches the terminal"
        );
        let d = detail(&record(b"\xff\x00"));
        assert_eq!(d["payload"], r"\xff\x00");
        assert_eq!(d["payload_format"], "binary");
        let d = detail(&record(br#"{"b":1,"a":2}"#));
        assert_eq!(
            (&d["payload"], &d["payload_format"]),
            (&json!(r#"{"b":1,"a":2}"#), &json!("json"))
        );
    }

    #[test]
    fn pretty_json_keeps_keys_numbers_and_strings_as_written() {
        let text = r#"{"z":1.50,"a":[ ],"s":"x,\"{y}:","n":{"b":[1,2e3]}}"#;
        assert_eq!(
            pretty_json(text),
            "{\n  \"z\": 1.50,\n  \"a\": [],\n  \"s\": \"x,\\\"{y}:\",\n  \"n\": {\n    \"b\": [\n      1,\n      2e3\n    ]\n  }\n}"
        );
        assert_eq!(pretty_json(" 42 "), "42");
    }

    #[test]
    fn text_is_kept_on_one_line_without_control_characters() {
        assert_eq!(one_line(b"a\nb\x1b"), r"a\nb\u{1b}");
        assert_eq!(block("a\nb\x07"), "a\nb\\u{7}");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn handled_records_get_a_column_of_their_own() {
        assert!(!table(&[record(b"{}")]).contains("HANDLED"));
        let mut purged = record(b"{}");
        purged.handled = Some(outrigger_core::Handled {
            action: HandledAction::Purged,
            at: std::time::UNIX_EPOCH,
            by: "ops".into(),
        });
        let t = table(&[record(b"{}"), purged.clone()]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("ATTEMPTS  HANDLED  REASON"), "{t}");
        assert!(lines[1].contains(" -  "), "{t}");
        assert!(lines[2].contains(" purged  "), "{t}");
        assert_eq!(summary(&purged)["handled"]["action"], "purged");
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let t = table(&[record(b"{}")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID   TIME"), "{t}");
        assert!(lines[1].starts_with("abc  1970-01-01T00:00:00Z"), "{t}");
    }
}
