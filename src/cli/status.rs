//! `mastomedia status`.

use std::ffi::OsString;

use clap::ValueEnum;

/// Show the last runs of prune, migrate and orphans from their journals: one line per
/// shard with its state (running, stale, finished, failed, interrupted), start, last
/// update, rows, objects, bytes and failures. A run whose process died stays "running"
/// with an old last update: in a PostgreSQL journal it is shown as stale (re-run it to
/// resume).
///
/// Reads --journal (a SQLite file or a postgres:// URL), else MASTOMEDIA_JOURNAL, else
/// every default journal file under ~/.local/state/mastomedia. Changes nothing but
/// bringing an older journal's tables up to date (a PostgreSQL journal used for the first
/// time gets its schema mastomedia). Exit 0; 2 when the journal file given does not exist.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The journal to read: a SQLite file or a postgres:// URL (default:
    /// MASTOMEDIA_JOURNAL, else the default journal files).
    #[arg(long, value_name = "PATH|URL")]
    pub journal: Option<OsString>,

    /// Only the runs of this job.
    #[arg(long, value_enum, value_name = "JOB")]
    pub job: Option<Job>,

    /// Runs shown per job, target and shard, newest first (default 1: the last run).
    #[arg(long, value_name = "N", conflicts_with = "all", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Every recorded run.
    #[arg(long)]
    pub all: bool,

    /// A running record of a PostgreSQL journal not updated for this many seconds is
    /// shown as stale (its process most likely died); running jobs update it every 5
    /// seconds. SQLite journals get their counts at the end only: never called stale.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub stale_after: u64,

    /// Print the runs as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--job`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Job {
    /// `mastomedia prune`.
    Prune,
    /// `mastomedia migrate`.
    Migrate,
    /// `mastomedia orphans`.
    Orphans,
}

impl Job {
    /// The job's name as journalled.
    pub fn name(self) -> &'static str {
        match self {
            Job::Prune => "prune",
            Job::Migrate => "migrate",
            Job::Orphans => "orphans",
        }
    }
}
