//! Retry copies (retry mode `queue`): what is written to a retry stream, and the write.
//!
//! A copy is the entry's own fields, byte for byte and in order (any `outrigger-retry-*`
//! fields of an earlier copy taken off when it was read), then the `outrigger-retry-*` fields
//! of its trail, `due` the tier's delay from now. It goes to `<stream>.retry.<tier>` of the
//! entry's source stream, and the entry is acknowledged in the same script: both or neither,
//! and a retry after a lost reply writes no second copy. The source reads the retry streams
//! with its group and hands a copy out once it is due, as its origin again (see `shared`).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use outrigger_core::{SourceError, Trail};
use redis::Value;

use crate::client::{flat, Redis};
use crate::error::publish_error;
use crate::reply;

/// Where a copy goes and what it settles.
pub(crate) struct Target<'a> {
    /// The retry stream.
    pub retry: &'a str,
    /// The stream of the entry.
    pub stream: &'a str,
    /// The group.
    pub group: &'a str,
    /// The entry.
    pub id: &'a str,
}

/// The fields of the copy of an entry with `fields` (its retry fields off already), carrying
/// `trail`, due `delay` after `now`.
pub(crate) fn fields(
    fields: &[(Bytes, Bytes)],
    trail: &Trail,
    now: SystemTime,
    delay: Duration,
) -> Vec<(Bytes, Bytes)> {
    let trail = Trail {
        due: Some(now + delay),
        ..trail.clone()
    };
    let mut out = fields.to_vec();
    out.extend(
        trail
            .to_headers()
            .into_iter()
            .map(|(name, value)| (Bytes::from_static(name.as_bytes()), Bytes::from(value))),
    );
    out
}

/// Writes the copy `fields` to the retry stream and acknowledges the entry in the same step,
/// only while the entry is pending. `Some` copy id; `None` when the entry was settled already
/// and nothing was written.
pub(crate) async fn write(
    redis: &Redis,
    target: &Target<'_>,
    fields: &[(Bytes, Bytes)],
) -> Result<Option<String>, SourceError> {
    let values = flat(fields);
    let written: Value = redis
        // Repeatable: the script writes only while the entry is pending.
        .invoke(true, |s| {
            let mut call = s.retry.key(target.retry);
            call.key(target.stream)
                .arg(target.group)
                .arg(target.id)
                .arg(values.as_slice());
            call
        })
        .await
        .map_err(|e| publish_error(&format!("writing to the retry stream {}", target.retry), &e))?;
    match written {
        Value::Nil => Ok(None),
        other => reply::text(&other)
            .map(Some)
            .ok_or_else(|| SourceError::Publish(format!("the retry write answered {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use outrigger_core::retry::headers;
    use outrigger_core::Coordinates;

    use super::*;

    #[test]
    fn a_copy_keeps_the_fields_in_order_and_adds_its_trail_due_after_the_delay() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let trail = Trail {
            origin: Coordinates::RedisStream {
                stream: "orders".into(),
                id: "1-0".into(),
            },
            hop: 1,
            attempts: 2,
            tier: 0,
            first_seen: at,
            first_failure: Some(at),
            due: None,
        };
        let original = [
            (
                Bytes::from_static(b"payload"),
                Bytes::from_static(&[0xff, 0]),
            ),
            (Bytes::from_static(b"key"), Bytes::from_static(b"K")),
        ];
        let out = fields(&original, &trail, at, Duration::from_secs(3));
        assert_eq!(out[..2], original);
        let due: Vec<_> = out
            .iter()
            .filter(|(n, _)| n.as_ref() == headers::DUE.as_bytes())
            .collect();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, "1700000003000");
        assert!(out[2..]
            .iter()
            .all(|(n, _)| headers::is_retry(std::str::from_utf8(n).unwrap())));
    }
}

/// Against the machine's Redis (127.0.0.1:6379, or `OUTRIGGER_TEST_REDIS_URL`).
#[cfg(test)]
mod redis_tests {
    use std::time::UNIX_EPOCH;

    use outrigger_core::Coordinates;

    use super::*;

    fn url() -> String {
        std::env::var("OUTRIGGER_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    fn unique(prefix: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{prefix}-{}-{nanos}", std::process::id())
    }

    #[tokio::test]
    async fn a_retry_after_a_lost_reply_writes_one_copy() {
        let redis = Redis::connect(&url(), Duration::from_secs(5))
            .await
            .unwrap();
        let stream = unique("retry-lost-reply");
        let retry = format!("{stream}.retry.0");
        let group = "g";
        let q = |cmd: redis::Cmd| {
            let redis = &redis;
            async move { redis.query::<Value>(&cmd).await.unwrap() }
        };
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(&stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        q(create).await;
        let mut add = redis::cmd("XADD");
        add.arg(&stream).arg("*").arg("payload").arg("p");
        let id: String = redis.query(&add).await.unwrap();
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(group)
            .arg("c")
            .arg("STREAMS")
            .arg(&stream)
            .arg(">");
        q(read).await;
        let trail = Trail {
            origin: Coordinates::RedisStream {
                stream: stream.clone(),
                id: id.clone(),
            },
            hop: 1,
            attempts: 1,
            tier: 0,
            first_seen: SystemTime::now(),
            first_failure: Some(SystemTime::now()),
            due: None,
        };
        let copy = fields(
            &[(Bytes::from_static(b"payload"), Bytes::from_static(b"p"))],
            &trail,
            SystemTime::now(),
            Duration::from_secs(1),
        );
        let target = Target {
            retry: &retry,
            stream: &stream,
            group,
            id: &id,
        };
        let first = write(&redis, &target, &copy).await.unwrap();
        assert!(first.is_some(), "the copy is written");
        // The reply was lost: the acker tries again.
        let again = write(&redis, &target, &copy).await.unwrap();
        assert_eq!(again, None, "settled already: nothing written twice");
        let len: i64 = redis.query(redis::cmd("XLEN").arg(&retry)).await.unwrap();
        assert_eq!(len, 1);
        let pending: Vec<Value> = redis
            .query(
                redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg(group)
                    .arg("-")
                    .arg("+")
                    .arg(10),
            )
            .await
            .unwrap();
        assert!(pending.is_empty(), "the entry is acknowledged");
        let _: i64 = redis
            .query(redis::cmd("DEL").arg(&stream).arg(&retry))
            .await
            .unwrap();
    }
}
