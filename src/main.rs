//! The `mastomedia` binary: parse arguments, set up logging, run the command, map the
//! outcome to an exit code (0, 1, 2, 3, 130; see the README).
//!
//! The one way out is `main`'s return value: nothing here calls `std::process::exit`, so
//! stdout is flushed and destructors run. (The only other exit is the second Ctrl-C in
//! `commands::interrupt_token`, documented as "exit at once".)

use std::process::ExitCode as ProcessExit;

use clap::Parser;
use mastomedia::cli::{Cli, Command};
use mastomedia::commands;
use mastomedia::report::{ExitCode, LogWriter, log, metrics};
use tracing_subscriber::EnvFilter;

fn main() -> ProcessExit {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = u8::try_from(e.exit_code()).unwrap_or(ExitCode::Usage as u8);
            // A usage error of a run asked for JSON logs is one JSON line too, so a log
            // shipper never receives clap's multi-line text (the arguments are read by
            // hand: they did not parse).
            if e.use_stderr() && asks_for_json_logs(std::env::args()) {
                log::set_format(log::LogFormat::Json);
                let mut fields = serde_json::Map::new();
                fields.insert("exit_code".into(), code.into());
                let text = e.render().to_string();
                log::line("ERROR", text.trim_end(), fields);
                return ProcessExit::from(code);
            }
            // What clap's `parse` does, returned instead of exiting: `--help`/`--version`
            // on stdout with 0, a usage error on stderr with 2. A closed stdout is ignored.
            let _ = e.print();
            return ProcessExit::from(code);
        }
    };
    let default_level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_env("MASTOMEDIA_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("mastomedia={default_level},warn")));
    log::set_format(cli.log_format.into());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // stderr, above the progress bar when one is drawn (never through it).
        .with_writer(LogWriter)
        .with_target(false);
    if log::is_json() {
        // The shape report::log::line writes too: timestamp, level, fields.message.
        subscriber
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        subscriber
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::Fatal.into();
        }
    };
    if cli.metrics_file.is_some() {
        metrics::enable();
    }
    let json = cli.command.json();
    let command = cli.command.name();
    let started = std::time::Instant::now();
    let code = runtime.block_on(async {
        let result = match cli.command {
            Command::Prune(args) => commands::prune::run(&cli.env_file, args, cli.quiet).await,
            Command::Migrate(args) => commands::migrate::run(&cli.env_file, args, cli.quiet).await,
            Command::Cert(args) => commands::cert::run(&cli.env_file, args, cli.quiet).await,
            Command::Doctor(args) => commands::doctor::run(&cli.env_file, args, cli.quiet).await,
            Command::Du(args) => commands::du::run(&cli.env_file, args, cli.quiet).await,
            Command::Orphans(args) => commands::orphans::run(&cli.env_file, args, cli.quiet).await,
            Command::Reconcile(args) => {
                commands::reconcile::run(&cli.env_file, args, cli.quiet).await
            }
            Command::Config(args) => commands::config::run(&cli.env_file, args, cli.quiet).await,
            Command::Status(args) => commands::status::run(&cli.env_file, args).await,
            Command::Completions(args) => commands::docs::completions(args),
            Command::Man(args) => commands::docs::man(args),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                let mut fields = serde_json::Map::new();
                fields.insert("exit_code".into(), (e.code as i32).into());
                log::line("ERROR", &format!("error: {:#}", e.error), fields);
                if json {
                    // Scripts reading --json still get one object, with the reason.
                    mastomedia::outln!(
                        "{}",
                        serde_json::json!({ "error": format!("{:#}", e.error), "exit_code": e.code as i32 })
                    );
                }
                e.code
            }
        }
    });
    // Like the `std::process::exit` this replaces, do not wait for tasks still running
    // (a ticker, a blocking DNS lookup): the run is over and its report printed.
    runtime.shutdown_background();
    if let Some(path) = &cli.metrics_file {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64().floor())
            .unwrap_or_default();
        let elapsed = started.elapsed().as_secs_f64();
        if let Err(e) = metrics::write(path, command, code as i32, elapsed, now) {
            // The run's outcome stands; the admin learns why the graph has a gap.
            log::line(
                "ERROR",
                &format!("cannot write the metrics file {}: {e}", path.display()),
                serde_json::Map::new(),
            );
        }
    }
    code.into()
}

/// Whether the command line has `--log-format json` (or `--log-format=json`).
fn asks_for_json_logs(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    args.iter().enumerate().any(|(i, a)| {
        a == "--log-format=json"
            || (a == "--log-format" && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}
