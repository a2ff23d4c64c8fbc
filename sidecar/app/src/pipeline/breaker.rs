//! The circuit breaker in front of the app: an app that cannot be reached is the app's fault,
//! not the message's.
//!
//! - **Closed**: deliveries go out. A run of `failures` deliveries that could not connect (or
//!   of `unavailable` 503 answers) opens it.
//! - **Open**: no delivery goes out and nothing new is taken from the broker (messages already
//!   taken wait, their claims given back without spending an attempt). The prober checks the
//!   app with a backoff (a TCP connect to it, or a GET of `breaker.probe_url`), and once it
//!   answers, half-opens the breaker.
//! - **Half-open**: one delivery goes out as a trial; if it reaches the app (any answer but a
//!   503), the breaker closes and everything waiting goes; otherwise it opens again.

use std::time::Duration;

use http::Uri;
use outrigger_core::Reply;
use parking_lot::Mutex;
use prometheus::IntGaugeVec;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::BreakerMetrics;

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Deliveries go out.
    Closed,
    /// The app is down: nothing goes out, the prober checks it.
    Open,
    /// The app answered a probe: one trial delivery goes out.
    HalfOpen,
}

impl BreakerState {
    /// Every state, for the gauge.
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    /// The label of the state gauge.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// How the app is checked while the breaker is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect to `host:port`.
    Connect(String),
    /// A GET that must answer 2xx.
    Http(Uri),
}

/// The breaker's settings, from `[breaker]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// Off: connection failures are classified like any reply.
    pub enabled: bool,
    /// Deliveries in a row that could not reach the app, to open it.
    pub failures: u32,
    /// 503 answers in a row, to open it.
    pub unavailable: u32,
    /// How the app is checked while open.
    pub probe: Probe,
    /// The first wait between probes; it doubles up to `probe_max`.
    pub probe_interval: Duration,
    /// The longest wait between probes.
    pub probe_max: Duration,
}

#[derive(Debug, Default)]
struct Runs {
    /// Deliveries in a row that could not connect.
    unreachable: u32,
    /// 503 answers in a row.
    unavailable: u32,
    /// The trial of a half-open breaker is out.
    trial_out: bool,
}

/// The breaker; one per app.
pub struct Breaker {
    settings: BreakerSettings,
    state: watch::Sender<BreakerState>,
    runs: Mutex<Runs>,
    metrics: BreakerMetrics,
}

