//! The metric names the sidecar declares, read from `sidecar/app/src/metrics.rs` as text, so
//! these tests do not link the app.

use std::collections::BTreeSet;

/// Metrics the rules and the dashboard may use before `metrics.rs` declares them, while they
/// are being added alongside. None now: every name used is declared.
pub const ANNOUNCED: &[&str] = &[];

/// Every `"outrigger_..."` string constant in `metrics.rs`.
pub fn declared() -> BTreeSet<String> {
    let path = crate::repo().join("sidecar/app/src/metrics.rs");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let names: BTreeSet<String> = text
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("outrigger_")
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_owned)
        .collect();
    assert!(
        names.len() > 10,
        "found only {names:?} in {}: did the metric names move?",
        path.display()
    );
    names
}

/// The `outrigger_*` metric names a PromQL expression uses, with histogram suffixes removed.
pub fn used_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("outrigger_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            let name = &expr[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
                .unwrap_or(name);
            out.insert(base.to_owned());
        }
        i = end;
    }
    out
}

/// Fails with the names `expr` uses that neither `metrics.rs` declares nor [`ANNOUNCED`] lists.
pub fn assert_known(what: &str, expr: &str, declared: &BTreeSet<String>) {
    let unknown: Vec<String> = used_in(expr)
        .into_iter()
        .filter(|n| !declared.contains(n) && !ANNOUNCED.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} uses {unknown:?}, which sidecar/app/src/metrics.rs does not declare:\n{expr}"
    );
}
