//! The rows `mastomedia reconcile` checks (issue 14, item 3): every row of media
//! attachments, accounts and preview cards that names a stored file, REMOTE AND LOCAL, with
//! whether it is remote (media `remote_url <> ''`, accounts `domain IS NOT NULL`, cards
//! always). Keyset-paginated in id order like [`Cursor`], read-only. The rows come as
//! [`CandidateRow`]s of the matching prune [`Selection`], so a remote one can be cleared
//! by prune's own pass (its `expected_names` guard the clear).

use sqlx::Row as _;

use super::{Cursor, Selection};
use crate::mastodon::{Db, DbError};
use crate::model::CandidateRow;
use crate::plan::domain::DomainFilter;

/// One checked row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRow {
    /// The row and its stored files.
    pub row: CandidateRow,
    /// Remote (cleared with `--apply` when a file is missing) or local (only reported).
    pub remote: bool,
}

/// The three kinds reconcile checks, as the prune selections that clear them: media (file
/// and thumbnail), accounts (avatar and header, as `--prune-profiles` clears them), preview
/// cards. No filter. The cutoff is `settled_before`: only rows whose `updated_at` is older
/// are checked ([`Selection::reconcile_cursor`]), since Paperclip saves the row before it
/// writes the file (`after_save :save_attached_files`), so a row being fetched or uploaded
/// right now names a file that is not in the storage yet.
pub fn reconcile_selections(settled_before: chrono::DateTime<chrono::Utc>) -> [Selection; 3] {
    let never = settled_before;
    [
        Selection::Media {
            cutoff: never,
            keep_interacted: false,
            domains: DomainFilter::default(),
        },
        Selection::Profiles {
            cutoff: never,
            headers_only: false,
            include_follows: true,
            domains: DomainFilter::default(),
        },
        Selection::PreviewCards {
            cutoff: never,
            domains: DomainFilter::default(),
        },
    ]
}

/// Keyset cursor over the checked rows of one kind.
pub struct ReconcileCursor {
    inner: Cursor,
    remote_column: usize,
}

impl Selection {
    /// Every row of this selection's table naming a stored file in one of its
    /// attachments, local rows included ([`CheckedRow`]), and not changed since the
    /// selection's cutoff (`updated_at` before it), `page_size` a page.
    pub fn reconcile_cursor(&self, db: &Db, page_size: i64) -> ReconcileCursor {
        let groups = self.spec_groups().len();
        let inner = self.build_cursor(db, page_size, None, |spec| {
            let a = spec.alias;
            let stored: Vec<String> = spec
                .groups
                .iter()
                .map(|(_, c)| format!("NULLIF({a}.{c}_file_name, '') IS NOT NULL"))
                .collect();
            let remote = match self {
                Selection::Media { .. } => format!("{a}.remote_url <> ''"),
                Selection::Profiles { .. } => format!("{a}.domain IS NOT NULL"),
                Selection::PreviewCards { .. } => "TRUE".to_owned(),
            };
            // The cursor binds the cutoff ($2, the settled-before time: rows changed since
            // are not judged) and the id bound ($3, media and profiles: typed, not used).
            let params = if spec.bound.is_some() {
                format!("{a}.updated_at < $2::timestamp AND $3::bigint IS NOT NULL")
            } else {
                format!("{a}.updated_at < $2::timestamp")
            };
            (
                format!(", ({remote}) AS reconcile_remote"),
                format!("({}) AND {params}", stored.join(" OR ")),
            )
        });
        ReconcileCursor {
            inner,
            remote_column: 2 + groups * 4,
        }
    }
}

impl ReconcileCursor {
    /// The next page in id order; empty at the end. Errors: the query failed.
    pub async fn next_page(&mut self) -> Result<Vec<CheckedRow>, DbError> {
        let rows = self.inner.fetch_rows().await?;
        Ok(rows
            .iter()
            .map(|r| CheckedRow {
                row: self.inner.parse_row(r),
                remote: r.get(self.remote_column),
            })
            .collect())
    }
}
