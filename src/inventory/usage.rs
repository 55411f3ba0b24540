//! What `du` counts: listed objects per Mastodon category (attachment slot, `cache/` or
//! not, decided by [`parse_key`]), keys outside the layout, noncurrent versions, and the
//! database's own sums as `tootctl media usage` computes them (`docs/reference/tootctl-rules.md#media-usage`),
//! split the same way. Read-only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row as _;

use super::listing::Merge;
use super::owners::remote_sql;
use crate::mastodon::{Db, DbError};
use crate::plan::layout::{Attachment, KeyPrefix};
use crate::plan::ownership::snowflake_ms;
use crate::plan::parse::parse_key;
use crate::store::VersionMeta;

/// A `du` line: one attachment slot, under `cache/` (remote copies) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Category {
    /// The slot (`media_attachments/files`, ...).
    pub attachment: Attachment,
    /// Keys under `cache/`.
    pub cache: bool,
}

impl Category {
    /// The key prefix of the category below `S3_KEY_PREFIX`: `[cache/]<class>/<attachment>/`.
    pub fn root(&self) -> String {
        format!(
            "{}{}/{}/",
            if self.cache { "cache/" } else { "" },
            self.attachment.class(),
            self.attachment.segment()
        )
    }

    /// Whether Mastodon ever writes this category: site uploads, backups, imports and
    /// provider icons are never remote, so never under `cache/` (`docs/reference/key-layout.md#cache-prefix`).
    pub fn possible(&self) -> bool {
        !self.cache
            || !matches!(
                self.attachment,
                Attachment::SiteUploadFile
                    | Attachment::BackupDump
                    | Attachment::ImportData
                    | Attachment::ProviderIcon
            )
    }

    /// Every possible category, in report order (by slot, `cache/` first).
    pub fn all() -> Vec<Category> {
        Attachment::ALL
            .into_iter()
            .flat_map(|a| {
                [true, false].map(|cache| Category {
                    attachment: a,
                    cache,
                })
            })
            .filter(Category::possible)
            .collect()
    }
}

/// A count of objects and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Objects.
    pub objects: u64,
    /// Bytes (as listed).
    pub bytes: u64,
}

impl Tally {
    /// Counts one object of `size` bytes.
    pub fn add(&mut self, size: u64) {
        self.objects += 1;
        self.bytes += size;
    }

    /// Adds `o` to this tally.
    pub fn merge(&mut self, o: Tally) {
        self.objects += o.objects;
        self.bytes += o.bytes;
    }
}

/// Versions a versioned bucket still bills for after deletes (`docs/reference/provider-quirks.md#u2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Noncurrent {
    /// Noncurrent (overwritten or deleted) versions.
    pub versions: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Delete markers (current or not); they hold no bytes.
    pub delete_markers: u64,
    /// Entries of the version listing that are not current objects: `versions` +
    /// `delete_markers` (each is one entry the provider keeps and may bill for).
    pub objects: u64,
}

/// Most example keys kept for the "other" line.
pub const OTHER_EXAMPLES: usize = 10;

/// The counters of a `du` listing.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Current objects per category.
    pub categories: HashMap<Category, Tally>,
    /// Current objects outside Mastodon's layout.
    pub other: Tally,
    /// The first keys (in key order) outside the layout.
    pub other_examples: BTreeSet<String>,
    /// Noncurrent versions and delete markers (with `--versions`).
    pub noncurrent: Noncurrent,
    /// Current objects per month of creation (`du --by month`), keyed `YYYY-MM` (UTC) or
    /// `unknown`.
    pub months: BTreeMap<String, MonthTally>,
}

/// One month of `du --by month`: objects whose row id is a Mastodon snowflake id
/// (`docs/reference/mastodon-schema.md#snowflake-ids`: the creation time in milliseconds
/// shifted left by 16 bits; 17 digits before mid-2018, 18 since) created in that month, under `cache/` or not.
/// Serial ids (accounts, preview cards, emoji, older rows) and keys outside the layout
/// have no creation time in their key: they are counted under `unknown`, so the months
/// always add up to the listing's total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MonthTally {
    /// Under `cache/` (remote copies).
    pub cache: Tally,
    /// In Mastodon's layout outside `cache/` (local uploads, and remote copies from
    /// before storage schema version 1).
    pub outside_cache: Tally,
    /// Outside Mastodon's layout.
    pub unrecognised: Tally,
}

impl MonthTally {
    fn merge(&mut self, o: MonthTally) {
        self.cache.merge(o.cache);
        self.outside_cache.merge(o.outside_cache);
        self.unrecognised.merge(o.unrecognised);
    }

