//! The only writes mastomedia makes to Mastodon's database: clearing attachment columns of
//! rows whose objects are confirmed gone, exactly as `tootctl media remove` /
//! `tootctl preview_cards remove` leave them (§7.1–7.3, §9).
//!
//! Cleared: every existing column among `<att>_file_name`, `_content_type`, `_file_size`,
//! `_fingerprint`, `_created_at`, `_updated_at`; `updated_at` = now (UTC), as the CLI does.
//! Kept: `remote_url`, `*_remote_url`, schema versions, `file_meta`, `blurhash`,
//! `description`, `type`, `status_id` and everything else.
//!
//! Each row is updated only if its file names are still the ones whose objects we deleted
//! (`IS NOT DISTINCT FROM`), so a media row re-fetched by Mastodon during the run keeps its
//! new file.

use chrono::NaiveDateTime;

use super::{Db, DbError, Schema};
pub use crate::model::RowTable;

/// The guard that keeps local rows of `table` untouchable whatever the caller passes.
fn remote_guard(table: RowTable) -> &'static str {
    match table {
        RowTable::MediaAttachments => "t.remote_url <> ''",
        RowTable::Accounts => "t.domain IS NOT NULL",
        RowTable::PreviewCards => "TRUE",
    }
}

/// One batch of rows of one table to clear, with the attachment column groups to clear and,
/// per row, the file names (one per group, same order) that were current when we selected
/// it.
#[derive(Debug, Clone)]
pub struct ClearRequest {
    /// The table.
    pub table: RowTable,
    /// Column group prefixes to clear (`file`, `thumbnail`, `avatar`, `header`, `image`).
    pub attachments: Vec<&'static str>,
    /// `(id, expected <att>_file_name per group)`.
    pub rows: Vec<(i64, Vec<Option<String>>)>,
}

/// Every column a clear of `attachments` on `table` writes, for the privilege check.
pub fn update_columns(schema: &Schema, table: RowTable, attachments: &[&str]) -> Vec<String> {
    let mut cols: Vec<String> = attachments
        .iter()
        .flat_map(|a| schema.attachment_columns(table.name(), a))
        .collect();
    cols.push("updated_at".to_owned());
    cols
}

impl Db {
    /// Clears the rows of `req` in one statement and returns the ids actually updated (rows
    /// that changed since selection, or are not remote, are left alone and not returned).
    pub async fn clear(&self, req: &ClearRequest, now: NaiveDateTime) -> Result<Vec<i64>, DbError> {
        if req.rows.is_empty() {
            return Ok(Vec::new());
        }
        let table = req.table.name();
        let schema = self.schema();
        let sets: Vec<String> = req
            .attachments
            .iter()
            .flat_map(|a| schema.attachment_columns(table, a))
            .map(|c| format!("{c} = NULL"))
            .chain(std::iter::once("updated_at = $1".to_owned()))
            .collect();
        let names: Vec<String> = (0..req.attachments.len())
            .map(|i| format!("n{i}"))
            .collect();
        let unnest_args: Vec<String> = (0..req.attachments.len())
            .map(|i| format!("${}::text[]", i + 3))
            .collect();
        let guards: Vec<String> = req
            .attachments
            .iter()
            .zip(&names)
            .map(|(a, n)| format!("t.{a}_file_name IS NOT DISTINCT FROM u.{n}"))
            .collect();
        let sql = format!(
            "UPDATE {table} AS t SET {sets} \
             FROM unnest($2::bigint[], {args}) AS u(id, {names}) \
             WHERE t.id = u.id AND {guards} AND {remote} \
             RETURNING t.id",
            sets = sets.join(", "),
            args = unnest_args.join(", "),
            names = names.join(", "),
            guards = guards.join(" AND "),
            remote = remote_guard(req.table),
        );
        let ids: Vec<i64> = req.rows.iter().map(|(id, _)| *id).collect();
        let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(now).bind(ids);
        for i in 0..req.attachments.len() {
            let col: Vec<Option<String>> = req.rows.iter().map(|(_, n)| n[i].clone()).collect();
            q = q.bind(col);
        }
        q.fetch_all(self.pool())
            .await
            .map_err(|e| DbError::query(&format!("clearing the file columns of {table}"), e))
    }
}
