//! Whether an object's row is in good standing: Mastodon makes media, avatars and headers
//! of suspended accounts private, and from 4.4 the media of posts removed by moderators
//! inaccessible (`mastodon-storage.md` §6), so neither a permission repair nor a copy may
//! republish them (A3). Read-only; absent columns are never named.

use std::ops::RangeInclusive;

use super::{Db, DbError};
use crate::model::{Attachment, Standing};

impl Db {
    /// What the database says about the rows with an id in `ids` of `attachment`'s table
    /// (the key's partition, [`crate::plan::parse::ParsedKey::id_ranges`]):
    /// [`Standing::Hidden`] when any of them belongs to a suspended account
    /// (`accounts.suspended_at IS NOT NULL`; media through `account_id`) or, for media, to
    /// a deleted or moderated status (`statuses.deleted_at IS NOT NULL`);
    /// [`Standing::Good`] when at least one of them stores this attachment
    /// (`<att>_file_name` not blank) and none is hidden; else [`Standing::NoRow`] (also
    /// when the table or the attachment's columns do not exist here). Backups and imports
    /// are never vouched for. Errors: a query fails.
    pub async fn standing(
        &self,
        attachment: Attachment,
        ids: &[RangeInclusive<i64>],
    ) -> Result<Standing, DbError> {
        let schema = self.schema();
        let table = attachment.class();
        let stored = format!("{}_file_name", attachment.column());
        if matches!(attachment, Attachment::BackupDump | Attachment::ImportData)
            || !schema.has(table, &stored)
        {
            return Ok(Standing::NoRow);
        }
        let suspended = format!(
            "{} IS NOT NULL",
            schema.column_or_null("a", "accounts", "suspended_at", "timestamp")
        );
        let sql = match attachment {
            Attachment::MediaFile | Attachment::MediaThumbnail => {
                let moderated = format!(
                    "{} IS NOT NULL",
                    schema.column_or_null("s", "statuses", "deleted_at", "timestamp")
                );
                format!(
                    "SELECT COALESCE(bool_or(NULLIF(t.{stored}, '') IS NOT NULL), false), \
                     COALESCE(bool_or(({suspended}) OR ({moderated})), false) \
                     FROM media_attachments t LEFT JOIN accounts a ON a.id = t.account_id \
                     LEFT JOIN statuses s ON s.id = t.status_id WHERE t.id BETWEEN $1 AND $2"
                )
            }
            Attachment::Avatar | Attachment::Header => format!(
                "SELECT COALESCE(bool_or(NULLIF(a.{stored}, '') IS NOT NULL), false), \
                 COALESCE(bool_or({suspended}), false) FROM accounts a WHERE a.id BETWEEN $1 AND $2"
            ),
            _ => format!(
                "SELECT COALESCE(bool_or(NULLIF(t.{stored}, '') IS NOT NULL), false), false \
                 FROM {table} t WHERE t.id BETWEEN $1 AND $2"
            ),
        };
        let mut any_stored = false;
        for r in ids {
            let (stored, hidden): (bool, bool) = sqlx::query_as(&sql)
                .bind(*r.start())
                .bind(*r.end())
                .fetch_one(self.pool())
                .await
                .map_err(|e| {
                    DbError::query("checking suspended accounts and moderated posts", e)
                })?;
            if hidden {
                return Ok(Standing::Hidden);
            }
            any_stored |= stored;
        }
        Ok(if any_stored {
            Standing::Good
        } else {
            Standing::NoRow
        })
    }
}
