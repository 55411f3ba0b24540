//! The rows `prune --max-cache-size` measures (issue 14, item 1): every REMOTE row of a
//! pass's kind that still names a stored file, whatever its age and whatever the filters
//! say (they all take room in the cache), with the moment prune's rule for the kind
//! compares with the cutoff ([`MeasuredRow::age`]) and whether the pass's other rules
//! (`--keep-interacted`, `--domain` / `--exclude-domain`, the profile rules) let it go
//! ([`MeasuredRow::prunable`]) — the very SQL of the pass ([`Selection`]) with its cutoff
//! moved to the far future, so "prunable with age ≤ C" is exactly "selected by the pass
//! with cutoff C". Read-only, keyset-paginated like [`Cursor`].

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::Row as _;

use super::{Cursor, Selection, Spec};
use crate::mastodon::{Db, DbError};
use crate::model::CandidateRow;

/// A cutoff later than any row (year 4000; its snowflake still fits an `i64`).
fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(64_060_588_800, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// One row of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasuredRow {
    /// The row, its stored files and the names a clear must still find.
    pub row: CandidateRow,
    /// UTC. Media: `created_at` (tootctl's rule); profiles: the latest of
    /// `last_webfingered_at`, `updated_at` and one millisecond after the account's newest
    /// post (its snowflake id), the three things the profile rule compares with the cutoff;
    /// preview cards: `updated_at`.
    pub age: NaiveDateTime,
    /// The pass's filters select it once its age is reached.
    pub prunable: bool,
}

/// Keyset cursor over the measured rows of one pass's kind.
pub struct BudgetCursor {
    inner: Cursor,
    age_column: usize,
}

impl Selection {
    /// The same selection with another cutoff (inclusive for media and profiles, strict for
    /// preview cards, as [`Selection`] says).
    pub fn with_cutoff(&self, cutoff: DateTime<Utc>) -> Selection {
        let mut s = self.clone();
        match &mut s {
            Selection::Media { cutoff: c, .. }
            | Selection::Profiles { cutoff: c, .. }
            | Selection::PreviewCards { cutoff: c, .. } => *c = cutoff,
        }
        s
    }

    /// The rows of this selection's kind that hold room in the cache, `page_size` a page
    /// ([`MeasuredRow`]).
    pub fn budget_cursor(&self, db: &Db, page_size: i64) -> BudgetCursor {
        let far = self.with_cutoff(far_future());
        let groups = far.spec_groups().len();
        let inner = far.build_cursor(db, page_size, None, |spec| {
            let (owned, age) = owned_and_age(self, spec);
            (
                // NULL (a never-webfingered account) is "not selected", as in the pass's WHERE.
                format!(
                    ", {age} AS budget_age, COALESCE(({}), FALSE) AS budget_prunable",
                    spec.filter
                ),
                owned,
            )
        });
        BudgetCursor {
            inner,
            age_column: 2 + groups * 4,
        }
    }
}

/// The kind's "holds room in the cache" condition (remote, a file name stored in any of the
/// pass's attachments) and its age expression.
fn owned_and_age(sel: &Selection, spec: &Spec) -> (String, String) {
    let a = spec.alias;
    let stored: Vec<String> = spec
        .groups
        .iter()
        .map(|(_, c)| format!("NULLIF({a}.{c}_file_name, '') IS NOT NULL"))
        .collect();
    let stored = format!("({})", stored.join(" OR "));
    match sel {
        Selection::Media { .. } => (
            format!("{a}.remote_url <> '' AND {stored}"),
            format!("{a}.created_at"),
        ),
        Selection::Profiles { .. } => (
            format!("{a}.domain IS NOT NULL AND {stored}"),
            // The profile rule keeps an account with a post whose id is at or past the
            // cutoff's snowflake: its newest post's millisecond + 1 is the earliest cutoff
            // that passes (inventory::snowflake_at).
            format!(
                "GREATEST({a}.last_webfingered_at, {a}.updated_at, \
                 (SELECT to_timestamp(((max(bs.id) >> 16) + 1)::double precision / 1000) AT TIME ZONE 'UTC' \
                  FROM statuses bs WHERE bs.account_id = {a}.id))"
            ),
        ),
        Selection::PreviewCards { .. } => (stored, format!("{a}.updated_at")),
    }
}

impl BudgetCursor {
    /// The next page in id order; empty at the end. Errors: the query failed.
    pub async fn next_page(&mut self) -> Result<Vec<MeasuredRow>, DbError> {
        let rows = self.inner.fetch_rows().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let row = self.inner.parse_row(r);
            let age: Option<NaiveDateTime> = r.get(self.age_column);
            out.push(MeasuredRow {
                row,
                // No date at all (cannot happen: `created_at`/`updated_at` are NOT NULL).
                age: age.unwrap_or(NaiveDateTime::MIN),
                prunable: r.get(self.age_column + 1),
            });
        }
        Ok(out)
    }
}
