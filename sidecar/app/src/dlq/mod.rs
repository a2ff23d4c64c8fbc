//! Dead letters for operators: `outrigger dlq {list,show,resubmit,purge}` and the admin API's
//! `/dlq` routes, over the broker's dead-letter queue.
//!
//! Both front ends run the same steps: open a pass over the dead-letter queue
//! ([`DeadLetterQueue::open`]), [`select`] the records the ids and filters name, then
//! [`apply`] one action to each, paced by an optional rate, stoppable between records, and
//! finish the pass, which leaves every other record where it was. What a pass does on each
//! broker (and why an interrupted resubmit can be rerun without losing or doubling a record)
//! is in `outrigger_core::dlq`.
//!
//! # Layout
//! - [`args`]: the clap subcommands; [`command`]: running them, with prompts and exit codes;
//!   `progress`: the progress bar or lines.
//! - [`api`]: the admin API routes.
//! - [`filter`]: time, reason, status, key and source filters; [`render`]: tables and JSON.

pub mod api;
pub mod args;
pub mod command;
pub mod filter;
mod progress;
pub mod render;

use std::time::SystemTime;

use outrigger_core::{
    DeadLetterPass, DeadLetterQueue, DeadLetterRecord, Resubmission, Scope, SourceError,
};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use crate::brokers::{DeadLetters, Pass};
use crate::config::Config;
use filter::Filter;

/// The dead-letter queue of the source `config` describes; an error says why there is none to
/// work on.
pub fn dead_letters(config: &Config) -> Result<DeadLetters, String> {
    dead_letters_at(config, Destination::Policy)
}

/// Which of a policy's dead-letter destinations an operation works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination<'a> {
    /// The top-level one: `dead_letter.destination`, else `<source>.dlq`.
    Policy,
    /// The one of the route of this name: its `[routes.dead_letter]`, else the top-level one.
    Route(&'a str),
    /// This one, which the policy or one of its routes must name.
    Named(&'a str),
}

/// The dead-letter queue at `which` of the source `config` describes; an error says why there
/// is none to work on, or names the routes and destinations there are.
pub fn dead_letters_at(config: &Config, which: Destination<'_>) -> Result<DeadLetters, String> {
    let mut context = config.source_context();
    let in_force = |name: &str| {
        config
            .source
            .names()
            .iter()
            .any(|source| config.dead_letter.destination_for(source) == name)
    };
    match which {
        Destination::Policy => {}
        Destination::Route(name) => {
            let Some(route) = config.routes.iter().find(|r| r.name == name) else {
                let names: Vec<String> = config
                    .routes
                    .iter()
                    .map(|r| format!("{:?}", r.name))
                    .collect();
                return Err(match names.is_empty() {
                    true => format!("no route is named {name:?}: the policy has no [[routes]]"),
                    false => format!(
                        "no route is named {name:?}; the policy's routes are {}",
                        names.join(", ")
                    ),
                });
            };
            if let Some(destination) = &route.dead_letter.destination {
                context.dead_letter_destination = Some(destination.clone());
            }
        }
        // The policy's own is read as it is, every source name's at once where there are
        // several: each record says where it came from.
        Destination::Named(name) if in_force(name) && config.source.names().len() == 1 => {}
        Destination::Named(name) => {
            let routed = context
                .route_dead_letters
                .iter()
                .any(|r| r.destination == name);
            if !routed && !in_force(name) {
                return Err(format!(
                    "{name:?} is no dead-letter destination of this policy; it uses {}",
                    known_destinations(config).join(", ")
                ));
            }
            context.dead_letter_destination = Some(name.to_owned());
        }
    }
    config
        .source
        .dead_letters(&context)
        .map_err(|e| e.to_string())
}

/// Every dead-letter destination of `config`, each with what names it, for error messages.
fn known_destinations(config: &Config) -> Vec<String> {
    let mut known: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for source in config.source.names() {
        let name = config.dead_letter.destination_for(&source);
        if !seen.contains(&name) {
            let why = match config.dead_letter.destination {
                Some(_) => "dead_letter.destination".to_owned(),
                None => format!("the default for {source:?}"),
            };
            known.push(format!("{name:?} ({why})"));
            seen.push(name);
        }
    }
    for route in &config.routes {
        if let Some(name) = &route.dead_letter.destination {
            known.push(format!("{name:?} (route {:?})", route.name));
        }
    }
    known
}

/// Which records an operation works on.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// These records (any, when empty); filters apply on top.
    pub ids: Vec<String>,
    /// What they must match.
    pub filter: Filter,
    /// At most this many.
    pub limit: Option<usize>,
}

