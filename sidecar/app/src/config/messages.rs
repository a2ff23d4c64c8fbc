//! serde's and toml_edit's error messages, reworded for someone editing a TOML file.

use super::doc::{KeyPath, Seg};

/// The field of serde's "missing field `x`".
pub(crate) fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// Rewrites serde's and toml_edit's messages in the words of a TOML file; `at` is where the
/// error was found.
pub(crate) fn humanize(message: &str, at: Option<&KeyPath>) -> String {
    // `[source.kafka]`: the key under [source] names the broker.
    let source_kind = at.is_some_and(|p| p.0.len() == 2 && p.0[0] == Seg::Key("source".to_owned()));
    if let Some(field) = missing_field(message) {
        return format!("missing required key `{field}`");
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let what = if source_kind { "source" } else { "value" };
        return format!("unknown {what} {rest}");
    }
    let one_source = format!(
        "configure exactly one of {}",
        crate::brokers::SourceConfig::tables()
    );
    match message {
        "wanted exactly 1 element, more than 1 element" => {
            return format!("{one_source}, not several");
        }
        "wanted exactly 1 element, found 0 elements" => return one_source,
        "wanted string or table" => return format!("expected a table: {one_source}"),
        _ => {}
    }
    for (prefix, out_of_range) in [("invalid type: ", false), ("invalid value: ", true)] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((found, expected)) = rest.split_once(", expected ") else {
            continue;
        };
        let kind = found.split(' ').next().unwrap_or(found);
        let expected = human_expected(expected);
        return if out_of_range && matches!(kind, "integer" | "floating") {
            format!("out of range: expected {expected}")
        } else if out_of_range {
            format!("invalid value: expected {expected}")
        } else {
            format!("expected {expected}, found {}", article(kind))
        };
    }
    message.to_owned()
}

/// serde's names for Rust types, as a TOML user would say them.
fn human_expected(expected: &str) -> String {
    let range = |max: u64| format!("a whole number from 0 to {max}");
    match expected {
        "u8" => range(u8::MAX.into()),
        "u16" => range(u16::MAX.into()),
        "u32" => range(u32::MAX.into()),
        "u64" | "usize" => range(u64::MAX),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        e if e.starts_with("struct ") || e.starts_with("enum ") || e == "a map" => "a table".into(),
        e => e.to_owned(),
    }
}

fn article(kind: &str) -> String {
    match kind {
        "integer" => "an integer".into(),
        "floating" => "a number with a fraction".into(),
        "string" => "a string".into(),
        "boolean" => "a boolean".into(),
        "sequence" => "an array".into(),
        "map" => "a table".into(),
        other => other.to_owned(),
    }
}
