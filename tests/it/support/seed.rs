//! Seeding helpers: insert Mastodon rows with explicit columns. Times are given as "days
//! ago" and computed in UTC inside SQL (`now() AT TIME ZONE 'UTC'`), so they do not depend
//! on the database's time zone, exactly as Mastodon stores them.

use super::TestDb;

/// A `media_attachments` row.
#[derive(Debug, Clone)]
pub struct Media {
    /// Primary key.
    pub id: i64,
    /// `remote_url` (`""` = local upload).
    pub remote_url: String,
    /// `file_file_name`.
    pub file_name: Option<String>,
    /// `file_content_type`.
    pub content_type: Option<String>,
    /// `file_file_size`.
    pub file_size: Option<i32>,
    /// `file_storage_schema_version`.
    pub version: Option<i32>,
    /// `thumbnail_file_name`.
    pub thumb_name: Option<String>,
    /// `thumbnail_storage_schema_version` (only written when the column exists).
    pub thumb_version: Option<i32>,
    /// `created_at` = now − this many days (fractions allowed).
    pub created_days_ago: f64,
    /// `status_id` (the status must exist).
    pub status_id: Option<i64>,
    /// `account_id` (the owner; its `accounts.domain` is what `--domain` tests).
    pub account_id: Option<i64>,
}

impl Media {
    /// A remote, cached image with schema version 1, created `days_ago`.
    pub fn remote(id: i64, name: &str, days_ago: f64) -> Self {
        Self {
            id,
            remote_url: format!("https://remote.example/media/{id}.png"),
            file_name: Some(name.to_owned()),
            content_type: Some("image/png".to_owned()),
            file_size: Some(1234),
            version: Some(1),
            thumb_name: None,
            thumb_version: None,
            created_days_ago: days_ago,
            status_id: None,
            account_id: None,
        }
    }

    /// A local upload (remote_url empty).
    pub fn local(id: i64, name: &str, days_ago: f64) -> Self {
        Self {
            remote_url: String::new(),
            ..Self::remote(id, name, days_ago)
        }
    }
}

/// Inserts `m`. Writes `thumbnail_storage_schema_version` only when the column exists.
pub async fn insert_media(db: &TestDb, m: &Media) {
    let has_thumb_version: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'media_attachments' \
         AND column_name = 'thumbnail_storage_schema_version')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("introspect");
    let (tv_col, tv_val) = if has_thumb_version {
        (", thumbnail_storage_schema_version", ", $12")
    } else {
        ("", "")
    };
    let sql = format!(
        "INSERT INTO media_attachments (id, remote_url, file_file_name, file_content_type, file_file_size, \
         file_storage_schema_version, thumbnail_file_name, thumbnail_content_type, thumbnail_file_size, \
         status_id, created_at, updated_at, file_updated_at, thumbnail_remote_url, blurhash, description, account_id{tv_col}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7::text IS NULL THEN NULL ELSE 'image/jpeg' END, \
         CASE WHEN $7::text IS NULL THEN NULL ELSE 321 END, $8, \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => $9), (now() AT TIME ZONE 'UTC') - make_interval(secs => $9), \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => $9), $10, 'LEHV6nWB2yk8', 'a description', $11{tv_val})"
    );
    let thumb_url = m
        .thumb_name
        .as_ref()
        .map(|_| format!("https://remote.example/thumb/{}.jpeg", m.id));
    let mut q = sqlx::query(&sql)
        .bind(m.id)
        .bind(&m.remote_url)
        .bind(&m.file_name)
        .bind(&m.content_type)
        .bind(m.file_size)
        .bind(m.version)
        .bind(&m.thumb_name)
        .bind(m.status_id)
        .bind(m.created_days_ago * 86400.0)
        .bind(thumb_url)
        .bind(m.account_id);
    if has_thumb_version {
        q = q.bind(m.thumb_version);
    }
    q.execute(&db.pool).await.expect("insert media");
}

