//! Deliveries to the app at once: a fixed limit (`backpressure.max_concurrency`), or one that
//! follows the app's capacity (`backpressure.adaptive`, see `outrigger_policies::concurrency`).

use std::time::Duration;

use outrigger_core::{Reply, TransportErrorKind};
use outrigger_policies::{AdaptiveLimit, Bounds, Sample};
use parking_lot::Mutex;
use prometheus::IntGauge;
use tokio::sync::Notify;

/// The gate every delivery to the app passes.
pub struct AppConcurrency {
    state: Mutex<State>,
    freed: Notify,
    /// `outrigger_concurrency_limit`.
    gauge: IntGauge,
}

struct State {
    in_use: usize,
    limit: usize,
    adaptive: Option<AdaptiveLimit>,
}

/// One delivery's place at the gate, given back when dropped.
pub struct Slot<'a>(&'a AppConcurrency);

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
            state: Mutex::new(State {
                in_use: 0,
                limit,
                adaptive,
            }),
            freed: Notify::new(),
            gauge,
        }
    }

    /// Waits for a place under the limit.
    pub async fn acquire(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a place freed in between wakes this one.
            freed.as_mut().enable();
            {
                let mut s = self.state.lock();
                if s.in_use < s.limit {
                    s.in_use += 1;
                    return Slot(self);
                }
            }
            freed.await;
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
        let grew = limit > s.limit;
        s.limit = limit;
        drop(s);
        self.gauge.set(limit as i64);
        if grew {
            self.freed.notify_waiters();
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.state.lock().limit
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.state.lock().in_use -= 1;
        self.0.freed.notify_one();
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
        let slot = gate.acquire().await;
        gate.record(&slot, &refused, Duration::from_millis(5));
        assert_eq!(gate.limit(), 18);
        assert_eq!(g.get(), 18, "the gauge follows");
    }
}
