//! The tool's own durable state, behind the [`Journal`] trait: resumption state of long
//! jobs (migration file states, orphan scan positions) and a record of each run. One
//! implementation today, SQLite ([`sqlite::SqliteJournal`], schema in `migrations/sqlite/`),
//! one file per target under the user's state directory by default
//! (`$XDG_STATE_HOME/mastomedia`, else `~/.local/state/mastomedia`).
//!
//! Owns: resumption state of long jobs, the run records.
//! Must not: share tables with Mastodon, or be written outside the pool's gate for
//! anything that would hide a destructive action.

pub mod migrate;
pub mod orphans;
pub mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};

pub use self::migrate::{FileRecord, FileState};
pub use self::orphans::ScanPosition;
pub use self::sqlite::SqliteJournal;

/// A journal failure.
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
    /// A journal query failed.
    #[error("journal error while {what}: {source}")]
    Query {
        /// What we were doing.
        what: &'static str,
        /// Driver error.
        source: sqlx::Error,
    },
}

/// The id of a run record ([`Journal::run_started`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub i64);

/// What migrate and orphans keep between runs. Every write is durable when its future
/// resolves (a crash loses at most the writes still in flight, never corrupts the state).
pub trait Journal {
    /// Where the journal lives (a file path), for messages.
    fn path(&self) -> &Path;

    /// Writes and removes one record, committed, so a journal that cannot be written (a
    /// read-only file or filesystem, a full disk) fails before anything is uploaded or
    /// deleted, not at the first progress write of a running job. Errors: the write.
    fn probe_writable(&self) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// Records that `command` (`orphans`, `migrate`) started against `target` now (UTC).
    fn run_started(
        &self,
        command: &str,
        target: &str,
    ) -> impl Future<Output = Result<RunId, JournalError>> + Send;

    /// How many runs of `command` against `target` this journal recorded before (`migrate`
    /// records a run, committed, before its first upload, so a journal that holds one knows
    /// the target even when the run was killed before its first file record).
    fn started_runs(
        &self,
        command: &str,
        target: &str,
    ) -> impl Future<Output = Result<u64, JournalError>> + Send;

    /// Records when run `id` finished and how (`outcome`: `success`, `items_failed`,
    /// `usage`, `fatal`, `interrupted`; see [`crate::report::ExitCode`]).
    fn run_finished(
        &self,
        id: RunId,
        outcome: &str,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// Every file recorded for migration `target`, by key.
    fn migrate_files(
        &self,
        target: &str,
    ) -> impl Future<Output = Result<HashMap<String, FileRecord>, JournalError>> + Send;

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
