//! Loading a policy: TOML text → document → environment overrides → typed config → checks.
//!
//! serde stops at the first error, and a user fixing a policy wants them all. So the typed
//! step runs in rounds: each failed round records its error (located by span in the document,
//! which knows the key path and the text as written), removes the offending entry, and tries
//! again. Errors that only follow from an earlier removal (a required key now missing) are
//! not reported twice. Then the pure checks of `validate` run on whatever did deserialize.

use std::ops::Range;
use std::path::Path;

use toml_edit::{Document, DocumentMut, Item};

use super::doc::{self, KeyPath, Part};
use super::env::{self, EnvText};
use super::errors::{ConfigError, ConfigErrors};
use super::messages::{humanize, missing_field};
use super::validate;
use super::Config;

/// More rounds than any policy has mistakes; a safety net against a loop that makes no progress.
const MAX_ROUNDS: usize = 500;

/// Longest value quoted in an error before it is cut.
const MAX_VALUE_CHARS: usize = 80;

/// Loads and checks the policy at `path`, with `env` (normally `std::env::vars()`) supplying
/// `OUTRIGGER__SECTION__KEY` overrides. Reads the file and nothing else: no connection is
/// opened, no port bound.
pub fn load_file(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, &origin, env),
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError {
                origin,
                location: None,
                env_var: None,
                path: String::new(),
                message: format!("cannot read the policy: {e}"),
                value: None,
            }],
        }),
    }
}

/// Loads and checks a policy from `text`; `origin` names it in errors (a path, usually).
pub fn load_str(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let document = match Document::parse(text.to_owned()) {
        Ok(document) => document,
        Err(e) => {
            // Past a syntax error the parser's view of the file cannot be trusted: stop here.
            let location = e.span().map(|s| line_column(text, s.start));
            return Err(ConfigErrors {
                errors: vec![ConfigError {
                    origin: origin.to_owned(),
                    location,
                    env_var: None,
                    path: String::new(),
                    message: format!("invalid TOML: {}", e.message()),
                    value: None,
                }],
            });
        }
    };
    let mut working = document.into_item();
    let mut env_problems = Vec::new();
    let env = env::apply(&mut working, text.len(), env, &mut env_problems);
    let mut loader = Loader {
        origin,
        text,
        original: working.clone(),
        env,
        errors: Vec::new(),
        removed: Vec::new(),
    };
    for p in env_problems {
        loader.errors.push(ConfigError {
            origin: origin.to_owned(),
            location: None,
            env_var: Some(p.var),
            path: p.path,
            message: p.message,
            value: p.value,
        });
    }
    let config = loader.deserialize(&mut working);
    if let Some(config) = &config {
        loader.check(config, &working);
    }
    let mut errors = loader.errors;
    // File order first, then what has no place in the file.
    errors.sort_by_key(|e| (e.location.is_none(), e.location));
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ if errors.is_empty() => Err(ConfigErrors {
            // Every round's error followed from an earlier one, yet no round succeeded: not
            // expected, but a policy is never accepted unchecked.
            errors: vec![ConfigError {
                origin: origin.to_owned(),
                location: None,
                env_var: None,
                path: String::new(),
                message: "the policy could not be checked; simplify it and try again".into(),
                value: None,
            }],
        }),
        _ => Err(ConfigErrors { errors }),
    }
}

struct Loader<'a> {
    origin: &'a str,
    text: &'a str,
    /// The document after overrides, before any removal: key paths are reported against it.
    original: Item,
    env: EnvText,
    errors: Vec<ConfigError>,
    /// Settings taken out after an error; what follows from their absence is not reported.
    removed: Vec<KeyPath>,
}

