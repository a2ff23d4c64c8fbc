//! HTTP status ranges as users write them: `404`, `"4xx"`, `"400-499"`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An inclusive range of HTTP status codes within 100..=599.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusRange {
    lo: u16,
    hi: u16,
}

/// A status range that is not `NNN`, `Nxx` or `NNN-NNN` within 100..=599.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid status {input:?}: {why}")]
pub struct ParseStatusError {
    input: String,
    why: &'static str,
}

impl StatusRange {
    /// The range `lo..=hi`, or an error when it is empty or outside 100..=599.
    pub fn new(lo: u16, hi: u16) -> Result<Self, ParseStatusError> {
        let fail = |why| ParseStatusError {
            input: format!("{lo}-{hi}"),
            why,
        };
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) {
            return Err(fail("HTTP statuses run from 100 to 599"));
        }
        if lo > hi {
            return Err(fail("the range is empty: its start is above its end"));
        }
        Ok(Self { lo, hi })
    }

    /// The single status `status`.
    pub fn single(status: u16) -> Result<Self, ParseStatusError> {
        Self::new(status, status).map_err(|e| ParseStatusError {
            input: status.to_string(),
            why: e.why,
        })
    }

    /// The lowest status in the range.
    pub fn lo(&self) -> u16 {
        self.lo
    }

    /// The highest status in the range.
    pub fn hi(&self) -> u16 {
        self.hi
    }

    /// Whether `status` falls in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }
}

impl FromStr for StatusRange {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let fail = |why| ParseStatusError {
            input: s.to_owned(),
            why,
        };
        let code = |part: &str| -> Result<u16, ParseStatusError> {
            let part = part.trim();
            if part.len() != 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail("expected a three-digit status such as 404, a class such as 4xx, or a range such as 400-499"));
            }
            part.parse().map_err(|_| fail("not a number"))
        };
        let relabel = |e: ParseStatusError| fail(e.why);
        let b = t.as_bytes();
        if b.len() == 3 && b[1..].eq_ignore_ascii_case(b"xx") {
            let class = match b[0] {
                d @ b'1'..=b'5' => u16::from(d - b'0'),
                _ => return Err(fail("status classes run from 1xx to 5xx")),
            };
            return Self::new(class * 100, class * 100 + 99).map_err(relabel);
        }
        match t.split_once('-') {
            Some((lo, hi)) => Self::new(code(lo)?, code(hi)?).map_err(relabel),
            None => Self::single(code(t)?).map_err(relabel),
        }
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else if self.lo.is_multiple_of(100) && self.hi == self.lo + 99 {
            write!(f, "{}xx", self.lo / 100)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Accepts a bare number (`404`) or a string (`"404"`, `"4xx"`, `"400-499"`).
struct RangeVisitor;

impl<'de> Visitor<'de> for RangeVisitor {
    type Value = StatusRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an HTTP status (404), a class (\"4xx\") or a range (\"400-499\")")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
        let status = u16::try_from(v).unwrap_or(0);
        StatusRange::single(status).map_err(|_| {
            E::custom(format!(
                "invalid status {v}: HTTP statuses run from 100 to 599"
            ))
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "invalid status {v}: HTTP statuses run from 100 to 599"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RangeVisitor)
    }
}

/// Deserializes one range or a list of them, so `status = "5xx"` and `status = [404, "5xx"]`
/// both work.
pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StatusRange>, D::Error> {
    struct Many;

    impl<'de> Visitor<'de> for Many {
        type Value = Vec<StatusRange>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a status, a status class, a status range, or a list of them")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            RangeVisitor.visit_str(v).map(|r| vec![r])
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            RangeVisitor.visit_u64(v).map(|r| vec![r])
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            RangeVisitor.visit_i64(v).map(|r| vec![r])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(r) = seq.next_element::<StatusRange>()? {
                out.push(r);
            }
            Ok(out)
        }
    }

    d.deserialize_any(Many)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_forms() {
        let r = |s: &str| s.parse::<StatusRange>().map(|r| (r.lo(), r.hi()));
        assert_eq!(r("404"), Ok((404, 404)));
        assert_eq!(r("4xx"), Ok((400, 499)));
        assert_eq!(r("5XX"), Ok((500, 599)));
        assert_eq!(r("400-409"), Ok((400, 409)));
        assert_eq!(r(" 500 - 503 "), Ok((500, 503)));
    }

    #[test]
    fn rejects_with_a_reason() {
        let e = |s: &str| s.parse::<StatusRange>().unwrap_err().to_string();
        assert_eq!(
            e("6xx"),
            "invalid status \"6xx\": status classes run from 1xx to 5xx"
        );
        assert_eq!(
            e("499-400"),
            "invalid status \"499-400\": the range is empty: its start is above its end"
        );
        assert_eq!(
            e("700"),
            "invalid status \"700\": HTTP statuses run from 100 to 599"
        );
        assert!(e("4x").contains("three-digit status"));
        assert!(e("").contains("three-digit status"));
        assert!(e("+40").contains("three-digit status"));
    }

    #[test]
    fn deserializes_numbers_strings_and_lists() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "one_or_many")]
            s: Vec<StatusRange>,
        }
        let t: T = serde_json::from_str(r#"{"s": [404, "5xx"]}"#).unwrap();
        assert_eq!(t.s, vec!["404".parse().unwrap(), "5xx".parse().unwrap()]);
        let t: T = serde_json::from_str(r#"{"s": "429"}"#).unwrap();
        assert_eq!(t.s, vec![StatusRange::single(429).unwrap()]);
        let e = serde_json::from_str::<T>(r#"{"s": 99}"#).err().unwrap();
        assert!(e.to_string().contains("invalid status 99"), "{e}");
    }

    proptest! {
        #[test]
        fn display_round_trips(lo in 100u16..=599, len in 0u16..500) {
            let r = StatusRange::new(lo, (lo + len).min(599)).unwrap();
            prop_assert_eq!(r.to_string().parse::<StatusRange>(), Ok(r));
        }
    }
}
