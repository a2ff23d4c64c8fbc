use std::process::ExitCode;

use clap::Parser;
use outrigger::cli::{Cli, Command};
use outrigger::config::{self, Config, ConfigErrors};
use outrigger::run::RunError;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// EX_USAGE: the config or the command line is wrong.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version go to stdout and succeed; every usage error is EX_USAGE.
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Check { config, explain } => match load(&config) {
            Ok(c) => {
                println!("{}: OK ({})", config.display(), c.summary());
                for warning in c.warnings() {
                    println!("warning: {warning}");
                }
                for sample in &explain {
                    match outrigger::config::explain(&c, sample) {
                        Ok(sentence) => println!("{sentence}"),
                        Err(e) => {
                            eprintln!("--explain {sample}: {e}");
                            return ExitCode::from(EXIT_USAGE);
                        }
                    }
                }
                if c.source.capabilities().in_process_only {
                    // Valid for `outrigger demo`, which is what such a policy is for; say that
                    // `run` will not take it rather than let it find out.
                    println!("note: {}", outrigger::run::in_process_only(&c));
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config } => {
            let path = config;
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            outrigger::telemetry::init(config.log.format, &config.log.level);
            runtime().block_on(async {
                let shutdown = CancellationToken::new();
                // Installed before anything else runs: SIGHUP's default would end the process.
                let hangups = match signal(SignalKind::hangup()) {
                    Ok(hangups) => hangups,
                    Err(e) => {
                        tracing::error!(error = %e, "Cannot handle SIGHUP.");
                        return ExitCode::FAILURE;
                    }
                };
                tokio::spawn(outrigger::shutdown::on_signal(shutdown.clone()));
                let reload = outrigger::run::Reload {
                    hangups,
                    path: path.clone(),
                };
                match outrigger::run::run(config, shutdown, Some(reload)).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(RunError::Config(problems)) => {
                        eprintln!("{}: {problems}", path.display());
                        eprintln!("{}: nothing was started.", path.display());
                        ExitCode::from(EXIT_USAGE)
                    }
                    Err(RunError::Failed(e)) => {
                        tracing::error!(error = format!("{e:#}"), "Outrigger stopped on an error.");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Dlq(args) => {
            let config = match load(args.config()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            runtime().block_on(outrigger::dlq::command::run(*args, config))
        }
        Command::Demo { events, seed } => runtime().block_on(async {
            match outrigger::demo::run(outrigger::demo::DemoOptions { events, seed }).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("demo failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load_file(path, std::env::vars()).map_err(|errors: ConfigErrors| {
        eprintln!("{errors}");
        eprintln!(
            "{}: {} error(s); nothing was started.",
            path.display(),
            errors.errors.len()
        );
        ExitCode::from(EXIT_USAGE)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}
