//! Adaptive concurrency toward the app: how many deliveries may be in flight at once, found
//! from what the app's answers say about its queue.
//!
//! # Why this algorithm
//! - **AIMD** (grow by one while things go well, cut by a fraction on a drop) learns only from
//!   failures. An app past its concurrency knee (every worker busy, requests queueing) answers
//!   `200`, just later: AIMD keeps growing to `max_in_flight` and the queue, and the latency,
//!   with it. It is still the right answer to an explicit refusal, so `429`, `503` and
//!   timeouts cut the limit by [`DECREASE`], as AIMD would.
//! - **Gradient2** (Netflix) compares the latency of the moment with its own long average and
//!   shrinks when the ratio passes a tolerance. Under sustained load the long average climbs to
//!   the queued latency, which becomes the new normal: the limit settles where the app is
//!   already queueing, by the tolerance (1.5x-2x the latency).
//! - **Vegas** (what this is) estimates the queue itself. With `no_load` the app's latency
//!   when nothing waits, a window of deliveries at concurrency `c` with average latency `rtt`
//!   has about `c × (1 − no_load / rtt)` requests waiting instead of being served. The limit
//!   grows by one while fewer than [`ALPHA`] wait and shrinks by the excess when more than
//!   [`BETA`] do: it settles just past the knee, the most throughput the app gives, with the
//!   latency a couple of requests above its best.
//!
//! `no_load` only ever falls between probes: a steadily queued app would otherwise raise it to
//! the queued latency. Every [`PROBE_EVERY`] windows one window runs at half the limit, and its
//! lowest latency becomes `no_load`: an app that became slower for good (a deploy, a colder
//! cache) is followed, at the cost of one short window in [`PROBE_EVERY`].

use std::time::Duration;

/// Fewer requests than this waiting: the app has room; grow.
pub const ALPHA: f64 = 2.0;
/// More waiting than this: shrink by the excess.
pub const BETA: f64 = 4.0;
/// The cut on a refusal (`429`, `503`) or a timeout.
pub const DECREASE: f64 = 0.9;
/// Windows between two probes of the no-load latency.
pub const PROBE_EVERY: u32 = 100;
/// The fewest samples a window takes, whatever the limit.
const MIN_WINDOW: usize = 10;

/// What one delivery says about the app's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    /// The app answered (any status but a refusal) after this long.
    Answered(Duration),
    /// The app refused for load (`429`, `503`) or did not answer in time.
    Overloaded,
    /// Says nothing about load: a `5xx` the app's logic returned, a connection that could not
    /// be made (the circuit breaker's concern).
    Neutral,
}

/// The bounds of the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Where it starts.
    pub initial: usize,
    /// It never goes below this.
    pub min: usize,
    /// It never goes above this (`max_in_flight`).
    pub max: usize,
}

/// The limit and what it learned.
#[derive(Clone, Debug)]
pub struct AdaptiveLimit {
    bounds: Bounds,
    limit: f64,
    /// The app's latency with nothing waiting, once measured.
    no_load: Option<Duration>,
    window: Window,
    windows: u32,
    /// The limit to go back to after the probing window.
    probing: Option<f64>,
}

#[derive(Clone, Debug, Default)]
struct Window {
    answered: usize,
    total: Duration,
    lowest: Option<Duration>,
    /// The most deliveries in flight when one of the window's samples came in.
    busiest: usize,
    overloaded: bool,
}

impl AdaptiveLimit {
    /// A limit at `bounds.initial`, kept within the bounds.
    pub fn new(bounds: Bounds) -> Self {
        let max = bounds.max.max(1);
        let min = bounds.min.clamp(1, max);
        let bounds = Bounds {
            initial: bounds.initial.clamp(min, max),
            min,
            max,
        };
        Self {
            bounds,
            limit: bounds.initial as f64,
            no_load: None,
            window: Window::default(),
            windows: 0,
            probing: None,
        }
    }

    /// Deliveries allowed at once now.
    pub fn limit(&self) -> usize {
        self.limit.round() as usize
    }

    /// The no-load latency measured so far.
    pub fn no_load(&self) -> Option<Duration> {
        self.no_load
    }

    /// Takes one delivery's sample, with the deliveries in flight when it ended (itself
    /// included). Returns the new limit when it changed.
    pub fn record(&mut self, sample: Sample, in_flight: usize) -> Option<usize> {
        let w = &mut self.window;
        w.busiest = w.busiest.max(in_flight);
        match sample {
            Sample::Answered(rtt) => {
                w.answered += 1;
                w.total += rtt;
                w.lowest = Some(w.lowest.map_or(rtt, |l| l.min(rtt)));
            }
            Sample::Overloaded => w.overloaded = true,
            Sample::Neutral => {}
        }
        let (answered, overloaded) = (w.answered, w.overloaded);
        if answered < self.limit().max(MIN_WINDOW) && !overloaded {
            return None;
        }
        let before = self.limit();
        let window = std::mem::take(&mut self.window);
        self.close(window);
        (self.limit() != before).then_some(self.limit())
    }

