//! [`AnyJournal`]: the journal a command opened, SQLite or PostgreSQL, behind one concrete
//! type (the [`Journal`] trait's `impl Future` methods make it unusable as `dyn`), cheap
//! to clone (both hold a connection pool) so a [`super::RunRecorder`] can write progress
//! from its own task.

use super::{
    FileRecord, Journal, JournalError, JournalFiles, JournalLocation, PgJournal, RunCounts, RunId,
    RunQuery, RunRecord, ScanPosition, SqliteJournal,
};
use crate::model::JobKey;

/// A SQLite or PostgreSQL journal.
#[derive(Debug, Clone)]
pub enum AnyJournal {
    /// A SQLite file.
    Sqlite(SqliteJournal),
    /// A PostgreSQL database (schema `mastomedia`).
    Postgres(PgJournal),
}

impl AnyJournal {
    /// Opens (creating and migrating) the journal at `location`. Errors: see
    /// [`SqliteJournal::open`] and [`PgJournal::open`].
    pub async fn open(location: &JournalLocation) -> Result<Self, JournalError> {
        Ok(match location {
            JournalLocation::File(path) => Self::Sqlite(SqliteJournal::open(path).await?),
            JournalLocation::Postgres(pg) => Self::Postgres(PgJournal::open(pg).await?),
        })
    }

    /// Takes the run lock of `key` where this journal lives ([`super::lock`]): lock files
    /// beside a SQLite journal, session advisory locks in a PostgreSQL one. Without
    /// waiting. Errors: [`JournalError::Locked`] (another run of the job or shard holds
    /// it), a lock file that cannot be created, a connection or query error.
    pub async fn lock_run(&self, key: &JobKey) -> Result<super::RunLock, JournalError> {
        match self {
            Self::Sqlite(j) => super::lock::lock_files(j.path(), key),
            Self::Postgres(j) => super::lock::lock_postgres(j.dedicated().await?, key).await,
        }
    }

    /// Opens an existing journal to read its run records (`status`): a file that does not
    /// exist is [`JournalError::Missing`], never created.
    pub async fn open_existing(location: &JournalLocation) -> Result<Self, JournalError> {
        Ok(match location {
            JournalLocation::File(path) => Self::Sqlite(SqliteJournal::open_existing(path).await?),
            JournalLocation::Postgres(pg) => Self::Postgres(PgJournal::open(pg).await?),
        })
    }
}

/// Calls `$call` on whichever journal `$self` holds; with `?at`, a failed query's error
/// names the journal ([`JournalError::at`]).
macro_rules! delegate {
    ($self:ident, $j:ident => $call:expr) => {
        match $self {
            AnyJournal::Sqlite($j) => $call,
            AnyJournal::Postgres($j) => $call,
        }
    };
    (?at $self:ident, $j:ident => $call:expr) => {
        delegate!($self, $j => $call).map_err(|e: JournalError| e.at($self.location()))
    };
}

impl Journal for AnyJournal {
    fn location(&self) -> &str {
        delegate!(self, j => j.location())
    }

    async fn probe_writable(&self) -> Result<(), JournalError> {
        delegate!(?at self, j => j.probe_writable().await)
    }

    async fn run_started(&self, key: &JobKey) -> Result<RunId, JournalError> {
        delegate!(?at self, j => j.run_started(key).await)
    }

    async fn run_progress(&self, id: RunId, counts: RunCounts) -> Result<(), JournalError> {
        delegate!(?at self, j => j.run_progress(id, counts).await)
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, JournalError> {
        delegate!(?at self, j => j.runs(query).await)
    }

    async fn started_runs(&self, command: &str, target: &str) -> Result<u64, JournalError> {
        delegate!(?at self, j => j.started_runs(command, target).await)
    }

    async fn run_finished(
        &self,
        id: RunId,
        outcome: &str,
        counts: RunCounts,
    ) -> Result<(), JournalError> {
        delegate!(?at self, j => j.run_finished(id, outcome, counts).await)
    }

    async fn migrate_files(&self, target: &str) -> Result<JournalFiles, JournalError> {
        delegate!(?at self, j => j.migrate_files(target).await)
    }

    async fn migrate_files_page(
        &self,
        target: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FileRecord>, JournalError> {
        delegate!(?at self, j => j.migrate_files_page(target, after, limit).await)
    }

    async fn record_migrated(
        &self,
        target: &str,
        files: &[FileRecord],
    ) -> Result<(), JournalError> {
        delegate!(?at self, j => j.record_migrated(target, files).await)
    }

    async fn orphan_scan(
        &self,
        target: &str,
        prefix: &str,
    ) -> Result<Option<ScanPosition>, JournalError> {
        delegate!(?at self, j => j.orphan_scan(target, prefix).await)
    }

    async fn orphan_scan_start(
        &self,
        target: &str,
        prefix: &str,
        mode: &str,
        start_after: &str,
    ) -> Result<(), JournalError> {
        delegate!(?at self, j => j.orphan_scan_start(target, prefix, mode, start_after).await)
    }

    async fn orphan_scan_advance(
        &self,
        target: &str,
        prefix: &str,
        last_key: &str,
        objects: u64,
    ) -> Result<(), JournalError> {
        delegate!(?at self, j => j.orphan_scan_advance(target, prefix, last_key, objects).await)
    }

    async fn orphan_scan_finish(&self, target: &str, prefix: &str) -> Result<(), JournalError> {
        delegate!(?at self, j => j.orphan_scan_finish(target, prefix).await)
    }
}
