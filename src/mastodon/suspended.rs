//! Whether an object's owner is suspended: Mastodon makes media of suspended accounts
//! private (`mastodon-storage.md` §6), so a permission repair must not republish it (A3).

use std::ops::RangeInclusive;

use super::{Db, DbError};
use crate::plan::layout::Attachment;

impl Db {
    /// Whether any row with an id in `ids` of `attachment`'s table belongs to a suspended
    /// account (`accounts.suspended_at IS NOT NULL`). Media: through `account_id`;
    /// avatars and headers: the account itself. Other classes have no owner: `false`.
    pub async fn owner_suspended(
        &self,
        attachment: Attachment,
        ids: &[RangeInclusive<i64>],
    ) -> Result<bool, DbError> {
        let sql = match attachment {
            Attachment::MediaFile | Attachment::MediaThumbnail => {
                "SELECT EXISTS (SELECT 1 FROM media_attachments m JOIN accounts a ON a.id = m.account_id \
                 WHERE m.id BETWEEN $1 AND $2 AND a.suspended_at IS NOT NULL)"
            }
            Attachment::Avatar | Attachment::Header => {
                "SELECT EXISTS (SELECT 1 FROM accounts a WHERE a.id BETWEEN $1 AND $2 AND a.suspended_at IS NOT NULL)"
            }
            _ => return Ok(false),
        };
        for r in ids {
            let hit: bool = sqlx::query_scalar(sql)
                .bind(*r.start())
                .bind(*r.end())
                .fetch_one(self.pool())
                .await
                .map_err(|e| DbError::query("checking for suspended owners", e))?;
            if hit {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
