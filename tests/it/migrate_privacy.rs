//! Issue 8, cases 2 and 3: `migrate` must not publish what Mastodon made private, and must
//! not bring back what Mastodon deleted. Real moto buckets (ACLs read back with
//! GetObjectAcl), real files with real modes, a real PostgreSQL database where the case
//! needs one.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aws_sdk_s3::types::ObjectCannedAcl;

use super::migrate::{
    CACHE_CONTROL, JPEG, PNG, acl, bytes, env_file, get, journal, migrate, ops, s, write_file,
};
use crate::support::seed::{Media, insert_account, insert_media, insert_status};
use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file, temp_dir};

/// Puts `body` at `key` as "another tool" would: `binary/octet-stream`, no Cache-Control,
/// and `acl` (None: the bucket default, private).
async fn put_with(bucket: &TestBucket, key: &str, body: &[u8], acl: Option<ObjectCannedAcl>) {
    bucket
        .client
        .put_object()
        .bucket(&bucket.name)
        .key(key)
        .content_type("binary/octet-stream")
        .set_acl(acl)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

fn chmod(root: &Path, key: &str, mode: u32) {
    std::fs::set_permissions(root.join(key), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets `media_attachments.account_id` (the seed helper leaves it NULL).
async fn set_media_account(db: &TestDb, media: i64, account: i64) {
    sqlx::query("UPDATE media_attachments SET account_id = $2 WHERE id = $1")
        .bind(media)
        .bind(account)
        .execute(&db.pool)
        .await
        .unwrap();
}

/// A local media row `id` attached to `status` (None: unattached) of `account`.
async fn media_row(db: &TestDb, id: i64, name: &str, status: Option<i64>, account: i64) {
    let mut m = Media::local(id, name, 1.0);
    m.status_id = status;
    insert_media(db, &m).await;
    set_media_account(db, id, account).await;
}

fn local_key(id: i64, name: &str) -> String {
    let digits = format!("{id:09}");
    format!(
        "media_attachments/files/{}/{}/{}/original/{name}",
        &digits[0..3],
        &digits[3..6],
        &digits[6..9]
    )
}

/// Keys outside Mastodon's layout that an admin keeps private in the media bucket.
const PRIVATE_NON_LAYOUT: [&str; 3] = [
    "private-notes/secret.txt",
    "db-dump.sql.gz",
    "exports/2024/followers.csv",
];

#[tokio::test]
async fn case2_repair_acl_keeps_non_layout_private() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    insert_account(&db, 7, None, None, None, Some(1), 1.0, 1.0).await;
    media_row(&db, 5, "5555555555555555.png", None, 7).await;
    let good = local_key(5, "5555555555555555.png");
    // In the layout, but no row has this id: nothing says it may be public.
    let no_row = local_key(77, "7777777777777777.png");
    put_with(&bucket, &good, &bytes(PNG, &good, 300), None).await;
    put_with(&bucket, &no_row, &bytes(PNG, &no_row, 300), None).await;
    for k in PRIVATE_NON_LAYOUT {
        put_with(&bucket, k, &bytes(b"secret", k, 200), None).await;
    }
    // Outside the layout but public: stays public (its headers are still repaired).
    put_with(
        &bucket,
        "robots.txt",
        b"User-agent: *\n",
        Some(ObjectCannedAcl::PublicRead),
    )
    .await;
    let env = s3_env_file(&db, &bucket.name, &[]);

    let r = migrate(&env, &journal(), &["--repair", "--repair-acl"], 0);
    assert_eq!(r["repair_checked"], 6, "{r:#}");
    assert!(acl(&bucket, &good).await, "media of a row in good standing");
    assert!(
        !acl(&bucket, &no_row).await,
        "{no_row}: no row, stays private"
    );
    for k in PRIVATE_NON_LAYOUT {
        assert!(
            !acl(&bucket, k).await,
            "{k}: outside the layout, stays private"
        );
    }
    assert!(acl(&bucket, "robots.txt").await, "public stays public");
    assert_eq!(
        get(&bucket, "robots.txt").await.cache_control.as_deref(),
        Some(CACHE_CONTROL)
    );
    assert_eq!(r["left_private"], 4, "{r:#}");
    db.drop_db().await;
}

/// Found by review after the first fix: `--repair-acl` judged an object by the rows of its
/// folder, not by its file name, so a private file no row names (another name in a local
/// account's folder; an unrelated name in a 17-digit partition shared with a live row) was
/// published. Only a row that names the file vouches for it.
#[tokio::test]
async fn case2_repair_acl_publishes_only_files_a_row_names() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    insert_account(
        &db,
        993,
        None,
        Some(("55b594690785b89e.jpg", "image/jpeg")),
        None,
        None,
        1.0,
        1.0,
    )
    .await;
    let avatar = "accounts/avatars/000/000/993/original/55b594690785b89e.jpg";
    let not_the_avatar = "accounts/avatars/000/000/993/original/ffffffffffffffff.jpg";
    // A 17-digit id: its partition is shared with up to 99 neighbours (§3.4).
    insert_account(&db, 7, None, None, None, Some(1), 1.0, 1.0).await;
    media_row(&db, 98424980176896130, "1111111111111111.jpg", None, 7).await;
    let shared_unowned =
        "media_attachments/files/984/249/801/768/961/original/0123456789abcdef.jpg";
    for k in [avatar, not_the_avatar, shared_unowned] {
        put_with(&bucket, k, &bytes(PNG, k, 300), None).await;
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let r = migrate(&env, &journal(), &["--repair", "--repair-acl"], 0);
    assert!(acl(&bucket, avatar).await, "the row's own avatar: {r:#}");
    assert!(
        !acl(&bucket, not_the_avatar).await,
        "no row names {not_the_avatar}: stays private"
    );
    assert!(
        !acl(&bucket, shared_unowned).await,
        "no row names {shared_unowned}: stays private"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn case2_moderated_post_media_stays_private() {
    let db = TestDb::new(Mastodon::V4_2, "UTC").await;
    let bucket = TestBucket::new().await;
    insert_account(&db, 7, None, None, None, Some(1), 1.0, 1.0).await;
    insert_status(&db, 900, 7, true).await;
    insert_status(&db, 901, 7, true).await;
    // A moderator removed post 900 (4.4+ hides its media; soft-deleted in the database).
    sqlx::query("UPDATE statuses SET deleted_at = now() WHERE id = 900")
        .execute(&db.pool)
        .await
        .unwrap();
    media_row(&db, 6, "6666666666666666.png", Some(900), 7).await;
    media_row(&db, 8, "8888888888888888.png", Some(901), 7).await;
    let moderated = local_key(6, "6666666666666666.png");
    let kept = local_key(8, "8888888888888888.png");
    put_with(&bucket, &moderated, &bytes(PNG, &moderated, 300), None).await;
    put_with(&bucket, &kept, &bytes(PNG, &kept, 300), None).await;
    let env = s3_env_file(&db, &bucket.name, &[]);

    let r = migrate(&env, &journal(), &["--repair", "--repair-acl"], 0);
    assert!(acl(&bucket, &kept).await, "{r:#}");
    assert!(
        !acl(&bucket, &moderated).await,
        "media of a moderated post stays private: {r:#}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn case2_bucket_copy_keeps_source_acl() {
    let source = TestBucket::new().await;
    let target = TestBucket::new().await;
    let public_media = local_key(5, "5555555555555555.png");
    // Mastodon made the suspended account's avatar and media private in the old bucket.
    let suspended_avatar = "accounts/avatars/000/000/042/original/4242424242424242.png";
    let suspended_media = local_key(43, "4343434343434343.jpeg");
    let mut private: Vec<String> = PRIVATE_NON_LAYOUT.iter().map(|k| k.to_string()).collect();
    private.push(suspended_avatar.to_owned());
    private.push(suspended_media.clone());
    private.push("backups/dumps/000/000/001/original/archive.zip".to_owned());
    for k in &private {
        put_with(
            &source,
            k,
            &bytes(JPEG, k, 400),
            Some(ObjectCannedAcl::Private),
        )
        .await;
    }
    let public = [public_media.clone(), "robots.txt".to_owned()];
    for k in &public {
        put_with(
            &source,
            k,
            &bytes(PNG, k, 400),
            Some(ObjectCannedAcl::PublicRead),
        )
        .await;
    }
    let source_env = env_file(&source.name, &[]);
    let target_env = env_file(&target.name, &[]);

    let r = migrate(&target_env, &journal(), &["--from-env", s(&source_env)], 0);
    assert_eq!(
        r["files_uploaded"],
        (private.len() + public.len()) as u64,
        "{r:#}"
    );
    let mut published = Vec::new();
    for k in &private {
        if acl(&target, k).await {
            published.push(k.clone());
        }
    }
    assert!(
        published.is_empty(),
        "{} of {} private objects arrived public-read: {published:?}",
        published.len(),
        private.len()
    );
    for k in &public {
        assert!(
            acl(&target, k).await,
            "{k}: public at the source, public here"
        );
    }
}

#[tokio::test]
async fn case2_bucket_copy_without_source_acl_is_private() {
    let source = TestBucket::new().await;
    let target = TestBucket::new().await;
    let key = local_key(5, "5555555555555555.png");
    put_with(
        &source,
        &key,
        &bytes(PNG, &key, 400),
        Some(ObjectCannedAcl::PublicRead),
    )
    .await;
    // The old provider cannot answer GetObjectAcl: nothing proves the object was public.
    source.faults(serde_json::json!({"acl_not_implemented": true}));
    let source_env = env_file(&source.name, &[]);
    let target_env = env_file(&target.name, &[]);
    let r = migrate(&target_env, &journal(), &["--from-env", s(&source_env)], 0);
    assert_eq!(r["files_uploaded"], 1, "{r:#}");
    assert_eq!(r["source_acl_unreadable"], 1, "{r:#}");
    assert!(!acl(&target, &key).await, "unknown source ACL: private");
}

#[tokio::test]
async fn case2_folder_copy_keeps_unreadable_private() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let readable = local_key(5, "5555555555555555.png");
    let suspended = "accounts/avatars/000/000/042/original/4242424242424242.png";
    for k in [readable.as_str(), suspended, "robots.txt"]
        .into_iter()
        .chain(PRIVATE_NON_LAYOUT)
    {
        write_file(&root, k, &bytes(PNG, k, 300));
    }
    // Mastodon chmods the files of a suspended account to 0600; the admin's own files too.
    chmod(&root, suspended, 0o600);
    for k in PRIVATE_NON_LAYOUT {
        chmod(&root, k, 0o600);
    }
    let env = env_file(&bucket.name, &[]);
    let journal = journal();

    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], 6, "{r:#}");
    assert!(acl(&bucket, &readable).await);
    assert!(acl(&bucket, "robots.txt").await);
    assert!(
        !acl(&bucket, suspended).await,
        "0600 at the source: private"
    );
    for k in PRIVATE_NON_LAYOUT {
        assert!(!acl(&bucket, k).await, "{k}: 0600 at the source: private");
    }

    // During the migration window the first account is suspended (0600) and the second
    // unsuspended (0644): the catch-up pass carries both changes, mtimes untouched.
    chmod(&root, &readable, 0o600);
    chmod(&root, suspended, 0o644);
    bucket.reset_stats();
    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], 2, "{r:#}");
    assert_eq!(ops(&bucket.stats(), "PutObject"), 2);
    assert!(!acl(&bucket, &readable).await, "suspended since the copy");
    assert!(acl(&bucket, suspended).await, "unsuspended since the copy");
}

