//! Read-only streams of candidate rows from Mastodon's database.
//!
//! Owns: the selection SQL of each prune pass (tootctl's rules, `docs/reference/tootctl-rules.md`
//! `#media-remove`, `#profiles`, `#preview-cards`; the domain filters and `--keep-interacted`,
//! `docs/reference/prune-filters.md`) and keyset pagination by primary key, so memory does not
//! grow with the number of rows. Must not: write anything.

mod bounded;
pub mod budget;
pub mod listing;
pub mod owners;
pub mod reconcile;
mod retry;
pub mod source;
pub mod standing;
pub mod usage;

pub use bounded::bounded;
pub use retry::{READ_ATTEMPTS, READ_POLICY, READ_RETRY_BASE, retry_read};

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::Row as _;

use crate::mastodon::{Db, DbError};
use crate::model::{Attachment, RowTable, Shard};
pub use crate::model::{CandidateFile, CandidateRow};
use crate::plan::domain::DomainFilter;

/// Which rows a pass selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Cached remote media (`tootctl media remove`): `remote_url <> ''`, a file or a
    /// thumbnail still stored, `created_at <= cutoff` (inclusive). Also selects remote rows
    /// whose file is gone but whose thumbnail is not (tootctl leaks those).
    Media {
        /// Inclusive cutoff.
        cutoff: DateTime<Utc>,
        /// Keep media of posts a local account bookmarked, favourited, boosted, replied
        /// to or quoted (`--keep-interacted`, Mastodon 4.6's definition:
        /// `docs/reference/prune-filters.md#keep-interacted`).
        keep_interacted: bool,
        /// `--domain` / `--exclude-domain`, by the domain of the attachment's account
        /// (`media_attachments.account_id`).
        domains: DomainFilter,
    },
    /// Remote profiles (`--prune-profiles` / `--remove-headers`): `domain IS NOT NULL`,
    /// `last_webfingered_at <= cutoff AND updated_at <= cutoff`, no follow in either
    /// direction unless `include_follows`, and no post since the cutoff.
    Profiles {
        /// Inclusive cutoff.
        cutoff: DateTime<Utc>,
        /// Headers only (`--remove-headers`).
        headers_only: bool,
        /// Also accounts with follows (`--include-follows`).
        include_follows: bool,
        /// `--domain` / `--exclude-domain`, by `accounts.domain`.
        domains: DomainFilter,
    },
    /// Preview card images (`tootctl preview_cards remove`): a non-blank image and
    /// `updated_at < cutoff` (strict).
    PreviewCards {
        /// Strict cutoff.
        cutoff: DateTime<Utc>,
        /// `--domain` / `--exclude-domain`, by the domains of the accounts whose statuses
        /// link the card (`preview_cards_statuses`; `docs/reference/prune-filters.md#cards`):
        /// selected by `--domain` only when every linking status is by an included
        /// domain, kept when any linking status is by an excluded domain.
        domains: DomainFilter,
    },
}

/// The Paperclip snowflake id of a moment: Unix milliseconds shifted left 16 bits (`docs/reference/mastodon-schema.md#snowflake-ids`).
pub fn snowflake_at(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis() << 16
}

struct Spec {
    table: RowTable,
    alias: &'static str,
    groups: Vec<(Attachment, &'static str)>,
    filter: String,
    /// Whether `$3` (a snowflake bound) is used by the filter.
    bound: Option<i64>,
    /// Text arrays bound after the bound, in order (the domain lists the filter uses).
    arrays: Vec<Vec<String>>,
    attached: &'static str,
}

impl Selection {
    /// The attachment column groups a row of this selection is cleared on, in the order of
    /// [`CandidateRow::expected_names`].
    pub fn clear_groups(&self) -> Vec<&'static str> {
        self.spec_groups().iter().map(|(_, c)| *c).collect()
    }

    /// The table written by this selection.
    pub fn table(&self) -> RowTable {
        match self {
            Selection::Media { .. } => RowTable::MediaAttachments,
            Selection::Profiles { .. } => RowTable::Accounts,
            Selection::PreviewCards { .. } => RowTable::PreviewCards,
        }
    }

    fn cutoff(&self) -> DateTime<Utc> {
        match self {
            Selection::Media { cutoff, .. }
            | Selection::Profiles { cutoff, .. }
            | Selection::PreviewCards { cutoff, .. } => *cutoff,
        }
    }

    /// The domain filters of this selection.
    pub fn domains(&self) -> &DomainFilter {
        match self {
            Selection::Media { domains, .. }
            | Selection::Profiles { domains, .. }
            | Selection::PreviewCards { domains, .. } => domains,
        }
    }

