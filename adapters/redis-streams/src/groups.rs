//! What must be there before the source reads: each stream with its consumer group (created
//! when the policy allows), and each dead-letter stream (created empty when
//! `dead_letter.declare` allows, so that `outrigger dlq` finds it before the first dead
//! letter). A key of another type where a stream should be is refused: no retry cures it.
//!
//! Retry streams (retry mode `queue`) are the sidecar's own: each is created with its group
//! (`MKSTREAM`, from its first entry) whatever `create` says.

use outrigger_core::SourceError;
use redis::Value;

use crate::client::Redis;
use crate::config::RedisStreamsSettings;
use crate::error::source_error;

/// Checks or creates every stream, group and dead-letter stream of `settings`.
pub(crate) async fn prepare(
    redis: &Redis,
    settings: &RedisStreamsSettings,
) -> Result<(), SourceError> {
    for stream in &settings.streams {
        group(redis, settings, stream).await?;
    }
    for (_, _, stream) in settings.retry_streams() {
        retry_group(redis, settings, &stream).await?;
    }
    for dead_letters in settings.dead_letter_streams() {
        dead_letter_stream(redis, settings, &dead_letters).await?;
    }
    for dead_letters in &settings.route_dead_letter_streams {
        dead_letter_stream(redis, settings, dead_letters).await?;
    }
    Ok(())
}

async fn group(redis: &Redis, s: &RedisStreamsSettings, stream: &str) -> Result<(), SourceError> {
    if s.create {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(stream)
            .arg(&s.group)
            .arg(s.start_from.group_start())
            .arg("MKSTREAM");
        return match redis.query::<Value>(&cmd).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) if e.code() == Some("WRONGTYPE") => {
                Err(not_a_stream(redis, stream, "the source").await)
            }
            Err(e) => Err(source_error(
                &format!("creating group {} on stream {stream}", s.group),
                &e,
            )),
        };
    }
    let kind = kind(redis, stream).await?;
    if kind == "none" {
        return Err(SourceError::Rejected(format!(
            "stream {stream} does not exist; create it with its group (XGROUP CREATE {stream} {} 0 \
             MKSTREAM), or set source.redis_streams.create = true",
            s.group
        )));
    }
    if kind != "stream" {
        return Err(not_a_stream(redis, stream, "the source").await);
    }
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("GROUPS").arg(stream);
    let groups: Value = redis
        .query(&cmd)
        .await
        .map_err(|e| source_error(&format!("reading the groups of stream {stream}"), &e))?;
    let groups =
        crate::reply::groups(groups).map_err(|e| crate::error::odd_reply("XINFO GROUPS", e))?;
    let found = groups.iter().any(|g| {
        crate::reply::field(g, "name")
            .and_then(crate::reply::text)
            .as_deref()
            == Some(&s.group)
    });
    if found {
        Ok(())
    } else {
        Err(SourceError::Rejected(format!(
            "stream {stream} has no consumer group {}; create it (XGROUP CREATE {stream} {} 0), \
             or set source.redis_streams.create = true",
            s.group, s.group
        )))
    }
}

/// Creates the group of retry stream `stream`, with the stream when missing, reading from its
/// first entry: every copy written to it is read.
pub(crate) async fn retry_group(
    redis: &Redis,
    s: &RedisStreamsSettings,
    stream: &str,
) -> Result<bool, SourceError> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(stream)
        .arg(&s.group)
        .arg("0")
        .arg("MKSTREAM");
    match redis.query::<Value>(&cmd).await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) if e.code() == Some("WRONGTYPE") => {
            Err(not_a_stream(redis, stream, "a retry").await)
        }
        Err(e) => Err(source_error(
            &format!("creating group {} on retry stream {stream}", s.group),
            &e,
        )),
    }
}

async fn dead_letter_stream(
    redis: &Redis,
    s: &RedisStreamsSettings,
    stream: &str,
) -> Result<(), SourceError> {
    match kind(redis, stream).await?.as_str() {
        "stream" => Ok(()),
        "none" if s.declare_dead_letters => {
            let _: i64 = redis
                .invoke(true, |scripts| scripts.create_empty.key(stream))
                .await
                .map_err(|e| {
                    source_error(&format!("creating the dead-letter stream {stream}"), &e)
                })?;
            Ok(())
        }
        "none" => Err(SourceError::Rejected(format!(
            "the dead-letter stream {stream} does not exist; create it, or set \
             dead_letter.declare = true"
        ))),
        _ => Err(not_a_stream(redis, stream, "the dead-letter").await),
    }
}

/// What `TYPE` says `key` is: `stream`, `none`, `string`, ...
pub(crate) async fn kind(redis: &Redis, key: &str) -> Result<String, SourceError> {
    let mut cmd = redis::cmd("TYPE");
    cmd.arg(key);
    redis
        .query_again::<String>(&cmd)
        .await
        .map_err(|e| source_error(&format!("looking up key {key}"), &e))
}

async fn not_a_stream(redis: &Redis, key: &str, what: &str) -> SourceError {
    let kind = kind(redis, key)
        .await
        .unwrap_or_else(|_| "other value".to_owned());
    SourceError::Rejected(format!(
        "key {key} holds a {kind}, not a stream: it cannot be {what} stream"
    ))
}
