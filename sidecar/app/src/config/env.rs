//! Environment overrides: `OUTRIGGER__RETRY__MAX_ATTEMPTS=8` sets `retry.max_attempts = 8`.
//!
//! Each override is parsed as a tiny TOML document of its own, placed after the file's text
//! (a padding comment shifts its offsets), so the values it inserts carry spans like the
//! file's do: errors about them are found by the same span lookups, and an offset past the
//! file says which variable to blame.

use std::ops::Range;

use toml_edit::{Document, Item, Key, Value};

use super::doc::{KeyPath, Seg};

/// The prefix of every override; the rest of the name is the key path, `__` between keys.
pub const PREFIX: &str = "OUTRIGGER__";

/// The text of the applied overrides and which variable each offset belongs to.
#[derive(Debug, Default)]
pub(crate) struct EnvText {
    /// Offset of `text` in the combined file-then-overrides address space.
    base: usize,
    text: String,
    vars: Vec<(Range<usize>, String)>,
    /// For a value that parsed as TOML but not as a string: its span and the same text as a
    /// string, tried when the setting turns out to want a string.
    fallbacks: Vec<(Range<usize>, Item)>,
}

/// An override that could not be applied.
#[derive(Debug)]
pub(crate) struct EnvProblem {
    pub(crate) var: String,
    pub(crate) path: String,
    pub(crate) message: String,
    pub(crate) value: Option<String>,
}

impl EnvText {
    /// The variable whose override text covers `offset`, if any.
    pub(crate) fn var_at(&self, offset: usize) -> Option<&str> {
        self.vars
            .iter()
            .find(|(range, _)| range.contains(&offset))
            .map(|(_, var)| var.as_str())
    }

    /// The override text at `span`, if it is in an override.
    pub(crate) fn text(&self, span: &Range<usize>) -> Option<&str> {
        let start = span.start.checked_sub(self.base)?;
        self.text.get(start..span.end.checked_sub(self.base)?)
    }

    /// The string form of the override value at `span`, if it was read as another type.
    pub(crate) fn fallback(&self, span: &Range<usize>) -> Option<&Item> {
        self.fallbacks
            .iter()
            .find(|(s, _)| s == span)
            .map(|(_, item)| item)
    }
}

/// Applies every `OUTRIGGER__*` variable to `root`, in name order (the environment has none).
pub(crate) fn apply(
    root: &mut Item,
    file_len: usize,
    vars: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<EnvProblem>,
) -> EnvText {
    // Two bytes past the file, so no file span (not even one at its end) reaches an override.
    let mut env = EnvText {
        base: file_len + 2,
        ..EnvText::default()
    };
    let mut vars: Vec<_> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let Some(path) = key_path(&var) else {
            problems.push(EnvProblem {
                var,
                path: String::new(),
                message: format!(
                    "not a valid override name: write {PREFIX}SECTION__KEY, with `__` between keys"
                ),
                value: None,
            });
            continue;
        };
        let dotted = path
            .iter()
            .map(|k| Key::new(k.as_str()).to_string())
            .collect::<Vec<_>>();
        let dotted = dotted.join(".");
        let as_string = Value::from(raw.as_str()).to_string();
        // TOML if it parses as a value (`8`, `true`, `["a"]`, `"quoted"`), else a plain string.
        let typed = raw.trim().parse::<Value>().ok();
        let retypable = typed.as_ref().is_some_and(|v| !v.is_str());
        let written = typed.map_or_else(|| as_string.clone(), |_| raw.trim().to_owned());
        let start = env.base + env.text.len();
        let parsed = parse_at(start, &format!("{dotted} = {written}\n"))
            // It parsed alone but not in place (a trailing comment, say): take it as a string.
            .or_else(|| parse_at(start, &format!("{dotted} = {as_string}\n")));
        let Some((parsed, line)) = parsed else {
            // Not expected: the keys are quoted and the value is valid TOML either way.
            problems.push(EnvProblem {
                var,
                path: path_of(&path).to_string(),
                message: "cannot be read as a TOML value".into(),
                value: Some(as_string),
            });
            continue;
        };
        env.text.push_str(&line);
        if retypable {
            let string_line = format!("{dotted} = {as_string}\n");
            if let Some((fallback, line)) = parse_at(env.base + env.text.len(), &string_line) {
                if let Some(span) = leaf(&parsed).span() {
                    env.fallbacks.push((span, leaf(&fallback).clone()));
                }
                env.text.push_str(&line);
            }
        }
        env.vars
            .push((start..env.base + env.text.len(), var.clone()));
        if let Err(conflict) = merge(root, parsed, &mut Vec::new()) {
            problems.push(EnvProblem {
                var,
                path: path_of(&path).to_string(),
                message: format!(
                    "cannot override: `{conflict}` is not a table here; set `{conflict}` as a whole"
                ),
                value: Some(written),
            });
        }
    }
    env
}

/// `OUTRIGGER__DEDUP__REDIS__URL` → `["dedup", "redis", "url"]`.
fn key_path(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix(PREFIX)?;
    let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    keys.iter().all(|k| !k.is_empty()).then_some(keys)
}

fn path_of(keys: &[String]) -> KeyPath {
    KeyPath(keys.iter().map(|k| Seg::Key(k.clone())).collect())
}

/// Parses one override line so that its spans start at `offset` (at least 2).
fn parse_at(offset: usize, line: &str) -> Option<(Item, String)> {
    // A comment line `offset` bytes long puts the override's spans where `EnvText` says.
    let padding = format!("#{}\n", " ".repeat(offset.saturating_sub(2)));
    let doc = Document::parse(format!("{padding}{line}")).ok()?;
    Some((doc.into_item(), line.to_owned()))
}

/// The value at the end of a one-line override document.
fn leaf(item: &Item) -> &Item {
    let mut item = item;
    while let Some(table) = item.as_table_like() {
        match table.iter().next() {
            Some((_, child)) => item = child,
            None => break,
        }
    }
    item
}

/// Merges the one-path tree `from` into `into`, replacing the leaf. Fails with the path of a
/// non-table that stands where the path needs a table.
fn merge(into: &mut Item, from: Item, at: &mut Vec<String>) -> Result<(), String> {
    let Some(from_table) = from.as_table_like() else {
        return Ok(());
    };
    let Some((name, _)) = from_table.iter().next() else {
        return Ok(());
    };
    let (key, child) = from_table
        .get_key_value(name)
        .expect("the key was just listed");
    let (key, child) = (key.clone(), child.clone());
    at.push(name.to_owned());
    let descend = child.is_table() && into.as_table_like().and_then(|t| t.get(name)).is_some();
    if descend {
        let existing = into
            .as_table_like_mut()
            .and_then(|t| t.get_mut(name))
            .expect("the key was just found");
        if !existing.is_table_like() {
            return Err(path_of(at).to_string());
        }
        return merge(
            existing,
            Item::Table(child.into_table().expect("checked")),
            at,
        );
    }
    match into {
        Item::Table(table) => {
            table.insert_formatted(&key, child);
        }
        Item::Value(Value::InlineTable(table)) => {
            let value = child.into_value().map_err(|_| path_of(at).to_string())?;
            table.insert_formatted(&key, value);
        }
        _ => return Err(path_of(&at[..at.len() - 1]).to_string()),
    }
    Ok(())
}
