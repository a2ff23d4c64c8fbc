//! The demo's event mix: what each event is meant to do, and what that should add up to.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the built-in app treats an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Accepted on the first attempt.
    Ok,
    /// Fails with 500 `fail_times` times, then accepted.
    Transient,
    /// Answered 429 once (throttle, no attempt spent), then accepted.
    Throttled,
    /// Rejected with 400 every time: dead-lettered at once.
    Poison,
    /// Fails with 500 every time: dead-lettered when the attempts run out.
    Hopeless,
    /// Answered with `outrigger-action: drop`: the app does not want it.
    Unwanted,
    /// An old event type a route drops before delivery: it never reaches the app.
    Legacy,
}

impl Kind {
    /// The name carried in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Transient => "transient",
            Kind::Throttled => "throttled",
            Kind::Poison => "poison",
            Kind::Hopeless => "hopeless",
            Kind::Unwanted => "unwanted",
            Kind::Legacy => "legacy",
        }
    }

    /// Whether the app ends up accepting it.
    pub fn is_accepted(self) -> bool {
        matches!(self, Kind::Ok | Kind::Transient | Kind::Throttled)
    }

    /// Whether it ends in the dead-letter queue.
    pub fn is_dead_letter(self) -> bool {
        matches!(self, Kind::Poison | Kind::Hopeless)
    }
}

/// One event and how many copies of it the producer sent.
#[derive(Clone, Debug)]
pub struct Event {
    /// Business id; the dedup key.
    pub id: String,
    /// How the app treats it.
    pub kind: Kind,
    /// For [`Kind::Transient`]: failures before success.
    pub fail_times: u32,
    /// Copies published: 1, or more when the producer retried.
    pub copies: u32,
    /// A refund: its own event type, which a route sends to the app's refunds handler.
    pub refund: bool,
}

impl Event {
    /// Its CloudEvents type, set by the producer as a header: what the routes match.
    pub fn event_type(&self) -> &'static str {
        match (self.kind, self.refund) {
            (Kind::Legacy, _) => "order.v1.created",
            (_, true) => "order.refunded",
            (_, false) => "order.created",
        }
    }

    /// The JSON payload.
    pub fn payload(&self, amount: u32) -> String {
        format!(
            r#"{{"id":"{}","kind":"{}","fail_times":{},"amount":{}}}"#,
            self.id,
            self.kind.as_str(),
            self.fail_times,
            amount
        )
    }
}

/// A reproducible mix: mostly fine, some transient, throttled, poison, hopeless and unwanted
/// events, and about one in six sent twice (or three times) by a retrying producer.
pub fn generate(count: u32, seed: u64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let roll = rng.random_range(0..100);
            let kind = match roll {
                0..=74 => Kind::Ok,
                75..=86 => Kind::Transient,
                87..=91 => Kind::Throttled,
                92..=94 => Kind::Poison,
                95..=96 => Kind::Hopeless,
                97 => Kind::Unwanted,
                _ => Kind::Legacy,
            };
            let refund = rng.random_range(0..100) < 12;
            let copies = match rng.random_range(0..100) {
                0..=13 => 2,
                14..=15 => 3,
                _ => 1,
            };
            Event {
                id: format!("order-{i:05}"),
                kind,
                fail_times: if kind == Kind::Transient {
                    rng.random_range(1..=2)
                } else {
                    0
                },
                copies,
                refund,
            }
        })
        .collect()
}

/// Publication order: every copy, duplicates a little later than their original so some
/// arrive while the original is still in flight.
pub fn publication_order(events: &[Event], seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut slots: Vec<(u64, usize)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let base = (i as u64) * 16;
        slots.push((base, i));
        for _ in 1..e.copies {
            slots.push((base + rng.random_range(1..400), i));
        }
    }
    slots.sort();
    slots.into_iter().map(|(_, i)| i).collect()
}

/// One ledger entry: the `seq`-th posting of `account`, delivered in sequence order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The account: the message key its sequence runs per.
    pub account: String,
    /// Its number within the account, from 1.
    pub seq: u64,
}

impl Entry {
    /// Its CloudEvents type, which the ledger route matches.
    pub const TYPE: &'static str = "account.posted";

