//! The Redis Streams [`Source`]: a reader task fills a bounded queue, a keeper task keeps what
//! is held fresh, `recv` takes from the queue (and so may be cancelled at any point without
//! losing an entry).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use outrigger_core::{Delivery, HealthFlag, Source, SourceError, StatsProbe};
use redis::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::acker::RedisStreamsAcker;
use crate::client::Redis;
use crate::config::RedisStreamsSettings;
use crate::groups;
use crate::keeper;
use crate::ledger::Ledger;
use crate::mapping::Mapping;
use crate::reader::Reader;
use crate::shared::{Item, Shared};
use crate::stats;

/// How often `stop` wakes a read that is blocked in Redis, until the reader has ended.
const UNBLOCK_EVERY: Duration = Duration::from_millis(100);

/// Consumes Redis streams as one consumer of a group. See the crate docs for what it does.
pub struct RedisStreamsSource {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Item>,
    stop: CancellationToken,
    /// The reading connection's id, for `CLIENT UNBLOCK`.
    client_id: Arc<AtomicI64>,
    reader: Option<JoinHandle<()>>,
    keeper: JoinHandle<()>,
    /// A failure no retry can help, reported by every later `recv`.
    failed: Option<SourceError>,
    stopped: bool,
}

impl RedisStreamsSource {
    /// Connects, refuses a server older than 6.2 ([`SourceError::Rejected`]), checks or
    /// creates the groups and dead-letter streams, and starts reading.
    pub async fn connect(settings: RedisStreamsSettings) -> Result<Self, SourceError> {
        let redis = Redis::connect(&settings.url, settings.timeout).await?;
        let version = redis.check_version().await?;
        groups::prepare(&redis, &settings).await?;
        let (streams, origins, dead_letters) = Shared::layout(&settings);
        // Never full: it holds at most the entries held, which the ledger bounds.
        let (tx, rx) = mpsc::channel(settings.max_in_flight.max(1));
        let shared = Arc::new(Shared {
            mapping: Mapping::new(&settings),
            ledger: Ledger::new(
                streams.len(),
                settings.max_in_flight,
                settings.max_buffered_bytes,
            ),
            streams,
            origins,
            dead_letters,
            redis,
            again: tx.clone(),
            health: HealthFlag::new(false),
            settings,
        });
        let stop = CancellationToken::new();
        let client_id = Arc::new(AtomicI64::new(0));
        let reader = Reader::new(Arc::clone(&shared), tx, stop.clone(), client_id.clone());
        let reader = tokio::spawn(reader.run());
        let keeper = tokio::spawn(keeper::run(Arc::clone(&shared)));
        let s = &shared.settings;
        info!(
            version,
            streams = ?s.streams,
            retry_streams = ?&shared.streams[s.streams.len()..],
            group = %s.group,
            consumer = %s.consumer,
            "Consuming Redis streams."
        );
        Ok(Self {
            shared,
            rx,
            stop,
            client_id,
            reader: Some(reader),
            keeper,
            failed: None,
            stopped: false,
        })
    }

    /// Entries of `stream` found deleted or trimmed while pending since the source started.
    pub fn deleted_while_pending(&self, stream: &str) -> u64 {
        self.shared
            .index(stream)
            .map_or(0, |i| self.shared.ledger.deleted(i))
    }

    /// Ends the reader: the stop token, and `CLIENT UNBLOCK` of a read blocked in Redis, sent
    /// again until the reader has noticed; a reader that does not end is aborted.
    async fn end_reader(&mut self) {
        self.stop.cancel();
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        let s = &self.shared.settings;
        let deadline = tokio::time::Instant::now() + s.block + s.timeout * 2;
        loop {
            let id = self.client_id.load(Ordering::SeqCst);
            if id != 0 {
                let mut cmd = redis::cmd("CLIENT");
                cmd.arg("UNBLOCK").arg(id);
                if let Err(error) = self.shared.redis.query::<Value>(&cmd).await {
                    debug!(%error, "Could not unblock the stream read.");
                }
            }
            tokio::select! {
                _ = &mut reader => return,
                _ = tokio::time::sleep(UNBLOCK_EVERY) => {}
            }
            if tokio::time::Instant::now() > deadline {
                reader.abort();
                return;
            }
        }
    }

    /// What was read and not handed out stays pending for the next consumer of this name, its
    /// delivery count set back by one: the next read of the pending list counts it again.
    async fn leave_queued(&mut self) {
        let mut queued: BTreeMap<(usize, u32), Vec<String>> = BTreeMap::new();
        while let Ok(item) = self.rx.try_recv() {
            if let Ok(Delivery { acker, .. }) = item {
                let deliveries = acker.deliveries();
                let (stream, id) = acker.forget();
                self.shared.ledger.release(stream, &id);
                queued.entry((stream, deliveries)).or_default().push(id);
            }
        }
        let s = &self.shared.settings;
        for ((stream, deliveries), ids) in queued {
            let refund = self
                .shared
                .redis
                .claim_own(
                    self.shared.stream(stream),
                    &s.group,
                    &s.consumer,
                    Some(deliveries.saturating_sub(1)),
                    &ids,
                )
                .await;
            if let Err(error) = refund {
                debug!(%error, "Could not set back the delivery count of entries read but not handed out.");
            }
        }
    }
}

impl Source for RedisStreamsSource {
    type Acker = RedisStreamsAcker;

    async fn recv(&mut self) -> Result<Option<Delivery<RedisStreamsAcker>>, SourceError> {
        if self.stopped {
            return Ok(None);
        }
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.rx.recv().await {
            Some(Ok(delivery)) => Ok(Some(delivery)),
            Some(Err(error)) => {
                self.failed = Some(error.clone());
                Err(error)
            }
            None => Ok(None),
        }
    }

    async fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.shared.ledger.stop();
        self.end_reader().await;
        self.leave_queued().await;
    }

    fn health(&self) -> HealthFlag {
        self.shared.health.clone()
    }

    fn stats(&self) -> StatsProbe {
        let shared = Arc::clone(&self.shared);
        StatsProbe::new(move || {
            let shared = Arc::clone(&shared);
            Box::pin(async move { stats::read(&shared).await })
        })
    }
}

impl Drop for RedisStreamsSource {
    fn drop(&mut self) {
        // Deliveries still queued are dropped with the queue: left pending, not handed back.
        self.shared.ledger.stop();
        self.keeper.abort();
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        self.shared.health.set(false);
    }
}

impl std::fmt::Debug for RedisStreamsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsSource")
            .field("settings", &self.shared.settings)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}
