//! Redis clean-up: the dedup records a sidecar run left behind.

use anyhow::Context;

/// Deletes `outrigger:dedup:<namespace>:*`; returns how many keys went.
pub async fn purge_namespace(url: &str, namespace: &str) -> anyhow::Result<usize> {
    let client = redis::Client::open(url).with_context(|| format!("Redis URL {url}"))?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {url}"))?;
    let pattern = format!("outrigger:dedup:{namespace}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let removed: usize = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await?;
            deleted += removed;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
