//! What must keep its order: the ordering scopes a broker can keep and a policy can ask for.

use std::fmt;

use serde::Deserialize;

/// What must keep its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderingMode {
    /// Strict per partition (or per queue or stream): one message at a time each.
    Partition,
    /// Strict per message key, parallel across keys. Messages without a key run freely.
    Key,
    /// No order: everything in parallel up to the in-flight limit.
    None,
}

impl OrderingMode {
    /// Every mode, in the order help texts list them.
    pub const ALL: [OrderingMode; 3] = [
        OrderingMode::Partition,
        OrderingMode::Key,
        OrderingMode::None,
    ];

    /// The name used in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderingMode::Partition => "partition",
            OrderingMode::Key => "key",
            OrderingMode::None => "none",
        }
    }
}

impl fmt::Display for OrderingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