/// Leave to deliver, from [`Breaker::admit`]; give it back with [`Breaker::record`]. Dropped
/// unrecorded (the message turned out a duplicate, shutdown), a trial goes to the next one.
#[must_use = "record what the delivery found, or drop the pass"]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    trial: bool,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.trial {
            self.breaker.runs.lock().trial_out = false;
            // Wake the waiters: one of them takes the trial.
            self.breaker.state.send_modify(|_| {});
        }
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings, metrics: BreakerMetrics) -> Self {
        metrics.show(BreakerState::Closed);
        Self {
            settings,
            state: watch::channel(BreakerState::Closed).0,
            runs: Mutex::new(Runs::default()),
            metrics,
        }
    }

    /// Whether the breaker acts at all.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        *self.state.borrow()
    }

    /// Follows the state, for the consumer loop and `/readyz`.
    pub fn watch(&self) -> watch::Receiver<BreakerState> {
        self.state.subscribe()
    }

    /// Waits until a delivery may go out: at once while closed, as the trial once half-open;
    /// `None` when `abort` came first.
    pub async fn admit(&self, abort: &CancellationToken) -> Option<Pass<'_>> {
        let mut state = self.state.subscribe();
        loop {
            match *state.borrow_and_update() {
                BreakerState::Closed => {
                    return Some(Pass {
                        breaker: self,
                        trial: false,
                    })
                }
                BreakerState::HalfOpen => {
                    let mut runs = self.runs.lock();
                    if !runs.trial_out {
                        runs.trial_out = true;
                        return Some(Pass {
                            breaker: self,
                            trial: true,
                        });
                    }
                }
                BreakerState::Open => {}
            }
            tokio::select! {
                biased;
                _ = abort.cancelled() => return None,
                changed = state.changed() => changed.ok()?,
            }
        }
    }

    /// What a delivery under `pass` found.
    pub fn record(&self, mut pass: Pass<'_>, reply: &Reply) {
        let trial = std::mem::replace(&mut pass.trial, false);
        drop(pass);
        // Nothing was sent (the message could not be delivered at all): nothing learnt.
        if !self.settings.enabled || matches!(reply, Reply::Undeliverable(_)) {
            if trial {
                self.runs.lock().trial_out = false;
                self.state.send_modify(|_| {});
            }
            return;
        }
        let unreachable = reply.unreachable();
        let unavailable = reply.status() == Some(503);
        let open = {
            let mut runs = self.runs.lock();
            if trial {
                runs.trial_out = false;
            }
            if unreachable {
                runs.unreachable += 1;
                runs.unavailable = 0;
                trial || runs.unreachable >= self.settings.failures
            } else if unavailable {
                runs.unavailable += 1;
                runs.unreachable = 0;
                trial || runs.unavailable >= self.settings.unavailable
            } else {
                runs.unreachable = 0;
                runs.unavailable = 0;
                false
            }
        };
        if open {
            self.move_to(BreakerState::Open, reply);
        } else if !unreachable && !unavailable && self.state() != BreakerState::Closed {
            self.move_to(BreakerState::Closed, reply);
        }
    }

    fn move_to(&self, to: BreakerState, why: &Reply) {
        let from = self.state.send_replace(to);
        if from == to {
            return;
        }
        self.metrics.moved(to);
        match to {
            BreakerState::Open => warn!(
                reason = %why.describe(),
                "The app cannot be reached: circuit open; nothing more is taken from the broker until it answers."
            ),
            BreakerState::Closed => info!("The app answers again: circuit closed."),
            BreakerState::HalfOpen => {}
        }
    }

    /// Probes the app while the breaker is open, with a doubling wait, and half-opens it once
    /// the app answers; until `shutdown`.
    pub async fn probe_while_open(&self, shutdown: CancellationToken) {
        let mut state = self.state.subscribe();
        loop {
            // Wait to be opened.
            loop {
                if *state.borrow_and_update() == BreakerState::Open {
                    break;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = state.changed() => if changed.is_err() { return },
                }
            }
            let mut wait = self.settings.probe_interval;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                if self.state() != BreakerState::Open {
                    break;
                }
                if probe(&self.settings.probe).await {
                    let from = self.state.send_replace(BreakerState::HalfOpen);
                    if from != BreakerState::HalfOpen {
                        self.metrics.moved(BreakerState::HalfOpen);
                    }
                    info!("The app answered a probe: circuit half-open, one delivery goes out.");
                    break;
                }
                wait = (wait * 2).min(self.settings.probe_max);
            }
        }
    }
}

/// Whether the app answers the probe within a second.
async fn probe(how: &Probe) -> bool {
    const WITHIN: Duration = Duration::from_secs(1);
    match how {
        Probe::Connect(authority) => {
            tokio::time::timeout(WITHIN, tokio::net::TcpStream::connect(authority))
                .await
                .is_ok_and(|r| r.is_ok())
        }
        Probe::Http(uri) => {
            let get = async {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
                client.get(uri.clone()).await
            };
            matches!(
                tokio::time::timeout(WITHIN, get).await,
                Ok(Ok(response)) if response.status().is_success()
            )
        }
    }
}