#[tokio::test]
async fn case2_folder_copy_with_database_keeps_hidden_media_private() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    insert_account(&db, 7, None, None, None, Some(1), 1.0, 1.0).await;
    insert_account(
        &db,
        42,
        None,
        Some(("4242424242424242.png", "image/png")),
        None,
        Some(1),
        1.0,
        1.0,
    )
    .await;
    sqlx::query("UPDATE accounts SET suspended_at = now() WHERE id = 42")
        .execute(&db.pool)
        .await
        .unwrap();
    insert_status(&db, 900, 7, true).await;
    sqlx::query("UPDATE statuses SET deleted_at = now() WHERE id = 900")
        .execute(&db.pool)
        .await
        .unwrap();
    media_row(&db, 6, "6666666666666666.png", Some(900), 7).await;
    media_row(&db, 8, "8888888888888888.png", None, 7).await;
    let moderated = local_key(6, "6666666666666666.png");
    let kept = local_key(8, "8888888888888888.png");
    let suspended = "accounts/avatars/000/000/042/original/4242424242424242.png";
    // Still world-readable on disk (e.g. Mastodon on an object store before, or a
    // chmod that never happened): the database says they are hidden.
    for k in [moderated.as_str(), kept.as_str(), suspended] {
        write_file(&root, k, &bytes(PNG, k, 300));
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let r = migrate(&env, &journal(), &["--from", s(&root), "--database"], 0);
    assert_eq!(r["files_uploaded"], 3, "{r:#}");
    assert!(acl(&bucket, &kept).await);
    assert!(!acl(&bucket, &moderated).await, "moderated post: private");
    assert!(!acl(&bucket, suspended).await, "suspended account: private");
    db.drop_db().await;
}
/// Local rows A and B with their files on disk, copied; then Mastodon, already switched to
/// the bucket, deletes B (object and row) while the old copy stays on disk.
struct Window {
    db: TestDb,
    bucket: TestBucket,
    root: std::path::PathBuf,
    env: std::path::PathBuf,
    journal: std::path::PathBuf,
    a: String,
    b: String,
}

