//! What the source holds: every entry read and not settled, per stream. The reader adds to it
//! (and waits while it is full), ackers take from it, the keeper refreshes what is in it, the
//! stats read it.
//!
//! An entry is held from the moment Redis handed it to this consumer (it is in the consumer's
//! pending list) until its settlement: while it waits to be handed out, while the pipeline has
//! it, and while it waits to be handed out again after a requeue. What is held counts against
//! `max_in_flight` and `max_buffered_bytes`, so the sidecar never has more entries pending
//! than the limits allow.
//!
//! A retry copy read before it is due waits in the reader, held but not counted: it takes no
//! permit until it is handed out ([`promote`](Ledger::promote)), so copies waiting for their
//! time can never take every permit and stall the entries they wait behind. What waits is
//! bounded all the same: a retry stream is read no further while a copy of it waits.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The held entries of every stream of one source.
#[derive(Debug)]
pub(crate) struct Ledger {
    books: Mutex<Books>,
    /// Signalled when an entry is released: the reader may have room again.
    freed: Notify,
    max_in_flight: usize,
    max_bytes: u64,
}

#[derive(Debug, Default)]
struct Books {
    streams: Vec<Book>,
    total: usize,
    bytes: u64,
    /// While the reader goes through its pending list after a reconnect: the entries settled
    /// since it started, which the list may still show.
    settled_since: Option<HashSet<(usize, String)>>,
    stopped: bool,
}

/// One stream's entries and troubles.
#[derive(Debug, Default)]
struct Book {
    /// Held entries by id, with their size.
    held: HashMap<String, u64>,
    /// The held entries that wait (retry copies not due yet): not counted in the totals.
    waiting: HashSet<String>,
    /// A dead-letter write for the stream failed, and none succeeded since.
    stalled: bool,
    /// Entries found deleted (or trimmed) while pending, since the source started.
    deleted: u64,
}