    /// All three together.
    pub fn total(&self) -> Tally {
        let mut t = self.cache;
        t.merge(self.outside_cache);
        t.merge(self.unrecognised);
        t
    }
}

/// The smallest snowflake id `month_of` reads: 2017-09-01T00:00Z shifted left by 16
/// bits. Mastodon 2.0 (October 2017) introduced snowflake ids; those before mid-2018 have
/// 17 digits, which `plan::ownership::snowflake_ms` (18 digits only) leaves out. Serial
/// ids never come near this.
const FIRST_SNOWFLAKE: i64 = 98_580_824_064_000_000;

/// `YYYY-MM` (UTC) of the snowflake id in `partition` (the id's digits), else `unknown`.
fn month_of(partition: &str) -> String {
    partition
        .parse::<i64>()
        .ok()
        .filter(|id| *id >= FIRST_SNOWFLAKE)
        .map(|id| id >> 16)
        .or_else(|| partition.parse::<i64>().ok().and_then(snowflake_ms))
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "unknown".to_owned(), |t| t.format("%Y-%m").to_string())
}

impl Usage {
    /// Counts one current object by its key.
    pub fn add_object(&mut self, key: &str, size: u64, prefix: &KeyPrefix) {
        match parse_key(key, prefix) {
            Ok(p) => {
                self.categories
                    .entry(Category {
                        attachment: p.attachment,
                        cache: p.cache,
                    })
                    .or_default()
                    .add(size);
                let month = self.months.entry(month_of(&p.partition)).or_default();
                if p.cache {
                    month.cache.add(size);
                } else {
                    month.outside_cache.add(size);
                }
            }
            Err(_) => {
                self.other.add(size);
                self.months
                    .entry("unknown".to_owned())
                    .or_default()
                    .unrecognised
                    .add(size);
                if self.other_examples.len() < OTHER_EXAMPLES
                    || self.other_examples.last().is_some_and(|l| key < l.as_str())
                {
                    self.other_examples.insert(key.to_owned());
                    if self.other_examples.len() > OTHER_EXAMPLES {
                        self.other_examples.pop_last();
                    }
                }
            }
        }
    }

    /// Counts one entry of a version listing: the current version as an object, others
    /// and delete markers as [`Noncurrent`].
    pub fn add_version(&mut self, v: &VersionMeta, prefix: &KeyPrefix) {
        if v.delete_marker {
            self.noncurrent.delete_markers += 1;
            self.noncurrent.objects += 1;
        } else if v.is_latest {
            self.add_object(v.key.as_str(), v.size, prefix);
        } else {
            self.noncurrent.versions += 1;
            self.noncurrent.objects += 1;
            self.noncurrent.bytes += v.size;
        }
    }

    /// Objects and bytes of everything current.
    pub fn total(&self) -> Tally {
        let mut t = self.other;
        for c in self.categories.values() {
            t.merge(*c);
        }
        t
    }
}

impl Merge for Usage {
    fn merge(&mut self, o: Usage) {
        for (c, t) in o.categories {
            self.categories.entry(c).or_default().merge(t);
        }
        self.other.merge(o.other);
        for (m, t) in o.months {
            self.months.entry(m).or_default().merge(t);
        }
        for k in o.other_examples {
            self.other_examples.insert(k);
        }
        while self.other_examples.len() > OTHER_EXAMPLES {
            self.other_examples.pop_last();
        }
        self.noncurrent.versions += o.noncurrent.versions;
        self.noncurrent.bytes += o.noncurrent.bytes;
        self.noncurrent.delete_markers += o.noncurrent.delete_markers;
        self.noncurrent.objects += o.noncurrent.objects;
    }
}

/// The database's sum for one category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbSum {
    /// `SUM(COALESCE(<att>_file_size, 0))` over the category's rows (all rows, as tootctl).
    pub bytes: i64,
    /// Rows with a non-blank `<att>_file_name` (one stored original each).
    pub files: i64,
}

