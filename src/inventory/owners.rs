//! Which rows may own a batch of keys: for `orphans`, every row whose id falls in a key's
//! partition ([`ParsedKey::id_ranges`]), with the columns the key layout depends on. One
//! query per table per batch, by primary-key ranges. Read-only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row as _;

use crate::mastodon::{Db, DbError};
use crate::model::{KeyPrefix, ObjectKey};
use crate::plan::layout::{Attachment, StoredAttachment};
use crate::plan::orphans::Owner;
use crate::plan::parse::ParsedKey;
use crate::store::{Store, StoreError, validate_key};

/// The SQL predicate that a row of `table` (alias `t`) is remote (`docs/reference/key-layout.md#cache-prefix`): media
/// `remote_url <> ''`, accounts and emoji `domain IS NOT NULL`, preview cards always,
/// site uploads, backups, imports and provider icons never.
pub fn remote_sql(table: &str) -> &'static str {
    match table {
        "media_attachments" => "t.remote_url <> ''",
        "accounts" | "custom_emojis" => "t.domain IS NOT NULL",
        "preview_cards" => "TRUE",
        _ => "FALSE",
    }
}

/// Whether the database holds any media attachment or account at all. An empty database
/// (a wrong `DATABASE_URL`, a fresh staging copy) would make every key look orphaned, so
/// `orphans --delete` refuses to run against one.
pub async fn has_any_rows(db: &Db) -> Result<bool, DbError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM media_attachments) OR EXISTS (SELECT 1 FROM accounts)",
    )
    .fetch_one(db.pool())
    .await
    .map_err(|e| DbError::query("checking that the database has rows", e))
}

/// The highest `id` of every table whose files can be in the storage (`None`: the table is
/// empty), keyed by table name; tables this database lacks are left out. Cheap (primary
/// key). `orphans` counts objects above these ids as a sign that the database is older than
/// the storage ([`crate::plan::ownership::OwnershipRisk::NewerKeys`]).
pub async fn max_ids(db: &Db) -> Result<BTreeMap<&'static str, Option<i64>>, DbError> {
    let mut out = BTreeMap::new();
    for a in Attachment::ALL {
        let table = a.class();
        if out.contains_key(table) || !db.schema().has_table(table) {
            continue;
        }
        // The table name comes from a fixed list, never from input.
        let max: Option<i64> = sqlx::query_scalar(&format!("SELECT max(id)::bigint FROM {table}"))
            .fetch_one(db.pool())
            .await
            .map_err(|e| DbError::query("reading the highest id of each table", e))?;
        out.insert(table, max);
    }
    Ok(out)
}

/// The original key of up to `limit` of the newest stored media files, avatars, headers
/// and preview card images the database names (by primary key, so cheap), without `S3_KEY_PREFIX`. `orphans --delete`
/// checks that some of them exist in the bucket before deleting anything: if none does,
/// the database and the bucket do not belong together.
pub async fn sample_keys(db: &Db, limit: i64) -> Result<Vec<String>, DbError> {
    let schema = db.schema();
    // Media files and avatars; headers and preview card images too, so a run of
    // `--prune-profiles` or `--preview-cards` against a database with no media and no
    // avatars is not checked against an empty sample (review finding).
    let queries = [
        Attachment::MediaFile,
        Attachment::Avatar,
        Attachment::Header,
        Attachment::PreviewCardImage,
    ]
    .map(|attachment| {
        let (table, col) = (attachment.class(), attachment.column());
        let version = schema.column_or_null(
            "t",
            table,
            &format!("{col}_storage_schema_version"),
            "integer",
        );
        let sql = format!(
            "SELECT id, {col}_file_name, {col}_content_type, {version}::integer, {} \
             FROM {table} t WHERE NULLIF({col}_file_name, '') IS NOT NULL ORDER BY id DESC LIMIT $1",
            remote_sql(table)
        );
        (attachment, sql)
    });
    let mut keys = Vec::new();
    for (attachment, sql) in queries {
        let rows = sqlx::query(&sql)
            .bind(limit)
            .fetch_all(db.pool())
            .await
            .map_err(|e| DbError::query("sampling stored files", e))?;
        for r in rows {
            let name: String = r.get(1);
            let content_type: Option<String> = r.get(2);
            let a = StoredAttachment {
                attachment,
                id: r.get(0),
                file_name: &name,
                content_type: content_type.as_deref(),
                storage_schema_version: r.get(3),
                remote: r.get(4),
                site_upload_var: None,
            };
            if let Some(k) = a
                .keys(&crate::plan::layout::KeyPrefix::default())
                .into_iter()
                .next()
            {
                keys.push(k.as_str().to_owned());
            }
        }
    }
    Ok(keys)
}

