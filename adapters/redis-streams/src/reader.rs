//! The reader: one task per source that takes entries from Redis into the source's queue,
//! never more than the ledger has room for.
//!
//! On each connect it first goes through its own pending list (`XREADGROUP ... 0`): what this
//! consumer name was handed before and never settled (a previous run that crashed, or a reply
//! lost with a broken connection), skipping what it still holds. Then, in turn:
//! - every half `claim_idle`, the pending entries of other consumers idle longer than
//!   `claim_idle` (`XAUTOCLAIM`, its cursor carried from page to page and look to look);
//! - new entries (`XREADGROUP ... >`), blocking up to `block`.
//!
//! Retry streams (retry mode `queue`) are read with the source streams, by the same group. A
//! copy read before it is due waits here, held (pending on this consumer, refreshed by the
//! keeper, so no peer takes it) but taking no permit of the ledger, and its retry stream is
//! read no further until it is due: the copies of a tier fall due in the order they were
//! written. Once due it is handed out as soon as there is room. A crashed sidecar's waiting
//! copies are still pending: they come back through the pending read or a peer's claim, and
//! wait again.
//!
//! A delivery's count of hand-outs is Redis's own (`XPENDING`): 1 for a new entry, one more
//! for each read of the pending list and each claim. Entries Redis reports deleted or trimmed
//! while pending are counted, logged once per batch, and dead-lettered as tombstones.
//!
//! A broken connection marks the source down; the reader reconnects with backoff (100ms
//! doubling to 5s), logged once while it lasts. The stop (a token, and `CLIENT UNBLOCK` of a
//! blocked read) is looked at between calls: a call under way finishes, so every entry Redis
//! handed out is held.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use outrigger_core::{Coordinates, Delivery, Episode, SourceError};
use redis::aio::MultiplexedConnection;
use redis::{Cmd, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::acker::RedisStreamsAcker;
use crate::client::bounded;
use crate::dead_letter::{self, Target};
use crate::error::{is_no_group, odd_reply, source_error};
use crate::mapping::size;
use crate::reply::{self, Entry};
use crate::shared::{Held, Item, Shared};
use outrigger_core::ReconnectDelay;

mod waiting;

use waiting::Waiting;

/// Why a step of the reader ended early.
enum Halt {
    /// The source is stopping.
    Stop,
    /// The connection broke or Redis refused a read for now: reconnect.
    Lost(SourceError),
    /// The group was created again (its stream was deleted): carry on reading.
    Again,
    /// No retry can help (the group is gone and may not be created): `recv` reports it.
    Fatal(SourceError),
}

type Step<T = ()> = Result<T, Halt>;

/// The reader of one source.
pub(crate) struct Reader {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Item>,
    stop: CancellationToken,
    /// The id of the reading connection (`CLIENT ID`), for `CLIENT UNBLOCK`; 0 while none.
    client_id: Arc<AtomicI64>,
    connection: Option<MultiplexedConnection>,
    backoff: ReconnectDelay,
    reconnecting: Episode,
    /// Where the next `XAUTOCLAIM` of each stream starts.
    claim_cursors: Vec<String>,
    next_claim: Instant,
    /// The stream the next partial read starts at, when there is room for fewer entries than
    /// there are streams.
    rotation: usize,
    /// The retry copies read before they were due; none of a source stream.
    waiting: Waiting,
}

impl Reader {
    pub fn new(
        shared: Arc<Shared>,
        tx: mpsc::Sender<Item>,
        stop: CancellationToken,
        client_id: Arc<AtomicI64>,
    ) -> Self {
        let streams = shared.streams.len();
        Self {
            shared,
            tx,
            stop,
            client_id,
            connection: None,
            backoff: ReconnectDelay::default(),
            reconnecting: Episode::new(
                "Redis unreachable; reconnecting with backoff.",
                "Reconnected to Redis.",
            ),
            claim_cursors: vec!["0-0".to_owned(); streams],
            next_claim: Instant::now(),
            rotation: 0,
            waiting: Waiting::new(streams),
        }
    }

    /// Reads until stopped, or until a failure no retry can fix.
    pub async fn run(mut self) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let connected = self.connection.is_some();
            let step = match connected {
                false => self.connect().await,
                true => self.step().await,
            };
            match step {
                // Reset only once a turn worked: a connection that opens and breaks at once,
                // again and again, must not turn the reconnects into a busy loop.
                Ok(()) if connected => self.backoff.reset(),
                Ok(()) | Err(Halt::Again) => {}
                Err(Halt::Stop) => return,
                Err(Halt::Fatal(error)) => {
                    self.shared.health.set(false);
                    let _ = self.tx.send(Err(error)).await;
                    return;
                }
                Err(Halt::Lost(error)) => {
                    self.connection = None;
                    self.client_id.store(0, Ordering::SeqCst);
                    self.shared.health.set(false);
                    self.backoff.failed();
                    self.reconnecting.failed(&error);
                    if let Some(delay) = self.backoff.delay() {
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }

    /// Opens the reading connection and goes through this consumer's pending list.
    async fn connect(&mut self) -> Step {
        let redis = &self.shared.redis;
        let connection = redis
            .dedicated(self.shared.settings.block)
            .await
            .map_err(Halt::Lost)?;
        self.connection = Some(connection);
        let id: i64 = self
            .call(redis::cmd("CLIENT").arg("ID"), "CLIENT ID")
            .await?;
        self.client_id.store(id, Ordering::SeqCst);
        self.shared.health.set(true);
        self.shared.ledger.begin_recovery();
        let recovered = self.recover().await;
        self.shared.ledger.end_recovery();
        recovered?;
        self.reconnecting.recovered();
        Ok(())
    }

    /// Hands out again what this consumer has pending and does not hold, stream by stream.
    async fn recover(&mut self) -> Step {
        for index in 0..self.shared.streams.len() {
            let mut cursor = "0".to_owned();
            loop {
                let room = self.wait_room().await?;
                let stream = self.shared.stream(index).to_owned();
                let s = &self.shared.settings;
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(&s.group)
                    .arg(&s.consumer)
                    .arg("COUNT")
                    .arg(room)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&cursor);
                let read: Value = self.read(&cmd, index).await?;
                let entries = one_stream(read, &stream)?;
                let Some(last) = entries.last() else {
                    break;
                };
                cursor = last.id.clone();
                self.set_back_waiting(index, &entries).await;
                let fresh: Vec<Entry> = entries
                    .into_iter()
                    .filter(|e| !self.shared.ledger.known(index, &e.id))
                    .collect();
                self.hand_out(index, fresh, true).await?;
            }
        }
        Ok(())
    }

    /// One turn: wait for room, look for a crashed peer's entries when it is time, read new
    /// entries.
    async fn step(&mut self) -> Step {
        self.wait_room().await?;
        self.hand_out_due().await?;
        if Instant::now() >= self.next_claim {
            self.claim_idle_entries().await?;
            self.next_claim = Instant::now() + self.shared.settings.claim_interval();
        }
        if self.shared.ledger.room() > 0 {
            self.read_new().await?;
        }
        Ok(())
    }

    /// Takes over entries idle longer than `claim_idle` on any consumer, while there is room.
    async fn claim_idle_entries(&mut self) -> Step {
        let idle_ms = self.shared.settings.claim_idle.as_millis() as u64;
        for index in 0..self.shared.streams.len() {
            loop {
                let room = self.shared.ledger.room().min(self.shared.settings.count);
                if room == 0 || self.stop.is_cancelled() {
                    return Ok(());
                }
                let stream = self.shared.stream(index).to_owned();
                let s = &self.shared.settings;
                let mut cmd = redis::cmd("XAUTOCLAIM");
                cmd.arg(&stream)
                    .arg(&s.group)
                    .arg(&s.consumer)
                    .arg(idle_ms)
                    .arg(&self.claim_cursors[index])
                    .arg("COUNT")
                    .arg(room);
                let claimed: Value = self.read(&cmd, index).await?;
                let claimed = reply::auto_claimed(claimed)
                    .map_err(|e| Halt::Lost(odd_reply("XAUTOCLAIM", e)))?;
                self.claim_cursors[index] = claimed.cursor.clone();
                if !claimed.deleted.is_empty() {
                    // Redis 7 took them off the pending list already: nothing to acknowledge.
                    let deleted = claimed.deleted.iter().map(|id| (id.clone(), 0)).collect();
                    self.tombstones(index, deleted, false).await;
                }
                let fresh: Vec<Entry> = claimed
                    .entries
                    .into_iter()
                    .filter(|e| !self.shared.ledger.known(index, &e.id))
                    .collect();
                self.hand_out(index, fresh, true).await?;
                if claimed.cursor == "0-0" {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads new entries of every stream, as many as there is room for, blocking up to
    /// `block` (less when the next look for idle entries is due sooner).
    async fn read_new(&mut self) -> Step {
        let s = &self.shared.settings;
        let room = self.shared.ledger.room().min(s.count);
        // A retry stream with a copy waiting is read no further until it is due. The source
        // streams are always read, so there is always one.
        let open: Vec<usize> = (0..self.shared.streams.len())
            .filter(|&i| self.waiting.is_empty(i))
            .collect();
        let n = open.len();
        // COUNT applies to each stream: with room for fewer entries than there are streams,
        // read that many of them, one entry each, taking turns.
        let (streams, count): (Vec<usize>, usize) = if room >= n {
            (open, room / n)
        } else {
            let first = self.rotation;
            self.rotation = (self.rotation + room) % n;
            ((0..room).map(|i| open[(first + i) % n]).collect(), 1)
        };
        let until_claim = self.next_claim.saturating_duration_since(Instant::now());
        let until_due = self.waiting.next_due().map_or(Duration::MAX, |due| {
            due.duration_since(SystemTime::now()).unwrap_or_default()
        });
        let block = s
            .block
            .min(until_claim)
            .min(until_due)
            .max(Duration::from_millis(1));
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS");
        for &i in &streams {
            cmd.arg(self.shared.stream(i));
        }
        for _ in &streams {
            cmd.arg(">");
        }
        let read: Value = self.read(&cmd, streams[0]).await?;
        let read = reply::read(read).map_err(|e| Halt::Lost(odd_reply("XREADGROUP", e)))?;
        for (stream, entries) in read {
            let Some(index) = self.shared.index(&stream) else {
                continue;
            };
            self.hand_out(index, entries, false).await?;
            // New entries were handed out once: by this read.
        }
        Ok(())
    }

    /// Holds and hands out `entries` of stream `index`. `counted`: their delivery counts are
    /// asked from Redis (pending-list reads and claims); new entries have 1. Entries without
    /// fields were deleted while pending: tombstones.
    async fn hand_out(&mut self, index: usize, entries: Vec<Entry>, counted: bool) -> Step {
        if entries.is_empty() {
            return Ok(());
        }
        let counts = if counted {
            self.deliveries(index, &entries).await?
        } else {
            HashMap::new()
        };
        let mut deleted = Vec::new();
        let mut waiting: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let now = SystemTime::now();
        for entry in entries {
            let deliveries = counts.get(&entry.id).copied().unwrap_or(1).max(1);
            let Some(fields) = entry.fields else {
                deleted.push((entry.id, deliveries));
                continue;
            };
            let held = self.shared.held(index, entry.id, fields);
            let early = held.due().is_some_and(|due| due > now);
            if self.shared.is_retry(index) && (early || !self.waiting.is_empty(index)) {
                let id = held.id.clone();
                if self.wait(held, deliveries) {
                    waiting.entry(deliveries).or_default().push(id);
                }
                continue;
            }
            let Some(delivery) = self.shared.take(held, deliveries) else {
                continue;
            };
            self.send(delivery).await?;
        }
        if !deleted.is_empty() {
            // A read of the pending list keeps them there: acknowledge with the tombstone.
            self.tombstones(index, deleted, true).await;
        }
        // A copy read before it is due was not handed out: its count goes back by one, so
        // that a crash while it waits spends none of its attempts (the next read counts it
        // again). It goes up again when the copy is handed out.
        for (deliveries, ids) in waiting {
            self.set_count(index, deliveries.saturating_sub(1), &ids)
                .await;
        }
        Ok(())
    }

    /// The copies among `entries` (just read again from the pending list) that wait here
    /// already: that read counted one more hand-out of each, which is set back.
    async fn set_back_waiting(&self, index: usize, entries: &[Entry]) {
        let counts = self
            .waiting
            .read_again(index, entries.iter().map(|e| e.id.as_str()));
        for (deliveries, ids) in counts {
            self.set_count(index, deliveries, &ids).await;
        }
    }

    /// Sets the delivery count of entries `ids` of stream `index`, held by this consumer.
    async fn set_count(&self, index: usize, deliveries: u32, ids: &[String]) {
        let s = &self.shared.settings;
        let set = self
            .shared
            .redis
            .claim_own(
                self.shared.stream(index),
                &s.group,
                &s.consumer,
                Some(deliveries),
                ids,
            )
            .await;
        if let Err(error) = set {
            debug!(%error, stream = self.shared.stream(index), "Could not set the delivery count of waiting retry copies.");
        }
    }

    /// Sends `delivery` to `recv`.
    async fn send(&self, delivery: Delivery<RedisStreamsAcker>) -> Step {
        if let Err(refused) = self.tx.send(Ok(delivery)).await {
            // The source is gone: its entries stay pending for the next consumer.
            if let Ok(delivery) = refused.0 {
                let (stream, id) = delivery.acker.forget();
                self.shared.ledger.release(stream, &id);
            }
            return Err(Halt::Stop);
        }
        Ok(())
    }

    /// Keeps retry copy `held` until it is due: held, taking no permit. False when it is held
    /// already.
    fn wait(&mut self, held: Held, deliveries: u32) -> bool {
        if !self
            .shared
            .ledger
            .hold_waiting(held.stream, &held.id, size(&held.fields))
        {
            return false;
        }
        self.waiting.insert(held, deliveries);
        true
    }

    /// Hands out the waiting copies that are due, each stream's in order, while there is
    /// room; a copy let go meanwhile (a peer took it after an outage) is skipped.
    async fn hand_out_due(&mut self) -> Step {
        let now = SystemTime::now();
        for index in 0..self.shared.streams.len() {
            while self.shared.ledger.room() > 0 {
                let Some((held, deliveries)) = self.waiting.pop_due(index, now) else {
                    break;
                };
                if !self.shared.ledger.promote(index, &held.id) {
                    continue;
                }
                // Counted again: this hand-out is the read's that took it in.
                self.set_count(index, deliveries, std::slice::from_ref(&held.id))
                    .await;
                let delivery = self.shared.delivery(Arc::new(held), deliveries, false);
                self.send(delivery).await?;
            }
        }
        Ok(())
    }

    /// How many times Redis handed out each of `entries` (all pending on this consumer).
    async fn deliveries(&mut self, index: usize, entries: &[Entry]) -> Step<HashMap<String, u32>> {
        let stream = self.shared.stream(index).to_owned();
        let s = &self.shared.settings;
        let (first, last) = (&entries[0].id, &entries[entries.len() - 1].id);
        // The range may hold entries this consumer holds too: ask for enough rows.
        let rows = entries.len() + self.shared.ledger.in_flight(index);
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&stream)
            .arg(&s.group)
            .arg(first)
            .arg(last)
            .arg(rows)
            .arg(&s.consumer);
        let pending: Value = self.read(&cmd, index).await?;
        let pending = reply::pending(pending).map_err(|e| Halt::Lost(odd_reply("XPENDING", e)))?;
        Ok(pending.into_iter().map(|p| (p.id, p.deliveries)).collect())
    }

    /// Reports entries of stream `index` deleted while pending: counted, one WARN for the
    /// batch, a tombstone each in the dead-letter stream (acknowledging each with `ack`).
    async fn tombstones(&mut self, index: usize, deleted: Vec<(String, u32)>, ack: bool) {
        let shared = &self.shared;
        let stream = shared.stream(index);
        shared.ledger.count_deleted(index, deleted.len());
        let mut failed = None;
        for (id, deliveries) in &deleted {
            let origin = Coordinates::RedisStream {
                stream: stream.to_owned(),
                id: id.clone(),
            };
            let target = Target {
                dead_letters: &shared.dead_letters[index],
                stream,
                group: &shared.settings.group,
                id,
                create: shared.settings.declare_dead_letters,
            };
            let fields = dead_letter::tombstone(&origin, *deliveries);
            if let Err(e) = dead_letter::write(&shared.redis, &target, ack, &fields).await {
                failed = Some(e);
            }
        }
        let first = &deleted[0].0;
        match failed {
            None => warn!(
                stream,
                deleted = deleted.len(),
                first = %first,
                dead_letters = %shared.dead_letters[index],
                "Entries were deleted or trimmed from the stream while pending; wrote a \
                 tombstone for each to the dead-letter stream."
            ),
            Some(error) => warn!(
                stream,
                deleted = deleted.len(),
                first = %first,
                %error,
                "Entries were deleted or trimmed from the stream while pending; their \
                 tombstones could not be written."
            ),
        }
    }

    /// Waits for room in the ledger, or the stop; the room there is, at most one read's count.
    async fn wait_room(&self) -> Step<usize> {
        tokio::select! {
            _ = self.stop.cancelled() => return Err(Halt::Stop),
            () = self.shared.ledger.wait_room() => {}
        }
        if self.stop.is_cancelled() {
            return Err(Halt::Stop);
        }
        Ok(self
            .shared
            .ledger
            .room()
            .clamp(1, self.shared.settings.count))
    }

    /// A read on the reading connection (of stream `index`, or of several starting there).
    /// A missing group is created again when the policy allows it (its stream was deleted,
    /// and the group with it), else fatal.
    async fn read<T: redis::FromRedisValue>(&mut self, cmd: &Cmd, index: usize) -> Step<T> {
        match self.try_call(cmd).await {
            Ok(value) => Ok(value),
            // A blocked read ends with UNBLOCKED when its stream is deleted under it.
            Err(e) if is_no_group(&e) || e.code() == Some("UNBLOCKED") => {
                Err(self.recreate_groups(index).await)
            }
            Err(e) => {
                let stream = self.shared.stream(index);
                Err(Halt::Lost(source_error(
                    &format!("reading stream {stream}"),
                    &e,
                )))
            }
        }
    }

    /// Creates every group that is missing, with its stream; `Again` once they all exist.
    async fn recreate_groups(&mut self, index: usize) -> Halt {
        let s = &self.shared.settings;
        // The retry streams are the sidecar's own: their groups are created again whatever
        // `create` says, from their first entry.
        let mut recreated = false;
        for (retry, stream) in self.shared.streams.iter().enumerate() {
            if !self.shared.is_retry(retry) {
                continue;
            }
            match crate::groups::retry_group(&self.shared.redis, s, stream).await {
                Ok(true) => {
                    recreated = true;
                    warn!(
                        stream,
                        group = %s.group,
                        "The retry stream's consumer group was gone; created it again."
                    );
                }
                Ok(false) => {}
                Err(SourceError::Rejected(reason)) => {
                    return Halt::Fatal(SourceError::Rejected(reason))
                }
                Err(e) => return Halt::Lost(e),
            }
        }
        if !s.create {
            if recreated {
                return Halt::Again;
            }
            return Halt::Fatal(SourceError::Rejected(format!(
                "stream {} (or another consumed) has no consumer group {} any more (was the \
                 stream deleted?); create it, or set source.redis_streams.create = true",
                self.shared.stream(index),
                s.group
            )));
        }
        for stream in &s.streams {
            let mut create = redis::cmd("XGROUP");
            create
                .arg("CREATE")
                .arg(stream)
                .arg(&s.group)
                .arg("0")
                .arg("MKSTREAM");
            match self.shared.redis.query::<Value>(&create).await {
                Ok(_) => warn!(
                    stream,
                    group = %s.group,
                    "The consumer group was gone (was the stream deleted?); created it again."
                ),
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Halt::Lost(source_error("creating the group", &e)),
            }
        }
        Halt::Again
    }

    async fn call<T: redis::FromRedisValue>(&mut self, cmd: &Cmd, doing: &str) -> Step<T> {
        self.try_call(cmd)
            .await
            .map_err(|e| Halt::Lost(source_error(doing, &e)))
    }

    async fn try_call<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
    ) -> Result<T, redis::RedisError> {
        let limit = self.shared.settings.block + self.shared.settings.timeout;
        let connection = self
            .connection
            .as_mut()
            .expect("calls are made while connected");
        bounded(limit, cmd.query_async(connection)).await
    }
}

/// The entries of `stream` in a read of that one stream.
fn one_stream(read: Value, stream: &str) -> Step<Vec<Entry>> {
    let read = reply::read(read).map_err(|e| Halt::Lost(odd_reply("XREADGROUP", e)))?;
    Ok(read
        .into_iter()
        .find(|(name, _)| name == stream)
        .map(|(_, entries)| entries)
        .unwrap_or_default())
}