/// Inserts an account: `domain` None = local. Avatar/header given as `(name, content_type)`.
#[allow(clippy::too_many_arguments)]
pub async fn insert_account(
    db: &TestDb,
    id: i64,
    domain: Option<&str>,
    avatar: Option<(&str, &str)>,
    header: Option<(&str, &str)>,
    version: Option<i32>,
    webfingered_days_ago: f64,
    updated_days_ago: f64,
) {
    sqlx::query(
        "INSERT INTO accounts (id, username, domain, avatar_file_name, avatar_content_type, avatar_file_size, \
         avatar_storage_schema_version, avatar_remote_url, header_file_name, header_content_type, header_file_size, \
         header_storage_schema_version, header_remote_url, last_webfingered_at, created_at, updated_at) \
         VALUES ($1, 'user' || $1::text, $2, $3, $4, CASE WHEN $3::text IS NULL THEN NULL ELSE 500 END, $5, \
         'https://remote.example/avatar.png', $6, $7, CASE WHEN $6::text IS NULL THEN NULL ELSE 700 END, $5, \
         'https://remote.example/header.png', (now() AT TIME ZONE 'UTC') - make_interval(secs => $8), \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => $9), (now() AT TIME ZONE 'UTC') - make_interval(secs => $9))",
    )
    .bind(id)
    .bind(domain)
    .bind(avatar.map(|a| a.0))
    .bind(avatar.map(|a| a.1))
    .bind(version)
    .bind(header.map(|h| h.0))
    .bind(header.map(|h| h.1))
    .bind(webfingered_days_ago * 86400.0)
    .bind(updated_days_ago * 86400.0)
    .execute(&db.pool)
    .await
    .expect("insert account");
}

/// Inserts a status; `local` false gives it a remote `uri`.
pub async fn insert_status(db: &TestDb, id: i64, account_id: i64, local: bool) {
    sqlx::query(
        "INSERT INTO statuses (id, account_id, local, uri, created_at, updated_at) \
         VALUES ($1, $2, $3, CASE WHEN $3 THEN NULL ELSE 'https://remote.example/s/' || $1::text END, \
         now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
    )
    .bind(id)
    .bind(account_id)
    .bind(local)
    .execute(&db.pool)
    .await
    .expect("insert status");
}

/// Inserts a preview card with an image, last updated `days_ago`.
pub async fn insert_card(db: &TestDb, id: i64, image: Option<&str>, days_ago: f64) {
    sqlx::query(
        "INSERT INTO preview_cards (id, url, image_file_name, image_content_type, image_file_size, \
         image_storage_schema_version, created_at, updated_at) \
         VALUES ($1, 'https://link.example/' || $1::text, $2, 'image/jpeg', 900, 1, \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => $3), (now() AT TIME ZONE 'UTC') - make_interval(secs => $3))",
    )
    .bind(id)
    .bind(image)
    .bind(days_ago * 86400.0)
    .execute(&db.pool)
    .await
    .expect("insert card");
}

/// Inserts a custom emoji (`domain` None = local).
pub async fn insert_emoji(db: &TestDb, id: i64, domain: Option<&str>, image: &str) {
    sqlx::query(
        "INSERT INTO custom_emojis (id, shortcode, domain, image_file_name, image_content_type, image_file_size, \
         image_storage_schema_version, created_at, updated_at) \
         VALUES ($1, 'emoji' || $1::text, $2, $3, 'image/png', 100, 1, \
         (now() AT TIME ZONE 'UTC') - interval '400 days', (now() AT TIME ZONE 'UTC') - interval '400 days')",
    )
    .bind(id)
    .bind(domain)
    .bind(image)
    .execute(&db.pool)
    .await
    .expect("insert emoji");
}

/// Stores the instance's media cache retention setting as Mastodon does (YAML text).
pub async fn set_media_retention(db: &TestDb, yaml: &str) {
    sqlx::query(
        "INSERT INTO settings (var, value, created_at, updated_at) \
         VALUES ('media_cache_retention_period', $1, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
    )
    .bind(yaml)
    .execute(&db.pool)
    .await
    .expect("insert setting");
}

/// `(file_file_name, thumbnail_file_name, remote_url)` of a media row.
pub async fn media_names(db: &TestDb, id: i64) -> (Option<String>, Option<String>, String) {
    sqlx::query_as(
        "SELECT file_file_name, thumbnail_file_name, remote_url FROM media_attachments WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .expect("media row")
}
