//! The replies of the stream commands, read by hand from [`Value`]s: nested arrays in RESP2,
//! maps in places in RESP3 (a `?protocol=resp3` URL). Every reader says what it expected when a
//! reply does not fit.

use bytes::Bytes;
use redis::Value;

/// One stream entry as Redis returned it: its id and its fields in order, or `None` for an
/// entry that was deleted (or trimmed) while pending, which a read of the pending list returns
/// with no fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `ms-seq`.
    pub id: String,
    /// Field names and values, byte for byte, in order (a field may repeat).
    pub fields: Option<Vec<(Bytes, Bytes)>>,
}

/// What `XAUTOCLAIM` answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AutoClaimed {
    /// Where the next call starts; `0-0` once the whole pending list was scanned.
    pub cursor: String,
    /// The entries now pending on this consumer.
    pub entries: Vec<Entry>,
    /// Entries that were pending but are gone from the stream; Redis 7 removed them from the
    /// pending list (Redis 6.2 does not say).
    pub deleted: Vec<String>,
}

/// One row of `XPENDING <key> <group> <start> <end> <count> [<consumer>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    /// The entry id.
    pub id: String,
    /// Who it is pending on.
    pub consumer: String,
    /// How many times it was handed out.
    pub deliveries: u32,
}

/// Bytes of a string reply.
pub(crate) fn bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::VerbatimString { text, .. } => Some(Bytes::copy_from_slice(text.as_bytes())),
        Value::Okay => Some(Bytes::from_static(b"OK")),
        Value::Int(n) => Some(Bytes::from(n.to_string())),
        _ => None,
    }
}

/// Text of a string reply.
pub(crate) fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// A number, sent as an integer or as its text.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.trim().parse().ok(),
    }
}

