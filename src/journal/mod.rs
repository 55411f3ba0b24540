//! The tool's own durable state, behind the [`Journal`] trait: resumption state of long
//! jobs (migration file states, orphan scan positions) and a record of each run with its
//! shard, outcome and progress ([`run`]). Two implementations: SQLite
//! ([`sqlite::SqliteJournal`], schema in `migrations/sqlite/`), one file per target under
//! the user's state directory by default (`$XDG_STATE_HOME/mastomedia`, else
//! `~/.local/state/mastomedia`), and PostgreSQL ([`postgres::PgJournal`], schema in
//! `migrations/postgres/`, every table in the schema `mastomedia`), which the shards of
//! one job on several hosts share. Commands hold either as an [`AnyJournal`], opened from a
//! [`JournalLocation`] (`--journal PATH|postgres://…`, default `MASTOMEDIA_JOURNAL`).
//!
//! Owns: resumption state of long jobs, the run records.
//! Must not: share tables with Mastodon (the Postgres journal never writes outside its
//! own schema), print a journal URL's password, or be written outside the pool's gate
//! for anything that would hide a destructive action.

mod any;
mod location;
pub mod lock;
pub mod migrate;
pub mod orphans;
pub mod postgres;
pub mod run;
pub mod sqlite;

use std::future::Future;
use std::path::PathBuf;

pub use self::any::AnyJournal;
pub use self::location::JournalLocation;
pub use self::lock::RunLock;
pub use self::migrate::{FileCursor, FileRecord, FileState, JournalFiles};
pub use self::orphans::ScanPosition;
pub use self::postgres::PgJournal;
pub use self::run::{RunCounts, RunQuery, RunRecord, RunRecorder, RunState, RunTally};
pub use self::sqlite::SqliteJournal;
use crate::model::JobKey;

/// A journal failure. [`JournalError::is_usage`] tells which are the admin's to fix in
/// the command line (exit 2); the others are fatal (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal file cannot be opened or migrated.
    #[error("cannot open the journal {path}: {source}. Pass --journal with a writable path")]
    Open {
        /// The file.
        path: PathBuf,
        /// Driver error.
        source: sqlx::Error,
    },
    /// `--journal` (or `MASTOMEDIA_JOURNAL`) is not a usable location.
    #[error("--journal {shown}: {reason}")]
    BadLocation {
        /// The location as given, without credentials.
        shown: String,
        /// What is wrong and what to pass instead.
        reason: String,
    },
    /// The journal file to read does not exist (`status --journal PATH`).
    #[error(
        "no journal at {0}: pass --journal with the file a run wrote (migrate, orphans and prune print it)"
    )]
    Missing(PathBuf),
    /// The PostgreSQL journal cannot be reached, or its schema not created or migrated.
    #[error("cannot open the PostgreSQL journal {shown}: {cause}")]
    Connect {
        /// The location, without password.
        shown: String,
        /// Driver error (in the message, not a `source`, so it is printed once).
        cause: sqlx::Error,
    },
    /// The PostgreSQL journal would not stay in its own schema: refused, nothing written.
    #[error("refusing the PostgreSQL journal {shown}: {reason}")]
    Refused {
        /// The location, without password.
        shown: String,
        /// Why, and what to change.
        reason: String,
    },
    /// Another run of the same job or shard holds the run lock ([`RunLock`]); the message
    /// says which and what to do. Refused before anything is written (exit 3).
    #[error("{0}")]
    Locked(String),
    /// A journal query failed.
    #[error("journal error while {what}: {source}")]
    Query {
        /// What we were doing.
        what: &'static str,
        /// Driver error.
        source: sqlx::Error,
    },
    /// A [`JournalError::Query`] with the journal it ran on, as [`AnyJournal`] (what every
    /// command holds) returns it: a write that fails mid-run (a full disk, a read-only
    /// remount, a lost PostgreSQL server) names the file or location to fix.
    #[error(
        "the journal {location} failed while {what}: {source}. What was done before is journalled: fix the journal (room on its filesystem, write access, the server) and run the same command again to resume"
    )]
    QueryAt {
        /// The journal: its file path, or the PostgreSQL location without password.
        location: String,
        /// What we were doing.
        what: &'static str,
        /// Driver error.
        source: sqlx::Error,
    },
}

impl JournalError {
    /// This error with the journal's `location` when it is a failed query
    /// ([`JournalError::QueryAt`]); any other error already says where, and is returned as
    /// it is.
    pub fn at(self, location: &str) -> Self {
        match self {
            JournalError::Query { what, source } => JournalError::QueryAt {
                location: location.to_owned(),
                what,
                source,
            },
            e => e,
        }
    }

