//! The SQLite journal: one file per target, schema in `migrations/sqlite/` (embedded with
//! `sqlx::migrate!`; a file is migrated when opened, so a journal written by an older
//! version gains the newer tables and keeps its rows). WAL mode with
//! `synchronous=NORMAL`: a crash loses at most the last transactions, never corrupts the
//! file.

mod migrate;
mod orphans;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::run::{parse_time, shard_of, stored};
use super::{
    FileRecord, Journal, JournalError, JournalFiles, RunCounts, RunId, RunQuery, RunRecord,
    ScanPosition,
};
use crate::model::JobKey;

/// An open SQLite journal.
#[derive(Debug, Clone)]
pub struct SqliteJournal {
    pool: SqlitePool,
    path: PathBuf,
    shown: String,
}

impl SqliteJournal {
    /// Opens (creating it and its folder if needed) and migrates the journal at `path`.
    /// WAL mode with `synchronous=NORMAL`: a crash loses at most the last transactions,
    /// never corrupts the file. Errors: [`JournalError::Open`], also when the file cannot
    /// be written (checked by writing a probe row).
    pub async fn open(path: &Path) -> Result<Self, JournalError> {
        Self::open_with(path, true).await
    }

    /// Opens and migrates an existing journal to read it (`status`): never creates it
    /// (missing: [`JournalError::Missing`]) and writes no probe row.
    pub async fn open_existing(path: &Path) -> Result<Self, JournalError> {
        if !path.is_file() {
            return Err(JournalError::Missing(path.to_owned()));
        }
        Self::open_with(path, false).await
    }

