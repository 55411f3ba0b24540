//! The `du` report: listed objects and bytes per category beside the database's sums
//! (human table on stdout, or the stable `--json` shape documented on [`DuReport`]).

use std::collections::HashMap;
use std::fmt::Write as _;

use humansize::{BINARY, format_size};
use serde::Serialize;

use super::ExitCode;
use crate::inventory::usage::{Category, DbSum, MonthTally, Noncurrent, Tally, Usage};
use crate::plan::layout::Attachment;

/// One category line. `db_bytes`/`db_files` are `null` when the database has no such sum
/// (table or column missing, a category Mastodon never writes, or a category only partly
/// inside `--prefix`); `difference` = `bytes − db_bytes`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CategoryLine {
    /// The model's table (`media_attachments`, `accounts`, ...).
    pub class: &'static str,
    /// The attachment segment (`files`, `thumbnails`, `avatars`, ...).
    pub attachment: &'static str,
    /// Keys under `cache/` (remote copies).
    pub cache: bool,
    /// Objects listed.
    pub objects: u64,
    /// Bytes listed.
    pub bytes: u64,
    /// The database's `SUM(<att>_file_size)` for these rows (originals only).
    pub db_bytes: Option<i64>,
    /// Rows with a stored file in the database.
    pub db_files: Option<i64>,
    /// `bytes − db_bytes`.
    pub difference: Option<i64>,
}

/// Keys outside Mastodon's layout.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OtherLine {
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
    /// The first few such keys, in key order.
    pub examples: Vec<String>,
}

/// One month of `du --by month` ([`MonthTally`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MonthLine {
    /// `YYYY-MM` (UTC), or `unknown` (no creation time in the key).
    pub month: String,
    /// Under `cache/`.
    pub cache: Tally,
    /// In the layout, outside `cache/`.
    pub outside_cache: Tally,
    /// Outside Mastodon's layout.
    pub unrecognised: Tally,
    /// The three together.
    pub total: Tally,
}

impl DuReport {
    /// Fills [`DuReport::months`] from `usage` (`--by month`).
    pub fn fill_months(&mut self, usage: &Usage) {
        let line = |month: &str, t: &MonthTally| MonthLine {
            month: month.to_owned(),
            cache: t.cache,
            outside_cache: t.outside_cache,
            unrecognised: t.unrecognised,
            total: t.total(),
        };
        let mut lines: Vec<MonthLine> = usage
            .months
            .iter()
            .filter(|(m, _)| m.as_str() != "unknown")
            .map(|(m, t)| line(m, t))
            .collect();
        if let Some(t) = usage.months.get("unknown") {
            lines.push(line("unknown", t));
        }
        self.months = Some(lines);
    }
}

/// Unfinished multipart uploads (billed until aborted).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Multipart {
    /// Uploads.
    pub uploads: u64,
    /// Parts already uploaded.
    pub parts: u64,
    /// Bytes of those parts.
    pub bytes: u64,
    /// Uploads whose parts could not be listed (`ListParts` refused): not in `parts`/`bytes`.
    pub unsized_uploads: u64,
}

/// The `du` report. JSON shape (stable; bytes are exact integers):
///
/// ```json
/// {"storage": "s3://…", "prefix": "", "complete": true,
///  "total": {"objects": N, "bytes": N},
///  "categories": [{"class": "media_attachments", "attachment": "files", "cache": true,
///                  "objects": N, "bytes": N, "db_bytes": N|null, "db_files": N|null,
///                  "difference": N|null}, …],
///  "other": {"objects": N, "bytes": N, "examples": ["robots.txt", …]},
///  "database": {"bytes": N, "files": N},
///  "noncurrent": {"versions": N, "bytes": N, "delete_markers": N,
///                 "objects": N /* versions + delete_markers */},             // --versions
///  "incomplete_multipart": {"uploads": N, "parts": N, "bytes": N,
///                           "unsized_uploads": N},                          // --versions
///  "months": [{"month": "2024-01"|"unknown", "cache": {"objects", "bytes"},
///              "outside_cache": {…}, "unrecognised": {…}, "total": {…}}, …], // --by month
///  "requests": {"ListObjectsV2": N, …}, "attempts": {"ListObjectsV2": N, …},
///  "throttled": N, "elapsed_seconds": F}
/// ```
#[derive(Debug, Clone, Default, Serialize)]
pub struct DuReport {
    /// The store listed.
    pub storage: String,
    /// `--shard K/N` of this run (`"1/4"`), `None` (JSON `null`) for the whole job.
    pub shard: Option<String>,
    /// The listing prefix (with `S3_KEY_PREFIX`).
    pub prefix: String,
    /// Every prefix was listed to its end (false after Ctrl-C).
    pub complete: bool,
    /// Current objects and bytes, categories plus other.
    pub total: Tally,
    /// One line per category (every category the prefix covers, in a fixed order).
    pub categories: Vec<CategoryLine>,
    /// Keys outside the layout.
    pub other: OtherLine,
    /// The database's sums over the categories shown (`tootctl media usage`).
    pub database: Tally,
    /// With `--versions`: noncurrent versions and delete markers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noncurrent: Option<Noncurrent>,
    /// With `--versions`: unfinished multipart uploads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete_multipart: Option<Multipart>,
    /// With `--by month`: objects and bytes per month of creation, oldest first,
    /// `unknown` last; they add up to `total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub months: Option<Vec<MonthLine>>,
    /// Requests to the store: `requests` (operations) and `attempts` per operation,
    /// `throttled` answers (flattened into the top level of the JSON).
    #[serde(flatten)]
    pub requests: crate::store::RequestStats,
    /// Wall time, seconds.
    pub elapsed_seconds: f64,
}