impl Loader<'_> {
    /// Deserializes `working`, recording and removing one offending entry per failed round.
    fn deserialize(&mut self, working: &mut Item) -> Option<Config> {
        for _ in 0..MAX_ROUNDS {
            let table = working.as_table()?.clone();
            match toml_edit::de::from_document::<Config>(DocumentMut::from(table)) {
                Ok(config) => return Some(config),
                Err(e) => {
                    if !self.absorb(working, e.message(), e.span(), &e.to_string()) {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Records one serde error and edits `working` so the next round gets further. Returns
    /// false when no edit can help.
    fn absorb(
        &mut self,
        working: &mut Item,
        message: &str,
        span: Option<Range<usize>>,
        display: &str,
    ) -> bool {
        let missing = missing_field(message);
        if let Some(span) = &span {
            // An override like OUTRIGGER__ADMIN__TOKEN=1234 reads as a number; the setting
            // wants a string, so it gets the string.
            if message.starts_with("invalid type") {
                if let Some(fallback) = self.env.fallback(span).cloned() {
                    doc::replace_at(&mut self.original, span, fallback.clone());
                    return doc::replace_at(working, span, fallback);
                }
            }
        }
        let found = span.as_ref().and_then(|s| doc::locate(&self.original, s));
        let Some(found) = found else {
            return match missing {
                // Only a top-level table has no span to point at: `[source]` is missing.
                Some("source") => {
                    self.missing_source(working);
                    true
                }
                _ => {
                    let path = keys_from_display(display);
                    self.record(path, span, humanize(message, None), None);
                    false
                }
            };
        };
        let span = span.expect("found by span");
        let (path, value) = match (missing, found.part) {
            (Some(field), _) => (found.path.key(field), None),
            (None, Part::Key { value }) => (found.path.clone(), value.map(|(s, e)| s..e)),
            (None, Part::Value) => (found.path.clone(), Some(span.clone())),
            (None, Part::Table) => (found.path.clone(), None),
        };
        if !self.removed.iter().any(|r| path.contains(r)) {
            let value = value.and_then(|v| self.value_text(&v));
            let message = humanize(message, Some(&found.path));
            self.record(path.to_string(), Some(span.clone()), message, value);
        }
        self.removed.push(path);
        self.removed.push(found.path);
        doc::remove_at(working, &span)
    }

    /// `[source]` is required and has no default; check the rest against a stand-in.
    fn missing_source(&mut self, working: &mut Item) {
        let source = KeyPath::parse("source");
        if !self.removed.iter().any(|r| source.contains(r)) {
            self.record(
                "source".into(),
                None,
                format!(
                    "missing [source]: configure exactly one of {}",
                    super::SourceConfig::tables()
                ),
                None,
            );
        }
        self.removed.push(source);
        let stand_in: toml_edit::Value = "{ memory = {} }".parse().expect("valid TOML");
        if let Some(root) = working.as_table_mut() {
            root.insert("source", Item::Value(stand_in));
        }
    }

    /// Runs the semantic checks and maps each problem to where its setting was written.
    fn check(&mut self, config: &Config, working: &Item) {
        for issue in validate::validate(config) {
            // Paths as the user wrote them: array indices may have shifted after a removal.
            let written: Vec<_> = issue
                .paths
                .iter()
                .map(|p| self.as_written(working, p))
                .collect();
            let follows_removal = written
                .iter()
                .any(|(path, _)| self.removed.iter().any(|r| r.overlaps(path)));
            if follows_removal {
                continue;
            }
            // Blame the first setting the user wrote; report the first one if none was.
            let blamed = written.iter().position(|(_, w)| w.is_some()).unwrap_or(0);
            let (path, written) = written.into_iter().nth(blamed).expect("issues name a path");
            let value = written
                .as_ref()
                .filter(|(_, spans)| spans.is_value)
                .and_then(|(_, spans)| spans.item.as_ref())
                .and_then(|span| self.value_text(span));
            let span = written.map(|(anchor, _)| anchor);
            self.record(path.to_string(), span, issue.message, value);
        }
    }

    /// `path` (in the deserialized config) as written in the original document, with where
    /// it was written, if it was.
    fn as_written(
        &self,
        working: &Item,
        path: &KeyPath,
    ) -> (KeyPath, Option<(Range<usize>, doc::Spans)>) {
        let written = doc::spans_at(working, path).and_then(|spans| {
            let anchor = spans.key.clone().or(spans.item.clone())?;
            Some((anchor, spans))
        });
        let original = written
            .as_ref()
            .and_then(|(anchor, _)| doc::locate(&self.original, anchor))
            .map_or_else(|| path.clone(), |found| found.path);
        (original, written)
    }

    fn record(
        &mut self,
        path: String,
        span: Option<Range<usize>>,
        message: String,
        value: Option<String>,
    ) {
        let (location, env_var) = match &span {
            Some(span) if span.start <= self.text.len() => {
                (Some(line_column(self.text, span.start)), None)
            }
            Some(span) => (None, self.env.var_at(span.start).map(str::to_owned)),
            None => (None, None),
        };
        let value = value.and_then(|v| shown(&path, v));
        self.errors.push(ConfigError {
            origin: self.origin.to_owned(),
            location,
            env_var,
            path,
            message,
            value,
        });
    }

    /// The text at `span`, from the file or an override, shortened to one line.
    fn value_text(&self, span: &Range<usize>) -> Option<String> {
        let text = self
            .text
            .get(span.clone())
            .or_else(|| self.env.text(span))?;
        let text = text.trim();
        let first = text.lines().next().unwrap_or_default();
        if first.len() == text.len() && first.chars().count() <= MAX_VALUE_CHARS {
            return Some(text.to_owned());
        }
        let cut: String = first.chars().take(MAX_VALUE_CHARS - 3).collect();
        Some(format!("{cut}…"))
    }
}

/// A value as an error may quote it: a password or token not at all, a URL without the
/// credentials it may carry. Errors are printed and logged.
fn shown(path: &str, value: String) -> Option<String> {
    // The last key, quoted or not (`properties."sasl.password"` ends in `password"`).
    let key = path.trim_end_matches('"');
    if key.ends_with("password") || key.ends_with("token") {
        return None;
    }
    match (value.find("://"), value.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            Some(format!("{}://***{}", &value[..scheme_end], &value[at..]))
        }
        _ => Some(value),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// toml_edit prints the key path of an error it could not place as "in `a.b`".
fn keys_from_display(display: &str) -> String {
    display
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
        .unwrap_or_default()
        .to_owned()
}
