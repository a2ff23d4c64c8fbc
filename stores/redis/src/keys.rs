//! Where records and chains live in Redis.
//!
//! - `outrigger:dedup:<namespace>:<key>`: a dedup record (a hash, with a TTL).
//! - `outrigger:chain:<namespace>:<group>:<ordering key>`: a chain's value (a string, no TTL:
//!   it holds parked messages until the chain empties).
//! - `outrigger:parked:<namespace>:<group>`: the set of the group's chain keys whose value holds
//!   parked messages.
//!
//! Dedup records have no braces of ours: a hash tag would pile every key of a namespace onto
//! one slot of a Redis Cluster; each record script touches its one key, so any slot does (a
//! key with braces of its own is hashed by them, as Redis does).
//!
//! On a Redis Cluster a swap writes a chain and its group's set in one script, so those two
//! share a hash tag there: `outrigger:chain:{<namespace>:<group>}:<ordering key>` and
//! `outrigger:parked:{<namespace>:<group>}`, one slot per group (a partition, say). A standalone
//! Redis keeps the untagged names, so that an upgrade finds the chains it parked.

use std::fmt::Write as _;

use outrigger_core::{ChainId, SequenceId};

/// The key prefixes of one namespace.
pub(crate) struct Keys {
    dedup: String,
    chain: String,
    parked: String,
    sequence: String,
    /// `}` closing the hash tag after the group on a cluster, else nothing.
    tag_end: &'static str,
}

impl Keys {
    /// The prefixes for `namespace`, which has no `:`, so no namespace spells another's keys;
    /// with `cluster`, chains and parked sets carry their group's hash tag.
    pub(crate) fn new(namespace: &str, cluster: bool) -> Self {
        let tag = if cluster { "{" } else { "" };
        Keys {
            dedup: format!("outrigger:dedup:{namespace}:"),
            chain: format!("outrigger:chain:{tag}{namespace}:"),
            parked: format!("outrigger:parked:{tag}{namespace}:"),
            sequence: format!("outrigger:seq:{namespace}:"),
            tag_end: if cluster { "}" } else { "" },
        }
    }

    /// The dedup record of `key`, stored verbatim.
    pub(crate) fn dedup(&self, key: &str) -> String {
        format!("{}{key}", self.dedup)
    }

    /// The value of `chain`: the group verbatim, then the ordering key escaped. The escaped key
    /// has no `:`, so the last `:` ends the group and no (group, key) pair spells another's key,
    /// even with a `:` in the group.
    pub(crate) fn chain(&self, chain: &ChainId) -> String {
        let mut key = format!("{}{}{}:", self.chain, chain.group, self.tag_end);
        escape_into(&mut key, &chain.key);
        key
    }

    /// The next expected sequence of `id`: the source verbatim, then the key escaped (as for
    /// a chain, the last `:` ends the source).
    pub(crate) fn sequence(&self, id: &SequenceId) -> String {
        let mut key = format!("{}{}:", self.sequence, id.source);
        escape_into(&mut key, &id.key);
        key
    }

    /// The set of `group`'s parked chains.
    pub(crate) fn parked(&self, group: &str) -> String {
        format!("{}{group}{}", self.parked, self.tag_end)
    }
}

/// Appends `bytes` readably: printable ASCII as is, except `%` and `:`, which are escaped like
/// every other byte as `%XX`.
fn escape_into(out: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        if byte.is_ascii_graphic() && byte != b'%' && byte != b':' {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(group: &str, key: &[u8]) -> ChainId {
        ChainId {
            group: group.to_owned(),
            key: key.to_vec().into(),
        }
    }

    #[test]
    fn readable_keys_stay_readable() {
        let keys = Keys::new("orders", false);
        assert_eq!(
            keys.chain(&chain("payments/3", b"customer-42")),
            "outrigger:chain:orders:payments/3:customer-42"
        );
        assert_eq!(
            keys.parked("payments/3"),
            "outrigger:parked:orders:payments/3"
        );
        assert_eq!(keys.dedup("{a}:b"), "outrigger:dedup:orders:{a}:b");
    }

    #[test]
    fn on_a_cluster_a_chain_and_its_parked_set_share_a_hash_tag() {
        let keys = Keys::new("orders", true);
        let c = chain("payments/3", b"customer-42");
        assert_eq!(
            keys.chain(&c),
            "outrigger:chain:{orders:payments/3}:customer-42"
        );
        assert_eq!(
            keys.parked("payments/3"),
            "outrigger:parked:{orders:payments/3}"
        );
        // Records stay untagged: spread over every slot.
        assert_eq!(keys.dedup("k"), "outrigger:dedup:orders:k");
        // Braces in a group or key cannot split the two: both tags end at the same byte.
        for group in ["a}b", "{x}", "}"] {
            let tag = |key: &str| {
                let open = key.find('{').unwrap();
                key[open..=open + key[open..].find('}').unwrap()].to_owned()
            };
            let c = chain(group, b"{k}");
            assert_eq!(tag(&keys.chain(&c)), tag(&keys.parked(group)), "{group}");
        }
    }

    #[test]
    fn other_bytes_are_escaped() {
        let keys = Keys::new("ns", false);
        assert_eq!(
            keys.chain(&chain("g", b"a:b%c d\xff\x00")),
            "outrigger:chain:ns:g:a%3Ab%25c%20d%FF%00"
        );
        assert_eq!(keys.chain(&chain("g", b"")), "outrigger:chain:ns:g:");
    }

    #[test]
    fn no_two_chains_share_a_key() {
        let keys = Keys::new("ns", false);
        let chains = [
            chain("a:b", b"c"),
            chain("a", b"b:c"),
            chain("a", b"%3A"),
            chain("a", b":"),
            chain("a", b""),
            chain("a:", b""),
        ];
        let mut spelled: Vec<_> = chains.iter().map(|c| keys.chain(c)).collect();
        spelled.sort();
        spelled.dedup();
        assert_eq!(spelled.len(), chains.len(), "{spelled:?}");
    }
}