async fn copied_then_b_deleted_in_the_bucket() -> Window {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    insert_account(&db, 7, None, None, None, Some(1), 1.0, 1.0).await;
    media_row(&db, 11, "aaaaaaaaaaaaaaaa.jpg", None, 7).await;
    media_row(&db, 12, "bbbbbbbbbbbbbbbb.jpg", None, 7).await;
    let a = local_key(11, "aaaaaaaaaaaaaaaa.jpg");
    let b = local_key(12, "bbbbbbbbbbbbbbbb.jpg");
    write_file(&root, &a, &bytes(JPEG, &a, 500));
    write_file(&root, &b, &bytes(JPEG, &b, 600));
    let env = s3_env_file(&db, &bucket.name, &[]);
    let journal = journal();
    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], 2, "{r:#}");
    // Switched; Mastodon deletes B: its object, then its row.
    bucket
        .client
        .delete_object()
        .bucket(&bucket.name)
        .key(&b)
        .send()
        .await
        .unwrap();
    sqlx::query("DELETE FROM media_attachments WHERE id = 12")
        .execute(&db.pool)
        .await
        .unwrap();
    Window {
        db,
        bucket,
        root,
        env,
        journal,
        a,
        b,
    }
}

#[tokio::test]
async fn case3_catch_up_never_resurrects_bucket_deletion() {
    let w = copied_then_b_deleted_in_the_bucket().await;
    let root = s(&w.root);
    let r = migrate(&w.env, &w.journal, &["--from", root, "--verify"], 0);
    assert_eq!(r["verify_mismatches"], 0, "{r:#}");
    // The next plain catch-up pass: nothing uploaded, B stays deleted.
    w.bucket.reset_stats();
    let r = migrate(&w.env, &w.journal, &["--from", root], 0);
    assert_eq!(r["files_uploaded"], 0, "{r:#}");
    assert_eq!(w.bucket.stats()["mutating"], 0);
    assert!(
        !w.bucket.keys().await.contains(&w.b),
        "B is not resurrected"
    );
    // Only an explicit --reupload-missing puts it back.
    let r = migrate(
        &w.env,
        &w.journal,
        &["--from", root, "--reupload-missing"],
        0,
    );
    assert_eq!(r["files_uploaded"], 1, "{r:#}");
    assert!(w.bucket.keys().await.contains(&w.b));
    let r = migrate(&w.env, &w.journal, &["--from", root, "--verify"], 0);
    assert_eq!(r["deleted_in_bucket"], 0, "{r:#}");
    assert_eq!(r["verified"], 2, "{r:#}");
    w.db.drop_db().await;
}

