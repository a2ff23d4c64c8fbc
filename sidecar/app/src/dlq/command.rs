//! Running `outrigger dlq`: records to stdout, progress and diagnostics to stderr.
//!
//! Exit codes: 0 done; 1 the broker failed, a record could not be handled, or an id was not
//! found; 64 (EX_USAGE) bad arguments, or a purge without `--yes` off a terminal; 130
//! interrupted (Ctrl-C, SIGTERM) after finishing the record under way.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use outrigger_core::{DeadLetterPass, DeadLetterQueue, Resubmission, Scope, SourceError};
use tokio_util::sync::CancellationToken;

use super::args::{DlqArgs, DlqCommand};
use super::progress::Progress;
use super::{
    apply, open_and_select, operator, render, select_and_finish, Applied, DeadLetters, Destination,
    Operation, Pass, Selected, Selection,
};
use crate::config::Config;

/// EX_USAGE.
const EXIT_USAGE: u8 = 64;
/// 128 + SIGINT, as shells report an interrupted command.
const EXIT_INTERRUPTED: u8 = 130;

/// Runs one `outrigger dlq` subcommand against the dead-letter queue of `config`'s source.
pub async fn run(args: DlqArgs, config: Config) -> ExitCode {
    let target = args.target().clone();
    let which = match (&target.route, &target.destination) {
        (Some(route), _) => Destination::Route(route),
        (None, Some(destination)) => Destination::Named(destination),
        (None, None) => Destination::Policy,
    };
    let queue = match super::dead_letters_at(&config, which) {
        Ok(queue) => queue,
        Err(why) => {
            eprintln!("outrigger dlq: {why}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let name = queue.name().to_owned();
    let result = match args.command {
        DlqCommand::List {
            filter,
            limit,
            json,
            all,
            ..
        } => {
            let selection = Selection {
                ids: Vec::new(),
                filter: filter.into(),
                limit,
            };
            let all = all || selection.filter.wants_handled();
            list(&queue, &selection, json, all).await
        }
        DlqCommand::Show { id, json, .. } => show(&queue, id, json).await,
        DlqCommand::Resubmit {
            ids,
            filter,
            limit,
            to,
            dry_run,
            rate,
            by,
            ..
        } => {
            let selection = Selection {
                ids,
                filter: filter.into(),
                limit,
            };
            let how = Resubmission {
                to,
                by: by.unwrap_or_else(operator),
                at: SystemTime::now(),
            };
            resubmit(&queue, &selection, how, dry_run, rate).await
        }
        DlqCommand::Purge {
            ids,
            filter,
            limit,
            yes,
            dry_run,
            by,
            ..
        } => {
            let selection = Selection {
                ids,
                filter: filter.into(),
                limit,
            };
            let by = by.unwrap_or_else(operator);
            purge(&queue, &selection, by, yes, dry_run).await
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("outrigger dlq: {name}: {error}");
        ExitCode::FAILURE
    })
}

async fn list(
    queue: &DeadLetters,
    selection: &Selection,
    json: bool,
    all: bool,
) -> Result<ExitCode, SourceError> {
    let selected = select_and_finish(
        queue,
        selection,
        Scope {
            include_handled: all,
        },
    )
    .await?;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is the reader's choice, not an error.
    let _ = if json {
        selected
            .records
            .iter()
            .try_for_each(|r| writeln!(out, "{}", render::summary(r)))
    } else if selected.records.is_empty() {
        Ok(())
    } else {
        out.write_all(render::table(&selected.records).as_bytes())
    };
    let _ = out.flush();
    eprintln!(
        "{} dead letter(s) in {} match.",
        selected.records.len(),
        queue.name()
    );
    Ok(ExitCode::SUCCESS)
}

async fn show(queue: &DeadLetters, id: String, json: bool) -> Result<ExitCode, SourceError> {
    let selection = Selection {
        ids: vec![id.clone()],
        ..Selection::default()
    };
    let selected = select_and_finish(
        queue,
        &selection,
        Scope {
            include_handled: true,
        },
    )
    .await?;
    let Some(record) = selected.records.first() else {
        eprintln!("No dead letter with id {id} in {}.", queue.name());
        return Ok(ExitCode::FAILURE);
    };
    let text = if json {
        format!("{:#}\n", render::detail(record))
    } else {
        render::show(record)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

async fn resubmit(
    queue: &DeadLetters,
    selection: &Selection,
    how: Resubmission,
    dry_run: bool,
    rate: Option<f64>,
) -> Result<ExitCode, SourceError> {
    let (mut pass, selected) = open_selected(queue, selection).await?;
    let records = selected.records;
    if dry_run {
        for r in &records {
            println!(
                "would resubmit {} (key {}) to {} as resubmission #{}",
                r.id,
                render::key(r),
                how.target(r, queue.source()),
                r.resubmissions + 1
            );
        }
        pass.finish().await?;
        eprintln!(
            "{} dead letter(s) in {} would be resubmitted; nothing was sent.",
            records.len(),
            queue.name()
        );
        return Ok(exit_code(&selected.missing, None));
    }
    let applied = run_action(
        &mut pass,
        &records,
        &Operation::Resubmit(how),
        rate,
        "resubmitted",
    )
    .await;
    pass.finish().await?;
    println!(
        "Resubmitted {} of {} dead letter(s) from {}.",
        applied.done,
        records.len(),
        queue.name()
    );
    Ok(report_applied(
        &applied,
        records.len(),
        queue,
        &selected.missing,
    ))
}

async fn purge(
    queue: &DeadLetters,
    selection: &Selection,
    by: String,
    yes: bool,
    dry_run: bool,
) -> Result<ExitCode, SourceError> {
    let (mut pass, selected) = open_selected(queue, selection).await?;
    let records = selected.records;
    if dry_run {
        for r in &records {
            println!("would purge {} (key {})", r.id, render::key(r));
        }
        pass.finish().await?;
        eprintln!(
            "{} dead letter(s) in {} would be purged; nothing was changed.",
            records.len(),
            queue.name()
        );
        return Ok(exit_code(&selected.missing, None));
    }
    if !yes && !records.is_empty() {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            pass.finish().await?;
            eprintln!(
                "outrigger dlq purge: {} dead letter(s) would be deleted for good; \
                 nobody can be asked off a terminal, so pass --yes.",
                records.len()
            );
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        let question = format!(
            "Purge {} dead letter(s) from {} for good? [y/N] ",
            records.len(),
            queue.name()
        );
        if !confirm(question).await {
            pass.finish().await?;
            eprintln!("Nothing purged.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let applied = run_action(&mut pass, &records, &Operation::Purge(by), None, "purged").await;
    pass.finish().await?;
    println!(
        "Purged {} of {} dead letter(s) from {}.",
        applied.done,
        records.len(),
        queue.name()
    );
    Ok(report_applied(
        &applied,
        records.len(),
        queue,
        &selected.missing,
    ))
}

/// [`open_and_select`], saying which ids were not found.
async fn open_selected(
    queue: &DeadLetters,
    selection: &Selection,
) -> Result<(Pass, Selected), SourceError> {
    let (pass, selected) = open_and_select(queue, selection).await?;
    report_missing(&selected.missing, queue);
    Ok((pass, selected))
}

/// Applies `action` with progress on stderr; Ctrl-C or SIGTERM stops it between records.
async fn run_action(
    pass: &mut Pass,
    records: &[outrigger_core::DeadLetterRecord],
    action: &Operation,
    rate: Option<f64>,
    verb: &'static str,
) -> Applied {
    let stop = CancellationToken::new();
    let signals = tokio::spawn(crate::shutdown::on_signal(stop.clone()));
    let mut progress = Progress::new(verb, records.len(), rate);
    let applied = apply(pass, records, action, rate, &stop, |_| progress.advance()).await;
    progress.finish();
    stop.cancel();
    let _ = signals.await;
    applied
}

fn report_missing(missing: &[String], queue: &DeadLetters) {
    for id in missing {
        eprintln!(
            "No dead letter with id {id} in {} (or it does not match the filters).",
            queue.name()
        );
    }
}

fn report_applied(
    applied: &Applied,
    total: usize,
    queue: &DeadLetters,
    missing: &[String],
) -> ExitCode {
    let left = total - applied.done;
    if let Some((id, error)) = &applied.failed {
        eprintln!(
            "Stopped at {id}: {error}. It and the {} after it stay in {}; run the command again to carry on.",
            left - 1,
            queue.name()
        );
    } else if applied.interrupted {
        eprintln!(
            "Interrupted: {left} dead letter(s) stay in {}; run the command again to carry on.",
            queue.name()
        );
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    exit_code(missing, applied.failed.as_ref().map(|(id, _)| id))
}

fn exit_code(missing: &[String], failed: Option<&String>) -> ExitCode {
    if missing.is_empty() && failed.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Asks on stderr, reads a line from stdin; only `y` or `yes` confirms.
async fn confirm(question: String) -> bool {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await;
    matches!(answer, Ok(Ok(line)) if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
