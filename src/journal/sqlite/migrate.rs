//! The migration journal's table (`migrations/sqlite/0003_migrate.sql`, 0004, 0005):
//! one row per target and key, written in one transaction per batch.

use chrono::Utc;
use sqlx::sqlite::SqlitePool;

use crate::journal::migrate::READ_PAGE;
use crate::journal::{FileRecord, FileState, JournalError, JournalFiles};

/// Every file recorded for `target`, sorted by key: keyset pages of [`READ_PAGE`] rows
/// ([`migrate_files_page`]).
pub(super) async fn migrate_files(
    pool: &SqlitePool,
    target: &str,
) -> Result<JournalFiles, JournalError> {
    let mut records: Vec<FileRecord> = Vec::new();
    loop {
        let after = records.last().map(|r| r.key.as_str());
        let rows = migrate_files_page(pool, target, after, READ_PAGE).await?;
        let full = rows.len() as i64 == READ_PAGE;
        records.extend(rows);
        if !full {
            break;
        }
    }
    Ok(JournalFiles::from_records(records))
}

/// At most `limit` files recorded for `target` with a key after `after`, in key order:
/// one keyset page along the primary key (target, key), whose BINARY collation is byte
/// order (Rust's `str` order).
pub(super) async fn migrate_files_page(
    pool: &SqlitePool,
    target: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<FileRecord>, JournalError> {
    let rows: Vec<(String, i64, String, String, Option<bool>)> = sqlx::query_as(
        "SELECT key, size, version, state, source_private FROM migrate_files \
         WHERE target = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
    )
    .bind(target)
    // Keys are never empty: "" is before the first.
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|source| JournalError::Query {
        what: "loading the migration journal",
        source,
    })?;
    Ok(rows
        .into_iter()
        .map(|(key, size, version, state, source_private)| FileRecord {
            key,
            size: size.max(0) as u64,
            version,
            state: FileState::parse(&state),
            source_private,
        })
        .collect())
}

/// Records `files` for `target` in one transaction (insert or replace).
pub(super) async fn record_migrated(
    pool: &SqlitePool,
    target: &str,
    files: &[FileRecord],
) -> Result<(), JournalError> {
    if files.is_empty() {
        return Ok(());
    }
    let err = |source| JournalError::Query {
        what: "writing the migration journal",
        source,
    };
    let now = Utc::now().to_rfc3339();
    let mut tx = pool.begin().await.map_err(err)?;
    for f in files {
        sqlx::query(
                "INSERT INTO migrate_files (target, key, size, version, state, source_private, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (target, key) DO UPDATE SET size = excluded.size, version = excluded.version, \
                 state = excluded.state, source_private = excluded.source_private, updated_at = excluded.updated_at",
            )
            .bind(target)
            .bind(&f.key)
            .bind(f.size as i64)
            .bind(&f.version)
            .bind(f.state.as_str())
            .bind(f.source_private)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::super::SqliteJournal;
    use crate::journal::{FileRecord, FileState, Journal};

    #[tokio::test]
    async fn records_round_trip_and_replace() {
        let dir = std::env::temp_dir().join(format!("mm-jm-{}", std::process::id()));
        let j = SqliteJournal::open(&dir.join("m.sqlite")).await.unwrap();
        let rec = |size, state| FileRecord {
            key: "a b/ü+%.png".into(),
            size,
            version: "123".into(),
            state,
            source_private: Some(size == 6),
        };
        j.record_migrated("t", &[rec(5, FileState::Uploaded)])
            .await
            .unwrap();
        j.record_migrated("t", &[rec(6, FileState::Verified)])
            .await
            .unwrap();
        let m = j.migrate_files("t").await.unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m["a b/ü+%.png"], rec(6, FileState::Verified));
        j.record_migrated("t", &[rec(6, FileState::DeletedInBucket)])
            .await
            .unwrap();
        let m = j.migrate_files("t").await.unwrap();
        assert_eq!(m["a b/ü+%.png"], rec(6, FileState::DeletedInBucket));
        assert!(j.migrate_files("other").await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