/// Found by review after the first fix: the journal is the only memory of the copy, so a
/// run with another journal (another user's default one, a lost one) uploaded B again, and
/// so did a run after the source file was merely touched (new mtime, same bytes). A run
/// whose empty journal meets a bucket that already holds the files refuses; a changed
/// source never brings back what is gone from the bucket.
#[tokio::test]
async fn case3_new_journal_or_touched_source_never_resurrects() {
    let w = copied_then_b_deleted_in_the_bucket().await;
    let root = s(&w.root);
    // A new journal: refused before anything is uploaded.
    let fresh = journal();
    w.bucket.reset_stats();
    let run = mastomedia(&[
        "--env-file",
        s(&w.env),
        "migrate",
        "--journal",
        s(&fresh),
        "--from",
        root,
    ]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("knows nothing of this target")
            && run.stderr.contains("--accept-empty-journal"),
        "{}",
        run.stderr
    );
    assert_eq!(w.bucket.stats()["mutating"], 0);
    assert!(!w.bucket.keys().await.contains(&w.b));
    // The right journal, after `touch` on B's source (same bytes, new mtime): B stays gone
    // and is reported as deleted in the bucket.
    let path = w.root.join(&w.b);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let r = migrate(&w.env, &w.journal, &["--from", root], 0);
    assert_eq!(r["files_uploaded"], 0, "{r:#}");
    assert_eq!(r["deleted_in_bucket"], 1, "{r:#}");
    assert!(
        !w.bucket.keys().await.contains(&w.b),
        "B is not resurrected"
    );
    // The explicit flag names the risk and does upload what is missing.
    let r = migrate(
        &w.env,
        &fresh,
        &["--from", root, "--accept-empty-journal"],
        0,
    );
    assert_eq!(r["files_uploaded"], 2, "{r:#}");
    w.db.drop_db().await;
}

