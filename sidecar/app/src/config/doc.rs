//! Finding things in a parsed TOML document by span and by key path, so every error can name
//! the key it is about and point at where it was written.

use std::ops::Range;

use toml_edit::{Item, Key, Table, TableLike, Value};

pub(crate) use outrigger_core::config::{KeyPath, Seg};

/// What a span pointed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// A key; `value` is the span of its value when that is a plain value.
    Key { value: Option<(usize, usize)> },
    /// A plain value (string, number, array...).
    Value,
    /// A table: its `[header]`, or the whole `{ ... }` when inline.
    Table,
}

/// The setting at a span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) path: KeyPath,
    pub(crate) part: Part,
}

/// A borrowed node of the document: array-of-tables elements are bare tables and array
/// elements bare values, so one type walks them all without cloning.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }

    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    fn elements(self) -> Option<Vec<Node<'a>>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => Some(a.iter().map(Node::Table).collect()),
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                Some(a.iter().map(Node::Value).collect())
            }
            _ => None,
        }
    }

    /// What an error at this node's own span is about.
    fn part(self) -> Part {
        match self.table_like() {
            Some(_) => Part::Table,
            None => Part::Value,
        }
    }

    fn is_plain_value(self) -> bool {
        match self {
            Node::Item(Item::Value(v)) | Node::Value(v) => !v.is_inline_table(),
            _ => false,
        }
    }
}

/// Finds the key, value or table whose span is exactly `span`.
pub(crate) fn locate(root: &Item, span: &Range<usize>) -> Option<Found> {
    visit(Node::Item(root), &KeyPath::default(), span)
}

fn visit(node: Node<'_>, path: &KeyPath, span: &Range<usize>) -> Option<Found> {
    if let Some(table) = node.table_like() {
        for (name, _) in table.iter() {
            let (key, child) = table.get_key_value(name)?;
            let (here, child) = (path.key(name), Node::Item(child));
            if key.span().as_ref() == Some(span) {
                let value = child.is_plain_value().then(|| child.span()).flatten();
                let value = value.map(|s| (s.start, s.end));
                return Some(Found {
                    path: here,
                    part: Part::Key { value },
                });
            }
            if let Some(found) = visit_child(child, here, span) {
                return Some(found);
            }
        }
    } else if let Some(elements) = node.elements() {
        for (i, child) in elements.into_iter().enumerate() {
            if let Some(found) = visit_child(child, path.index(i), span) {
                return Some(found);
            }
        }
    }
    None
}

/// Deepest match first: an array of one table spans exactly that table's header.
fn visit_child(child: Node<'_>, here: KeyPath, span: &Range<usize>) -> Option<Found> {
    visit(child, &here, span).or_else(|| {
        (child.span().as_ref() == Some(span)).then(|| Found {
            path: here,
            part: child.part(),
        })
    })
}

/// Removes the entry (key and value) or array element whose key or value span is `span`.
pub(crate) fn remove_at(item: &mut Item, span: &Range<usize>) -> bool {
    edit_at(item, span, None)
}

/// Replaces the value whose span is `span` with `with`.
pub(crate) fn replace_at(item: &mut Item, span: &Range<usize>, with: Item) -> bool {
    edit_at(item, span, Some(with))
}

fn edit_at(item: &mut Item, span: &Range<usize>, with: Option<Item>) -> bool {
    let hit = |key: Option<&Key>, child: &Item| {
        key.and_then(Key::span).as_ref() == Some(span) || child.span().as_ref() == Some(span)
    };
    if let Some(table) = item.as_table_like_mut() {
        let names: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
        for name in names {
            let Some((key, child)) = table.get_key_value(&name) else {
                continue;
            };
            if hit(Some(key), child) {
                match with {
                    None => drop(table.remove(&name)),
                    Some(with) => *table.get_mut(&name).expect("the key was just found") = with,
                }
                return true;
            }
            let child = table.get_mut(&name).expect("the key was just found");
            if edit_at(child, span, with.clone()) {
                return true;
            }
        }
    } else if let Some(tables) = item.as_array_of_tables_mut() {
        for i in 0..tables.len() {
            let table = tables.get_mut(i).expect("index in range");
            if table.span().as_ref() == Some(span) && with.is_none() {
                tables.remove(i);
                return true;
            }
            let mut as_item = Item::Table(std::mem::take(table));
            let edited = edit_at(&mut as_item, span, with.clone());
            *tables.get_mut(i).expect("index in range") =
                as_item.into_table().expect("still a table");
            if edited {
                return true;
            }
        }
    } else if let Some(array) = item.as_array_mut() {
        for i in 0..array.len() {
            let value = array.get_mut(i).expect("index in range");
            if value.span().as_ref() == Some(span) {
                match with.map(Item::into_value) {
                    None => drop(array.remove(i)),
                    Some(Ok(with)) => *value = with,
                    Some(Err(_)) => return false,
                }
                return true;
            }
            let mut as_item = Item::Value(std::mem::replace(value, Value::from(false)));
            let edited = edit_at(&mut as_item, span, with.clone());
            *array.get_mut(i).expect("index in range") =
                as_item.into_value().expect("still a value");
            if edited {
                return true;
            }
        }
    }
    false
}

/// The spans of the setting at `path`: its key (absent for array elements) and its item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Spans {
    pub(crate) key: Option<Range<usize>>,
    pub(crate) item: Option<Range<usize>>,
    /// Whether the item is a plain value, whose text is worth quoting in an error.
    pub(crate) is_value: bool,
}

/// Looks up the setting at `path`.
pub(crate) fn spans_at(root: &Item, path: &KeyPath) -> Option<Spans> {
    let mut node = Node::Item(root);
    let mut key = None;
    for seg in &path.0 {
        node = match seg {
            Seg::Key(name) => {
                let (k, child) = node.table_like()?.get_key_value(name)?;
                key = k.span();
                Node::Item(child)
            }
            Seg::Index(i) => {
                key = None;
                node.elements()?.get(*i).copied()?
            }
        };
    }
    Some(Spans {
        key,
        item: node.span(),
        is_value: node.is_plain_value(),
    })
}