    fn spec_groups(&self) -> Vec<(Attachment, &'static str)> {
        match self {
            Selection::Media { .. } => vec![
                (Attachment::MediaFile, "file"),
                (Attachment::MediaThumbnail, "thumbnail"),
            ],
            Selection::Profiles {
                headers_only: true, ..
            } => vec![(Attachment::Header, "header")],
            Selection::Profiles { .. } => {
                vec![
                    (Attachment::Avatar, "avatar"),
                    (Attachment::Header, "header"),
                ]
            }
            Selection::PreviewCards { .. } => vec![(Attachment::PreviewCardImage, "image")],
        }
    }

    fn spec(&self, db: &Db) -> Spec {
        let schema = db.schema();
        let groups = self.spec_groups();
        let any_stored = |alias: &str| {
            let parts: Vec<String> = groups
                .iter()
                .map(|(_, c)| format!("NULLIF({alias}.{c}_file_name, '') IS NOT NULL"))
                .collect();
            format!("({})", parts.join(" OR "))
        };
        match self {
            Selection::Media {
                cutoff,
                keep_interacted,
                domains,
            } => {
                // The primary key is the only cheap time filter: a superset bound one day
                // past the cutoff, then the exact created_at test (`docs/reference/mastodon-schema.md#id-time-bound`).
                let bound = snowflake_at(*cutoff + chrono::Duration::days(1));
                let mut filter = format!(
                    "m.remote_url <> '' AND m.created_at <= $2 AND m.id < $3 AND {}",
                    any_stored("m")
                );
                if *keep_interacted {
                    filter.push_str(&interacted_filter(schema.quotes()));
                }
                let mut params = DomainParams::after(4);
                if let Some(p) = params.include(domains) {
                    filter.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM accounts ma WHERE ma.id = m.account_id AND {})",
                        covered("ma.domain", p)
                    ));
                }
                if let Some(p) = params.exclude(domains) {
                    filter.push_str(&format!(
                        " AND NOT EXISTS (SELECT 1 FROM accounts ma WHERE ma.id = m.account_id AND {})",
                        covered("ma.domain", p)
                    ));
                }
                Spec {
                    table: RowTable::MediaAttachments,
                    alias: "m",
                    groups,
                    filter,
                    bound: Some(bound),
                    arrays: params.arrays,
                    attached: "(m.status_id IS NOT NULL OR m.scheduled_status_id IS NOT NULL)",
                }
            }
            Selection::Profiles {
                cutoff,
                include_follows,
                domains,
                ..
            } => {
                let mut filter = format!(
                    "a.domain IS NOT NULL AND a.last_webfingered_at <= $2 AND a.updated_at <= $2 AND {} \
                     AND NOT EXISTS (SELECT 1 FROM statuses s WHERE s.account_id = a.id AND s.id >= $3)",
                    any_stored("a")
                );
                if !include_follows {
                    filter.push_str(
                        " AND NOT EXISTS (SELECT 1 FROM follows f WHERE f.account_id = a.id) \
                         AND NOT EXISTS (SELECT 1 FROM follows f WHERE f.target_account_id = a.id)",
                    );
                }
                let mut params = DomainParams::after(4);
                if let Some(p) = params.include(domains) {
                    filter.push_str(&format!(" AND {}", covered("a.domain", p)));
                }
                if let Some(p) = params.exclude(domains) {
                    filter.push_str(&format!(" AND NOT {}", covered("a.domain", p)));
                }
                Spec {
                    table: RowTable::Accounts,
                    alias: "a",
                    groups,
                    filter,
                    bound: Some(snowflake_at(*cutoff)),
                    arrays: params.arrays,
                    attached: "FALSE",
                }
            }
            Selection::PreviewCards { domains, .. } => {
                let mut filter = format!("c.updated_at < $2 AND {}", any_stored("c"));
                // A card has no account: it takes the domains of the accounts whose
                // statuses link it (docs/reference/prune-filters.md#cards).
                let linking = "FROM preview_cards_statuses pcs \
                     JOIN statuses ps ON ps.id = pcs.status_id \
                     JOIN accounts pa ON pa.id = ps.account_id \
                     WHERE pcs.preview_card_id = c.id";
                let mut params = DomainParams::after(3);
                if let Some(p) = params.include(domains) {
                    filter.push_str(&format!(
                        " AND EXISTS (SELECT 1 {linking}) \
                         AND NOT EXISTS (SELECT 1 {linking} AND NOT {})",
                        covered("pa.domain", p)
                    ));
                }
                if let Some(p) = params.exclude(domains) {
                    filter.push_str(&format!(
                        " AND NOT EXISTS (SELECT 1 {linking} AND {})",
                        covered("pa.domain", p)
                    ));
                }
                Spec {
                    table: RowTable::PreviewCards,
                    alias: "c",
                    groups,
                    filter,
                    bound: None,
                    arrays: params.arrays,
                    attached: "FALSE",
                }
            }
        }
    }

    /// The selection's query parts restricted to `shard`'s rows
    /// ([`Shard::sql_filter`]: `id mod N = K`, in the SQL, so a shard reads only its rows).
    fn spec_of(&self, db: &Db, shard: Option<Shard>) -> Spec {
        let mut spec = self.spec(db);
        if let Some(s) = shard {
            spec.filter = format!("({}) AND {}", spec.filter, s.sql_filter(spec.alias));
        }
        spec
    }

    /// How many rows the selection matches now (for progress and ETA), only `shard`'s when
    /// given. One scan.
    pub async fn count(&self, db: &Db, shard: Option<Shard>) -> Result<i64, DbError> {
        let spec = self.spec_of(db, shard);
        // $1 (the keyset position) is not used by the count; keep parameter numbers equal.
        let sql = format!(
            "SELECT count(*) FROM {} {} WHERE $1::bigint IS NOT NULL AND {}",
            spec.table.name(),
            spec.alias,
            spec.filter
        );
        let mut q = sqlx::query_scalar::<_, i64>(&sql)
            .bind(0_i64)
            .bind(naive(self.cutoff()));
        if let Some(b) = spec.bound {
            q = q.bind(b);
        }
        for a in &spec.arrays {
            q = q.bind(a.clone());
        }
        q.fetch_one(db.pool())
            .await
            .map_err(|e| DbError::query("counting candidates", e))
    }

    /// A keyset-paginated cursor over the selection, `page_size` rows per query; only
    /// `shard`'s rows when given.
    pub fn cursor(&self, db: &Db, page_size: i64, shard: Option<Shard>) -> Cursor {
        self.build_cursor(db, page_size, shard, |spec| {
            (String::new(), spec.filter.clone())
        })
    }

    /// [`Selection::cursor`] with `shape(spec)` = (extra columns after the candidate's,
    /// each starting with `, `; the WHERE condition besides the keyset position).
    fn build_cursor(
        &self,
        db: &Db,
        page_size: i64,
        shard: Option<Shard>,
        shape: impl FnOnce(&Spec) -> (String, String),
    ) -> Cursor {
        let spec = self.spec_of(db, shard);
        let (extra, filter) = shape(&spec);
        let schema = db.schema();
        let table = spec.table.name();
        let a = spec.alias;
        let mut cols = vec![format!("{a}.id"), format!("{} AS attached", spec.attached)];
        for (_, c) in &spec.groups {
            cols.push(format!("{a}.{c}_file_name"));
            cols.push(format!("{a}.{c}_content_type"));
            cols.push(format!("COALESCE({a}.{c}_file_size, 0)::bigint"));
            cols.push(format!(
                "{}::integer",
                schema.column_or_null(a, table, &format!("{c}_storage_schema_version"), "integer")
            ));
        }
        let sql = format!(
            "SELECT {}{extra} FROM {table} {a} WHERE {a}.id > $1 AND {filter} ORDER BY {a}.id LIMIT {page_size}",
            cols.join(", "),
        );
        Cursor {
            db: db.clone(),
            sql,
            cutoff: naive(self.cutoff()),
            bound: spec.bound,
            arrays: spec.arrays,
            table: spec.table,
            groups: spec.groups,
            last_id: i64::MIN,
            done: false,
        }
    }
}