impl Ledger {
    /// A ledger of `streams` streams with these limits.
    pub fn new(streams: usize, max_in_flight: usize, max_bytes: u64) -> Self {
        Self {
            books: Mutex::new(Books {
                streams: (0..streams).map(|_| Book::default()).collect(),
                ..Books::default()
            }),
            freed: Notify::new(),
            max_in_flight: max_in_flight.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Holds entry `id` of stream `stream`; false if it is held already.
    pub fn hold(&self, stream: usize, id: &str, bytes: u64) -> bool {
        let mut books = self.books.lock();
        if books.streams[stream].held.contains_key(id) {
            return false;
        }
        books.streams[stream].held.insert(id.to_owned(), bytes);
        books.total += 1;
        books.bytes += bytes;
        true
    }

    /// Holds entry `id` of stream `stream` as waiting: held (refreshed, known), but not
    /// counted against the limits until [`promote`](Self::promote); false if it is held already.
    pub fn hold_waiting(&self, stream: usize, id: &str, bytes: u64) -> bool {
        let mut books = self.books.lock();
        let book = &mut books.streams[stream];
        if book.held.contains_key(id) {
            return false;
        }
        book.held.insert(id.to_owned(), bytes);
        book.waiting.insert(id.to_owned());
        true
    }

    /// Counts waiting entry `id` against the limits from now on: it is handed out. False when
    /// it is no longer held (let go meanwhile).
    pub fn promote(&self, stream: usize, id: &str) -> bool {
        let mut books = self.books.lock();
        let book = &mut books.streams[stream];
        if !book.waiting.remove(id) {
            return book.held.contains_key(id);
        }
        let bytes = book.held[id];
        books.total += 1;
        books.bytes += bytes;
        true
    }

    /// Whether entry `id` is held, or was settled since the pending list was asked for.
    pub fn known(&self, stream: usize, id: &str) -> bool {
        let books = self.books.lock();
        books.streams[stream].held.contains_key(id)
            || books
                .settled_since
                .as_ref()
                .is_some_and(|s| s.contains(&(stream, id.to_owned())))
    }

    /// Lets go of entry `id`: settled, or left for the next consumer.
    pub fn release(&self, stream: usize, id: &str) {
        let mut books = self.books.lock();
        if let Some(bytes) = books.streams[stream].held.remove(id) {
            if !books.streams[stream].waiting.remove(id) {
                books.total -= 1;
                books.bytes -= bytes;
            }
            if let Some(settled) = books.settled_since.as_mut() {
                settled.insert((stream, id.to_owned()));
            }
            drop(books);
            self.freed.notify_one();
        }
    }

    /// How many more entries may be read now: none while the byte limit is reached.
    pub fn room(&self) -> usize {
        let books = self.books.lock();
        if books.bytes >= self.max_bytes {
            return 0;
        }
        self.max_in_flight.saturating_sub(books.total)
    }

    /// Waits until [`room`](Self::room) is not zero.
    pub async fn wait_room(&self) {
        // `notify_one` keeps a permit when nobody waits: a release between the check and the
        // wait is not missed.
        while self.room() == 0 {
            self.freed.notified().await;
        }
    }

    /// The ids held of `stream`.
    pub fn ids(&self, stream: usize) -> Vec<String> {
        self.books.lock().streams[stream]
            .held
            .keys()
            .cloned()
            .collect()
    }

    /// Starts remembering settlements: the reader is about to read its pending list.
    pub fn begin_recovery(&self) {
        self.books.lock().settled_since = Some(HashSet::new());
    }

    /// Stops remembering settlements.
    pub fn end_recovery(&self) {
        self.books.lock().settled_since = None;
    }

    /// Marks the source stopped: what is handed back from now on stays for the next consumer.
    pub fn stop(&self) {
        self.books.lock().stopped = true;
    }

    /// Whether the source was stopped.
    pub fn is_stopped(&self) -> bool {
        self.books.lock().stopped
    }

    /// Entries held of `stream`.
    pub fn in_flight(&self, stream: usize) -> usize {
        self.books.lock().streams[stream].held.len()
    }

    /// Whether reading waits for room.
    pub fn full(&self) -> bool {
        self.room() == 0
    }

    /// Records whether the last dead-letter write of `stream` failed.
    pub fn set_stalled(&self, stream: usize, stalled: bool) {
        self.books.lock().streams[stream].stalled = stalled;
    }

    /// Whether the last dead-letter write of `stream` failed.
    pub fn stalled(&self, stream: usize) -> bool {
        self.books.lock().streams[stream].stalled
    }

    /// Counts entries of `stream` found deleted while pending.
    pub fn count_deleted(&self, stream: usize, n: usize) {
        self.books.lock().streams[stream].deleted += n as u64;
    }

    /// Entries of `stream` found deleted while pending since the source started.
    pub fn deleted(&self, stream: usize) -> u64 {
        self.books.lock().streams[stream].deleted
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn holding_counts_against_both_limits() {
        let ledger = Ledger::new(2, 3, 100);
        assert!(ledger.hold(0, "1-0", 10));
        assert!(!ledger.hold(0, "1-0", 10), "held once");
        assert!(ledger.hold(1, "1-0", 10), "ids are per stream");
        assert_eq!(ledger.room(), 1);
        assert!(ledger.hold(1, "2-0", 90));
        assert_eq!(ledger.room(), 0, "the byte limit is reached");
        ledger.release(1, "2-0");
        ledger.release(1, "2-0");
        assert_eq!(ledger.room(), 1, "released once");
        assert_eq!(ledger.in_flight(0), 1);
    }

    #[test]
    fn waiting_entries_take_no_permit_until_promoted() {
        let ledger = Ledger::new(2, 1, 100);
        assert!(ledger.hold_waiting(1, "1-0", 10));
        assert!(ledger.hold_waiting(1, "2-0", 10));
        assert!(!ledger.hold(1, "1-0", 10), "held once");
        assert_eq!(ledger.room(), 1, "waiting copies take no permit");
        assert!(ledger.known(1, "2-0"));
        assert_eq!(ledger.ids(1).len(), 2, "the keeper refreshes them");
        assert!(ledger.promote(1, "1-0"));
        assert_eq!(ledger.room(), 0, "handed out: counted");
        ledger.release(1, "2-0");
        assert_eq!(ledger.room(), 0, "a waiting copy let go frees nothing");
        ledger.release(1, "1-0");
        assert_eq!(ledger.room(), 1);
        assert!(!ledger.promote(1, "2-0"), "let go");
    }

    #[test]
    fn recovery_remembers_what_was_settled_meanwhile() {
        let ledger = Ledger::new(1, 8, 1000);
        ledger.hold(0, "1-0", 1);
        ledger.hold(0, "2-0", 1);
        ledger.release(0, "1-0");
        ledger.begin_recovery();
        ledger.release(0, "2-0");
        assert!(
            !ledger.known(0, "1-0"),
            "settled before: not in the pending list"
        );
        assert!(ledger.known(0, "2-0"), "settled while the list was read");
        ledger.end_recovery();
        assert!(!ledger.known(0, "2-0"));
    }

    #[tokio::test]
    async fn waiting_for_room_ends_with_a_release() {
        let ledger = std::sync::Arc::new(Ledger::new(1, 1, 1000));
        ledger.hold(0, "1-0", 1);
        let waiter = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.wait_room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        ledger.release(0, "1-0");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
