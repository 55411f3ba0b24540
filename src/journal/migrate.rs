//! The migration journal: per target bucket, the state of every source file copied
//! (size and version as copied, uploaded / verified / mismatch / deleted in the bucket,
//! and whether the source was private). Loaded once at start so a re-run skips unchanged
//! files without listing the target bucket; written in batched transactions as uploads
//! finish, so a `kill -9` loses at most the last batch (those files are uploaded again,
//! which is harmless).

use std::collections::HashMap;

use chrono::Utc;

use super::{Journal, JournalError};

/// State of a journalled file: a pure noun of the migrate decisions, kept in
/// `plan/migrate.rs` and re-exported here.
pub use crate::plan::migrate::FileState;

impl FileState {
    fn as_str(self) -> &'static str {
        match self {
            FileState::Uploaded => "uploaded",
            FileState::Verified => "verified",
            FileState::Mismatch => "mismatch",
            FileState::DeletedInBucket => "deleted_in_bucket",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "verified" => FileState::Verified,
            "mismatch" => FileState::Mismatch,
            "deleted_in_bucket" => FileState::DeletedInBucket,
            _ => FileState::Uploaded,
        }
    }
}

/// What the journal knows of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Key in the target bucket (without `S3_KEY_PREFIX`).
    pub key: String,
    /// Size in bytes as copied.
    pub size: u64,
    /// Source version as copied: file mtime in nanoseconds, or the source ETag.
    pub version: String,
    /// State.
    pub state: FileState,
    /// Whether the source object was private when copied (file not world-readable, or a
    /// private / unreadable source ACL); `None` for rows journalled before this was kept.
    pub source_private: Option<bool>,
}

impl Journal {
    /// Every file recorded for `target`, by key.
    pub async fn migrate_files(
        &self,
        target: &str,
    ) -> Result<HashMap<String, FileRecord>, JournalError> {
        let rows: Vec<(String, i64, String, String, Option<bool>)> = sqlx::query_as(
            "SELECT key, size, version, state, source_private FROM migrate_files WHERE target = ?",
        )
        .bind(target)
        .fetch_all(self.pool())
        .await
        .map_err(|source| JournalError::Query {
            what: "loading the migration journal",
            source,
        })?;
        Ok(rows
            .into_iter()
            .map(|(key, size, version, state, source_private)| {
                (
                    key.clone(),
                    FileRecord {
                        key,
                        size: size.max(0) as u64,
                        version,
                        state: FileState::parse(&state),
                        source_private,
                    },
                )
            })
            .collect())
    }

    /// Records `files` for `target` in one transaction (insert or replace).
    pub async fn record_migrated(
        &self,
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
        let mut tx = self.pool().begin().await.map_err(err)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_and_replace() {
        let dir = std::env::temp_dir().join(format!("mm-jm-{}", std::process::id()));
        let j = Journal::open(&dir.join("m.sqlite")).await.unwrap();
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
