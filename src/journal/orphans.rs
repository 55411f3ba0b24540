//! The orphan scan journal (`migrations/0002_orphans.sql`): per storage target and listing
//! prefix, the last key whose batch was fully handled, so `orphans` continues after it
//! (`docs/reference/provider-quirks.md#l1`). Written once per batch, in key order; removed when a scan reaches the end.

use chrono::{SecondsFormat, Utc};

use super::{Journal, JournalError};

/// A scan in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPosition {
    /// `report`, `delete` or `delete+stale`: only a run of the same mode resumes it.
    pub mode: String,
    /// The last key handled (`""`: none yet).
    pub last_key: String,
    /// Objects handled by this scan so far, over all its runs.
    pub objects: i64,
    /// When the scan started (RFC 3339 UTC).
    pub started_at: String,
    /// When the position last moved.
    pub updated_at: String,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Journal {
    /// The unfinished scan of `prefix` on `target`, if any.
    pub async fn orphan_scan(
        &self,
        target: &str,
        prefix: &str,
    ) -> Result<Option<ScanPosition>, JournalError> {
        let row: Option<(String, String, i64, String, String)> = sqlx::query_as(
            "SELECT mode, last_key, objects, started_at, updated_at FROM orphan_scans \
             WHERE target = ?1 AND prefix = ?2",
        )
        .bind(target)
        .bind(prefix)
        .fetch_optional(self.pool())
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
    pub async fn orphan_scan_start(
        &self,
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
        .execute(self.pool())
        .await
        .map_err(|source| JournalError::Query {
            what: "starting an orphan scan",
            source,
        })?;
        Ok(())
    }

    /// Moves the position to `last_key` after a batch of `objects` objects was handled.
    pub async fn orphan_scan_advance(
        &self,
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
        .execute(self.pool())
        .await
        .map_err(|source| JournalError::Query {
            what: "saving the orphan scan position",
            source,
        })?;
        Ok(())
    }

    /// Forgets the scan: it reached the end, the next run starts from the beginning.
    pub async fn orphan_scan_finish(&self, target: &str, prefix: &str) -> Result<(), JournalError> {
        sqlx::query("DELETE FROM orphan_scans WHERE target = ?1 AND prefix = ?2")
            .bind(target)
            .bind(prefix)
            .execute(self.pool())
            .await
            .map_err(|source| JournalError::Query {
                what: "finishing the orphan scan",
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn positions_move_and_finish_per_target_and_prefix() {
        let dir = std::env::temp_dir().join(format!("mm-orphans-journal-{}", std::process::id()));
        let j = Journal::open(&dir.join("j.sqlite")).await.unwrap();
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