    /// The JSON payload: a plain event the app accepts, with its account and number.
    pub fn payload(&self) -> String {
        format!(
            r#"{{"id":"{}-{}","kind":"ok","fail_times":0,"account":"{}","seq":{}}}"#,
            self.account, self.seq, self.account, self.seq
        )
    }
}

/// Entries per account.
pub const ENTRIES: u64 = 10;

/// What is published, in order: each order event's copies (see [`publication_order`]) and
/// `accounts` ledgers of [`ENTRIES`] entries, each ledger spread over the run with neighbouring
/// entries sent out of order.
pub fn with_ledgers(events: &[Event], accounts: u32, seed: u64) -> Vec<Publish> {
    let orders = publication_order(events, seed);
    let span = orders.len() as u64 * 16;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x1ed9e5);
    let mut slots: Vec<(u64, u64, Publish)> = orders
        .into_iter()
        .enumerate()
        .map(|(n, i)| (n as u64 * 16, 0, Publish::Order(i)))
        .collect();
    for a in 0..accounts {
        let start = span * u64::from(a) / u64::from(accounts.max(1));
        for seq in 1..=ENTRIES {
            // 40 slots apart, up to 120 late: an entry often overtakes one or two before it.
            let at = start + seq * 40 + rng.random_range(0..120);
            let entry = Entry {
                account: format!("acct-{a:02}"),
                seq,
            };
            slots.push((at, seq, Publish::Entry(entry)));
        }
    }
    slots.sort_by_key(|(at, seq, _)| (*at, *seq));
    slots.into_iter().map(|(_, _, p)| p).collect()
}

/// One message to publish.
#[derive(Clone, Debug)]
pub enum Publish {
    /// A copy of the order event at this index.
    Order(usize),
    /// A ledger entry.
    Entry(Entry),
}

/// Entries published before one with a lower number of the same account.
pub fn overtakes(published: &[Publish]) -> usize {
    let mut highest: std::collections::HashMap<&str, u64> = Default::default();
    let mut n = 0;
    for p in published {
        if let Publish::Entry(e) = p {
            let top = highest.entry(e.account.as_str()).or_default();
            if e.seq < *top {
                n += 1;
            }
            *top = (*top).max(e.seq);
        }
    }
    n
}

/// What the run should end with, computed from the mix alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Messages published (copies included).
    pub published: u64,
    /// Events the app accepts, each once.
    pub delivered: u64,
    /// Events the app drops, and every copy of a legacy event (dropped by its route before
    /// dedup).
    pub dropped: u64,
    /// Dead letters: one per poison or hopeless event, however many copies were published.
    pub dead_lettered: u64,
    /// Later copies of every event, skipped by dedup (those of a dead-lettered event because
    /// its dead letter is written once).
    pub duplicates: u64,
}

impl Expected {
    /// Tallies the mix.
    pub fn of(events: &[Event]) -> Self {
        let mut x = Expected::default();
        for e in events {
            let copies = u64::from(e.copies);
            x.published += copies;
            if e.kind == Kind::Legacy {
                x.dropped += copies;
                continue;
            }
            if e.kind.is_dead_letter() {
                x.dead_lettered += 1;
            } else if e.kind.is_accepted() {
                x.delivered += 1;
            } else {
                x.dropped += 1;
            }
            x.duplicates += copies - 1;
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_reproducible_and_adds_up() {
        let a = generate(1000, 7);
        let b = generate(1000, 7);
        assert_eq!(
            a.iter().map(|e| (e.kind, e.copies)).collect::<Vec<_>>(),
            b.iter().map(|e| (e.kind, e.copies)).collect::<Vec<_>>()
        );
        let x = Expected::of(&a);
        assert_eq!(
            x.published,
            x.delivered + x.dropped + x.dead_lettered + x.duplicates
        );
        assert!(x.duplicates > 50 && x.dead_lettered > 10);
        assert_eq!(publication_order(&a, 7).len() as u64, x.published);
    }

    #[test]
    fn ledgers_are_sent_with_entries_out_of_order() {
        let events = generate(1000, 7);
        let published = with_ledgers(&events, 8, 7);
        let entries = published
            .iter()
            .filter(|p| matches!(p, Publish::Entry(_)))
            .count();
        assert_eq!(entries as u64, 8 * ENTRIES);
        assert_eq!(
            published.len() - entries,
            publication_order(&events, 7).len()
        );
        assert!(overtakes(&published) > 8, "{}", overtakes(&published));
    }
}
