//! Deserializers for values a policy writes as strings: human durations and sizes. Each error
//! says what a valid value looks like.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A human duration: `250ms`, `30s`, `24h`, `1h 30m`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration like \"250ms\" or \"30s\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v.trim()).map_err(|_| {
                E::custom("invalid duration: expected a number with a unit like 250ms or 30s")
            })
        }
    }
    d.deserialize_any(V)
}

/// An optional human duration (for `Option<Duration>` fields with `#[serde(default)]`).
pub fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A list of human durations: `["1s", "10s", "1m"]`.
pub fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    struct One(#[serde(deserialize_with = "duration")] Duration);
    Ok(Vec::<One>::deserialize(d)?
        .into_iter()
        .map(|o| o.0)
        .collect())
}

/// A size with a unit (`4KiB`, `64MiB`, `1MB`) or a plain number of bytes.
pub fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = ByteSize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size like \"4KiB\" or \"64MiB\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
            ByteSize::from_str(v.trim()).map_err(|_| {
                E::custom("invalid size: expected a number with a unit like 4KiB or 64MiB")
            })
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
            Ok(ByteSize::b(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
            u64::try_from(v)
                .map(ByteSize::b)
                .map_err(|_| E::custom("invalid size: a size cannot be negative"))
        }
    }
    d.deserialize_any(V)
}
