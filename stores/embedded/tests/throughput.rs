//! Timing of sequential and concurrent operations: a printout, not an assertion.
//!
//! Run with `cargo test -p outrigger-embedded --test throughput -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outrigger_core::DedupStore;
use outrigger_embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tempfile::TempDir;

const OPS: usize = 2_000;

fn open(dir: &TempDir) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedStoreConfig {
        path: dir.path().join("dedup.redb"),
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(120),
    })
    .expect("store opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing printout; run on demand"]
async fn sequential_and_concurrent_claims() {
    // On the target directory's disk, not a tmpfs, so fsync costs what it costs in production.
    let dir = TempDir::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = open(&dir);

    let start = Instant::now();
    for i in 0..OPS {
        store.claim(&format!("seq-{i}")).await.unwrap();
    }
    let sequential = start.elapsed();

    let store = Arc::new(store);
    let start = Instant::now();
    let tasks: Vec<_> = (0..OPS)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.claim(&format!("conc-{i}")).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent = start.elapsed();

    println!(
        "{OPS} claims: sequential {sequential:.2?} ({:.0}/s), concurrent {concurrent:.2?} ({:.0}/s)",
        OPS as f64 / sequential.as_secs_f64(),
        OPS as f64 / concurrent.as_secs_f64(),
    );
}