/// The gauge: 1 for the state the breaker is in, 0 for the others.
pub(crate) fn show(gauge: &IntGaugeVec, source: &str, now: BreakerState) {
    for state in BreakerState::ALL {
        gauge
            .with_label_values(&[source, state.as_str()])
            .set(i64::from(state == now));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use outrigger_core::{Response, TransportError, TransportErrorKind};

    use super::*;
    use crate::metrics::Metrics;

    fn breaker(probe: Probe) -> Breaker {
        Breaker::new(
            BreakerSettings {
                enabled: true,
                failures: 3,
                unavailable: 4,
                probe,
                probe_interval: Duration::from_millis(10),
                probe_max: Duration::from_millis(40),
            },
            Metrics::new().breaker("q"),
        )
    }

    fn refused() -> Reply {
        Reply::Failed(TransportError {
            kind: TransportErrorKind::Connect,
            detail: "connection refused".into(),
            elapsed: Duration::ZERO,
        })
    }

    fn status(status: u16) -> Reply {
        Reply::Response(Response {
            status,
            headers: vec![],
            body_excerpt: Bytes::new(),
        })
    }

    async fn pass(b: &Breaker) -> Pass<'_> {
        tokio::time::timeout(Duration::from_secs(5), b.admit(&CancellationToken::new()))
            .await
            .expect("admitted")
            .expect("not aborted")
    }

    #[tokio::test]
    async fn a_run_of_refused_connects_opens_it_and_a_trial_that_reaches_the_app_closes_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = Arc::new(breaker(Probe::Connect(
            listener.local_addr().unwrap().to_string(),
        )));
        for _ in 0..2 {
            let p = pass(&b).await;
            b.record(p, &refused());
        }
        // A success in between resets the run.
        let p = pass(&b).await;
        b.record(p, &status(500));
        for _ in 0..2 {
            let p = pass(&b).await;
            b.record(p, &refused());
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let p = pass(&b).await;
        b.record(p, &refused());
        assert_eq!(b.state(), BreakerState::Open);

        let stop = CancellationToken::new();
        let prober = tokio::spawn({
            let b = b.clone();
            let stop = stop.clone();
            async move { b.probe_while_open(stop).await }
        });
        // The app listens: the probe half-opens it, and only one delivery gets the trial.
        let trial = pass(&b).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(trial.trial);
        let second = tokio::time::timeout(
            Duration::from_millis(100),
            b.admit(&CancellationToken::new()),
        )
        .await;
        assert!(second.is_err(), "a second delivery waits for the trial");
        // A trial that fails opens it again; the next probe half-opens it.
        b.record(trial, &refused());
        assert_eq!(b.state(), BreakerState::Open);
        let trial = pass(&b).await;
        b.record(trial, &status(200));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!pass(&b).await.trial);
        stop.cancel();
        prober.await.unwrap();
    }

    #[tokio::test]
    async fn a_storm_of_503_opens_it_and_a_dropped_trial_goes_to_the_next_delivery() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = Arc::new(breaker(Probe::Connect(
            listener.local_addr().unwrap().to_string(),
        )));
        for _ in 0..4 {
            let p = pass(&b).await;
            b.record(p, &status(503));
        }
        assert_eq!(b.state(), BreakerState::Open);
        let stop = CancellationToken::new();
        let prober = tokio::spawn({
            let b = b.clone();
            let stop = stop.clone();
            async move { b.probe_while_open(stop).await }
        });
        let trial = pass(&b).await;
        drop(trial);
        let again = pass(&b).await;
        assert!(again.trial, "the trial went to the next delivery");
        b.record(again, &status(202));
        assert_eq!(b.state(), BreakerState::Closed);
        stop.cancel();
        prober.await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_app_keeps_it_open_and_the_gauge_shows_it() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let metrics = Metrics::new();
        let b = Arc::new(Breaker::new(
            BreakerSettings {
                enabled: true,
                failures: 1,
                unavailable: 1,
                probe: Probe::Connect(addr.to_string()),
                probe_interval: Duration::from_millis(10),
                probe_max: Duration::from_millis(20),
            },
            metrics.breaker("q"),
        ));
        let p = pass(&b).await;
        b.record(p, &refused());
        let stop = CancellationToken::new();
        let prober = tokio::spawn({
            let b = b.clone();
            let stop = stop.clone();
            async move { b.probe_while_open(stop).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(b.state(), BreakerState::Open, "nobody listens: still open");
        let text = metrics.render();
        assert!(
            text.contains("outrigger_breaker_state{source=\"q\",state=\"open\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outrigger_breaker_state{source=\"q\",state=\"closed\"} 0"),
            "{text}"
        );
        stop.cancel();
        prober.await.unwrap();
    }
}
