//! CPU time of a process from /proc, a steadier yardstick than msgs/s on a shared machine.

use std::time::Duration;

/// Linux's USER_HZ: the unit of utime and stime in /proc/<pid>/stat on every mainstream kernel.
const TICKS_PER_SECOND: u64 = 100;

/// User + system CPU time of `pid` (`None`: this process) so far; zero when unreadable.
pub fn used(pid: Option<u32>) -> Duration {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let ticks = std::fs::read_to_string(path)
        .ok()
        .and_then(|stat| parse_ticks(&stat))
        .unwrap_or(0);
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// utime + stime: fields 14 and 15, counted after the `(comm)` that may hold spaces.
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Microseconds of CPU per message.
pub fn per_message(cpu: Duration, messages: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / messages.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_come_after_the_command_name() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_ticks(stat), Some(300));
        assert!(used(None) >= Duration::ZERO);
    }
}