/// Why [`check_owned`] refused: the database cannot be the owner of this storage.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// Sizing the sampled files failed (a fatal store error, or every lookup failed), so
    /// ownership could not be shown.
    #[error("checking that the database's files are in this storage: {0}")]
    Sizing(StoreError),
    /// The storage holds files of media newer than anything the database knows
    /// ([`check_no_newer_media`]).
    #[error(
        "{store} holds the files of at least {rows} media attachments more than a day newer than the newest row of this database (partition {newest}; e.g. {example}): another instance, of which this database is an older copy (a staging copy, a restore), still writes there. Pruning with this database would delete files that instance's rows still name. Refusing to change anything; check DATABASE_URL / DB_NAME and S3_BUCKET / S3_KEY_PREFIX"
    )]
    NewerFiles {
        /// Newer media rows seen (distinct partitions, one listing page).
        rows: usize,
        /// One of their keys.
        example: ObjectKey,
        /// The partition of the database's newest media row.
        newest: String,
        /// [`Store::describe`] of the store.
        store: String,
    },
    /// Reading the database for the check.
    #[error(transparent)]
    Db(DbError),
    /// None of the sampled files exists in the store.
    #[error(
        "none of the {checked} newest files the database names (e.g. {example}) exist in {store}: the database and the storage do not belong to the same instance, so every file of the database would look already gone (prune would clear rows whose files are elsewhere) and every object orphaned. Refusing to change anything; check DATABASE_URL / DB_NAME and S3_BUCKET / S3_KEY_PREFIX (or the local public/system path)"
    )]
    NotThisStorage {
        /// How many files were looked up.
        checked: usize,
        /// The first of them, with `S3_KEY_PREFIX`.
        example: ObjectKey,
        /// [`Store::describe`] of the store.
        store: String,
    },
}

/// Why [`check_database_owns`] stopped: reading the database's sample, or a refusal.
#[derive(Debug)]
pub enum OwnerCheckError {
    /// Reading the sample of the database's newest files ([`sample_keys`]).
    Db(DbError),
    /// The database cannot own this storage ([`check_owned`], [`check_no_newer_media`]).
    NotOwner(OwnershipError),
}

/// The ownership checks prune and reconcile run before any change, dry runs included: some
/// of the 20 newest files the database names exist in `store` ([`check_owned`]), and
/// `store` holds no media much newer than the database knows ([`check_no_newer_media`],
/// now). A wrong `DATABASE_URL` or bucket makes every row look as if its files were gone;
/// a staging copy or an old restore of the right database must not pass either. Errors:
/// [`OwnerCheckError`].
pub async fn check_database_owns(
    db: &Db,
    store: &dyn Store,
    key_prefix: &KeyPrefix,
) -> Result<(), OwnerCheckError> {
    let sample = sample_keys(db, 20).await.map_err(OwnerCheckError::Db)?;
    check_owned(&sample, store, key_prefix)
        .await
        .map_err(OwnerCheckError::NotOwner)?;
    check_no_newer_media(db, store, key_prefix, chrono::Utc::now().timestamp_millis())
        .await
        .map_err(OwnerCheckError::NotOwner)
}