impl DuReport {
    /// Fills the totals and category lines from a listing and the database's sums.
    /// `rel_prefix` is `--prefix` (below `S3_KEY_PREFIX`): categories outside it are left
    /// out, and a database sum is shown only for categories entirely inside it.
    pub fn fill(&mut self, usage: &Usage, sums: &HashMap<Category, DbSum>, rel_prefix: &str) {
        self.total = usage.total();
        self.other = OtherLine {
            objects: usage.other.objects,
            bytes: usage.other.bytes,
            examples: usage.other_examples.iter().cloned().collect(),
        };
        let mut cats = Category::all();
        for c in usage.categories.keys() {
            if !cats.contains(c) {
                cats.push(*c);
            }
        }
        cats.sort_by_key(|c| {
            let pos = Attachment::ALL.iter().position(|a| *a == c.attachment);
            (pos, !c.cache)
        });
        self.categories.clear();
        self.database = Tally::default();
        for c in cats {
            let root = c.root();
            let listed = usage.categories.get(&c).copied().unwrap_or_default();
            let overlaps = root.starts_with(rel_prefix) || rel_prefix.starts_with(&root);
            if !overlaps && listed.objects == 0 {
                continue;
            }
            let db = sums
                .get(&c)
                .filter(|_| c.possible() && root.starts_with(rel_prefix));
            if let Some(d) = db {
                self.database.bytes += d.bytes.max(0) as u64;
                self.database.objects += d.files.max(0) as u64;
            }
            self.categories.push(CategoryLine {
                class: c.attachment.class(),
                attachment: c.attachment.segment(),
                cache: c.cache,
                objects: listed.objects,
                bytes: listed.bytes,
                db_bytes: db.map(|d| d.bytes),
                db_files: db.map(|d| d.files),
                difference: db.map(|d| listed.bytes as i64 - d.bytes),
            });
        }
    }

    /// 130 when interrupted, else 0.
    pub fn exit_code(&self) -> ExitCode {
        super::Outcome {
            interrupted: !self.complete,
            ..super::Outcome::default()
        }
        .exit_code()
    }

