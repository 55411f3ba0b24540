//! Command-line types (clap derive). One file per subcommand; nothing here reads files or
//! the environment.

pub mod cert;
pub mod config;
pub mod docs;
pub mod doctor;
pub mod du;
pub mod migrate;
pub mod orphans;
pub mod prune;
pub mod reconcile;
pub mod shard;
pub mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `--prefix` of `du` and `orphans`: a relative listing prefix
/// ([`crate::store::validate_prefix`]); a bad one is a usage error (exit 2).
fn listing_prefix(s: &str) -> Result<String, String> {
    crate::store::validate_prefix(s)
        .map(|()| s.to_owned())
        .map_err(|e| match e {
            crate::store::StoreError::Other { message, .. } => message,
            e => e.to_string(),
        })
}

/// `mastomedia --version`: the crate version and the commit the binary was built from
/// (`build.rs`: `MASTOMEDIA_COMMIT` from the build environment, else `git rev-parse`,
/// else `unknown`), e.g. `0.1.0 (commit 4513689a1b2c)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MASTOMEDIA_COMMIT"),
    ")"
);

/// Prune, migrate, audit and certify the media storage of a Mastodon server whose media
/// lives in S3-compatible object storage or in public/system.
///
/// Reads Mastodon's own .env.production (the process environment overrides it).
///
/// Exit codes: 0 success, 1 finished but some items failed (listed), 2 usage or
/// configuration error, 3 fatal (database, credentials or bucket unreachable),
/// 130 interrupted (safe to re-run).
#[derive(Debug, Parser)]
#[command(name = "mastomedia", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// Mastodon's env file. `/dev/null` when every setting comes from the process
    /// environment (a Kubernetes pod given the chart's ConfigMap and Secrets).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "MASTOMEDIA_ENV_FILE",
        default_value = ".env.production"
    )]
    pub env_file: PathBuf,

    /// More detail on stderr (-v info about each batch, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors and the final summary; no progress.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// The format of stderr (logs, status lines, the final error): human text, or one
    /// JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Also write the run's numbers in the Prometheus text format to this file, atomically
    /// (for node_exporter's textfile collector: name it *.prom, one file per command).
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// The job to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human text (default).
    Text,
    /// One JSON object per line: `{"timestamp", "level", "fields": {"message", …}}`.
    Json,
}

impl From<LogFormat> for crate::report::log::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Delete cached copies of remote media older than the retention window, then clear
    /// their file columns exactly as tootctl does, so Mastodon re-fetches them on demand.
    Prune(prune::Args),
    /// Copy public/system (or another provider's bucket) into the bucket, with the ACL,
    /// Content-Type and Cache-Control Mastodon writes; resumable; --verify, --repair.
    Migrate(migrate::Args),
    /// What is in the bucket per Mastodon category, beside the database's own sums
    /// (tootctl media usage), plus keys outside the layout; --versions for noncurrent
    /// versions and unfinished multipart uploads. Read-only.
    Du(du::Args),
    /// Find objects no database row owns (orphans, stale copies, unrecognised keys);
    /// report only, or --delete them in batches through the dry-run gate; resumable.
    Orphans(orphans::Args),
    /// Find rows whose stored file is missing from the storage, per category; with --apply
    /// clear the remote ones as prune does (Mastodon re-fetches them); local ones are listed.
    Reconcile(reconcile::Args),
    /// The custom media domain's certificate: `cert renew` (Let's Encrypt, installed on the
    /// Linode bucket, only when due; cron-safe) and `cert status`.
    Cert(cert::Args),
    /// Check the whole setup (env, database, bucket, DNS, CAA, TLS, public reads), one line
    /// per check with its fix; exit 1 on any failure.
    Doctor(doctor::Args),
    /// The last runs of prune, migrate and orphans, every shard, from their journals
    /// (SQLite files or a shared postgres:// journal): state, last update, rows, objects,
    /// bytes, failures; stale runs (process died) marked.
    Status(status::Args),
    /// Show the effective configuration: each variable's value (secrets hidden) and where
    /// it came from, the storage, addressing, key prefix and the schema's Mastodon version.
    Config(config::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(docs::CompletionsArgs),
    /// Print a man page on stdout, or write every page with --out DIR; generated from this
    /// very help text.
    Man(docs::ManArgs),
}

impl Command {
    /// The subcommand's name (`prune`, `cert`, …), the `command` label of the metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Prune(_) => "prune",
            Command::Migrate(_) => "migrate",
            Command::Du(_) => "du",
            Command::Orphans(_) => "orphans",
            Command::Reconcile(_) => "reconcile",
            Command::Cert(_) => "cert",
            Command::Doctor(_) => "doctor",
            Command::Config(_) => "config",
            Command::Status(_) => "status",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }

    /// Whether the command was asked for JSON on stdout (`--json`), so that even a fatal
    /// error is reported as JSON there.
    pub fn json(&self) -> bool {
        match self {
            Command::Prune(a) => a.json,
            Command::Migrate(a) => a.json,
            Command::Du(a) => a.json,
            Command::Orphans(a) => a.json,
            Command::Reconcile(a) => a.json,
            Command::Doctor(a) => a.json,
            Command::Config(a) => a.json,
            Command::Status(a) => a.json,
            Command::Cert(a) => match &a.command {
                cert::CertCommand::Status(s) => s.json,
                cert::CertCommand::Renew(_) => false,
            },
            Command::Completions(_) | Command::Man(_) => false,
        }
    }
}