/// The items of an array (or set) reply; nil is none.
fn items(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

/// Key-value pairs: a flat array `[k1, v1, k2, v2]` (RESP2) or a map (RESP3).
pub(crate) fn pairs(v: Value) -> Result<Vec<(Value, Value)>, String> {
    match v {
        Value::Map(pairs) => Ok(pairs),
        other => {
            let flat = items(other)?;
            if flat.len() % 2 != 0 {
                return Err(format!("expected pairs, got {} items", flat.len()));
            }
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
    }
}

/// One entry: `[id, [field, value, ...]]`, the fields nil when it was deleted.
fn entry(v: Value) -> Result<Entry, String> {
    let mut parts = items(v)?.into_iter();
    let id = parts
        .next()
        .as_ref()
        .and_then(text)
        .ok_or("an entry without an id")?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(list) => {
            let mut fields = Vec::new();
            for (name, value) in pairs(list)? {
                let name = bytes(&name).ok_or("a field name that is not a string")?;
                let value = bytes(&value).ok_or("a field value that is not a string")?;
                fields.push((name, value));
            }
            Some(fields)
        }
    };
    Ok(Entry { id, fields })
}

/// Entries in order: `XRANGE`, `XCLAIM`, one stream of `XREADGROUP`.
pub(crate) fn entries(v: Value) -> Result<Vec<Entry>, String> {
    items(v)?.into_iter().map(entry).collect()
}

/// `XREADGROUP` over several streams: each stream with its entries; nothing when the block
/// timed out.
pub(crate) fn read(v: Value) -> Result<Vec<(String, Vec<Entry>)>, String> {
    let streams = match v {
        Value::Map(pairs) => pairs,
        Value::Nil => Vec::new(),
        other => items(other)?
            .into_iter()
            .map(|pair| {
                let mut two = items(pair)?.into_iter();
                match (two.next(), two.next()) {
                    (Some(name), Some(entries)) => Ok((name, entries)),
                    _ => Err("a stream without its entries".to_owned()),
                }
            })
            .collect::<Result<_, String>>()?,
    };
    streams
        .into_iter()
        .map(|(name, list)| {
            let name = text(&name).ok_or("a stream name that is not text")?;
            Ok((name, entries(list)?))
        })
        .collect()
}

/// `XAUTOCLAIM`: `[cursor, entries]` on Redis 6.2, `[cursor, entries, deleted ids]` from 7.0.
pub(crate) fn auto_claimed(v: Value) -> Result<AutoClaimed, String> {
    let mut parts = items(v)?.into_iter();
    let cursor = parts.next().as_ref().and_then(text).ok_or("no cursor")?;
    let entries = entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted = items(parts.next().unwrap_or(Value::Nil))?
        .iter()
        .map(|id| text(id).ok_or("a deleted id that is not text"))
        .collect::<Result<_, _>>()?;
    Ok(AutoClaimed {
        cursor,
        entries,
        deleted,
    })
}

/// The extended form of `XPENDING`: `[[id, consumer, idle ms, deliveries], ...]`.
pub(crate) fn pending(v: Value) -> Result<Vec<Pending>, String> {
    items(v)?
        .into_iter()
        .map(|row| {
            let row = items(row)?;
            match row.as_slice() {
                [id, consumer, _idle, deliveries] => Ok(Pending {
                    id: text(id).ok_or("a pending id that is not text")?,
                    consumer: text(consumer).ok_or("a consumer that is not text")?,
                    deliveries: int(deliveries)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or("a delivery count that is not a number")?,
                }),
                _ => Err(format!("a pending row of {} items", row.len())),
            }
        })
        .collect()
}

/// The summary form of `XPENDING`: how many entries each consumer has pending.
pub(crate) fn pending_per_consumer(v: Value) -> Result<Vec<(String, u64)>, String> {
    let mut parts = items(v)?.into_iter();
    let _total = parts.next();
    let _first = parts.next();
    let _last = parts.next();
    let consumers = match parts.next() {
        None | Some(Value::Nil) => return Ok(Vec::new()),
        Some(Value::Map(pairs)) => pairs,
        Some(list) => items(list)?
            .into_iter()
            .map(|pair| {
                let mut two = items(pair)?.into_iter();
                match (two.next(), two.next()) {
                    (Some(name), Some(count)) => Ok((name, count)),
                    _ => Err("a consumer without its count".to_owned()),
                }
            })
            .collect::<Result<_, String>>()?,
    };
    consumers
        .into_iter()
        .map(|(name, count)| {
            Ok((
                text(&name).ok_or("a consumer that is not text")?,
                int(&count)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or("a count that is not a number")?,
            ))
        })
        .collect()
}

/// `XINFO GROUPS`: each group's fields by name.
pub(crate) fn groups(v: Value) -> Result<Vec<Vec<(String, Value)>>, String> {
    items(v)?
        .into_iter()
        .map(|group| {
            pairs(group)?
                .into_iter()
                .map(|(k, v)| Ok((text(&k).ok_or("a field name that is not text")?, v)))
                .collect()
        })
        .collect()
}

/// A field of an `XINFO` row.
pub(crate) fn field<'a>(row: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    row.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn array(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn a_read_keeps_fields_in_order_and_deleted_entries_without_fields() {
        let reply = array(vec![array(vec![
            bulk("orders"),
            array(vec![
                array(vec![
                    bulk("1-0"),
                    array(vec![
                        bulk("payload"),
                        Value::BulkString(vec![0xff, 0x00]),
                        bulk("a"),
                        bulk(""),
                    ]),
                ]),
                array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let got = read(reply).unwrap();
        assert_eq!(got.len(), 1);
        let (stream, entries) = &got[0];
        assert_eq!(stream, "orders");
        assert_eq!(
            entries[0].fields.as_deref().unwrap(),
            [
                (
                    Bytes::from_static(b"payload"),
                    Bytes::from_static(&[0xff, 0x00])
                ),
                (Bytes::from_static(b"a"), Bytes::new())
            ]
        );
        assert_eq!(
            entries[1],
            Entry {
                id: "2-0".into(),
                fields: None
            }
        );
        assert!(
            read(Value::Nil).unwrap().is_empty(),
            "a block that timed out"
        );
        let resp3 = Value::Map(vec![(bulk("s"), array(vec![]))]);
        assert_eq!(read(resp3).unwrap(), [("s".to_owned(), vec![])]);
    }

    #[test]
    fn auto_claim_reads_the_deleted_ids_of_redis_7_and_their_absence_on_6_2() {
        let v7 = array(vec![
            bulk("0-0"),
            array(vec![array(vec![
                bulk("1-0"),
                array(vec![bulk("f"), bulk("v")]),
            ])]),
            array(vec![bulk("2-0")]),
        ]);
        let got = auto_claimed(v7).unwrap();
        assert_eq!(got.cursor, "0-0");
        assert_eq!(got.entries.len(), 1);
        assert_eq!(got.deleted, ["2-0"]);
        let v62 = array(vec![bulk("3-0"), array(vec![])]);
        assert_eq!(auto_claimed(v62).unwrap().deleted, Vec::<String>::new());
    }

    #[test]
    fn pending_rows_and_summaries() {
        let rows = array(vec![array(vec![
            bulk("1-0"),
            bulk("c1"),
            Value::Int(12),
            Value::Int(3),
        ])]);
        assert_eq!(
            pending(rows).unwrap(),
            [Pending {
                id: "1-0".into(),
                consumer: "c1".into(),
                deliveries: 3
            }]
        );
        let summary = array(vec![
            Value::Int(2),
            bulk("1-0"),
            bulk("2-0"),
            array(vec![array(vec![bulk("c1"), bulk("2")])]),
        ]);
        assert_eq!(
            pending_per_consumer(summary).unwrap(),
            [("c1".to_owned(), 2)]
        );
        let none = array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        assert!(pending_per_consumer(none).unwrap().is_empty());
    }

    #[test]
    fn groups_read_as_named_fields() {
        let reply = array(vec![array(vec![
            bulk("name"),
            bulk("g"),
            bulk("lag"),
            Value::Nil,
            bulk("pending"),
            Value::Int(4),
        ])]);
        let rows = groups(reply).unwrap();
        assert_eq!(field(&rows[0], "name").and_then(text).as_deref(), Some("g"));
        assert_eq!(field(&rows[0], "pending").and_then(int), Some(4));
        assert_eq!(field(&rows[0], "lag"), Some(&Value::Nil));
        assert!(pairs(array(vec![bulk("odd")])).is_err());
    }
}