/// Before any change: some of the newest files the database names ([`sample_keys`], keys
/// without `S3_KEY_PREFIX`) must exist in `store`. A database of another instance (a
/// staging copy, a wrong `DATABASE_URL`) owns nothing there: `orphans --delete` would see
/// every object as an orphan, and `prune` every candidate as already gone and clear rows
/// whose files live in another bucket. An empty sample passes (no stored file at all: the
/// callers have their own sign for that), and so does one of keys [`validate_key`] refuses.
/// The keys are looked up one at a time (a `ListObjectsV2` whose prefix is the key, which
/// needs only the listing permission prune needs anyway; a `stat` on the filesystem) until
/// one exists: one request on a healthy instance, at most the sample's size on a wrong one.
/// Errors: [`OwnershipError`].
pub async fn check_owned(
    sample: &[String],
    store: &dyn Store,
    key_prefix: &KeyPrefix,
) -> Result<(), OwnershipError> {
    // A key no store may be asked for (dot segments, a hostile name) proves nothing
    // either way: it is left out of the sample.
    let keys: Vec<ObjectKey> = sample
        .iter()
        .map(|k| key_prefix.apply(k.clone()))
        .filter(|k| validate_key(k).is_ok())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let mut last_error = None;
    for key in &keys {
        // A listing with the key itself as prefix (no covering prefix given), not a HEAD:
        // prune needs only ListBucket and DeleteObject, and a key limited to those must
        // still pass (review finding of the HEAD version).
        let answer = store.stat_many(std::slice::from_ref(key), &[]).await;
        match answer.into_iter().next() {
            Some(Ok(Some(_))) => return Ok(()),
            Some(Ok(None)) | None => {}
            Some(Err(e)) if e.is_fatal() => return Err(OwnershipError::Sizing(e)),
            Some(Err(e)) => last_error = Some(e),
        }
    }
    // Nothing found: if some lookups failed, ownership is unknown rather than disproved.
    if let Some(e) = last_error {
        return Err(OwnershipError::Sizing(e));
    }
    Err(OwnershipError::NotThisStorage {
        checked: keys.len(),
        example: keys[0].clone(),
        store: store.describe(),
    })
}

/// How many media rows' files newer than anything the database knows make
/// [`check_no_newer_media`] refuse: a few orphans of failed uploads never do.
pub const NEWER_MEDIA_ROWS: usize = 10;

/// How much newer than the database's newest media row those files must be (their
/// snowflake time), in milliseconds: one day.
pub const NEWER_MEDIA_MARGIN_MS: i64 = 86_400_000;

