//! Deserializers for the value types a policy writes as strings: durations and sizes (shared
//! with the adapters, from `outrigger_core::config::de`), URLs, addresses, actions and HTTP
//! statuses. Each error says what a valid value looks like.

use http::Uri;
use outrigger_core::Action;
use outrigger_policies::StatusRange;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

pub(crate) use outrigger_core::config::de::{byte_size, duration, durations};

/// An absolute URL; the scheme and host are checked by validation, which can say why.
/// An optional duration: absent keys stay `None` through `#[serde(default)]`.
pub(crate) fn some_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    duration(d).map(Some)
}

pub(crate) fn uri<'de, D: Deserializer<'de>>(d: D) -> Result<Uri, D::Error> {
    let text = String::deserialize(d)?;
    Uri::from_str(text.trim()).map_err(|e| {
        de::Error::custom(format!(
            "invalid URL: {e}; expected one like http://127.0.0.1:8080/"
        ))
    })
}

/// An `IP:PORT` to listen on.
pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    SocketAddr::from_str(text.trim()).map_err(|_| {
        de::Error::custom("invalid address: expected IP:PORT like 127.0.0.1:9090 or [::1]:9090")
    })
}

/// One of `ack`, `retry`, `throttle`, `dead-letter`, `drop`.
pub(crate) fn action<'de, D: Deserializer<'de>>(d: D) -> Result<Action, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(de::Error::custom)
}

/// One status pattern or a list of them: `404`, `"4xx"`, `"400-499"`, `[404, "5xx"]`.
pub(crate) fn status_ranges<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StatusRange>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<StatusRange>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a status (404), a class (\"4xx\"), a range (\"400-499\") or a list of them",
            )
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map(|r| vec![r]).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u16::try_from(v)
                .ok()
                .and_then(|s| StatusRange::single(s).ok())
                .map(|r| vec![r])
                .ok_or_else(|| {
                    E::custom(format!(
                        "invalid status {v}: HTTP statuses run from 100 to 599"
                    ))
                })
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(r) = seq.next_element::<StatusRange>()? {
                out.push(r);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}