/// The records a pass selected, and the ids asked for that it did not find.
#[derive(Debug, Default)]
pub struct Selected {
    /// In queue order.
    pub records: Vec<DeadLetterRecord>,
    /// Ids of the selection that are not in the queue (or do not match the filters).
    pub missing: Vec<String>,
}

/// Reads the pass until the selection is complete: every id found, the limit reached, or
/// the end of the queue. Records not selected stay held by the pass until it finishes.
pub async fn select<P: DeadLetterPass>(
    pass: &mut P,
    selection: &Selection,
) -> Result<Selected, SourceError> {
    let mut records = Vec::new();
    let full = |n: usize| {
        selection.limit.is_some_and(|l| n >= l)
            || (!selection.ids.is_empty() && n >= selection.ids.len())
    };
    while !full(records.len()) {
        let Some(record) = pass.next().await? else {
            break;
        };
        let named = selection.ids.is_empty() || selection.ids.contains(&record.id);
        if named && selection.filter.matches(&record) {
            records.push(record);
        }
    }
    let missing = selection
        .ids
        .iter()
        .filter(|id| !records.iter().any(|r| &r.id == *id))
        .cloned()
        .collect();
    Ok(Selected { records, missing })
}

/// Selects in a pass of its own, finishing it whatever happened: what listing and showing
/// read.
pub async fn select_and_finish(
    queue: &DeadLetters,
    selection: &Selection,
    scope: Scope,
) -> Result<Selected, SourceError> {
    let mut pass = queue.open(scope).await?;
    let selected = select(&mut pass, selection).await;
    finish_after(pass, selected).await
}

/// Opens a pass and selects what `selection` names, to act on; when the selection fails, the
/// pass is finished before the error is returned.
pub async fn open_and_select(
    queue: &DeadLetters,
    selection: &Selection,
) -> Result<(Pass, Selected), SourceError> {
    let mut pass = queue.open(Scope::default()).await?;
    match select(&mut pass, selection).await {
        Ok(selected) => Ok((pass, selected)),
        Err(e) => finish_after(pass, Err(e)).await,
    }
}

/// Finishes the pass, then returns `result`, or the finish's own failure.
async fn finish_after<T>(pass: Pass, result: Result<T, SourceError>) -> Result<T, SourceError> {
    let finished = pass.finish().await;
    let value = result?;
    finished.map(|()| value)
}

/// What [`apply`] does to each record.
#[derive(Clone, Debug)]
pub enum Operation {
    /// Publish it again, then settle it.
    Resubmit(Resubmission),
    /// Discard it; the operator's name.
    Purge(String),
}

/// How far [`apply`] got.
#[derive(Debug, Default)]
pub struct Applied {
    /// Records resubmitted or purged.
    pub done: usize,
    /// The record it stopped on and why; it and every later one stay in the queue.
    pub failed: Option<(String, SourceError)>,
    /// Stopped early because `stop` was cancelled.
    pub interrupted: bool,
}

/// Applies `action` to each record in order, at most `rate` per second, stopping at the
/// first failure (a broken connection fails every later one too) or when `stop` is
/// cancelled; the record under way is finished first. `progress` sees each record done.
pub async fn apply<P: DeadLetterPass>(
    pass: &mut P,
    records: &[DeadLetterRecord],
    action: &Operation,
    rate: Option<f64>,
    stop: &CancellationToken,
    mut progress: impl FnMut(&DeadLetterRecord),
) -> Applied {
    let mut pace = rate.map(|r| {
        let mut i = tokio::time::interval(filter::rate_period(r));
        // After a slow publish, keep the spacing rather than bursting to catch up.
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    });
    let mut applied = Applied::default();
    for record in records {
        if let Some(pace) = pace.as_mut() {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                _ = pace.tick() => {}
            }
        }
        if stop.is_cancelled() {
            applied.interrupted = true;
            break;
        }
        let result = match action {
            Operation::Resubmit(how) => {
                // The mark says when this record went back, not when the run started.
                let how = Resubmission {
                    at: SystemTime::now(),
                    ..how.clone()
                };
                pass.resubmit(record, &how).await
            }
            Operation::Purge(by) => pass.purge(record, by).await,
        };
        match result {
            Ok(()) => {
                applied.done += 1;
                progress(record);
            }
            Err(error) => {
                applied.failed = Some((record.id.clone(), error));
                break;
            }
        }
    }
    applied
}

/// `user@host` of whoever runs this process, for resubmission marks.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("{user}@{host}"),
        None => user,
    }
}
