//! Names and ports no other test uses: every test can share the machine's one RabbitMQ and
//! Redis, and a leaked queue or key says where it came from.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `<prefix>-<process>-<sequence>-<time>`: unique within the process by the sequence, across
/// processes by the process id, across runs by the time. Only ASCII letters, digits, `.` and
/// `-` are added, which every broker and store takes in a queue, topic, group or namespace.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos as u64
    )
}

/// A free loopback port: bound, then released, for a server the test starts right after.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}