    /// The human table (stdout).
    pub fn human(&self) -> String {
        let size = |b: u64| format_size(b, BINARY);
        let mut s = String::new();
        let _ = writeln!(s, "mastomedia du: {}", self.storage);
        if let Some(line) = super::shard_line(
            self.shard.as_deref(),
            "the bucket columns count the listed keys whose hash falls in this shard; the database column is the whole database's",
            self.requests.rate,
        ) {
            let _ = writeln!(s, "{line}");
        }
        if !self.prefix.is_empty() {
            let _ = writeln!(s, "prefix: {}", self.prefix);
        }
        let _ = writeln!(
            s,
            "{:<6} {:<30} {:>9} {:>11} {:>11} {:>12}",
            "", "category", "objects", "bytes", "database", "difference"
        );
        let ambiguous = self
            .categories
            .iter()
            .any(|c| !c.cache && location(false, c.class) == "local?" && c.objects > 0);
        for c in &self.categories {
            let name = format!("{}/{}", c.class, c.attachment);
            let (db, diff) = match (c.db_bytes, c.difference) {
                (Some(d), Some(x)) => (size(d.max(0) as u64), signed(x)),
                _ => ("-".to_owned(), "-".to_owned()),
            };
            let _ = writeln!(
                s,
                "{:<6} {:<30} {:>9} {:>11} {:>11} {:>12}",
                location(c.cache, c.class),
                name,
                c.objects,
                size(c.bytes),
                db,
                diff
            );
            if let Some(h) = hint(c) {
                let _ = writeln!(s, "{:<6}   ^ {h}", "");
            }
        }
        if ambiguous {
            let _ = writeln!(
                s,
                "local? = outside cache/: local uploads, or remote copies written before the storage schema upgrade (and every remote thumbnail before 4.6); the key alone cannot tell (see the database column)"
            );
        }
        let _ = writeln!(
            s,
            "{:<6} {:<30} {:>9} {:>11}",
            "other",
            "(outside Mastodon's layout)",
            self.other.objects,
            size(self.other.bytes)
        );
        if !self.other.examples.is_empty() {
            let _ = writeln!(s, "{:<6}   e.g. {}", "", self.other.examples.join(", "));
        }
        let _ = writeln!(
            s,
            "{:<6} {:<30} {:>9} {:>11} {:>11}",
            "total",
            "",
            self.total.objects,
            size(self.total.bytes),
            size(self.database.bytes)
        );
        if let Some(n) = &self.noncurrent {
            let _ = writeln!(
                s,
                "noncurrent versions: {} ({}), delete markers: {}",
                n.versions,
                size(n.bytes),
                n.delete_markers
            );
            if n.versions > 0 {
                let _ = writeln!(
                    s,
                    "  versioning is on: deleted and overwritten objects keep their space until a lifecycle rule expires noncurrent versions; pruning alone frees nothing"
                );
            }
        }
        if let Some(m) = &self.incomplete_multipart {
            let _ = writeln!(
                s,
                "incomplete multipart uploads: {} ({} in {} parts{}){}",
                m.uploads,
                size(m.bytes),
                m.parts,
                if m.unsized_uploads > 0 {
                    format!("; {} could not be sized", m.unsized_uploads)
                } else {
                    String::new()
                },
                if m.uploads > 0 {
                    ": billed until aborted (a lifecycle rule can abort them)"
                } else {
                    ""
                }
            );
        }
        if let Some(months) = &self.months {
            let _ = writeln!(
                s,
                "{:<8} {:>9} {:>11} {:>15} {:>15} {:>13}",
                "month", "objects", "bytes", "cache/", "outside cache/", "unrecognised"
            );
            for m in months {
                let _ = writeln!(
                    s,
                    "{:<8} {:>9} {:>11} {:>15} {:>15} {:>13}",
                    m.month,
                    m.total.objects,
                    size(m.total.bytes),
                    size(m.cache.bytes),
                    size(m.outside_cache.bytes),
                    size(m.unrecognised.bytes)
                );
            }
            if months.iter().any(|m| m.month == "unknown") {
                let _ = writeln!(
                    s,
                    "  unknown: keys with no creation time (serial ids such as accounts and preview cards, keys outside the layout)"
                );
            }
        }
        let _ = writeln!(s, "{}", super::requests_line(&self.requests));
        if !self.complete {
            let _ = writeln!(s, "interrupted: the totals above are partial");
        }
        let _ = writeln!(s, "elapsed: {:.1}s", self.elapsed_seconds);
        s
    }
}

fn signed(x: i64) -> String {
    let mag = format_size(x.unsigned_abs(), BINARY);
    if x < 0 {
        format!("-{mag}")
    } else {
        format!("+{mag}")
    }
}

/// Differences smaller than this are never "large".
pub const HINT_MIN_BYTES: u64 = 1024 * 1024;

/// A short explanation when listed and database bytes differ by at least
/// [`HINT_MIN_BYTES`] and 10 % of the larger side.
pub fn hint(c: &CategoryLine) -> Option<&'static str> {
    let db = c.db_bytes?.max(0) as u64;
    let diff = c.bytes.abs_diff(db);
    if diff < HINT_MIN_BYTES || diff * 10 < c.bytes.max(db) {
        return None;
    }
    let derived = matches!(
        (c.class, c.attachment),
        ("media_attachments", "files")
            | ("accounts", _)
            | ("custom_emojis", _)
            | ("site_uploads", _)
    );
    Some(match (c.bytes > db, derived, c.cache) {
        (true, true, _) => {
            "derived styles (small, static, icons) are not in the database sums; the rest may be orphans or stale copies: see `mastomedia orphans`"
        }
        (true, false, _) => "objects no database row accounts for: see `mastomedia orphans`",
        (false, _, true) => {
            "the database counts remote files that are not cached here (failed fetches, deleted objects, or keys still at the legacy path without cache/)"
        }
        (false, _, false) => {
            "the database counts files missing from storage (failed uploads, deletes outside Mastodon, or another S3_KEY_PREFIX)"
        }
    })
}

impl super::Summary for DuReport {
    fn human(&self) -> String {
        DuReport::human(self)
    }
}

