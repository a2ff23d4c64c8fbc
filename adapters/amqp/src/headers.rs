//! AMQP header tables to and from the core's byte headers.
//!
//! AMQP headers are typed; the core carries bytes. Going in, each value becomes the text a
//! person would write for it:
//! - long and short strings, byte arrays: their bytes, unchanged;
//! - integers, timestamps (seconds): decimal text; floats: Rust's shortest round-trip text;
//!   decimals: `scale` digits after the point (`123.45`); booleans: `true` / `false`;
//! - void: empty;
//! - nested arrays and tables (RabbitMQ's own `x-death`, for one): compact JSON, strings and
//!   byte arrays as (lossy UTF-8) JSON strings, decimals as strings, void as `null`.
//!
//! Going out, the adapter never rebuilds a table from core headers: a dead letter republishes
//! the original table with its original types and only adds the failure context as long strings.

use bytes::Bytes;
use lapin::types::{AMQPValue, DecimalValue, FieldTable, LongString, ShortString};
use outrigger_core::Header;
use serde_json::Value;

/// The table's entries as core headers, in the table's (name-sorted) order.
pub(crate) fn from_table(table: &FieldTable) -> Vec<Header> {
    table
        .into_iter()
        .map(|(name, value)| Header::new(name.as_str(), value_bytes(value)))
        .collect()
}

/// Sets a text header, replacing any value of that name, as an AMQP long string.
/// A header value that counts something (`x-delivery-count`), whatever integer type the
/// broker sent it as.
pub(crate) fn as_count(value: &AMQPValue) -> Option<u32> {
    let n: i128 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        _ => return None,
    };
    u32::try_from(n).ok()
}

pub(crate) fn insert_text(table: &mut FieldTable, name: &str, value: String) {
    // ShortString panics past 255 bytes; header names here are our own constants, far shorter.
    table.insert(
        ShortString::from(name),
        AMQPValue::LongString(LongString::from(value)),
    );
}

fn value_bytes(value: &AMQPValue) -> Bytes {
    match value {
        AMQPValue::LongString(s) => Bytes::copy_from_slice(s.as_bytes()),
        AMQPValue::ShortString(s) => Bytes::copy_from_slice(s.as_str().as_bytes()),
        AMQPValue::ByteArray(b) => Bytes::copy_from_slice(b.as_slice()),
        AMQPValue::Void => Bytes::new(),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => Bytes::from(json(value).to_string()),
        scalar => Bytes::from(scalar_text(scalar).unwrap_or_default()),
    }
}

/// Text of a number, boolean or timestamp; `None` for strings, bytes, void and containers.
fn scalar_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::Boolean(v) => v.to_string(),
        AMQPValue::ShortShortInt(v) => v.to_string(),
        AMQPValue::ShortShortUInt(v) => v.to_string(),
        AMQPValue::ShortInt(v) => v.to_string(),
        AMQPValue::ShortUInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongUInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        AMQPValue::Timestamp(v) => v.to_string(),
        AMQPValue::Float(v) => v.to_string(),
        AMQPValue::Double(v) => v.to_string(),
        AMQPValue::DecimalValue(d) => decimal_text(*d),
        _ => return None,
    })
}

fn decimal_text(d: DecimalValue) -> String {
    let digits = d.value.to_string();
    let scale = usize::from(d.scale);
    if scale == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{whole}.{fraction}")
}

fn json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(v) => Value::Bool(*v),
        AMQPValue::ShortShortInt(v) => Value::from(*v),
        AMQPValue::ShortShortUInt(v) => Value::from(*v),
        AMQPValue::ShortInt(v) => Value::from(*v),
        AMQPValue::ShortUInt(v) => Value::from(*v),
        AMQPValue::LongInt(v) => Value::from(*v),
        AMQPValue::LongUInt(v) => Value::from(*v),
        AMQPValue::LongLongInt(v) => Value::from(*v),
        AMQPValue::Timestamp(v) => Value::from(*v),
        // Value::from maps NaN and infinities to null, which is what JSON can say about them.
        AMQPValue::Float(v) => Value::from(*v),
        AMQPValue::Double(v) => Value::from(*v),
        AMQPValue::DecimalValue(d) => Value::String(decimal_text(*d)),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(json).collect()),
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), json(v)))
                .collect(),
        ),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{ByteArray, FieldArray};

    use super::*;

    fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(k.into(), v);
        }
        t
    }

    fn text(headers: &[Header], name: &str) -> Bytes {
        headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.clone())
            .unwrap_or_else(|| panic!("missing header {name}"))
    }

    #[test]
    fn scalars_become_their_text_and_bytes_stay_bytes() {
        let t = table(vec![
            ("s", AMQPValue::LongString("order-1".into())),
            (
                "raw",
                AMQPValue::ByteArray(ByteArray::from(vec![0xff, 0x00, 0x80])),
            ),
            ("n", AMQPValue::LongInt(-42)),
            ("big", AMQPValue::LongLongInt(9_007_199_254_740_993)),
            ("ok", AMQPValue::Boolean(true)),
            ("ratio", AMQPValue::Double(0.25)),
            (
                "price",
                AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 5 }),
            ),
            ("at", AMQPValue::Timestamp(1_700_000_000)),
            ("none", AMQPValue::Void),
        ]);
        let h = from_table(&t);
        assert_eq!(h.len(), 9);
        assert_eq!(text(&h, "s"), "order-1");
        assert_eq!(text(&h, "raw"), Bytes::from_static(&[0xff, 0x00, 0x80]));
        assert_eq!(text(&h, "n"), "-42");
        assert_eq!(text(&h, "big"), "9007199254740993");
        assert_eq!(text(&h, "ok"), "true");
        assert_eq!(text(&h, "ratio"), "0.25");
        assert_eq!(text(&h, "price"), "0.05");
        assert_eq!(text(&h, "at"), "1700000000");
        assert_eq!(text(&h, "none"), "");
    }

    #[test]
    fn nested_values_become_json() {
        let death = table(vec![
            ("count", AMQPValue::LongLongInt(2)),
            ("queue", AMQPValue::LongString("orders".into())),
            (
                "routing-keys",
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                    "orders".into(),
                )])),
            ),
        ]);
        let t = table(vec![(
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        )]);
        let h = from_table(&t);
        assert_eq!(
            text(&h, "x-death"),
            r#"[{"count":2,"queue":"orders","routing-keys":["orders"]}]"#
        );
    }

    #[test]
    fn decimals_keep_their_scale() {
        let d = |scale, value| decimal_text(DecimalValue { scale, value });
        assert_eq!(d(0, 7), "7");
        assert_eq!(d(2, 12345), "123.45");
        assert_eq!(d(3, 5), "0.005");
    }

    #[test]
    fn insert_text_replaces_an_existing_value() {
        let mut t = table(vec![("outrigger-dlq-reason", AMQPValue::LongInt(1))]);
        insert_text(&mut t, "outrigger-dlq-reason", "app answered 400".into());
        assert_eq!(
            t.inner().get("outrigger-dlq-reason"),
            Some(&AMQPValue::LongString("app answered 400".into()))
        );
    }
}