/// Before a prune on S3: the bucket must not hold the files of [`NEWER_MEDIA_ROWS`] or
/// more media rows whose snowflake ids are more than [`NEWER_MEDIA_MARGIN_MS`] newer than
/// the database's newest `media_attachments` row (and minted at least
/// [`crate::plan::ownership::NEWER_KEY_GRACE_MINUTES`] before `now_ms`). Such files come
/// from an instance that went on writing after this database was copied: a staging copy
/// or an old restore of production pointed at production's bucket would otherwise pass
/// [`check_owned`] (its newest files are production's) and delete objects production's
/// rows still name. One `ListObjectsV2` page after the newest row's partition, for
/// `cache/media_attachments/files/` and for `media_attachments/files/`. Skipped when the
/// table is empty or its ids are not snowflakes; the filesystem is not checked (a
/// listing there walks the folder tree). Errors: the listing fails (after the retry
/// policy), or [`OwnershipError::NewerFiles`].
pub async fn check_no_newer_media(
    db: &Db,
    store: &dyn Store,
    key_prefix: &KeyPrefix,
    now_ms: i64,
) -> Result<(), OwnershipError> {
    use crate::plan::ownership::{NEWER_KEY_GRACE_MINUTES, snowflake_ms};
    if !store.sizes_by_listing() {
        return Ok(());
    }
    let max: Option<i64> = sqlx::query_scalar("SELECT max(id)::bigint FROM media_attachments")
        .fetch_one(db.pool())
        .await
        .map_err(|e| OwnershipError::Db(DbError::query("reading the newest media id", e)))?;
    let Some(max) = max else { return Ok(()) };
    let Some(max_ms) = snowflake_ms(max) else {
        return Ok(());
    };
    let settled = now_ms - NEWER_KEY_GRACE_MINUTES * 60_000;
    let partition = crate::plan::layout::id_partition(max);
    for folder in ["cache/media_attachments/files/", "media_attachments/files/"] {
        let prefix = key_prefix.apply(folder.to_owned()).as_str().to_owned();
        // Past every style of the newest row's partition: '~' sorts after any style name.
        let start = format!("{prefix}{partition}/~");
        let page = store
            .list_page(&prefix, false, Some(&start), None)
            .await
            .map_err(OwnershipError::Sizing)?;
        let mut newer = BTreeSet::new();
        let mut example = None;
        for o in &page.objects {
            let Ok(p) = crate::plan::parse::parse_key(o.key.as_str(), key_prefix) else {
                continue;
            };
            let Some(ms) = p.partition.parse::<i64>().ok().and_then(snowflake_ms) else {
                continue;
            };
            if ms > max_ms + NEWER_MEDIA_MARGIN_MS && ms <= settled {
                newer.insert(p.partition.clone());
                example.get_or_insert_with(|| o.key.clone());
            }
        }
        if newer.len() >= NEWER_MEDIA_ROWS {
            return Err(OwnershipError::NewerFiles {
                rows: newer.len(),
                example: example.unwrap_or_else(|| ObjectKey::new(start.clone())),
                newest: partition.clone(),
                store: store.describe(),
            });
        }
    }
    Ok(())
}

/// One stored attachment of a looked-up row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFile {
    /// `<att>_file_name` (non-blank).
    pub file_name: String,
    /// `<att>_content_type`.
    pub content_type: Option<String>,
    /// `<att>_storage_schema_version` (NULL or missing column: `None`).
    pub storage_schema_version: Option<i32>,
}

/// A looked-up row with the attachments of its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRow {
    /// Primary key.
    pub id: i64,
    /// Remote record ([`remote_sql`]).
    pub remote: bool,
    /// `site_uploads.var` (site uploads only).
    pub var: Option<String>,
    /// The table's attachments; `None` where blank.
    pub files: Vec<(Attachment, Option<OwnedFile>)>,
}

impl OwnerRow {
    /// This row as a possible owner of a key of `attachment`.
    pub fn owner(&self, attachment: Attachment) -> Owner<'_> {
        let file = self
            .files
            .iter()
            .find(|(a, _)| *a == attachment)
            .and_then(|(_, f)| f.as_ref())
            .map(|f| StoredAttachment {
                attachment,
                id: self.id,
                file_name: &f.file_name,
                content_type: f.content_type.as_deref(),
                storage_schema_version: f.storage_schema_version,
                remote: self.remote,
                site_upload_var: self.var.as_deref(),
            });
        Owner {
            id: self.id,
            remote: self.remote,
            file,
        }
    }
}

/// The rows found for one batch of keys, per table.
#[derive(Debug, Default)]
pub struct Owners {
    rows: HashMap<&'static str, BTreeMap<i64, OwnerRow>>,
    /// Attachments this database cannot answer for (table or `<att>_file_name` missing).
    unknown: BTreeSet<&'static str>,
}

