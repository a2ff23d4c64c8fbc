//! Progress of a resubmit or purge on stderr: a bar with counts, rate and ETA on a terminal,
//! a plain line a second otherwise (logs, CI), so stdout stays for results.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A bar with counts and ETA on a terminal; a plain line a second otherwise (logs, CI).
pub(super) enum Progress {
    Bar(ProgressBar),
    Lines {
        verb: &'static str,
        total: usize,
        done: usize,
        /// The pace `--rate` sets, which the first records (sent at once) do not show.
        period: Duration,
        started: Instant,
        last: Option<Instant>,
    },
}

impl Progress {
    pub(super) fn new(verb: &'static str, total: usize, rate: Option<f64>) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} ({elapsed} elapsed, ETA {eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(verb);
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                verb,
                total,
                done: 0,
                period: rate.map_or(Duration::ZERO, super::filter::rate_period),
                started: Instant::now(),
                last: None,
            }
        }
    }

    pub(super) fn advance(&mut self) {
        match self {
            Progress::Bar(bar) => bar.inc(1),
            Progress::Lines {
                verb,
                total,
                done,
                period,
                started,
                last,
            } => {
                *done += 1;
                let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if due || *done == *total {
                    let per = (started.elapsed() / *done as u32).max(*period);
                    let eta = per * (*total - *done) as u32;
                    let eta = humantime::format_duration(Duration::from_secs(eta.as_secs()));
                    eprintln!("{verb} {done}/{total}, ETA {eta}");
                    *last = Some(Instant::now());
                }
            }
        }
    }

    pub(super) fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}