#[tokio::test]
async fn case3_verify_reports_deleted_since_copy() {
    let w = copied_then_b_deleted_in_the_bucket().await;
    let run = mastomedia(&[
        "--env-file",
        s(&w.env),
        "migrate",
        "--journal",
        s(&w.journal),
        "--from",
        s(&w.root),
        "--verify",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("deleted in the bucket since the copy") && run.stdout.contains(&w.b),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("FAILED"), "{}", run.stdout);
    let r = migrate(&w.env, &w.journal, &["--from", s(&w.root), "--verify"], 0);
    assert_eq!(r["deleted_in_bucket"], 1, "{r:#}");
    assert_eq!(r["deleted_in_bucket_keys"], serde_json::json!([w.b]));
    assert_eq!(r["verified"], 2);
    assert_eq!(r["verify_mismatches"], 0);
    let _ = &w.a;
    w.db.drop_db().await;
}

#[tokio::test]
async fn case3_verify_with_database_owes_only_files_whose_rows_remain() {
    let w = copied_then_b_deleted_in_the_bucket().await;
    // A is deleted in the bucket too, but its row still names it: Mastodon links to a
    // missing object, which is owed.
    w.bucket
        .client
        .delete_object()
        .bucket(&w.bucket.name)
        .key(&w.a)
        .send()
        .await
        .unwrap();
    let r = migrate(
        &w.env,
        &w.journal,
        &["--from", s(&w.root), "--verify", "--database"],
        1,
    );
    assert_eq!(r["verify_mismatches"], 1, "{r:#}");
    assert_eq!(r["failures"][0]["key"], w.a.as_str(), "{r:#}");
    assert!(
        r["failures"][0]["message"]
            .as_str()
            .unwrap()
            .contains("--reupload-missing"),
        "{r:#}"
    );
    assert_eq!(
        r["deleted_in_bucket_keys"],
        serde_json::json!([w.b]),
        "{r:#}"
    );
    // --reupload-missing with the database puts back only A (B's row is gone).
    let r = migrate(
        &w.env,
        &w.journal,
        &["--from", s(&w.root), "--reupload-missing", "--database"],
        0,
    );
    assert_eq!(r["files_uploaded"], 1, "{r:#}");
    let keys = w.bucket.keys().await;
    assert!(keys.contains(&w.a) && !keys.contains(&w.b), "{keys:?}");
    w.db.drop_db().await;
}

#[tokio::test]
async fn case3_replaced_local_avatar_hint_lists_keys() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let old = "accounts/avatars/000/000/001/original/1111111111111111.png";
    let new = "accounts/avatars/000/000/001/original/2222222222222222.png";
    write_file(&root, old, &bytes(PNG, old, 300));
    let env = env_file(&bucket.name, &[]);
    let journal = journal();
    migrate(&env, &journal, &["--from", s(&root)], 0);
    // The local account changes its avatar during the migration window.
    std::fs::remove_file(root.join(old)).unwrap();
    write_file(&root, new, &bytes(PNG, new, 300));
    let run = mastomedia(&[
        "--env-file",
        s(&env),
        "migrate",
        "--journal",
        s(&journal),
        "--from",
        s(&root),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let rm = format!("s3 rm 's3://{}/{old}'", bucket.name);
    assert!(
        run.stdout.contains(old) && run.stdout.contains(&rm),
        "the exact key and the command that removes it:\n{}",
        run.stdout
    );
    let hint = "orphans --delete --include-stale --accept-risk local-keys";
    assert!(
        run.stdout.contains(hint),
        "names the orphans command that removes it:\n{}",
        run.stdout
    );
    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(
        r["deleted_at_source_keys"],
        serde_json::json!([old]),
        "{r:#}"
    );
    assert!(bucket.keys().await.contains(old));

    // The hint is true: with Mastodon's database (account 1 is local and stores the new
    // avatar), that orphans command removes the old key and keeps the new one.
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    insert_account(
        &db,
        1,
        None,
        Some(("2222222222222222.png", "image/png")),
        None,
        None,
        1.0,
        1.0,
    )
    .await;
    let env_db = s3_env_file(&db, &bucket.name, &[]);
    let orphans_journal = temp_dir("orphans-j").join("j.sqlite");
    let mut args = vec![
        "--env-file",
        s(&env_db),
        "orphans",
        "--journal",
        s(&orphans_journal),
        "--min-age",
        "0",
    ];
    args.extend(hint.split(' ').skip(1));
    // This bucket holds two objects, so the one stale copy is half of it: accepted here.
    args.extend(["--max-share", "100"]);
    let run = mastomedia(&args);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let keys = bucket.keys().await;
    assert!(!keys.contains(old), "{keys:?}\n{}", run.stdout);
    assert!(keys.contains(new), "{keys:?}");
    db.drop_db().await;
}
