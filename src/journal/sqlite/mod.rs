//! The SQLite journal: one file per target, schema in `migrations/sqlite/` (embedded with
//! `sqlx::migrate!`; a file is migrated when opened, so a journal written by an older
//! version gains the newer tables and keeps its rows). WAL mode with
//! `synchronous=NORMAL`: a crash loses at most the last transactions, never corrupts the
//! file.

mod migrate;
mod orphans;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{FileRecord, Journal, JournalError, RunId, ScanPosition};

/// An open SQLite journal.
#[derive(Debug, Clone)]
pub struct SqliteJournal {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteJournal {
    /// Opens (creating it and its folder if needed) and migrates the journal at `path`.
    /// WAL mode with `synchronous=NORMAL`: a crash loses at most the last transactions,
    /// never corrupts the file.
    pub async fn open(path: &Path) -> Result<Self, JournalError> {
        let err = |source| JournalError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(sqlx::Error::Io(e)))?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(err)?
            .filename(path)
            .create_if_missing(true)
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
        // record theirs (UNIQUE on `_sqlx_migrations.version`, their transaction rolled
        // back). Another attempt then finds them applied.
        let mut attempt = 1;
        loop {
            match sqlx::migrate!("./migrations/sqlite").run(&pool).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    tracing::debug!(
                        "migrating the journal {}: {e}; trying again",
                        path.display()
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(err(e.into())),
            }
        }
        probe_writable(&pool).await.map_err(err)?;
        Ok(Self {
            pool,
            path: path.to_owned(),
        })
    }

    /// The SQLite pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Now (UTC), as the journal writes times: RFC 3339 with milliseconds.
fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Journal for SqliteJournal {
    fn path(&self) -> &Path {
        &self.path
    }

    async fn probe_writable(&self) -> Result<(), JournalError> {
        probe_writable(&self.pool)
            .await
            .map_err(|source| JournalError::Query {
                what: "proving the journal writable",
                source,
            })
    }

    async fn run_started(&self, command: &str, target: &str) -> Result<RunId, JournalError> {
        sqlx::query_scalar(
            "INSERT INTO runs (command, target, started_at) VALUES (?1, ?2, ?3) RETURNING id",
        )
        .bind(command)
        .bind(target)
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map(RunId)
        .map_err(|source| JournalError::Query {
            what: "recording the start of the run",
            source,
        })
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

    async fn run_finished(&self, id: RunId, outcome: &str) -> Result<(), JournalError> {
        sqlx::query("UPDATE runs SET finished_at = ?2, outcome = ?3 WHERE id = ?1")
            .bind(id.0)
            .bind(now())
            .bind(outcome)
            .execute(&self.pool)
            .await
            .map_err(|source| JournalError::Query {
                what: "recording the end of the run",
                source,
            })?;
        Ok(())
    }

    async fn migrate_files(
        &self,
        target: &str,
    ) -> Result<HashMap<String, FileRecord>, JournalError> {
        migrate::migrate_files(&self.pool, target).await
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
        assert_eq!(versions, (1..=6).collect::<Vec<_>>());
        drop(j);
        SqliteJournal::open(&path).await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn runs_are_recorded_with_their_outcome() {
        let dir = std::env::temp_dir().join(format!("mm-journal-runs-{}", std::process::id()));
        let j = SqliteJournal::open(&dir.join("j.sqlite")).await.unwrap();
        j.probe_writable().await.unwrap();
        let a = j.run_started("orphans", "s3://a@h").await.unwrap();
        let b = j.run_started("migrate", "b").await.unwrap();
        assert_ne!(a, b);
        j.run_finished(a, "interrupted").await.unwrap();
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
}