    /// Ends a window: decides the next limit from it.
    fn close(&mut self, w: Window) {
        self.windows += 1;
        if let Some(restore) = self.probing.take() {
            // The probe's window ran at half the limit: its lowest latency is the no-load one.
            if let Some(lowest) = w.lowest {
                self.no_load = Some(lowest);
            }
            self.limit = restore;
        }
        if w.overloaded {
            self.set(self.limit * DECREASE);
            return;
        }
        let Some(lowest) = w.lowest else { return };
        let no_load = self.no_load.map_or(lowest, |n| n.min(lowest));
        self.no_load = Some(no_load);
        let average = w.total / w.answered.max(1) as u32;
        let waiting = w.busiest as f64 * (1.0 - no_load.as_secs_f64() / average.as_secs_f64());
        if waiting > BETA {
            self.set(self.limit - (waiting - BETA).max(1.0));
        } else if waiting < ALPHA && w.busiest as f64 >= self.limit / 2.0 {
            // Grow only when the limit is what held deliveries back, not the supply.
            self.set(self.limit + 1.0);
        }
        if self.windows.is_multiple_of(PROBE_EVERY) {
            self.probing = Some(self.limit);
            self.set(self.limit / 2.0);
        }
    }

    fn set(&mut self, limit: f64) {
        self.limit = limit.clamp(self.bounds.min as f64, self.bounds.max as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: Duration = Duration::from_millis(20);

    fn limiter(initial: usize) -> AdaptiveLimit {
        AdaptiveLimit::new(Bounds {
            initial,
            min: 1,
            max: 64,
        })
    }

    /// An app with `knee` workers: at concurrency `c`, each request takes `BASE × c / knee`
    /// once `c` passes the knee (processor sharing), `BASE` below it.
    fn latency(knee: usize, c: usize) -> Duration {
        BASE.mul_f64((c as f64 / knee as f64).max(1.0))
    }

    /// Runs the limiter against a saturated app for `windows` windows of samples, every
    /// delivery at the limit in force; the limits it went through.
    fn drive(l: &mut AdaptiveLimit, knee: usize, samples: usize) -> Vec<usize> {
        let mut seen = Vec::new();
        for _ in 0..samples {
            let c = l.limit();
            l.record(Sample::Answered(latency(knee, c)), c);
            seen.push(l.limit());
        }
        seen
    }

    #[test]
    fn a_saturated_app_is_held_just_past_its_knee() {
        for knee in [4, 8, 16, 32] {
            let mut l = limiter(1);
            let seen = drive(&mut l, knee, 20_000);
            assert_settled_near(&seen, knee);
        }
    }

    /// Over the last 5,000 samples the limit sat at `knee` + 1..5 at least 95% of the time:
    /// probes halve it for one window now and then, never lower.
    fn assert_settled_near(seen: &[usize], knee: usize) {
        let tail = &seen[seen.len() - 5_000..];
        let (lo, hi) = (tail.iter().min().unwrap(), tail.iter().max().unwrap());
        let near = |x: usize| (knee + 1..=knee + BETA as usize + 1).contains(&x);
        let settled = tail.iter().filter(|&&x| near(x)).count();
        assert!(
            settled * 100 >= tail.len() * 95,
            "knee {knee}: {settled} of {} samples near it; limits {lo}..{hi}",
            tail.len()
        );
        assert!(
            *lo >= knee / 2,
            "knee {knee}: a probe goes to half, no lower: {lo}"
        );
    }

    #[test]
    fn refusals_and_timeouts_cut_the_limit_and_errors_say_nothing() {
        let mut l = limiter(40);
        assert_eq!(l.record(Sample::Overloaded, 40), Some(36));
        let before = l.limit();
        for _ in 0..1_000 {
            l.record(Sample::Neutral, before);
        }
        assert_eq!(
            l.limit(),
            before,
            "5xx and connection errors neither grow nor cut it"
        );
    }

    #[test]
    fn an_app_that_is_not_kept_busy_does_not_grow_the_limit() {
        let mut l = limiter(10);
        for _ in 0..10_000 {
            // Two in flight at most: the supply, not the limit, holds deliveries back.
            l.record(Sample::Answered(BASE), 2);
        }
        assert!(l.limit() <= 10, "{}", l.limit());
    }

    #[test]
    fn an_app_that_became_slower_for_good_is_followed_by_the_next_probe() {
        let mut l = limiter(1);
        drive(&mut l, 8, 5_000);
        assert_eq!(l.no_load(), Some(BASE));
        // Twice as slow at every concurrency from now on.
        let mut seen = Vec::new();
        for _ in 0..20_000 {
            let c = l.limit();
            l.record(Sample::Answered(latency(8, c) * 2), c);
            seen.push(l.limit());
        }
        assert_eq!(l.no_load(), Some(BASE * 2));
        assert_settled_near(&seen, 8);
    }

    proptest! {
        /// Whatever the app answers, the limit stays within its bounds.
        #[test]
        fn the_limit_stays_within_its_bounds(
            min in 1usize..8,
            max in 8usize..128,
            samples in proptest::collection::vec((0u8..4, 1u64..500, 1usize..200), 1..2_000),
        ) {
            let mut l = AdaptiveLimit::new(Bounds { initial: 4, min, max });
            for (kind, ms, in_flight) in samples {
                let sample = match kind {
                    0 => Sample::Overloaded,
                    1 => Sample::Neutral,
                    _ => Sample::Answered(Duration::from_millis(ms)),
                };
                if let Some(limit) = l.record(sample, in_flight) {
                    prop_assert_eq!(limit, l.limit());
                }
                prop_assert!((min..=max).contains(&l.limit()), "{} outside {}..={}", l.limit(), min, max);
            }
        }
    }
}