/// The location label of a category: `cache` under `cache/`; outside it `local` for
/// models that are always local (site uploads, backups, imports, provider icons),
/// `legacy` for preview cards (always remote: a copy from before the storage schema
/// upgrade), else `local?` (a local upload, or a legacy remote copy; `docs/reference/key-layout.md#cache-prefix`,
/// `docs/reference/key-layout.md#remote-thumbnails`: the key alone cannot tell).
fn location(cache: bool, class: &str) -> &'static str {
    match (cache, class) {
        (true, _) => "cache",
        (false, "preview_cards") => "legacy",
        (false, "media_attachments" | "accounts" | "custom_emojis") => "local?",
        (false, _) => "local",
    }
}

#[cfg(test)]
mod tests {
    /// Found by review: pre-4.6 remote thumbnails and legacy cards were called "local".
    #[test]
    fn keys_outside_cache_are_not_called_local_when_they_may_be_remote() {
        assert_eq!(super::location(true, "media_attachments"), "cache");
        assert_eq!(super::location(false, "media_attachments"), "local?");
        assert_eq!(super::location(false, "accounts"), "local?");
        assert_eq!(super::location(false, "preview_cards"), "legacy");
        assert_eq!(super::location(false, "site_uploads"), "local");
        assert_eq!(super::location(false, "backups"), "local");
    }

    use super::*;
    use crate::plan::layout::Attachment;

    fn line(
        class: &'static str,
        att: &'static str,
        cache: bool,
        bytes: u64,
        db: Option<i64>,
    ) -> CategoryLine {
        CategoryLine {
            class,
            attachment: att,
            cache,
            objects: 1,
            bytes,
            db_bytes: db,
            db_files: db.map(|_| 1),
            difference: db.map(|d| bytes as i64 - d),
        }
    }

    #[test]
    fn hints_only_for_large_differences() {
        const M: u64 = 1024 * 1024;
        assert_eq!(
            hint(&line("media_attachments", "files", true, 10 * M, None)),
            None
        );
        assert_eq!(
            hint(&line(
                "media_attachments",
                "files",
                true,
                10 * M,
                Some((10 * M) as i64)
            )),
            None
        );
        assert_eq!(
            hint(&line("media_attachments", "files", true, 1000, Some(10))),
            None,
            "tiny"
        );
        assert!(
            hint(&line(
                "media_attachments",
                "files",
                true,
                30 * M,
                Some((10 * M) as i64)
            ))
            .unwrap()
            .contains("derived styles")
        );
        assert!(
            hint(&line(
                "preview_cards",
                "images",
                true,
                30 * M,
                Some((10 * M) as i64)
            ))
            .unwrap()
            .contains("orphans")
        );
        assert!(
            hint(&line(
                "preview_cards",
                "images",
                true,
                M,
                Some((10 * M) as i64)
            ))
            .unwrap()
            .contains("not cached")
        );
        assert!(
            hint(&line("backups", "dumps", false, M, Some((10 * M) as i64)))
                .unwrap()
                .contains("missing")
        );
    }

    #[test]
    fn fill_joins_listing_and_database_and_respects_the_prefix() {
        let mut usage = Usage::default();
        let none = crate::plan::layout::KeyPrefix::default();
        usage.add_object(
            "cache/preview_cards/images/000/004/242/original/c.jpg",
            100,
            &none,
        );
        usage.add_object("cache/backups/dumps/000/000/001/original/x.zip", 5, &none);
        let mut sums = HashMap::new();
        let card = Category {
            attachment: Attachment::PreviewCardImage,
            cache: true,
        };
        sums.insert(
            card,
            DbSum {
                bytes: 90,
                files: 1,
            },
        );
        let mut r = DuReport::default();
        r.fill(&usage, &sums, "");
        let l = r
            .categories
            .iter()
            .find(|c| c.class == "preview_cards" && c.cache)
            .unwrap();
        assert_eq!(
            (l.objects, l.bytes, l.db_bytes, l.difference),
            (1, 100, Some(90), Some(10))
        );
        let impossible = r
            .categories
            .iter()
            .find(|c| c.class == "backups" && c.cache)
            .unwrap();
        assert_eq!((impossible.objects, impossible.db_bytes), (1, None));
        assert_eq!(r.total.bytes, 105);
        assert_eq!(r.database.bytes, 90);

        let mut r = DuReport::default();
        r.fill(&usage, &sums, "cache/preview_cards/images/000/");
        assert_eq!(
            r.categories.len(),
            2,
            "the card line (overlapping) and the listed backup line"
        );
        assert_eq!(
            r.categories[0].db_bytes, None,
            "category only partly inside the prefix"
        );
    }
}