impl Owners {
    /// Looks up every row that may own one of `keys`: one query per table, joining the
    /// primary key with the keys' id ranges. Errors: the query fails (fatal).
    pub async fn lookup(db: &Db, keys: &[ParsedKey<'_>]) -> Result<Self, DbError> {
        let schema = db.schema();
        let mut ranges: BTreeMap<&'static str, BTreeSet<(i64, i64)>> = BTreeMap::new();
        let mut out = Owners::default();
        for k in keys {
            let table = k.attachment.class();
            let col = k.attachment.column();
            if !schema.has_table(table) || !schema.has(table, &format!("{col}_file_name")) {
                out.unknown.insert(attachment_name(k.attachment));
                continue;
            }
            let set = ranges.entry(table).or_default();
            for r in k.id_ranges() {
                set.insert((*r.start(), *r.end()));
            }
        }
        for (table, set) in ranges {
            let atts: Vec<Attachment> = Attachment::ALL
                .into_iter()
                .filter(|a| a.class() == table)
                .filter(|a| schema.has(table, &format!("{}_file_name", a.column())))
                .collect();
            let mut cols = vec![
                "t.id".to_owned(),
                format!("({})::boolean", remote_sql(table)),
                format!("{}::text", schema.column_or_null("t", table, "var", "text")),
            ];
            for a in &atts {
                let c = a.column();
                cols.push(format!("t.{c}_file_name::text"));
                cols.push(format!(
                    "{}::text",
                    schema.column_or_null("t", table, &format!("{c}_content_type"), "text")
                ));
                cols.push(format!(
                    "{}::integer",
                    schema.column_or_null(
                        "t",
                        table,
                        &format!("{c}_storage_schema_version"),
                        "integer"
                    )
                ));
            }
            let sql = format!(
                "SELECT {} FROM {table} t JOIN unnest($1::bigint[], $2::bigint[]) AS r(lo, hi) \
                 ON t.id BETWEEN r.lo AND r.hi",
                cols.join(", ")
            );
            let (lo, hi): (Vec<i64>, Vec<i64>) = set.into_iter().unzip();
            let rows = sqlx::query(&sql)
                .bind(lo)
                .bind(hi)
                .fetch_all(db.pool())
                .await
                .map_err(|e| {
                    DbError::query(&format!("looking up {table} rows of listed keys"), e)
                })?;
            let map = out.rows.entry(table).or_default();
            for r in rows {
                let mut files = Vec::with_capacity(atts.len());
                for (i, a) in atts.iter().enumerate() {
                    let base = 3 + 3 * i;
                    let name: Option<String> = r.get(base);
                    let file = name.filter(|n| !n.is_empty()).map(|n| OwnedFile {
                        file_name: n,
                        content_type: r.get(base + 1),
                        storage_schema_version: r.get(base + 2),
                    });
                    files.push((*a, file));
                }
                let row = OwnerRow {
                    id: r.get(0),
                    remote: r.get(1),
                    var: r.get(2),
                    files,
                };
                map.insert(row.id, row);
            }
        }
        Ok(out)
    }

    /// The rows that may own `key` (every row in its partition), or `None` when the
    /// database cannot tell (table or column missing).
    pub fn candidates(&self, key: &ParsedKey<'_>) -> Option<Vec<Owner<'_>>> {
        if self.unknown.contains(attachment_name(key.attachment)) {
            return None;
        }
        let Some(map) = self.rows.get(key.attachment.class()) else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        for r in key.id_ranges() {
            out.extend(map.range(r).map(|(_, row)| row.owner(key.attachment)));
        }
        Some(out)
    }
}

fn attachment_name(a: Attachment) -> &'static str {
    match a {
        Attachment::MediaFile => "media_attachments.file",
        Attachment::MediaThumbnail => "media_attachments.thumbnail",
        Attachment::Avatar => "accounts.avatar",
        Attachment::Header => "accounts.header",
        Attachment::PreviewCardImage => "preview_cards.image",
        Attachment::EmojiImage => "custom_emojis.image",
        Attachment::SiteUploadFile => "site_uploads.file",
        Attachment::BackupDump => "backups.dump",
        Attachment::ImportData => "imports.data",
        Attachment::ProviderIcon => "preview_card_providers.icon",
    }
}