    async fn open_with(path: &Path, create: bool) -> Result<Self, JournalError> {
        let err = |source| JournalError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && create)
        {
            std::fs::create_dir_all(dir).map_err(|e| err(sqlx::Error::Io(e)))?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(err)?
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(err)?;
        // Shards of one host share the file (issue 13): processes opening a new journal at
        // the same moment each see no migration applied, and all but the first fail to
        // record theirs (UNIQUE on `_sqlx_migrations.version`, or a table the first one
        // created meanwhile; their transaction rolled back). Another attempt then finds
        // them applied. The file's own failures (disk full, I/O, read-only) are not retried:
        // see [`is_open_race`].
        let mut attempt = 1;
        loop {
            match sqlx::migrate!("./migrations/sqlite").run(&pool).await {
                Ok(()) => break,
                Err(e) if attempt < 5 && is_open_race(&e) => {
                    tracing::debug!(
                        "migrating the journal {}: {e}; trying again",
                        path.display()
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    pool.close().await;
                    return Err(err(e.into()));
                }
            }
        }
        if create {
            probe_writable(&pool).await.map_err(err)?;
        }
        Ok(Self {
            pool,
            path: path.to_owned(),
            shown: path.display().to_string(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SQLite pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// SQLite's primary result codes of a file that cannot be written or read as a database
/// (<https://sqlite.org/rescode.html>): PERM 3, READONLY 8, IOERR 10 (disk I/O error, also a
/// file-size limit hit), CORRUPT 11, FULL 13, CANTOPEN 14, NOTADB 26.
const FILE_FAILURES: [i32; 7] = [3, 8, 10, 11, 13, 14, 26];

/// Whether a failed migration of the journal is worth another attempt: a database error
/// other than the file's own failures ([`FILE_FAILURES`]), as when shards open a new
/// journal at the same moment. Never after an I/O error: when a COMMIT fails that way,
/// SQLite may keep the failed transaction's schema in that connection's cache, and the
/// next attempt then "succeeds" on a half-migrated file whose later writes are lost (the
/// first run said every file was journalled, the next one found the journal empty: the
/// `chaos::journal_full_or_read_only` failure of stop 21).
fn is_open_race(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    let (MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _)) = e else {
        return false;
    };
    let sqlx::Error::Database(db) = inner else {
        return false;
    };
    let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
    !FILE_FAILURES.contains(&(code & 0xff))
}

/// Now (UTC), as the journal writes times: RFC 3339 with milliseconds.
fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Journal for SqliteJournal {
    fn location(&self) -> &str {
        &self.shown
    }

    async fn probe_writable(&self) -> Result<(), JournalError> {
        probe_writable(&self.pool)
            .await
            .map_err(|source| JournalError::Query {
                what: "proving the journal writable",
                source,
            })
    }

    async fn run_started(&self, key: &JobKey) -> Result<RunId, JournalError> {
        let shard = key.shard();
        let err = |source| JournalError::Query {
            what: "recording the start of the run",
            source,
        };
        // In a transaction of its own: in autocommit, `INSERT … RETURNING` hands back the
        // row before SQLite commits (when the statement is reset), and `fetch_one` never
        // sees a failed commit. On a full disk the run went on with a record that was
        // never written (`chaos::journal_full_or_read_only`).
        let mut tx = self.pool.begin().await.map_err(err)?;
        let id = sqlx::query_scalar(
            "INSERT INTO runs (command, target, shard_index, shard_count, started_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
        )
        .bind(key.job())
        .bind(key.journal_target().as_ref())
        .bind(shard.map(|s| i64::from(s.index())))
        .bind(shard.map(|s| i64::from(s.count())))
        .bind(now())
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(RunId(id))
    }

    async fn run_progress(&self, id: RunId, counts: RunCounts) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE runs SET row_count = ?2, object_count = ?3, byte_count = ?4, \
             failure_count = ?5, updated_at = ?6 WHERE id = ?1 AND finished_at IS NULL",
        )
        .bind(id.0)
        .bind(stored(counts.rows))
        .bind(stored(counts.objects))
        .bind(stored(counts.bytes))
        .bind(stored(counts.failures))
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(|source| JournalError::Query {
            what: "recording the run's progress",
            source,
        })?;
        Ok(())
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, JournalError> {
        let rows: Vec<StoredRun> = sqlx::query_as(
            "SELECT command, target, shard_index, shard_count, outcome, started_at, updated_at, \
             finished_at, row_count, object_count, byte_count, failure_count FROM ( \
             SELECT r.*, row_number() OVER (PARTITION BY command, target, shard_index, shard_count \
             ORDER BY id DESC) AS n FROM runs r WHERE command <> 'probe' \
             AND (?1 IS NULL OR command = ?1)) WHERE ?2 IS NULL OR n <= ?2 ORDER BY id DESC",
        )
        .bind(query.job.as_deref())
        .bind(query.per_target.map(stored))
        .fetch_all(&self.pool)
        .await
        .map_err(|source| JournalError::Query {
            what: "reading the run records",
            source,
        })?;
        Ok(rows.into_iter().filter_map(StoredRun::record).collect())
    }

    async fn started_runs(&self, command: &str, target: &str) -> Result<u64, JournalError> {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM runs WHERE command = ?1 AND target = ?2")
            .bind(command)
            .bind(target)
            .fetch_one(&self.pool)
            .await
            .map(|n| n.max(0) as u64)
            .map_err(|source| JournalError::Query {
                what: "reading the journal's earlier runs",
                source,
            })
    }

    async fn run_finished(
        &self,
        id: RunId,
        outcome: &str,
        counts: RunCounts,
    ) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE runs SET finished_at = ?2, updated_at = ?2, outcome = ?3, row_count = ?4, \
             object_count = ?5, byte_count = ?6, failure_count = ?7 WHERE id = ?1",
        )
        .bind(id.0)
        .bind(now())
        .bind(outcome)
        .bind(stored(counts.rows))
        .bind(stored(counts.objects))
        .bind(stored(counts.bytes))
        .bind(stored(counts.failures))
        .execute(&self.pool)
        .await
        .map_err(|source| JournalError::Query {
            what: "recording the end of the run",
            source,
        })?;
        Ok(())
    }

    async fn migrate_files(&self, target: &str) -> Result<JournalFiles, JournalError> {
        migrate::migrate_files(&self.pool, target).await
    }

    async fn migrate_files_page(
        &self,
        target: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FileRecord>, JournalError> {
        migrate::migrate_files_page(&self.pool, target, after, limit).await
    }

    async fn record_migrated(
        &self,
        target: &str,
        files: &[FileRecord],
    ) -> Result<(), JournalError> {
        migrate::record_migrated(&self.pool, target, files).await
    }

    async fn orphan_scan(
        &self,
        target: &str,
        prefix: &str,
    ) -> Result<Option<ScanPosition>, JournalError> {
        orphans::orphan_scan(&self.pool, target, prefix).await
    }

    async fn orphan_scan_start(
        &self,
        target: &str,
        prefix: &str,
        mode: &str,
        start_after: &str,
    ) -> Result<(), JournalError> {
        orphans::orphan_scan_start(&self.pool, target, prefix, mode, start_after).await
    }

    async fn orphan_scan_advance(
        &self,
        target: &str,
        prefix: &str,
        last_key: &str,
        objects: u64,
    ) -> Result<(), JournalError> {
        orphans::orphan_scan_advance(&self.pool, target, prefix, last_key, objects).await
    }

    async fn orphan_scan_finish(&self, target: &str, prefix: &str) -> Result<(), JournalError> {
        orphans::orphan_scan_finish(&self.pool, target, prefix).await
    }
}

/// A row of `runs` as SQLite stores it (times as RFC 3339 text).
#[derive(sqlx::FromRow)]
struct StoredRun {
    command: String,
    target: String,
    shard_index: Option<i64>,
    shard_count: Option<i64>,
    outcome: Option<String>,
    started_at: String,
    updated_at: Option<String>,
    finished_at: Option<String>,
    row_count: i64,
    object_count: i64,
    byte_count: i64,
    failure_count: i64,
}

impl StoredRun {
    /// The record; `None` for a row whose start time does not parse (written by hand).
    /// A row of a version without progress columns shows its end (or start) as its last
    /// update.
    fn record(self) -> Option<RunRecord> {
        let started_at = parse_time(&self.started_at)?;
        let finished_at = self.finished_at.as_deref().and_then(parse_time);
        let updated_at = self
            .updated_at
            .as_deref()
            .and_then(parse_time)
            .or(finished_at)
            .unwrap_or(started_at);
        Some(RunRecord {
            job: self.command,
            target: self.target,
            shard: shard_of(self.shard_index, self.shard_count),
            outcome: self.outcome,
            started_at,
            updated_at,
            finished_at,
            counts: RunCounts {
                rows: self.row_count.max(0) as u64,
                objects: self.object_count.max(0) as u64,
                bytes: self.byte_count.max(0) as u64,
                failures: self.failure_count.max(0) as u64,
            },
        })
    }
}

/// Writes and removes one row, committed, so a journal that cannot be written (a read-only
/// file or filesystem, a full disk) fails at open, before anything is uploaded or deleted,
/// not at the first progress write of a running job.
async fn probe_writable(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (command, target, started_at) VALUES ('probe', '', datetime('now')) RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM runs WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::RunState;

    #[tokio::test]
    async fn opens_and_migrates_twice() {
        let dir = std::env::temp_dir().join(format!("mm-journal-{}", std::process::id()));
        let path = dir.join("j.sqlite");
        let j = SqliteJournal::open(&path).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
            .fetch_one(j.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
        drop(j);
        SqliteJournal::open(&path).await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 9.7: a journal that cannot be written fails at open.
    #[tokio::test]
    async fn case9_7_read_only_journal_fails_at_open() {
        let dir = std::env::temp_dir().join(format!("mm-journal-ro-{}", std::process::id()));
        let path = dir.join("j.sqlite");
        drop(SqliteJournal::open(&path).await.unwrap());
        // Opened read-only, as SQLite does by itself with a file it may not write.
        let ro = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(&path)
            .read_only(true);
        let pool = SqlitePoolOptions::new().connect_with(ro).await.unwrap();
        let e = probe_writable(&pool).await.unwrap_err().to_string();
        assert!(e.contains("readonly") || e.contains("read-only"), "{e}");
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A journal written by the code before the `journal/sqlite/` move (migrations
    /// 0001–0005 applied from `migrations/`, same files, same checksums) opens with the
    /// new code, gains the newer migrations and keeps its rows.
    #[tokio::test]
    async fn a_journal_of_the_old_layout_opens_and_migrates() {
        let dir = std::env::temp_dir().join(format!("mm-journal-old-{}", std::process::id()));
        let path = dir.join("j.sqlite");
        std::fs::create_dir_all(&dir).unwrap();
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
        let mut old = sqlx::migrate!("./migrations/sqlite");
        old.migrations = old
            .migrations
            .iter()
            .filter(|m| m.version <= 5)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        assert_eq!(old.migrations.len(), 5);
        old.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO orphan_scans (target, prefix, mode, last_key, objects, started_at, updated_at) \
             VALUES ('s3://a', '', 'delete', 'k9', 9, 't0', 't1')",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO migrate_files (target, key, size, version, state, source_private, updated_at) \
             VALUES ('b', 'x.png', 5, '123', 'deleted_in_bucket', 1, 't')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let j = SqliteJournal::open(&path).await.unwrap();
        let p = j.orphan_scan("s3://a", "").await.unwrap().unwrap();
        assert_eq!((p.last_key.as_str(), p.objects), ("k9", 9));
        let m = j.migrate_files("b").await.unwrap();
        assert_eq!(m["x.png"].state, crate::journal::FileState::DeletedInBucket);
        assert_eq!(m["x.png"].source_private, Some(true));
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(j.pool())
                .await
                .unwrap();
        assert_eq!(versions, (1..=7).collect::<Vec<_>>());
        drop(j);
        SqliteJournal::open(&path).await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn runs_are_recorded_with_their_outcome() {
        let dir = std::env::temp_dir().join(format!("mm-journal-runs-{}", std::process::id()));
        let j = SqliteJournal::open(&dir.join("j.sqlite")).await.unwrap();
        j.probe_writable().await.unwrap();
        let a = j
            .run_started(&JobKey::new("orphans", "s3://a@h"))
            .await
            .unwrap();
        let b = j.run_started(&JobKey::new("migrate", "b")).await.unwrap();
        assert_ne!(a, b);
        j.run_finished(a, "interrupted", RunCounts::default())
            .await
            .unwrap();
        let rows: Vec<(String, String, Option<String>, bool)> = sqlx::query_as(
            "SELECT command, target, outcome, finished_at IS NOT NULL FROM runs ORDER BY id",
        )
        .fetch_all(j.pool())
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "orphans".into(),
                    "s3://a@h".into(),
                    Some("interrupted".into()),
                    true
                ),
                ("migrate".into(), "b".into(), None, false),
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Shards get their own columns, progress and final counts are kept, a finished
    /// record ignores late progress, and `runs` limits per (job, target, shard).
    #[tokio::test]
    async fn run_records_keep_shard_progress_and_counts() {
        use crate::model::Shard;
        let dir = std::env::temp_dir().join(format!("mm-journal-prog-{}", std::process::id()));
        let j = SqliteJournal::open(&dir.join("j.sqlite")).await.unwrap();
        let base = JobKey::new("migrate", "aws/media");
        let shard = |index| base.clone().with_shard(Shard::new(index, 2).unwrap());
        let old = j.run_started(&shard(0)).await.unwrap();
        let c = |n: u64| RunCounts {
            rows: 0,
            objects: n,
            bytes: n * 10,
            failures: n % 2,
        };
        j.run_finished(old, "fatal", c(1)).await.unwrap();
        let a = j.run_started(&shard(0)).await.unwrap();
        let b = j.run_started(&shard(1)).await.unwrap();
        let p = j
            .run_started(&JobKey::new("prune", "s3://m@h"))
            .await
            .unwrap();
        j.run_progress(a, c(5)).await.unwrap();
        j.run_finished(b, "success", c(7)).await.unwrap();
        j.run_progress(b, c(9)).await.unwrap();
        j.run_finished(p, "interrupted", c(3)).await.unwrap();

        let all = j.runs(&RunQuery::default()).await.unwrap();
        assert_eq!(all.len(), 4);
        let last = j
            .runs(&RunQuery {
                job: Some("migrate".into()),
                per_target: Some(1),
            })
            .await
            .unwrap();
        let got: Vec<_> = last
            .iter()
            .map(|r| (r.shard, r.state(), r.counts, r.shown_target()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Some(Shard::new(1, 2).unwrap()),
                    RunState::Finished,
                    c(7),
                    "aws/media".to_owned()
                ),
                (
                    Some(Shard::new(0, 2).unwrap()),
                    RunState::Running,
                    c(5),
                    "aws/media".to_owned()
                ),
            ]
        );
        assert!(last.iter().all(|r| r.target.contains("#shard=")));
        assert!(last[1].finished_at.is_none() && last[0].finished_at.is_some());
        assert_eq!(j.started_runs("migrate", "aws/media").await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
