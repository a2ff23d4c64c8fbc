//! What the producer sends: `keys` business keys, each healthy, transient or poison by its
//! name, and the extra copies a real producer's retries and replays add.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Share of keys the app always refuses with a 4xx: they must end in the dead-letter queue.
const POISON: f64 = 0.03;
/// Share of keys the app fails with a 500 a few times before it accepts them.
const TRANSIENT: f64 = 0.10;
/// Extra copies, as a share of the keys: each repeats a random key with the same dedup key.
const DUPLICATES: f64 = 0.10;
/// How many requests of a transient key the app fails before it accepts one.
pub const TRANSIENT_FAILURES: u32 = 2;

/// What the app does with a key, told by the key's first letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Accepted at once (`h-...`).
    Healthy,
    /// Refused with a 500 [`TRANSIENT_FAILURES`] times, then accepted (`t-...`).
    Transient,
    /// Always refused with a 400 (`p-...`).
    Poison,
}

impl Kind {
    /// The kind of `key`.
    pub fn of(key: &str) -> Self {
        match key.as_bytes().first() {
            Some(b'p') => Kind::Poison,
            Some(b't') => Kind::Transient,
            _ => Kind::Healthy,
        }
    }

    fn prefix(self) -> char {
        match self {
            Kind::Healthy => 'h',
            Kind::Transient => 't',
            Kind::Poison => 'p',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Healthy => "healthy",
            Kind::Transient => "transient",
            Kind::Poison => "poison",
        }
    }
}

/// One message to publish: its dedup key and the payload `{"id":KEY,"copy":N,"kind":"..."}`,
/// where `copy` is 0 for a key's first message and counts its duplicates.
#[derive(Clone, Debug)]
pub struct Event {
    /// The business key; the dedup key of every copy.
    pub key: String,
    /// JSON with the key under `id`, so a `{json:/id}` policy finds it.
    pub payload: Vec<u8>,
}

/// Every key and every message, in publishing order.
pub struct Workload {
    /// The distinct keys.
    pub keys: Vec<String>,
    /// The messages, duplicates among them.
    pub events: Vec<Event>,
}

impl Workload {
    /// `keys` keys and about 10% duplicates, from `seed`. A duplicate follows its first copy,
    /// half of them closely (while the first may still be in flight), the rest anywhere later
    /// (long after the first was settled).
    pub fn new(keys: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let names: Vec<String> = (0..keys)
            .map(|i| {
                let roll: f64 = rng.random();
                let kind = if roll < POISON {
                    Kind::Poison
                } else if roll < POISON + TRANSIENT {
                    Kind::Transient
                } else {
                    Kind::Healthy
                };
                format!("{}-{i:06}", kind.prefix())
            })
            .collect();
        // Each message gets a place in the stream; sorting by it interleaves the duplicates.
        let mut placed: Vec<(f64, usize, u32)> = (0..keys).map(|i| (i as f64, i, 0)).collect();
        let mut copies = vec![0u32; keys];
        for _ in 0..(keys as f64 * DUPLICATES).round() as usize {
            let i = rng.random_range(0..keys);
            copies[i] += 1;
            let ahead = if rng.random_bool(0.5) {
                rng.random_range(0.1..50.0)
            } else {
                rng.random_range(0.1..keys as f64)
            };
            placed.push((i as f64 + ahead, i, copies[i]));
        }
        placed.sort_by(|a, b| a.0.total_cmp(&b.0));
        let events = placed
            .into_iter()
            .map(|(_, i, copy)| {
                let key = names[i].clone();
                let kind = Kind::of(&key).name();
                let payload =
                    format!(r#"{{"id":"{key}","copy":{copy},"kind":"{kind}"}}"#).into_bytes();
                Event { key, payload }
            })
            .collect();
        Self {
            keys: names,
            events,
        }
    }
}

/// The `copy` field of a payload this workload made (a dead letter keeps it byte for byte).
pub fn copy_of(payload: &[u8]) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v["copy"].as_u64().map(|c| c as u32)
}
