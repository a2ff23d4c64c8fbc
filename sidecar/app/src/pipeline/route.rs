//! Per-message policy: one immutable [`Route`] per kind of message, read from a snapshot that
//! can be swapped while messages are in flight.
//!
//! A message picks its route once, when it is taken from the broker, and keeps it until it is
//! settled: whatever replaces the snapshot later (a reload) applies to messages taken after
//! the swap, and in-flight messages finish under the policy they started with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use outrigger_core::{Message, OrderingMode};
use outrigger_policies::{AttemptPolicy, Classifier, KeyPolicy, MessageMatch, SequencePolicy};

use super::ThrottleGate;
use crate::config::RouteAction;
use crate::delivery::HttpDelivery;

/// Everything that decides what happens to one message, from delivery to settlement.
pub struct Route {
    /// Its name: a bounded label (`default` for the top-level policy).
    pub name: String,
    /// Deliver its messages, or settle them without delivery (drop, dead-letter).
    pub action: RouteAction,
    /// Where and how it is delivered.
    pub delivery: HttpDelivery,
    /// How its idempotency key is made, and what a message without one gets.
    pub keys: KeyPolicy,
    /// The largest payload delivered; a larger one cannot be delivered.
    pub max_message_size: u64,
    /// What the app's replies mean.
    pub classifier: Classifier,
    /// Its attempt budget, backoff and retry mode.
    pub attempts: AttemptPolicy,
    /// What keeps its order.
    pub ordering: OrderingMode,
    /// The sequence its keys' messages are delivered in (`ordering.sequence`), if any.
    pub sequence: Option<SequencePolicy>,
    /// The slow-down every message of the route waits at after the app throttled one.
    pub throttle: Arc<ThrottleGate>,
    /// Where its dead letters go, when it names a destination of its own; `None`: the
    /// source's (`dead_letter.destination`, else `<source>.dlq`).
    pub dead_letter: Option<String>,
}

/// The routes in force: the snapshot a message picks its route from.
pub struct Routes {
    /// Tried in order; the first whose match holds takes the message.
    routes: Vec<(MessageMatch, Arc<Route>)>,
    /// For the messages none of them takes.
    default: Arc<Route>,
}

impl Routes {
    /// `routes` tried in order, then `default`.
    pub fn new(routes: Vec<(MessageMatch, Route)>, default: Route) -> Self {
        Self {
            routes: routes.into_iter().map(|(m, r)| (m, Arc::new(r))).collect(),
            default: Arc::new(default),
        }
    }

    /// The route `message` takes.
    pub fn pick(&self, message: &Message) -> Arc<Route> {
        self.routes
            .iter()
            .find(|(matching, _)| matching.matches(message))
            .map_or(&self.default, |(_, route)| route)
            .clone()
    }
}

/// The swappable handle the pipeline reads routes through.
pub struct RouteTable(ArcSwap<Routes>);

impl RouteTable {
    /// A table holding `routes`.
    pub fn new(routes: Routes) -> Self {
        Self(ArcSwap::from_pointee(routes))
    }

    /// The route `message` takes under the snapshot in force now.
    pub fn pick(&self, message: &Message) -> Arc<Route> {
        self.0.load().pick(message)
    }

    /// Puts `routes` in force for every message taken from now on.
    pub fn swap(&self, routes: Routes) {
        self.0.store(Arc::new(routes));
    }
}