    /// Whether the fix is in the command line or configuration (exit 2): a bad or missing
    /// location, a file that cannot be opened. An unreachable PostgreSQL server, a refusal
    /// and a failed query are fatal (exit 3).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            JournalError::Open { .. } | JournalError::BadLocation { .. } | JournalError::Missing(_)
        )
    }
}

/// The id of a run record ([`Journal::run_started`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub i64);

/// What migrate and orphans keep between runs. Every write is durable when its future
/// resolves (a crash loses at most the writes still in flight, never corrupts the state).
pub trait Journal {
    /// Where the journal lives, for messages: the file path, or the PostgreSQL location
    /// without its password (`postgres://user@host:port/db (schema mastomedia)`).
    fn location(&self) -> &str;

    /// Writes and removes one record, committed, so a journal that cannot be written (a
    /// read-only file or filesystem, a full disk) fails before anything is uploaded or
    /// deleted, not at the first progress write of a running job. Errors: the write.
    fn probe_writable(&self) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// Records that `key`'s job (`prune`, `orphans`, `migrate`) started against its
    /// target (`JobKey::journal_target`) and shard (`JobKey::shard`, stored as two
    /// columns, NULL unsharded) now (UTC), committed; state running, counts zero.
    fn run_started(&self, key: &JobKey)
    -> impl Future<Output = Result<RunId, JournalError>> + Send;

    /// Stores run `id`'s counts so far and the time of this update (UTC). Called at most
    /// every few seconds ([`run::PROGRESS_EVERY`]); a finished record is left alone.
    fn run_progress(
        &self,
        id: RunId,
        counts: RunCounts,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// The run records `query` asks for, newest first (by start).
    fn runs(
        &self,
        query: &RunQuery,
    ) -> impl Future<Output = Result<Vec<RunRecord>, JournalError>> + Send;

    /// How many runs of `command` against `target` this journal recorded before (`migrate`
    /// records a run, committed, before its first upload, so a journal that holds one knows
    /// the target even when the run was killed before its first file record).
    fn started_runs(
        &self,
        command: &str,
        target: &str,
    ) -> impl Future<Output = Result<u64, JournalError>> + Send;

    /// Records when run `id` finished, how (`outcome`: `success`, `items_failed`,
    /// `usage`, `fatal`, `interrupted`; see [`crate::report::ExitCode`]) and its final
    /// `counts`.
    fn run_finished(
        &self,
        id: RunId,
        outcome: &str,
        counts: RunCounts,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// Every file recorded for migration `target`, sorted by key (read in keyset pages of
    /// [`migrate::READ_PAGE`] rows).
    fn migrate_files(
        &self,
        target: &str,
    ) -> impl Future<Output = Result<JournalFiles, JournalError>> + Send;

    /// At most `limit` files recorded for migration `target` with a key after `after`
    /// (`None`: from the first), in key byte order (SQLite's BINARY collation, PostgreSQL's
    /// `COLLATE "C"`): one keyset page, what a streamed copy pass merges with the source
    /// listing (`pool/copy.rs`) so it never holds the whole journal. Errors: the query
    /// failed.
    fn migrate_files_page(
        &self,
        target: &str,
        after: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<FileRecord>, JournalError>> + Send;

    /// Records `files` for migration `target` at once (insert or replace; all or none).
    fn record_migrated(
        &self,
        target: &str,
        files: &[FileRecord],
    ) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// The unfinished orphan scan of `prefix` on `target`, if any.
    fn orphan_scan(
        &self,
        target: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Option<ScanPosition>, JournalError>> + Send;

    /// Starts a new orphan scan of `prefix` on `target` in `mode`, after `start_after`
    /// (`""`: from the beginning), replacing any earlier position.
    fn orphan_scan_start(
        &self,
        target: &str,
        prefix: &str,
        mode: &str,
        start_after: &str,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// Moves the scan position to `last_key` after a batch of `objects` objects was
    /// handled.
    fn orphan_scan_advance(
        &self,
        target: &str,
        prefix: &str,
        last_key: &str,
        objects: u64,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// Forgets the scan: it reached the end, the next run starts from the beginning.
    fn orphan_scan_finish(
        &self,
        target: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;
}

/// `$XDG_STATE_HOME/mastomedia`, else `$HOME/.local/state/mastomedia`, else `./.mastomedia`.
pub fn state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("mastomedia");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/state/mastomedia");
    }
    PathBuf::from(".mastomedia")
}

/// The default journal file of a job against a target, e.g. `migrate-<bucket>.sqlite`.
/// Characters outside `[A-Za-z0-9._-]` in `target` become `_`.
pub fn default_path(job: &str, target: &str) -> PathBuf {
    let safe: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir().join(format!("{job}-{safe}.sqlite"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths_are_safe_file_names() {
        let p = default_path("migrate", "s3://media.example/x y");
        assert!(
            p.to_string_lossy()
                .ends_with("migrate-s3___media.example_x_y.sqlite")
        );
    }
}
