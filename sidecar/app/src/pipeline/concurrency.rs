//! Deliveries to the app at once: a fixed limit (`backpressure.max_concurrency`), or one that
//! follows the app's capacity (`backpressure.adaptive`, see `outrigger_policies::concurrency`).

use std::time::Duration;

use outrigger_core::{Reply, TransportErrorKind};
use outrigger_policies::{AdaptiveLimit, Bounds, Sample};
use parking_lot::Mutex;
use prometheus::IntGauge;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The gate every delivery to the app passes: a FIFO semaphore (a delivery that waited is
/// never overtaken by one that came later) whose permits follow the limit.
pub struct AppConcurrency {
    permits: Semaphore,
    state: Mutex<State>,
    /// `outrigger_concurrency_limit`.
    gauge: IntGauge,
}

struct State {
    limit: usize,
    in_use: usize,
    /// Permits still to take out of circulation after a cut: those in use when it came are
    /// forgotten as they come back.
    debt: usize,
    adaptive: Option<AdaptiveLimit>,
}

/// One delivery's place at the gate, given back when dropped.
pub struct Slot<'a> {
    gate: &'a AppConcurrency,
    permit: Option<SemaphorePermit<'a>>,
}

impl AppConcurrency {
    /// `limit` deliveries at once, always.
    pub fn fixed(limit: usize, gauge: IntGauge) -> Self {
        Self::with(limit.max(1), None, gauge)
    }

    /// A limit within `bounds` that follows each delivery's answer.
    pub fn adaptive(bounds: Bounds, gauge: IntGauge) -> Self {
        let limiter = AdaptiveLimit::new(bounds);
        Self::with(limiter.limit(), Some(limiter), gauge)
    }

    fn with(limit: usize, adaptive: Option<AdaptiveLimit>, gauge: IntGauge) -> Self {
        gauge.set(limit as i64);
        Self {
            permits: Semaphore::new(limit),
            state: Mutex::new(State {
                limit,
                in_use: 0,
                debt: 0,
                adaptive,
            }),
            gauge,
        }
    }

    /// Waits for a place under the limit, in arrival order.
    pub async fn acquire(&self) -> Slot<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the app's semaphore is never closed");
        self.state.lock().in_use += 1;
        Slot {
            gate: self,
            permit: Some(permit),
        }
    }

    /// What the delivery that holds `slot` learned of the app: the adaptive limit moves on it.
    pub fn record(&self, _slot: &Slot<'_>, reply: &Reply, took: Duration) {
        let mut s = self.state.lock();
        let in_use = s.in_use;
        let Some(limiter) = &mut s.adaptive else {
            return;
        };
        let Some(limit) = limiter.record(sample(reply, took), in_use) else {
            return;
        };
        if limit > s.limit {
            // Growth first cancels what a cut still owes.
            let grow = limit - s.limit;
            let cancelled = grow.min(s.debt);
            s.debt -= cancelled;
            self.permits.add_permits(grow - cancelled);
        } else {
            let cut = s.limit - limit;
            let forgotten = self.permits.forget_permits(cut);
            s.debt += cut - forgotten;
        }
        s.limit = limit;
        drop(s);
        self.gauge.set(limit as i64);
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.state.lock().limit
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock();
        s.in_use -= 1;
        let permit = self
            .permit
            .take()
            .expect("a slot holds its permit until dropped");
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        }
    }
}

/// What a reply says about the app's load: a refusal (`429`, `503`) or a timeout is overload;
/// another `5xx` or a failed connection says nothing (the app's logic, or the breaker's
/// business); any other answer is its latency.
fn sample(reply: &Reply, took: Duration) -> Sample {
    match reply {
        Reply::Response(r) if matches!(r.status, 429 | 503) => Sample::Overloaded,
        Reply::Response(r) if r.status >= 500 => Sample::Neutral,
        Reply::Response(_) => Sample::Answered(took),
        Reply::Failed(e) if e.kind == TransportErrorKind::Timeout => Sample::Overloaded,
        Reply::Failed(_) | Reply::Undeliverable(_) => Sample::Neutral,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn gauge() -> IntGauge {
        IntGauge::new("limit", "test").unwrap()
    }

    #[tokio::test]
    async fn a_fixed_gate_lets_its_limit_through_and_the_next_when_one_leaves() {
        let gate = Arc::new(AppConcurrency::fixed(2, gauge()));
        let a = gate.acquire().await;
        let _b = gate.acquire().await;
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _c = gate.acquire().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a third waits");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the third goes once one leaves")
            .unwrap();
    }

    #[tokio::test]
    async fn an_adaptive_gate_shows_its_limit_and_cuts_it_on_refusals() {
        let g = gauge();
        let gate = AppConcurrency::adaptive(
            Bounds {
                initial: 20,
                min: 2,
                max: 64,
            },
            g.clone(),
        );
        assert_eq!(g.get(), 20);
        let refused = Reply::Response(outrigger_core::Response {
            status: 503,
            headers: Vec::new(),
            body_excerpt: Default::default(),
        });
        let slots: Vec<_> = futures_util::future::join_all((0..20).map(|_| gate.acquire())).await;
        gate.record(&slots[0], &refused, Duration::from_millis(5));
        assert_eq!(gate.limit(), 18);
        assert_eq!(g.get(), 18, "the gauge follows");
        // All 20 were in use when the cut came: two are forgotten as they come back, so
        // 18 go back to circulation.
        drop(slots);
        let again: Vec<_> = futures_util::future::join_all((0..18).map(|_| gate.acquire())).await;
        let more = tokio::time::timeout(Duration::from_millis(50), gate.acquire()).await;
        assert!(more.is_err(), "a 19th waits: the limit is 18");
        drop(again);
    }

    #[tokio::test]
    async fn the_first_to_wait_is_the_first_let_through() {
        let gate = Arc::new(AppConcurrency::fixed(1, gauge()));
        let held = gate.acquire().await;
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..5 {
            let (gate, order) = (gate.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _slot = gate.acquire().await;
                order.lock().push(i);
            }));
            // Each one queued before the next starts.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock(), [0, 1, 2, 3, 4]);
    }
}
