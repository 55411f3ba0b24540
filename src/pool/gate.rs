//! The one dry-run gate. Every destructive action of every command (object deletes, row
//! clears) is a method of [`Gate`]; with `dry_run` set they report what would happen from
//! the same selection and sizes, and send nothing that changes anything.

use chrono::NaiveDateTime;

use super::RowSink;
use crate::mastodon::{ClearRequest, DbError};
use crate::plan::layout::ObjectKey;
use crate::store::{DeleteOutcome, Store};

/// Lets destructive actions through, or (dry run) answers as if they had succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    dry_run: bool,
}

impl Gate {
    /// `dry_run`: change nothing at all.
    pub fn new(dry_run: bool) -> Self {
        Self { dry_run }
    }

    /// Whether this is a dry run.
    pub fn is_dry_run(self) -> bool {
        self.dry_run
    }

    /// Deletes exactly `keys`. In a dry run, answers `Deleted` for keys that exist
    /// (`sizes[i]` is `Some`) and `AlreadyGone` for the others, without a request.
    pub async fn delete<S: Store + ?Sized>(
        self,
        store: &S,
        keys: &[ObjectKey],
        sizes: &[Option<u64>],
    ) -> Vec<DeleteOutcome> {
        if self.dry_run {
            return sizes
                .iter()
                .map(|s| {
                    if s.is_some() {
                        DeleteOutcome::Deleted
                    } else {
                        DeleteOutcome::AlreadyGone
                    }
                })
                .collect();
        }
        store.delete_many(keys).await
    }

    /// Any other mutating action (an upload, an ACL or metadata repair): runs `action`, or
    /// in a dry run returns `dry()` without running it.
    pub async fn mutate<T, F: std::future::Future<Output = T>>(
        self,
        action: F,
        dry: impl FnOnce() -> T,
    ) -> T {
        if self.dry_run { dry() } else { action.await }
    }

    /// Clears the rows of `req` through the database side `rows` ([`RowSink::clear_rows`];
    /// Mastodon's: one guarded `Db::clear` statement). In a dry run, returns every row id
    /// as if cleared, without a statement.
    pub async fn clear<R: RowSink>(
        self,
        rows: &R,
        req: &ClearRequest,
        now: NaiveDateTime,
    ) -> Result<Vec<i64>, DbError> {
        if self.dry_run {
            return Ok(req.rows.iter().map(|(id, _)| *id).collect());
        }
        rows.clear_rows(req, now).await
    }
}
