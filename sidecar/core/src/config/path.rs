//! Key paths into a policy: `classify.rules[2].status`, `source.kafka.properties."group.id"`.

use std::fmt;

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index, from 0.
    Index(usize),
}

/// Where a setting lives, like `classify.rules[2].status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// Parses `a.b.c` (keys only, as written in validation code).
    pub fn parse(dotted: &str) -> Self {
        KeyPath(dotted.split('.').map(|k| Seg::Key(k.to_owned())).collect())
    }

    /// This path, one key deeper.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Seg::Key(key.to_owned()));
        next
    }

    /// This path, at an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Seg::Index(index));
        next
    }

    /// Whether `self` is `other` or one of its ancestors.
    pub fn contains(&self, other: &KeyPath) -> bool {
        other.0.starts_with(&self.0)
    }

    /// Whether one path is the other or an ancestor of it.
    pub fn overlaps(&self, other: &KeyPath) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write_key(f, k)?;
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A key as TOML spells it: bare when it can be, quoted otherwise.
fn write_key(f: &mut fmt::Formatter<'_>, key: &str) -> fmt::Result {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        return f.write_str(key);
    }
    f.write_str("\"")?;
    for c in key.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c if c.is_control() => write!(f, "\\u{:04X}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_as_toml_spells_them() {
        let p = KeyPath::parse("source.kafka.properties").key("group.id");
        assert_eq!(p.to_string(), "source.kafka.properties.\"group.id\"");
        let r = KeyPath::parse("classify.rules").index(2).key("status");
        assert_eq!(r.to_string(), "classify.rules[2].status");
        assert!(KeyPath::parse("classify").contains(&r));
        assert!(r.overlaps(&KeyPath::parse("classify.rules")));
        assert!(!r.overlaps(&KeyPath::parse("retry")));
    }
}
