//! A shared gate that slows every delivery after the app asked to be throttled.

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

/// Closed until a point in time; every delivery waits at it.
#[derive(Debug, Default)]
pub struct ThrottleGate {
    until: Mutex<Option<Instant>>,
}

impl ThrottleGate {
    /// Keeps the gate closed for at least `delay` from now.
    pub fn engage(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut guard = self.until.lock();
        if guard.is_none_or(|u| u < until) {
            *guard = Some(until);
        }
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        loop {
            let until = *self.until.lock();
            match until {
                Some(u) if u > Instant::now() => tokio::time::sleep_until(u).await,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_holds_until_the_latest_engagement() {
        let gate = ThrottleGate::default();
        gate.engage(Duration::from_secs(2));
        gate.engage(Duration::from_secs(1));
        let start = Instant::now();
        gate.wait().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let start = Instant::now();
        gate.wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
