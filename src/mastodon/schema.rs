//! Schema introspection (`docs/reference/mastodon-schema.md#schema-detection`): read `information_schema.columns` for
//! the tables we touch and derive what this Mastodon version (4.2–4.6, forks) has, instead
//! of assuming. Behaviour is gated on columns, never on version strings.

use std::collections::{BTreeMap, BTreeSet};

use super::{DbError, MastodonPool};

/// Tables whose columns are read at start-up.
pub const TABLES: &[&str] = &[
    "media_attachments",
    "accounts",
    "preview_cards",
    "custom_emojis",
    "site_uploads",
    "backups",
    "imports",
    "preview_card_providers",
    "settings",
    "statuses",
    "follows",
    "favourites",
    "bookmarks",
    "quotes",
];

/// Columns without which the database is not a supported Mastodon database.
const CORE: &[(&str, &str)] = &[
    ("media_attachments", "remote_url"),
    ("media_attachments", "file_file_name"),
    ("media_attachments", "thumbnail_file_name"),
    ("media_attachments", "created_at"),
    ("accounts", "domain"),
    ("accounts", "avatar_file_name"),
    ("accounts", "header_file_name"),
    ("preview_cards", "image_file_name"),
    ("statuses", "reblog_of_id"),
];

/// The columns present per table (`table → {column}`), plus derived capabilities.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    columns: BTreeMap<String, BTreeSet<String>>,
    /// `SELECT max(version) FROM schema_migrations`, for diagnosis only.
    pub migration_version: Option<String>,
}

/// The Mastodon release a schema's markers point at: `media_attachments.thumbnail_storage_schema_version`
/// appeared in 4.6 (`thumbnail`), the `quotes` table in 4.5 (`quotes`), and
/// `settings.thing_type` was dropped in 4.4 (`settings_thing_type` true before it). One of
/// `"4.6 or later"`, `"4.5"`, `"4.4"`, `"4.2 or 4.3"`.
pub fn sniff_version(thumbnail: bool, quotes: bool, settings_thing_type: bool) -> &'static str {
    if thumbnail {
        "4.6 or later"
    } else if quotes {
        "4.5"
    } else if !settings_thing_type {
        "4.4"
    } else {
        "4.2 or 4.3"
    }
}

impl Schema {
    /// Reads the columns of [`TABLES`] in the current schema. Errors: the query fails, or a
    /// core column is missing ([`DbError::NotMastodon`]).
    pub async fn load(pool: MastodonPool<'_>) -> Result<Self, DbError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = ANY($1)",
        )
        .bind(TABLES)
        .fetch_all(pool)
        .await
        .map_err(|e| DbError::query("reading information_schema.columns", e))?;
        let mut columns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (t, c) in rows {
            columns.entry(t).or_default().insert(c);
        }
        let migration_version = if columns.is_empty() {
            None
        } else {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT max(version)::text FROM schema_migrations",
            )
            .fetch_one(pool)
            .await
            .ok()
            .flatten()
        };
        let schema = Self {
            columns,
            migration_version,
        };
        let missing: Vec<String> = CORE
            .iter()
            .filter(|(t, c)| !schema.has(t, c))
            .map(|(t, c)| format!("{t}.{c}"))
            .collect();
        if !missing.is_empty() {
            return Err(DbError::NotMastodon(missing.join(", ")));
        }
        Ok(schema)
    }

    /// Builds a schema from explicit `(table, column)` pairs (tests).
    pub fn from_columns<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut columns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (t, c) in pairs {
            columns
                .entry(t.to_owned())
                .or_default()
                .insert(c.to_owned());
        }
        Self {
            columns,
            migration_version: None,
        }
    }

    /// Whether `table.column` exists.
    pub fn has(&self, table: &str, column: &str) -> bool {
        self.columns.get(table).is_some_and(|c| c.contains(column))
    }

    /// Whether `table` exists.
    pub fn has_table(&self, table: &str) -> bool {
        self.columns.contains_key(table)
    }

    /// 4.6+: `media_attachments.thumbnail_storage_schema_version` exists.
    pub fn thumbnail_schema_version(&self) -> bool {
        self.has("media_attachments", "thumbnail_storage_schema_version")
    }

    /// Before 4.4: `settings.thing_type` exists (site settings have it NULL).
    pub fn settings_thing_type(&self) -> bool {
        self.has("settings", "thing_type")
    }

    /// 4.5+: the `quotes` table exists.
    pub fn quotes(&self) -> bool {
        self.has_table("quotes")
    }

    /// The Mastodon version these columns point at, for `doctor`'s line only (behaviour is
    /// gated on columns): [`sniff_version`] over the capabilities above.
    pub fn version_label(&self) -> &'static str {
        sniff_version(
            self.thumbnail_schema_version(),
            self.quotes(),
            self.settings_thing_type(),
        )
    }

    /// The SQL for `<table>.<column>` if it exists, else `NULL::<ty>`.
    pub fn column_or_null(&self, alias: &str, table: &str, column: &str, ty: &str) -> String {
        if self.has(table, column) {
            format!("{alias}.{column}")
        } else {
            format!("NULL::{ty}")
        }
    }

    /// The columns Paperclip clears when an attachment is destroyed: every existing one of
    /// `<att>_file_name`, `_content_type`, `_file_size`, `_fingerprint`, `_created_at`,
    /// `_updated_at` (`docs/reference/tootctl-rules.md#attachment-batch`). Storage schema version and `*_remote_url` are never among them.
    pub fn attachment_columns(&self, table: &str, att: &str) -> Vec<String> {
        [
            "file_name",
            "content_type",
            "file_size",
            "fingerprint",
            "created_at",
            "updated_at",
        ]
        .iter()
        .map(|s| format!("{att}_{s}"))
        .filter(|c| self.has(table, c))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Schema, sniff_version};

    #[test]
    fn version_from_schema_markers() {
        // (thumbnail_storage_schema_version, quotes, settings.thing_type) → version
        let cases = [
            ((true, true, false), "4.6 or later"),
            ((true, false, true), "4.6 or later"),
            ((false, true, false), "4.5"),
            ((false, false, false), "4.4"),
            ((false, false, true), "4.2 or 4.3"),
        ];
        for ((t, q, s), want) in cases {
            assert_eq!(sniff_version(t, q, s), want, "{t} {q} {s}");
        }
        let v42 = Schema::from_columns([("settings", "thing_type"), ("accounts", "domain")]);
        assert_eq!(v42.version_label(), "4.2 or 4.3");
        let v46 = Schema::from_columns([
            ("media_attachments", "thumbnail_storage_schema_version"),
            ("quotes", "id"),
        ]);
        assert_eq!(v46.version_label(), "4.6 or later");
    }

    #[test]
    fn attachment_columns_only_lists_existing_ones() {
        let s = Schema::from_columns([
            ("media_attachments", "file_file_name"),
            ("media_attachments", "file_content_type"),
            ("media_attachments", "file_file_size"),
            ("media_attachments", "file_updated_at"),
            ("media_attachments", "file_storage_schema_version"),
            ("media_attachments", "file_remote_url_unrelated"),
        ]);
        assert_eq!(
            s.attachment_columns("media_attachments", "file"),
            [
                "file_file_name",
                "file_content_type",
                "file_file_size",
                "file_updated_at"
            ]
        );
        assert!(!s.thumbnail_schema_version());
        assert_eq!(
            s.column_or_null(
                "m",
                "media_attachments",
                "thumbnail_storage_schema_version",
                "int"
            ),
            "NULL::int"
        );
    }
}
