//! The connections to Redis: one shared, reconnecting connection for every call that does not
//! block (acks, dead letters, claims, stats), and a dedicated one per reader, because a blocked
//! `XREADGROUP` holds up everything behind it on its connection.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use outrigger_core::SourceError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisError, Value};

use crate::error::{is_transient, odd_reply, source_error};
use crate::reply;
use crate::scripts::Scripts;

/// The oldest server with `XAUTOCLAIM`.
const MIN_VERSION: (u32, u32) = (6, 2);

/// Tries of a call that is safe to repeat, when the connection broke under it: the shared
/// connection reconnects after the first failure, so the second try normally gets through.
const TRIES: u32 = 3;
/// Pause before the second try; doubled before the third.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The shared connection and the scripts.
pub(crate) struct Redis {
    client: Client,
    connection: ConnectionManager,
    scripts: Scripts,
    timeout: Duration,
}

impl Redis {
    /// Connects to `url`, every call bounded by `timeout`. A URL the client cannot use is
    /// [`SourceError::Rejected`]; a server that does not answer [`SourceError::Connection`].
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, SourceError> {
        let client =
            Client::open(url).map_err(|e| SourceError::Rejected(format!("the Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connect = ConnectionManager::new_with_config(client.clone(), config);
        let connection = match tokio::time::timeout(timeout * 2, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(source_error("connecting to Redis", &e)),
            Err(_) => {
                return Err(SourceError::Connection(format!(
                    "connecting to Redis: no answer within {}",
                    humantime::format_duration(timeout * 2)
                )))
            }
        };
        Ok(Self {
            client,
            connection,
            scripts: Scripts::new(),
            timeout,
        })
    }

    /// A connection of its own for blocking reads, whose replies may take `block` longer than
    /// any other.
    pub async fn dedicated(&self, block: Duration) -> Result<MultiplexedConnection, SourceError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(block + self.timeout));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.timeout * 2, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(source_error("connecting to Redis", &e)),
            Err(_) => Err(SourceError::Connection(
                "connecting to Redis: no answer".to_owned(),
            )),
        }
    }

    /// Runs `cmd` once.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        bounded(self.timeout, cmd.query_async(&mut connection)).await
    }

    /// Runs `cmd`, again after a broken connection: for calls that do the same when repeated
    /// (`XACK`, claims of one's own entries, reads).
    pub async fn query_again<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        self.again(|| self.query(cmd)).await
    }

    /// Runs the script invocation `call` builds, again after a broken connection when
    /// `repeatable`.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        repeatable: bool,
        call: impl Fn(&Scripts) -> redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let once = || async {
            let invocation = call(&self.scripts);
            let mut connection = self.connection.clone();
            bounded(self.timeout, invocation.invoke_async(&mut connection)).await
        };
        if repeatable {
            self.again(once).await
        } else {
            once().await
        }
    }

    async fn again<T, F, Fut>(&self, call: F) -> Result<T, RedisError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut pause = RETRY_PAUSE;
        let mut tries = 1;
        loop {
            match call().await {
                Err(e) if tries < TRIES && is_transient(&e) => {
                    tries += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                done => return done,
            }
        }
    }

    /// Refuses a server too old for the commands the source needs; returns its version.
    pub async fn check_version(&self) -> Result<String, SourceError> {
        let info: String = self
            .query(redis::cmd("INFO").arg("server"))
            .await
            .map_err(|e| source_error("asking Redis for its version", &e))?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| odd_reply("INFO server", "no redis_version"))?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let major_minor = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if major_minor < MIN_VERSION {
            return Err(SourceError::Rejected(format!(
                "Redis {version} has no XAUTOCLAIM: the Redis Streams source needs Redis 6.2 or \
                 later (7.0 or later for lag figures and deleted-entry reports)"
            )));
        }
        Ok(version)
    }

    /// Claims `ids` of `stream` again for `consumer`, only those still pending on it:
    /// their idle time starts over, and their delivery count becomes `deliveries` when given.
    /// Returns the ids it claimed.
    pub async fn claim_own(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        deliveries: Option<u32>,
        ids: &[String],
    ) -> Result<Vec<String>, SourceError> {
        let count = deliveries.map_or(-1, i64::from);
        let claimed: Value = self
            .invoke(true, |s| {
                let mut call = s.claim_own.key(stream);
                call.arg(group).arg(consumer).arg(count).arg(ids);
                call
            })
            .await
            .map_err(|e| source_error(&format!("claiming entries of stream {stream}"), &e))?;
        match claimed {
            Value::Array(items) => Ok(items.iter().filter_map(reply::text).collect()),
            Value::Nil => Ok(Vec::new()),
            other => Err(odd_reply("claiming entries", format!("{other:?}"))),
        }
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's Debug would print its URL, password included.
        f.debug_struct("Redis")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `call`, failed with a timeout error once `limit` has passed.
pub(crate) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(limit, call).await {
        Ok(done) => done,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}", humantime::format_duration(limit)),
        ))),
    }
}

/// Field names and values as command arguments, in order.
pub(crate) fn flat(fields: &[(Bytes, Bytes)]) -> Vec<&[u8]> {
    fields
        .iter()
        .flat_map(|(name, value)| [name.as_ref(), value.as_ref()])
        .collect()
}
