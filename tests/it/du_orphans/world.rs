//! The seeded world of the `du` / `orphans` tests: rows of every model with files, and one
//! object per key with a known size, category (by hand, not by the parser) and expected
//! orphan class. Also the database sums `tootctl media usage` would compute for it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::seed::{Media, insert_account, insert_card, insert_emoji, insert_media};
use crate::support::{TestBucket, TestDb};

/// A `du` line: (class, attachment, cache).
pub type Cat = (&'static str, &'static str, bool);

/// One seeded object.
#[derive(Debug, Clone)]
pub struct Obj {
    /// Key (without any S3_KEY_PREFIX).
    pub key: String,
    /// Size in bytes.
    pub size: usize,
    /// The du line it belongs to; `None` = outside the layout ("other").
    pub cat: Option<Cat>,
    /// Expected orphans class: referenced, orphan, stale, unrecognised.
    pub class: &'static str,
    /// Expected reason within the class.
    pub reason: &'static str,
}

const P1: &str = "109/345/678/901/234/567";

fn p(id: i64) -> String {
    let d = id.to_string();
    assert_eq!(d.len(), 18);
    d.as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("/")
}

/// Inserts the rows. `thumb_column`: the 4.6 fixture (thumbnail schema version column).
pub async fn seed_rows(db: &TestDb, thumb_column: bool) {
    insert_media(
        db,
        &Media::remote(109345678901234567, "8f3a2b1c4d5e6f70.png", 30.0),
    )
    .await;
    let mut m = Media::remote(109345678901234568, "aaaaaaaaaaaaaaa1.jpeg", 30.0);
    m.version = None;
    m.content_type = Some("image/jpeg".into());
    insert_media(db, &m).await;
    insert_media(
        db,
        &Media::remote(109345678901234569, "cccccccccccccccc.png", 30.0),
    )
    .await;
    let mut m = Media::remote(109345678901234570, "0a1b2c3d4e5f6071.mp4", 30.0);
    m.content_type = Some("video/mp4".into());
    m.thumb_name = Some("1122334455667788.jpeg".into());
    insert_media(db, &m).await;
    let mut m = Media::remote(109345678901234571, "0a1b2c3d4e5f6072.mp4", 30.0);
    m.content_type = Some("video/mp4".into());
    m.thumb_name = Some("1122334455667789.jpeg".into());
    m.thumb_version = thumb_column.then_some(1);
    insert_media(db, &m).await;
    insert_media(
        db,
        &Media::local(109345678901234572, "dddddddddddddddd.png", 30.0),
    )
    .await;
    let mut m = Media::remote(109345678901234573, "unused", 30.0);
    m.file_name = None;
    m.content_type = None;
    m.file_size = None;
    insert_media(db, &m).await;
    insert_media(
        db,
        &Media::remote(99999999999999998, "bbbbbbbbbbbbbbb1.png", 30.0),
    )
    .await;

    insert_account(
        db,
        123456789,
        Some("remote.example"),
        Some(("aaaaaaaaaaaaaaaa.gif", "image/gif")),
        Some(("hhhhhhhhhhhhhhhh.png", "image/png")),
        Some(1),
        1.0,
        1.0,
    )
    .await;
    insert_account(
        db,
        1,
        None,
        Some(("1111111111111111.png", "image/png")),
        None,
        Some(1),
        1.0,
        1.0,
    )
    .await;
    insert_card(db, 4242, Some("cccccccccccccccc.jpg"), 10.0).await;
    insert_card(db, 4244, None, 10.0).await;
    insert_emoji(db, 1, Some("remote.example"), "bbbbbbbbbbbbbbbb.png").await;
    insert_emoji(db, 2, None, "eeeeeeeeeeeeeeee.png").await;
    for sql in [
        "INSERT INTO site_uploads (id, var, file_file_name, file_content_type, file_file_size, created_at, updated_at) \
         VALUES (3, 'thumbnail', 'dddddddddddddddd.png', 'image/png', 2000, now(), now())",
        "INSERT INTO backups (id, user_id, dump_file_name, dump_content_type, dump_file_size, processed, created_at, updated_at) \
         VALUES (1, 1, 'archive-1.zip', 'application/zip', 3000, true, now(), now())",
        "INSERT INTO imports (id, account_id, type, data_file_name, data_content_type, data_file_size, created_at, updated_at) \
         VALUES (1, 1, 0, 'ffffffffffffffff.csv', 'text/csv', 50, now(), now())",
        "INSERT INTO preview_card_providers (id, domain, icon_file_name, icon_content_type, icon_file_size, created_at, updated_at) \
         VALUES (1, 'link.example', '9999999999999999.png', 'image/png', 60, now(), now())",
    ] {
        sqlx::query(sql).execute(&db.pool).await.expect(sql);
    }
}

