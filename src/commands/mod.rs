//! Subcommands: each wires config, inventory, plan, pool, store, mastodon and report
//! together. One file per subcommand, each exporting `run`.

pub mod cert;
pub mod config;
pub mod docs;
pub mod doctor;
pub mod du;
pub mod migrate;
pub mod orphans;
pub mod prune;
pub mod reconcile;
pub mod status;

use std::num::NonZeroU32;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, StorageConfig};
use crate::journal::{JournalError, JournalLocation};
use crate::model::Shard;
use crate::report::ExitCode;
use crate::store::fs::FsStore;
use crate::store::s3::S3Store;
use crate::store::{Limiter, Store};

/// A command's failure with the exit code it maps to. The message is meant for the admin:
/// it says what to fix.
#[derive(Debug)]
pub struct CommandError {
    /// Exit code (2 usage/config, 3 fatal).
    pub code: ExitCode,
    /// What went wrong, with context.
    pub error: anyhow::Error,
}

impl CommandError {
    /// A usage or configuration error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ExitCode::Usage,
            error: error.into(),
        }
    }

    /// A fatal error (exit 3).
    pub fn fatal(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ExitCode::Fatal,
            error: error.into(),
        }
    }
}

impl From<ConfigError> for CommandError {
    fn from(e: ConfigError) -> Self {
        Self::usage(e)
    }
}

/// The shard this run is (`None`: the whole job): `--shard K/N`, else Kubernetes'
/// `JOB_COMPLETION_INDEX` with N from `--shards` or `MASTOMEDIA_SHARDS` (both read from
/// the process environment only, as a Job's pod template sets them;
/// [`crate::model::Shard::resolve`]). Errors: exit 2, saying what to set.
pub fn shard(args: &crate::cli::shard::ShardArgs) -> Result<Option<Shard>, CommandError> {
    let env = |name| std::env::var(name).ok();
    Shard::resolve(
        args.shard,
        args.shards,
        env("JOB_COMPLETION_INDEX").as_deref(),
        env("MASTOMEDIA_SHARDS").as_deref(),
    )
    .map_err(CommandError::usage)
}

/// The request rate this process may use: `--rate` is the bucket's total, so a shard takes
/// [`Shard::rate_share`] of it (rate/N, rounded down, at least 1); logged when split.
pub fn shard_rate(rate: Option<NonZeroU32>, shard: Option<Shard>) -> Option<NonZeroU32> {
    match (rate, shard) {
        (Some(total), Some(s)) => {
            let own = s.rate_share(total);
            tracing::info!(
                "shard {s}: --rate {total} is the total of {} shards, this one sends at most {own} requests per second",
                s.count()
            );
            Some(own)
        }
        (rate, _) => rate,
    }
}

impl From<JournalError> for CommandError {
    /// Exit 2 for a bad or missing location or a file that cannot be opened, exit 3 for
    /// an unreachable or refused PostgreSQL journal and failed queries
    /// ([`JournalError::is_usage`]).
    fn from(e: JournalError) -> Self {
        if e.is_usage() {
            Self::usage(e)
        } else {
            Self::fatal(e)
        }
    }
}

/// The journal a command uses: `--journal` (`arg`) when given, else `MASTOMEDIA_JOURNAL`
/// (`configured`), else `None` (the command's default SQLite file). Errors: a `--journal`
/// that is not a usable location (exit 2, shown without credentials).
pub fn journal_location(
    arg: Option<&std::ffi::OsString>,
    configured: Option<&JournalLocation>,
) -> Result<Option<JournalLocation>, CommandError> {
    match arg {
        Some(a) => Ok(Some(JournalLocation::from_arg(a)?)),
        None => Ok(configured.cloned()),
    }
}

/// Loads the configuration, mapping errors to exit code 2.
pub fn load_config(env_file: &std::path::Path) -> Result<Config, CommandError> {
    Ok(Config::load(env_file)?)
}

/// The store the configuration names (S3 or filesystem), built with `limiter` (its rate,
/// concurrency and counts); no request is sent. One `Arc<dyn Store>` for every command:
/// the pipelines run through the object-safe [`Store`] whichever backend it is.
pub fn open_store(cfg: &Config, limiter: Limiter) -> Arc<dyn Store> {
    match &cfg.storage {
        StorageConfig::S3(s3) => Arc::new(S3Store::new(s3, limiter)),
        StorageConfig::Filesystem(fs) => Arc::new(FsStore::new(fs.root.clone(), limiter)),
    }
}

/// A token cancelled on Ctrl-C or SIGTERM. The first signal stops intake (in-flight work
/// finishes); a second one exits at once with 130.
pub fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_signal().await;
            count += 1;
            if count == 1 {
                crate::report::log::line(
                    "WARN",
                    "interrupted: finishing the work in flight, then stopping (press Ctrl-C again to abort at once)",
                    serde_json::Map::new(),
                );
                t.cancel();
            } else {
                // The one exit besides `main`'s return: the documented "exit at once".
                std::process::exit(ExitCode::Interrupted as i32);
            }
        }
    });
    token
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