/// The parameters a selection's domain filters bind, numbered from the first one free.
struct DomainParams {
    next: usize,
    arrays: Vec<Vec<String>>,
}

impl DomainParams {
    fn after(first_free: usize) -> Self {
        Self {
            next: first_free,
            arrays: Vec::new(),
        }
    }

    fn push(&mut self, list: &[String]) -> Option<usize> {
        if list.is_empty() {
            return None;
        }
        self.arrays.push(list.to_vec());
        self.next += 1;
        Some(self.next - 1)
    }

    /// The parameter number of the include list, if any.
    fn include(&mut self, f: &DomainFilter) -> Option<usize> {
        self.push(&f.include)
    }

    /// The parameter number of the exclude list, if any.
    fn exclude(&mut self, f: &DomainFilter) -> Option<usize> {
        self.push(&f.exclude)
    }
}

/// SQL true when `column` (an `accounts.domain`) is one of the domains in text-array
/// parameter `$param`, or a subdomain of one: equal, or ending in `.` + the domain,
/// case-insensitively — the rule of Mastodon's domain blocks
/// (`docs/reference/prune-filters.md#domains`; [`crate::plan::domain::covers`] is the
/// same test in Rust). False, never NULL, for a NULL (local) domain. No `LIKE`: a domain's
/// `_` is a plain character.
fn covered(column: &str, param: usize) -> String {
    format!(
        "EXISTS (SELECT 1 FROM unnest(${param}::text[]) AS dr(d) \
         WHERE lower({column}) = dr.d OR right(lower({column}), length(dr.d) + 1) = '.' || dr.d)"
    )
}