/// Every object of the world. `s3`: include a directory marker (impossible on disk).
pub fn objects(s3: bool) -> Vec<Obj> {
    const MF: &str = "media_attachments";
    let mut v: Vec<(String, Option<Cat>, &'static str, &'static str)> = vec![
        // M1: remote, schema 1.
        (
            format!("cache/{MF}/files/{P1}/original/8f3a2b1c4d5e6f70.png"),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        (
            format!("cache/{MF}/files/{P1}/small/8f3a2b1c4d5e6f70.png"),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        // M2: legacy remote row (schema NULL): keys without cache/.
        (
            format!(
                "{MF}/files/{}/original/aaaaaaaaaaaaaaa1.jpeg",
                p(109345678901234568)
            ),
            Some((MF, "files", false)),
            "referenced",
            "owned",
        ),
        (
            format!(
                "{MF}/files/{}/small/aaaaaaaaaaaaaaa1.jpeg",
                p(109345678901234568)
            ),
            Some((MF, "files", false)),
            "referenced",
            "owned",
        ),
        // M3: schema 1 plus the legacy copy `upgrade storage-schema` left behind.
        (
            format!(
                "cache/{MF}/files/{}/original/cccccccccccccccc.png",
                p(109345678901234569)
            ),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        (
            format!(
                "{MF}/files/{}/original/cccccccccccccccc.png",
                p(109345678901234569)
            ),
            Some((MF, "files", false)),
            "stale",
            "not_owned",
        ),
        // M4: video with a pre-4.6 thumbnail (no cache/).
        (
            format!(
                "cache/{MF}/files/{}/original/0a1b2c3d4e5f6071.mp4",
                p(109345678901234570)
            ),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        (
            format!(
                "cache/{MF}/files/{}/small/0a1b2c3d4e5f6071.png",
                p(109345678901234570)
            ),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        (
            format!(
                "{MF}/thumbnails/{}/original/1122334455667788.jpeg",
                p(109345678901234570)
            ),
            Some((MF, "thumbnails", false)),
            "referenced",
            "owned",
        ),
        // M5: video with a 4.6 thumbnail (cache/ on 4.6 only; see thumbnail_key()).
        (
            format!(
                "cache/{MF}/files/{}/original/0a1b2c3d4e5f6072.mp4",
                p(109345678901234571)
            ),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        (
            format!(
                "cache/{MF}/files/{}/small/0a1b2c3d4e5f6072.png",
                p(109345678901234571)
            ),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        // M6: local upload.
        (
            format!(
                "{MF}/files/{}/original/dddddddddddddddd.png",
                p(109345678901234572)
            ),
            Some((MF, "files", false)),
            "referenced",
            "owned",
        ),
        (
            format!(
                "{MF}/files/{}/small/dddddddddddddddd.png",
                p(109345678901234572)
            ),
            Some((MF, "files", false)),
            "referenced",
            "owned",
        ),
        // M7: row whose file was cleared (pruned) but the object survived.
        (
            format!(
                "cache/{MF}/files/{}/original/eeeeeeeeeeeeeee1.png",
                p(109345678901234573)
            ),
            Some((MF, "files", true)),
            "orphan",
            "attachment_cleared",
        ),
        // M8: row gone.
        (
            format!(
                "cache/{MF}/files/{}/original/ffffffffffffff01.png",
                p(109345678901234574)
            ),
            Some((MF, "files", true)),
            "orphan",
            "row_gone",
        ),
        (
            format!(
                "cache/{MF}/files/{}/small/ffffffffffffff01.png",
                p(109345678901234574)
            ),
            Some((MF, "files", true)),
            "orphan",
            "row_gone",
        ),
        // M9: a 17-digit id, partition shared with 99999999999999990..99.
        (
            format!("cache/{MF}/files/999/999/999/999/999/original/bbbbbbbbbbbbbbb1.png"),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        (
            format!("cache/{MF}/files/999/999/999/999/999/small/bbbbbbbbbbbbbbb1.png"),
            Some((MF, "files", true)),
            "referenced",
            "owned",
        ),
        (
            format!("{MF}/files/999/999/999/999/999/original/bbbbbbbbbbbbbbb1.png"),
            Some((MF, "files", false)),
            "referenced",
            "uncertain",
        ),
        (
            format!("cache/{MF}/files/999/999/999/999/999/original/cccccccccccccc99.png"),
            Some((MF, "files", true)),
            "stale",
            "not_owned",
        ),
        // A1: remote account, GIF avatar (static style) and header.
        (
            "cache/accounts/avatars/123/456/789/original/aaaaaaaaaaaaaaaa.gif".into(),
            Some(("accounts", "avatars", true)),
            "referenced",
            "owned",
        ),
        (
            "cache/accounts/avatars/123/456/789/static/aaaaaaaaaaaaaaaa.png".into(),
            Some(("accounts", "avatars", true)),
            "referenced",
            "owned",
        ),
        (
            "cache/accounts/headers/123/456/789/original/hhhhhhhhhhhhhhhh.png".into(),
            Some(("accounts", "headers", true)),
            "referenced",
            "owned",
        ),
        // A2: local account; its old header (no longer on the row) is never touched.
        (
            "accounts/avatars/000/000/001/original/1111111111111111.png".into(),
            Some(("accounts", "avatars", false)),
            "referenced",
            "owned",
        ),
        (
            "accounts/headers/000/000/001/original/2222222222222222.png".into(),
            Some(("accounts", "headers", false)),
            "referenced",
            "local_row",
        ),
        // Preview cards: one stored, one cleared with its object left.
        (
            "cache/preview_cards/images/000/004/242/original/cccccccccccccccc.jpg".into(),
            Some(("preview_cards", "images", true)),
            "referenced",
            "owned",
        ),
        (
            "cache/preview_cards/images/000/004/244/original/9876543210abcdef.jpg".into(),
            Some(("preview_cards", "images", true)),
            "orphan",
            "attachment_cleared",
        ),
        // Emoji: remote and local, original + static.
        (
            "cache/custom_emojis/images/000/000/001/original/bbbbbbbbbbbbbbbb.png".into(),
            Some(("custom_emojis", "images", true)),
            "referenced",
            "owned",
        ),
        (
            "cache/custom_emojis/images/000/000/001/static/bbbbbbbbbbbbbbbb.png".into(),
            Some(("custom_emojis", "images", true)),
            "referenced",
            "owned",
        ),
        (
            "custom_emojis/images/000/000/002/original/eeeeeeeeeeeeeeee.png".into(),
            Some(("custom_emojis", "images", false)),
            "referenced",
            "owned",
        ),
        (
            "custom_emojis/images/000/000/002/static/eeeeeeeeeeeeeeee.png".into(),
            Some(("custom_emojis", "images", false)),
            "referenced",
            "owned",
        ),
        // Site upload (thumbnail: @1x, @2x), and a copy under cache/ where none belongs:
        // a local row never stores under cache/, so that copy is stale (issue 9.5).
        (
            "site_uploads/files/000/000/003/original/dddddddddddddddd.png".into(),
            Some(("site_uploads", "files", false)),
            "referenced",
            "owned",
        ),
        (
            "site_uploads/files/000/000/003/@1x/dddddddddddddddd.png".into(),
            Some(("site_uploads", "files", false)),
            "referenced",
            "owned",
        ),
        (
            "site_uploads/files/000/000/003/@2x/dddddddddddddddd.png".into(),
            Some(("site_uploads", "files", false)),
            "referenced",
            "owned",
        ),
        (
            "cache/site_uploads/files/000/000/003/original/dddddddddddddddd.png".into(),
            Some(("site_uploads", "files", true)),
            "stale",
            "not_owned",
        ),
        // Backups (one gone), imports, provider icons.
        (
            "backups/dumps/000/000/001/original/archive-1.zip".into(),
            Some(("backups", "dumps", false)),
            "referenced",
            "owned",
        ),
        (
            "backups/dumps/000/000/002/original/archive-2.zip".into(),
            Some(("backups", "dumps", false)),
            "orphan",
            "row_gone",
        ),
        (
            "imports/data/000/000/001/original/ffffffffffffffff.csv".into(),
            Some(("imports", "data", false)),
            "referenced",
            "owned",
        ),
        (
            "preview_card_providers/icons/000/000/001/original/9999999999999999.png".into(),
            Some(("preview_card_providers", "icons", false)),
            "referenced",
            "owned",
        ),
        // Strangers: never deleted.
        ("robots.txt".into(), None, "unrecognised", "bad_shape"),
        (
            "cache/media_attachments/files/109/original/x.png".into(),
            None,
            "unrecognised",
            "bad_shape",
        ),
        (
            "statuses/files/000/000/001/original/x.png".into(),
            None,
            "unrecognised",
            "unknown_class",
        ),
        (
            "media_attachments/files/000/000/001/original/.well-known/x".into(),
            None,
            "unrecognised",
            "bad_shape",
        ),
    ];
    if s3 {
        v.push((
            "media_attachments/".into(),
            None,
            "unrecognised",
            "directory_marker",
        ));
    }
    v.into_iter()
        .enumerate()
        .map(|(i, (key, cat, class, reason))| Obj {
            key,
            size: 100 + 7 * i,
            cat,
            class,
            reason,
        })
        .collect()
}

/// The 4.6 thumbnail of M5: under cache/ only where the schema has the column.
pub fn thumbnail_obj(thumb_column: bool) -> Obj {
    let cache = if thumb_column { "cache/" } else { "" };
    Obj {
        key: format!(
            "{cache}media_attachments/thumbnails/{}/original/1122334455667789.jpeg",
            p(109345678901234571)
        ),
        size: 4242,
        cat: Some(("media_attachments", "thumbnails", thumb_column)),
        class: "referenced",
        reason: "owned",
    }
}

/// `(db_bytes, db_files)` per line, as `tootctl media usage` sums the seeded rows.
pub fn db_sums(thumb_column: bool) -> BTreeMap<Cat, (i64, i64)> {
    let mut m = BTreeMap::new();
    m.insert(("media_attachments", "files", true), (5 * 1234, 5));
    m.insert(("media_attachments", "files", false), (2 * 1234, 2));
    if thumb_column {
        m.insert(("media_attachments", "thumbnails", true), (321, 1));
        m.insert(("media_attachments", "thumbnails", false), (321, 1));
    } else {
        m.insert(("media_attachments", "thumbnails", true), (0, 0));
        m.insert(("media_attachments", "thumbnails", false), (642, 2));
    }
    m.insert(("accounts", "avatars", true), (500, 1));
    m.insert(("accounts", "avatars", false), (500, 1));
    m.insert(("accounts", "headers", true), (700, 1));
    m.insert(("accounts", "headers", false), (0, 0));
    // insert_card stores a size even for the cleared card: the database says so.
    m.insert(("preview_cards", "images", true), (1800, 1));
    m.insert(("preview_cards", "images", false), (0, 0));
    m.insert(("custom_emojis", "images", true), (100, 1));
    m.insert(("custom_emojis", "images", false), (100, 1));
    m.insert(("site_uploads", "files", false), (2000, 1));
    m.insert(("backups", "dumps", false), (3000, 1));
    m.insert(("imports", "data", false), (50, 1));
    m.insert(("preview_card_providers", "icons", false), (60, 1));
    m
}

/// Puts every object (with `prefix/` in front when given).
pub async fn put_s3(bucket: &TestBucket, objs: &[Obj], prefix: Option<&str>) {
    for o in objs {
        let key = match prefix {
            Some(p) => format!("{p}/{}", o.key),
            None => o.key.clone(),
        };
        bucket.put(&key, &vec![b'x'; o.size]).await;
    }
}

/// Writes every object below `root`, with its mtime `age_days` ago.
pub fn put_fs(root: &Path, objs: &[Obj], age_days: f64) {
    let when =
        std::time::SystemTime::now() - std::time::Duration::from_secs_f64(age_days * 86400.0);
    for o in objs {
        let path = root.join(&o.key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; o.size]).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(when).unwrap();
    }
}
