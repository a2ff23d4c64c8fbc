//! Parked-key chains against a real Redis at 127.0.0.1:6379: where they live in Redis. The
//! contract every store keeps is in `contract.rs`.

mod common;

use std::time::Duration;

use common::{cleanup, namespace, query, store};
use outrigger_core::ParkingStore;
use outrigger_testkit::store::parking::chain;

const LEASE: Duration = Duration::from_secs(30);
#[tokio::test]
async fn chain_lives_under_a_readable_key_without_expiry() {
    let ns = namespace();
    let store = store(&ns, LEASE).await;
    let c = chain("orders/3", b"user:42 \xff");
    let chain_key = format!("outrigger:chain:{ns}:orders/3:user%3A42%20%FF");
    let parked_key = format!("outrigger:parked:{ns}:orders/3");

    assert!(store.swap_chain(&c, None, Some(b"v1"), true).await.unwrap());
    let stored: Vec<u8> = query(redis::cmd("GET").arg(&chain_key)).await;
    assert_eq!(stored, b"v1");
    // No expiry, unlike dedup records: the value holds messages until the chain empties.
    let ttl: i64 = query(redis::cmd("PTTL").arg(&chain_key)).await;
    assert_eq!(ttl, -1);
    let members: Vec<String> = query(redis::cmd("SMEMBERS").arg(&parked_key)).await;
    assert_eq!(members, [chain_key.as_str()]);

    // Unparked: out of the set, which goes away with its last member.
    assert!(store
        .swap_chain(&c, Some(b"v1"), Some(b"v2"), false)
        .await
        .unwrap());
    let exists: (i64, i64) = (
        query(redis::cmd("EXISTS").arg(&chain_key)).await,
        query(redis::cmd("EXISTS").arg(&parked_key)).await,
    );
    assert_eq!(exists, (1, 0));

    assert!(store
        .swap_chain(&c, Some(b"v2"), None, false)
        .await
        .unwrap());
    let left: i64 = query(redis::cmd("EXISTS").arg(&chain_key).arg(&parked_key)).await;
    assert_eq!(left, 0);

    cleanup(&ns).await;
}
