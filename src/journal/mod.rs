//! The tool's own durable state: a SQLite database (schema in `migrations/`, embedded with
//! `sqlx::migrate!`), one file per target, under the user's state directory by default
//! (`$XDG_STATE_HOME/mastomedia`, else `~/.local/state/mastomedia`).
//!
//! Owns: resumption state of long jobs (migration file states, orphan scan positions).
//! Must not: share tables with Mastodon, or be written outside the pool's gate for
//! anything that would hide a destructive action.

pub mod migrate;
pub mod orphans;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

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

/// An open journal.
#[derive(Debug, Clone)]
pub struct Journal {
    pool: SqlitePool,
    path: PathBuf,
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

impl Journal {
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
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| err(e.into()))?;
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

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
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
        let j = Journal::open(&path).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
            .fetch_one(j.pool())
            .await
            .unwrap();
        assert_eq!(n, 0);
        drop(j);
        Journal::open(&path).await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 9.7: a journal that cannot be written fails at open.
    #[tokio::test]
    async fn case9_7_read_only_journal_fails_at_open() {
        let dir = std::env::temp_dir().join(format!("mm-journal-ro-{}", std::process::id()));
        let path = dir.join("j.sqlite");
        drop(Journal::open(&path).await.unwrap());
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

    #[test]
    fn default_paths_are_safe_file_names() {
        let p = default_path("migrate", "s3://media.example/x y");
        assert!(
            p.to_string_lossy()
                .ends_with("migrate-s3___media.example_x_y.sqlite")
        );
    }
}
