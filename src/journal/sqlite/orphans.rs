//! The orphan scan journal's table (`migrations/sqlite/0002_orphans.sql`): one row per
//! storage target and listing prefix.

use sqlx::sqlite::SqlitePool;

use super::now;
use crate::journal::{JournalError, ScanPosition};

/// The unfinished scan of `prefix` on `target`, if any.
pub(super) async fn orphan_scan(
    pool: &SqlitePool,
    target: &str,
    prefix: &str,
) -> Result<Option<ScanPosition>, JournalError> {
    let row: Option<(String, String, i64, String, String)> = sqlx::query_as(
        "SELECT mode, last_key, objects, started_at, updated_at FROM orphan_scans \
             WHERE target = ?1 AND prefix = ?2",
    )
    .bind(target)
    .bind(prefix)
    .fetch_optional(pool)
    .await
    .map_err(|source| JournalError::Query {
        what: "reading the orphan scan position",
        source,
    })?;
    Ok(row.map(
        |(mode, last_key, objects, started_at, updated_at)| ScanPosition {
            mode,
            last_key,
            objects,
            started_at,
            updated_at,
        },
    ))
}

/// Starts a new scan of `prefix` on `target` in `mode`, after `start_after` (`""`:
/// from the beginning), replacing any earlier position.
pub(super) async fn orphan_scan_start(
    pool: &SqlitePool,
    target: &str,
    prefix: &str,
    mode: &str,
    start_after: &str,
) -> Result<(), JournalError> {
    let t = now();
    sqlx::query(
            "INSERT INTO orphan_scans (target, prefix, mode, last_key, objects, started_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5) \
             ON CONFLICT (target, prefix) DO UPDATE SET mode = excluded.mode, \
             last_key = excluded.last_key, objects = 0, started_at = excluded.started_at, \
             updated_at = excluded.updated_at",
        )
        .bind(target)
        .bind(prefix)
        .bind(mode)
        .bind(start_after)
        .bind(t)
        .execute(pool)
        .await
        .map_err(|source| JournalError::Query {
            what: "starting an orphan scan",
            source,
        })?;
    Ok(())
}

/// Moves the position to `last_key` after a batch of `objects` objects was handled.
pub(super) async fn orphan_scan_advance(
    pool: &SqlitePool,
    target: &str,
    prefix: &str,
    last_key: &str,
    objects: u64,
) -> Result<(), JournalError> {
    sqlx::query(
        "UPDATE orphan_scans SET last_key = ?3, objects = objects + ?4, updated_at = ?5 \
             WHERE target = ?1 AND prefix = ?2",
    )
    .bind(target)
    .bind(prefix)
    .bind(last_key)
    .bind(objects as i64)
    .bind(now())
    .execute(pool)
    .await
    .map_err(|source| JournalError::Query {
        what: "saving the orphan scan position",
        source,
    })?;
    Ok(())
}

/// Forgets the scan: it reached the end, the next run starts from the beginning.
pub(super) async fn orphan_scan_finish(
    pool: &SqlitePool,
    target: &str,
    prefix: &str,
) -> Result<(), JournalError> {
    sqlx::query("DELETE FROM orphan_scans WHERE target = ?1 AND prefix = ?2")
        .bind(target)
        .bind(prefix)
        .execute(pool)
        .await
        .map_err(|source| JournalError::Query {
            what: "finishing the orphan scan",
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::SqliteJournal;
    use crate::journal::Journal;

    #[tokio::test]
    async fn positions_move_and_finish_per_target_and_prefix() {
        let dir = std::env::temp_dir().join(format!("mm-orphans-journal-{}", std::process::id()));
        let j = SqliteJournal::open(&dir.join("j.sqlite")).await.unwrap();
        assert_eq!(j.orphan_scan("s3://a", "").await.unwrap(), None);
        j.orphan_scan_start("s3://a", "", "delete", "")
            .await
            .unwrap();
        j.orphan_scan_start("s3://a", "cache/", "report", "")
            .await
            .unwrap();
        j.orphan_scan_advance("s3://a", "", "k1", 10).await.unwrap();
        j.orphan_scan_advance("s3://a", "", "k2", 5).await.unwrap();
        let p = j.orphan_scan("s3://a", "").await.unwrap().unwrap();
        assert_eq!(
            (p.mode.as_str(), p.last_key.as_str(), p.objects),
            ("delete", "k2", 15)
        );
        assert_eq!(
            j.orphan_scan("s3://a", "cache/")
                .await
                .unwrap()
                .unwrap()
                .last_key,
            ""
        );
        assert_eq!(j.orphan_scan("s3://b", "").await.unwrap(), None);
        j.orphan_scan_start("s3://a", "", "report", "k0")
            .await
            .unwrap();
        let p = j.orphan_scan("s3://a", "").await.unwrap().unwrap();
        assert_eq!(
            (p.mode.as_str(), p.last_key.as_str(), p.objects),
            ("report", "k0", 0)
        );
        j.orphan_scan_finish("s3://a", "").await.unwrap();
        assert_eq!(j.orphan_scan("s3://a", "").await.unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