/// The database's sums per category, one full scan per table, like `tootctl media usage`
/// (sizes of originals only: derived styles are not in the database). A category is
/// absent when its table or `<att>_file_size` column does not exist. The cache split uses
/// each row's own storage schema version per attachment (NULL or a missing column = 0).
pub async fn database_sums(db: &Db) -> Result<HashMap<Category, DbSum>, DbError> {
    let schema = db.schema();
    let mut tables: Vec<&'static str> = Vec::new();
    for a in Attachment::ALL {
        if !tables.contains(&a.class()) {
            tables.push(a.class());
        }
    }
    let mut out = HashMap::new();
    for table in tables {
        let cats: Vec<Category> = Category::all()
            .into_iter()
            .filter(|c| c.attachment.class() == table)
            .filter(|c| {
                let col = c.attachment.column();
                schema.has(table, &format!("{col}_file_size"))
                    && schema.has(table, &format!("{col}_file_name"))
            })
            .collect();
        if cats.is_empty() {
            continue;
        }
        let mut cols = Vec::new();
        for c in &cats {
            let col = c.attachment.column();
            let version = schema.column_or_null(
                "t",
                table,
                &format!("{col}_storage_schema_version"),
                "integer",
            );
            let cached = format!("(({}) AND COALESCE({version}, 0) >= 1)", remote_sql(table));
            let cond = if c.cache {
                cached
            } else {
                format!("NOT {cached}")
            };
            cols.push(format!(
                "COALESCE(SUM(COALESCE(t.{col}_file_size, 0)) FILTER (WHERE {cond}), 0)::bigint"
            ));
            cols.push(format!(
                "COUNT(*) FILTER (WHERE {cond} AND NULLIF(t.{col}_file_name, '') IS NOT NULL)::bigint"
            ));
        }
        let sql = format!("SELECT {} FROM {table} t", cols.join(", "));
        let row = sqlx::query(&sql)
            .fetch_one(db.pool())
            .await
            .map_err(|e| DbError::query(&format!("summing {table} file sizes"), e))?;
        for (i, c) in cats.into_iter().enumerate() {
            out.insert(
                c,
                DbSum {
                    bytes: row.get(2 * i),
                    files: row.get(2 * i + 1),
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_come_from_17_and_18_digit_snowflake_ids() {
        // 2018-01-01T00:00Z = 1514764800000 ms: a 17-digit id.
        assert_eq!(
            month_of(&(1_514_764_800_000_i64 << 16).to_string()),
            "2018-01"
        );
        assert_eq!(month_of("111677748019200000"), "2024-01");
        assert_eq!(month_of("000000001"), "unknown", "a serial id");
        assert_eq!(month_of("98580824063999999"), "unknown", "below 2017-09");
    }

    #[test]
    fn counts_by_category_and_keeps_the_first_strangers() {
        let none = KeyPrefix::default();
        let mut u = Usage::default();
        u.add_object(
            "cache/media_attachments/files/109/345/678/901/234/567/original/a.png",
            10,
            &none,
        );
        u.add_object(
            "media_attachments/files/109/345/678/901/234/567/small/a.png",
            5,
            &none,
        );
        for i in (0..15).rev() {
            u.add_object(&format!("stray/{i:02}.txt"), 1, &none);
        }
        let mut other = Usage::default();
        other.add_object("robots.txt", 7, &none);
        u.merge(other);
        let key = |cache| Category {
            attachment: Attachment::MediaFile,
            cache,
        };
        assert_eq!(
            u.categories[&key(true)],
            Tally {
                objects: 1,
                bytes: 10
            }
        );
        assert_eq!(
            u.categories[&key(false)],
            Tally {
                objects: 1,
                bytes: 5
            }
        );
        assert_eq!(
            u.other,
            Tally {
                objects: 16,
                bytes: 22
            }
        );
        assert_eq!(
            u.total(),
            Tally {
                objects: 18,
                bytes: 37
            }
        );
        assert_eq!(u.other_examples.len(), OTHER_EXAMPLES);
        assert_eq!(
            u.other_examples.first().map(String::as_str),
            Some("robots.txt")
        );
        assert_eq!(
            u.other_examples.last().map(String::as_str),
            Some("stray/08.txt")
        );
    }

    #[test]
    fn versions_split_current_noncurrent_and_markers() {
        let none = KeyPrefix::default();
        let mut u = Usage::default();
        let v = |latest, marker, size| VersionMeta {
            key: crate::plan::layout::ObjectKey::new("accounts/avatars/000/000/001/original/a.png"),
            size,
            is_latest: latest,
            delete_marker: marker,
        };
        u.add_version(&v(true, false, 3), &none);
        u.add_version(&v(false, false, 4), &none);
        u.add_version(&v(true, true, 0), &none);
        assert_eq!(
            u.total(),
            Tally {
                objects: 1,
                bytes: 3
            }
        );
        assert_eq!(
            u.noncurrent,
            Noncurrent {
                versions: 1,
                bytes: 4,
                delete_markers: 1,
                objects: 2
            }
        );
    }

    #[test]
    fn categories_are_stable_and_never_cache_classes_have_one_line() {
        let all = Category::all();
        assert_eq!(all.len(), 16);
        assert_eq!(all[0].root(), "cache/media_attachments/files/");
        assert_eq!(all[1].root(), "media_attachments/files/");
        assert!(
            all.iter()
                .all(|c| !(c.cache && c.attachment == Attachment::BackupDump))
        );
    }
}