/// `--keep-interacted`, Mastodon 4.6's `MediaAttachment.without_local_interaction`
/// (`docs/reference/prune-filters.md#keep-interacted`): media of a status that a local
/// account favourited, that anyone bookmarked (bookmarks are always local), that a local,
/// not deleted status reblogged, replied to or quoted, or that itself quotes a local, not
/// deleted status. The quote tests only where the `quotes` table exists (4.4+).
fn interacted_filter(quotes: bool) -> String {
    // `Status.local` under Status's default scope `kept`: not soft-deleted.
    let local = "(s.local = TRUE OR s.uri IS NULL) AND s.deleted_at IS NULL";
    let mut f = format!(
        " AND NOT (m.status_id IS NOT NULL AND (\
         EXISTS (SELECT 1 FROM bookmarks b WHERE b.status_id = m.status_id) \
         OR EXISTS (SELECT 1 FROM favourites fv JOIN accounts fa ON fa.id = fv.account_id \
                    WHERE fv.status_id = m.status_id AND fa.domain IS NULL) \
         OR EXISTS (SELECT 1 FROM statuses s WHERE s.reblog_of_id = m.status_id AND {local}) \
         OR EXISTS (SELECT 1 FROM statuses s WHERE s.in_reply_to_id = m.status_id AND {local})"
    );
    if quotes {
        f.push_str(&format!(
            " OR EXISTS (SELECT 1 FROM quotes q JOIN statuses s ON s.id = q.status_id \
                         WHERE q.quoted_status_id = m.status_id AND {local}) \
             OR EXISTS (SELECT 1 FROM quotes q JOIN statuses s ON s.id = q.quoted_status_id \
                         WHERE q.status_id = m.status_id AND {local})"
        ));
    }
    f.push_str("))");
    f
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    // Mastodon stores UTC in `timestamp without time zone`: bind the UTC wall time so the
    // comparison never depends on the server's TimeZone setting.
    t.naive_utc()
}

/// Keyset-paginated reader of one selection.
pub struct Cursor {
    db: Db,
    sql: String,
    cutoff: NaiveDateTime,
    bound: Option<i64>,
    arrays: Vec<Vec<String>>,
    table: RowTable,
    groups: Vec<(Attachment, &'static str)>,
    last_id: i64,
    done: bool,
}

impl Cursor {
    /// The next page of rows in id order; empty when the selection is exhausted.
    pub async fn next_page(&mut self) -> Result<Vec<CandidateRow>, DbError> {
        let rows = self.fetch_rows().await?;
        Ok(rows.iter().map(|r| self.parse_row(r)).collect())
    }

    /// The next page's raw rows (empty at the end); the keyset position moves on only as
    /// they are parsed ([`Cursor::parse_row`]).
    async fn fetch_rows(&mut self) -> Result<Vec<sqlx::postgres::PgRow>, DbError> {
        if self.done {
            return Ok(Vec::new());
        }
        let mut q = sqlx::query(&self.sql).bind(self.last_id).bind(self.cutoff);
        if let Some(b) = self.bound {
            q = q.bind(b);
        }
        for a in &self.arrays {
            q = q.bind(a.clone());
        }
        let rows = q.fetch_all(self.db.pool()).await.map_err(|e| {
            DbError::query(&format!("selecting {} candidates", self.table.name()), e)
        })?;
        if rows.is_empty() {
            self.done = true;
        }
        Ok(rows)
    }

    /// One selected row as a [`CandidateRow`] (columns as [`Selection::cursor`] selects
    /// them; later columns are ignored); remembers its id as the keyset position.
    fn parse_row(&mut self, r: &sqlx::postgres::PgRow) -> CandidateRow {
        {
            let id: i64 = r.get(0);
            self.last_id = id;
            // Exact capacities: a window holds thousands of rows, and `Vec::push` from
            // empty reserves four elements (four CandidateFiles of ~80 bytes per row).
            let mut files = Vec::with_capacity(self.groups.len());
            let mut expected = Vec::with_capacity(self.groups.len());
            for (g, (att, _)) in self.groups.iter().enumerate() {
                let base = 2 + g * 4;
                let name: Option<String> = r.get(base);
                expected.push(name.clone());
                if let Some(n) = name.filter(|n| !n.is_empty()) {
                    files.push(CandidateFile {
                        attachment: *att,
                        file_name: n,
                        content_type: r.get(base + 1),
                        db_size: r.get(base + 2),
                        storage_schema_version: r.get(base + 3),
                    });
                }
            }
            CandidateRow {
                table: self.table,
                id,
                attached_to_status: r.get(1),
                files,
                expected_names: expected,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflake_matches_the_documented_value() {
        let t = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(snowflake_at(t), 111677748019200000);
    }
}
