//! `mastomedia prune` end to end: real PostgreSQL (non-UTC time zone), real S3 server on
//! loopback through the SigV4-checking proxy, and the filesystem backend.

use std::collections::BTreeSet;

use crate::support::seed::{
    Media, insert_account, insert_card, insert_emoji, insert_media, insert_status, media_names,
    set_media_retention,
};
use crate::support::{
    Mastodon, TestBucket, TestDb, fs_env_file, mastomedia, s3_env_file, temp_dir,
};

const P18: &str = "109/345/678/901/234/567";

/// The seeded world shared by the S3 and filesystem end-to-end tests. Returns the keys
/// that must be gone after the prune and those that must survive.
struct World {
    gone: BTreeSet<String>,
    kept: BTreeSet<String>,
}

async fn seed_world(db: &TestDb, thumb_column: bool) -> World {
    let mut gone = BTreeSet::new();
    let mut kept = BTreeSet::new();
    insert_account(db, 1, Some("remote.example"), None, None, Some(1), 1.0, 1.0).await;
    insert_status(db, 500, 1, false).await;

    // 1. Remote image, schema 1, 30 days old, attached to a status: both styles go.
    let mut m = Media::remote(109345678901234567, "8f3a2b1c4d5e6f70.png", 30.0);
    m.status_id = Some(500);
    insert_media(db, &m).await;
    gone.insert(format!(
        "cache/media_attachments/files/{P18}/original/8f3a2b1c4d5e6f70.png"
    ));
    gone.insert(format!(
        "cache/media_attachments/files/{P18}/small/8f3a2b1c4d5e6f70.png"
    ));

    // 2. Legacy row (schema version NULL): keys without cache/.
    let mut m = Media::remote(109345678901234568, "aaaaaaaaaaaaaaa1.jpeg", 30.0);
    m.version = None;
    m.content_type = Some("image/jpeg".into());
    insert_media(db, &m).await;
    let p = "109/345/678/901/234/568";
    gone.insert(format!(
        "media_attachments/files/{p}/original/aaaaaaaaaaaaaaa1.jpeg"
    ));
    gone.insert(format!(
        "media_attachments/files/{p}/small/aaaaaaaaaaaaaaa1.jpeg"
    ));

    // 3. Remote video with a pre-4.6 thumbnail (no cache/ for the thumbnail).
    let mut m = Media::remote(109345678901234569, "0a1b2c3d4e5f6071.mp4", 30.0);
    m.content_type = Some("video/mp4".into());
    m.thumb_name = Some("1122334455667788.jpeg".into());
    insert_media(db, &m).await;
    let p = "109/345/678/901/234/569";
    gone.insert(format!(
        "cache/media_attachments/files/{p}/original/0a1b2c3d4e5f6071.mp4"
    ));
    gone.insert(format!(
        "cache/media_attachments/files/{p}/small/0a1b2c3d4e5f6071.png"
    ));
    gone.insert(format!(
        "media_attachments/thumbnails/{p}/original/1122334455667788.jpeg"
    ));

    // 4. 4.6 thumbnail with thumbnail_storage_schema_version 1: under cache/.
    if thumb_column {
        let mut m = Media::remote(109345678901234570, "0a1b2c3d4e5f6072.mp4", 30.0);
        m.content_type = Some("video/mp4".into());
        m.thumb_name = Some("1122334455667789.jpeg".into());
        m.thumb_version = Some(1);
        insert_media(db, &m).await;
        let p = "109/345/678/901/234/570";
        gone.insert(format!(
            "cache/media_attachments/files/{p}/original/0a1b2c3d4e5f6072.mp4"
        ));
        gone.insert(format!(
            "cache/media_attachments/files/{p}/small/0a1b2c3d4e5f6072.png"
        ));
        gone.insert(format!(
            "cache/media_attachments/thumbnails/{p}/original/1122334455667789.jpeg"
        ));
    }

    // 5. File already pruned, thumbnail leaked by tootctl: the thumbnail goes.
    let mut m = Media::remote(109345678901234571, "unused", 30.0);
    m.file_name = None;
    m.content_type = None;
    m.thumb_name = Some("2222333344445555.jpeg".into());
    insert_media(db, &m).await;
    gone.insert(
        "media_attachments/thumbnails/109/345/678/901/234/571/original/2222333344445555.jpeg"
            .into(),
    );

    // 6. A 17-digit id: its partition folder also holds a neighbour's object, which survives.
    insert_media(
        db,
        &Media::remote(99999999999999998, "bbbbbbbbbbbbbbb1.png", 30.0),
    )
    .await;
    gone.insert(
        "cache/media_attachments/files/999/999/999/999/999/original/bbbbbbbbbbbbbbb1.png".into(),
    );
    gone.insert(
        "cache/media_attachments/files/999/999/999/999/999/small/bbbbbbbbbbbbbbb1.png".into(),
    );
    kept.insert(
        "cache/media_attachments/files/999/999/999/999/999/original/cccccccccccccc99.png".into(),
    );

    // 7. Local media, old: never touched.
    insert_media(
        db,
        &Media::local(109345678901234572, "dddddddddddddddd.png", 300.0),
    )
    .await;
    kept.insert(
        "media_attachments/files/109/345/678/901/234/572/original/dddddddddddddddd.png".into(),
    );
    kept.insert(
        "media_attachments/files/109/345/678/901/234/572/small/dddddddddddddddd.png".into(),
    );

    // 8. Recent remote media (2 days): kept.
    insert_media(
        db,
        &Media::remote(109345678901234573, "eeeeeeeeeeeeeeee.png", 2.0),
    )
    .await;
    kept.insert(
        "cache/media_attachments/files/109/345/678/901/234/573/original/eeeeeeeeeeeeeeee.png"
            .into(),
    );
    kept.insert(
        "cache/media_attachments/files/109/345/678/901/234/573/small/eeeeeeeeeeeeeeee.png".into(),
    );

    // 9. Just inside / outside the 7-day cutoff: the database runs in a far-from-UTC zone,
    //    a cutoff computed in local time would shift by half a day.
    insert_media(
        db,
        &Media::remote(109345678901234574, "ffffffffffffff01.png", 7.0 - 0.25),
    )
    .await;
    kept.insert(
        "cache/media_attachments/files/109/345/678/901/234/574/original/ffffffffffffff01.png"
            .into(),
    );
    kept.insert(
        "cache/media_attachments/files/109/345/678/901/234/574/small/ffffffffffffff01.png".into(),
    );
    insert_media(
        db,
        &Media::remote(109345678901234575, "ffffffffffffff02.png", 7.0 + 0.25),
    )
    .await;
    gone.insert(
        "cache/media_attachments/files/109/345/678/901/234/575/original/ffffffffffffff02.png"
            .into(),
    );
    gone.insert(
        "cache/media_attachments/files/109/345/678/901/234/575/small/ffffffffffffff02.png".into(),
    );

    // 10. Local account avatar, remote emoji, local emoji: never touched by media pruning.
    insert_account(
        db,
        123456789,
        None,
        Some(("aaaaaaaaaaaaaaaa.gif", "image/gif")),
        None,
        Some(1),
        900.0,
        900.0,
    )
    .await;
    kept.insert("accounts/avatars/123/456/789/original/aaaaaaaaaaaaaaaa.gif".into());
    kept.insert("accounts/avatars/123/456/789/static/aaaaaaaaaaaaaaaa.png".into());
    insert_emoji(db, 1, Some("remote.example"), "bbbbbbbbbbbbbbbb.png").await;
    kept.insert("cache/custom_emojis/images/000/000/001/original/bbbbbbbbbbbbbbbb.png".into());
    insert_emoji(db, 2, None, "bbbbbbbbbbbbbbbc.png").await;
    kept.insert("custom_emojis/images/000/000/002/original/bbbbbbbbbbbbbbbc.png".into());

    // 11. Objects no row refers to: never touched.
    kept.insert(
        "cache/media_attachments/files/109/345/678/901/234/599/original/0000000000000000.png"
            .into(),
    );
    kept.insert("robots.txt".into());

    World { gone, kept }
}

async fn seed_objects_s3(bucket: &TestBucket, world: &World) {
    for k in world.gone.iter().chain(&world.kept) {
        bucket.put(k, format!("bytes of {k}").as_bytes()).await;
    }
}

fn seed_objects_fs(root: &std::path::Path, world: &World) {
    for k in world.gone.iter().chain(&world.kept) {
        let p = root.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("bytes of {k}")).unwrap();
    }
}

fn fs_keys(root: &std::path::Path) -> BTreeSet<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

async fn assert_rows_cleared(db: &TestDb) {
    // Cleared exactly as tootctl: eight columns NULL, remote_url and the rest kept.
    let row: serde_json::Value = sqlx::query_scalar(
        "SELECT row_to_json(m) FROM media_attachments m WHERE id = 109345678901234567",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    for col in [
        "file_file_name",
        "file_content_type",
        "file_file_size",
        "file_updated_at",
        "thumbnail_file_name",
        "thumbnail_content_type",
        "thumbnail_file_size",
        "thumbnail_updated_at",
    ] {
        assert!(row[col].is_null(), "{col} cleared: {row}");
    }
    assert_eq!(
        row["remote_url"],
        "https://remote.example/media/109345678901234567.png"
    );
    assert_eq!(row["blurhash"], "LEHV6nWB2yk8");
    assert_eq!(row["description"], "a description");
    assert_eq!(row["file_storage_schema_version"], 1, "schema version kept");
    assert_eq!(row["status_id"], 500, "status kept");
    let bumped: bool = sqlx::query_scalar(
        "SELECT updated_at > (now() AT TIME ZONE 'UTC') - interval '1 hour' FROM media_attachments WHERE id = 109345678901234567",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(bumped, "updated_at = now (UTC), as the CLI does");
    // Kept rows still name their files.
    for id in [
        109345678901234572_i64,
        109345678901234573,
        109345678901234574,
    ] {
        assert!(media_names(db, id).await.0.is_some(), "row {id} untouched");
    }
}

#[tokio::test]
async fn prune_s3_deletes_exactly_the_keys_of_selected_rows() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let bucket = TestBucket::new().await;
    let world = seed_world(&db, true).await;
    seed_objects_s3(&bucket, &world).await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();

    let run = mastomedia(&["--env-file", env, "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["days"], 7);
    assert_eq!(report["days_source"], "default");
    let media = &report["passes"][0];
    assert_eq!(media["pass"], "media");
    assert_eq!(media["rows_cleared"], 7, "{report:#}");
    assert_eq!(media["objects_deleted"], world.gone.len() as u64);
    assert_eq!(media["objects_failed"], 0);
    assert_eq!(media["rows_attached_to_statuses"], 1);

    let left = bucket.keys().await;
    assert_eq!(left, world.kept, "exactly the selected rows' keys are gone");
    assert_rows_cleared(&db).await;

    // A second run finds nothing and sends no delete.
    bucket.reset_stats();
    let again = mastomedia(&["--env-file", env, "prune", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.json()["passes"][0]["rows_selected"], 0);
    assert_eq!(bucket.stats()["mutating"], 0);
    assert_eq!(bucket.keys().await, world.kept);
    db.drop_db().await;
}

#[tokio::test]
async fn prune_fs_deletes_files_and_empty_folders_only() {
    let db = TestDb::new(Mastodon::V4_6, "America/Los_Angeles").await;
    let root = temp_dir("system");
    let world = seed_world(&db, true).await;
    seed_objects_fs(&root, &world);
    let env = fs_env_file(&db, &root);

    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_eq!(run.json()["passes"][0]["rows_cleared"], 7);
    assert_eq!(fs_keys(&root), world.kept);
    // The emptied partition folders are gone; the shared 17-digit one stays (neighbour).
    assert!(
        !root
            .join(format!("cache/media_attachments/files/{P18}"))
            .exists()
    );
    assert!(
        root.join("cache/media_attachments/files/999/999/999/999/999/original")
            .exists()
    );
    assert!(root.join("cache/media_attachments/files").exists());
    assert_rows_cleared(&db).await;
    db.drop_db().await;
}

/// Review finding F1: a `DATABASE_URL` of one instance with the storage of another (a
/// staging copy, a typo in `S3_BUCKET`). Every candidate's objects are missing there, so
/// without the ownership check prune would report them "already gone" and clear rows
/// whose files live elsewhere. Real and dry runs refuse with exit 3, on S3 and on the
/// filesystem, changing no row and sending no mutating request.
#[tokio::test]
async fn prune_refuses_a_database_that_owns_nothing_in_the_storage() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let world = seed_world(&db, true).await;
    // The other instance's files: same layout, ids this database has never seen.
    let foreign = [
        "cache/media_attachments/files/110/000/000/000/000/001/original/ffffffffffffffff.png",
        "cache/media_attachments/files/110/000/000/000/000/001/small/ffffffffffffffff.png",
        "media_attachments/files/110/000/000/000/000/002/original/eeeeeeeeeeeeeeee.jpeg",
    ];
    let stored = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM media_attachments WHERE file_file_name IS NOT NULL",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let rows_before = stored().await;
    assert!(rows_before >= 7, "the world has candidates");

    let bucket = TestBucket::new().await;
    for k in foreign {
        bucket.put(k, b"theirs").await;
    }
    let root = temp_dir("system");
    for k in foreign {
        let p = root.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"theirs").unwrap();
    }
    let s3_env = s3_env_file(&db, &bucket.name, &[]);
    let fs_env = fs_env_file(&db, &root);
    for env in [&s3_env, &fs_env] {
        for dry in [true, false] {
            bucket.reset_stats();
            let mut args = vec!["--env-file", env.to_str().unwrap(), "prune"];
            if dry {
                args.push("--dry-run");
            }
            let run = mastomedia(&args);
            assert_eq!(
                run.code, 3,
                "{args:?}\nstdout:\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            );
            assert!(
                run.stderr.contains("do not belong to the same instance")
                    && run.stderr.contains("DATABASE_URL"),
                "the refusal says what to check: {}",
                run.stderr
            );
            assert_eq!(stored().await, rows_before, "{args:?}: no row cleared");
            assert_eq!(bucket.stats()["mutating"], 0, "{args:?}");
        }
    }
    assert_eq!(
        bucket.keys().await,
        foreign
            .iter()
            .map(|k| k.to_string())
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        fs_keys(&root),
        foreign
            .iter()
            .map(|k| k.to_string())
            .collect::<BTreeSet<_>>()
    );
    // With the right storage the same database prunes as usual, also with credentials
    // that may list and delete but not read objects (no s3:GetObject): the check lists.
    let right = TestBucket::new().await;
    seed_objects_s3(&right, &world).await;
    right.faults(serde_json::json!({
        "error_rate": { "rate": 1.0, "codes": ["AccessDenied"], "ops": ["HeadObject", "GetObject"] }
    }));
    let run = mastomedia(&[
        "--env-file",
        s3_env_file(&db, &right.name, &[]).to_str().unwrap(),
        "prune",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["passes"][0]["rows_cleared"], 7);
    db.drop_db().await;
}

/// The partition folder of a snowflake id (18 digits: six groups of three).
fn snowflake_partition(id: i64) -> String {
    let d = id.to_string();
    d.as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("/")
}

/// Review finding: a staging copy (or an old restore) of production's database, pointed
/// at production's bucket, passes the newest-files check (its newest files are
/// production's). The bucket holding the files of 10 or more media rows more than a day
/// newer than the database's newest row gives it away: exit 3, nothing changed. A few
/// such files (orphans of failed uploads) do not.
#[tokio::test]
async fn prune_refuses_an_older_copy_of_the_database_on_the_live_bucket() {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let id_at = |ms: i64| ms << 16;
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let copied_ms = now_ms - 20 * 86_400_000;
    let old = id_at(copied_ms);
    insert_media(&db, &Media::remote(old, "8f3a2b1c4d5e6f70.png", 20.0)).await;
    let own: Vec<String> = ["original", "small"]
        .iter()
        .map(|s| {
            format!(
                "cache/media_attachments/files/{}/{s}/8f3a2b1c4d5e6f70.png",
                snowflake_partition(old)
            )
        })
        .collect();
    for (newer_rows, refused) in [(12_i64, true), (3, false)] {
        let bucket = TestBucket::new().await;
        for k in &own {
            bucket.put(k, b"ours").await;
        }
        // The live instance went on: files of rows from 2 days after the copy on.
        for i in 0..newer_rows {
            let id = id_at(copied_ms + 2 * 86_400_000 + i * 3_600_000);
            bucket
                .put(
                    &format!(
                        "cache/media_attachments/files/{}/original/{:016x}.png",
                        snowflake_partition(id),
                        i
                    ),
                    b"theirs",
                )
                .await;
        }
        let before = bucket.keys().await;
        let env = s3_env_file(&db, &bucket.name, &[]);
        for dry in [true, false] {
            bucket.reset_stats();
            let mut args = vec!["--env-file", env.to_str().unwrap(), "prune", "--days", "7"];
            if dry {
                args.push("--dry-run");
            }
            let run = mastomedia(&args);
            if refused {
                assert_eq!(run.code, 3, "{args:?}\n{}\n{}", run.stdout, run.stderr);
                assert!(
                    run.stderr.contains("older copy") && run.stderr.contains("DATABASE_URL"),
                    "{}",
                    run.stderr
                );
                assert_eq!(bucket.stats()["mutating"], 0);
                assert_eq!(bucket.keys().await, before);
                assert!(media_names(&db, old).await.0.is_some(), "row untouched");
            } else {
                assert_eq!(run.code, 0, "{args:?}\n{}\n{}", run.stdout, run.stderr);
            }
        }
        if !refused {
            assert_eq!(media_names(&db, old).await.0, None, "pruned as usual");
            for k in &own {
                assert!(!bucket.keys().await.contains(k));
            }
        }
    }
    db.drop_db().await;
}

#[tokio::test]
async fn prune_on_4_2_uses_the_retention_setting_and_legacy_thumbnails() {
    let db = TestDb::new(Mastodon::V4_2, "Asia/Tokyo").await;
    let bucket = TestBucket::new().await;
    let world = seed_world(&db, false).await;
    seed_objects_s3(&bucket, &world).await;
    // 20 days: rows at 30 days go, the ±7-day rows stay.
    set_media_retention(&db, "--- 20\n").await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["days"], 20);
    assert_eq!(r["days_source"], "instance_setting");
    let mut expect_left = world.kept.clone();
    expect_left.insert(
        "cache/media_attachments/files/109/345/678/901/234/575/original/ffffffffffffff02.png"
            .into(),
    );
    expect_left.insert(
        "cache/media_attachments/files/109/345/678/901/234/575/small/ffffffffffffff02.png".into(),
    );
    assert_eq!(bucket.keys().await, expect_left);
    db.drop_db().await;
}

/// A run killed between the unlink of a file and the removal of its emptied folders left
/// those folders behind; the re-run finds the file already gone. It still removes the
/// emptied folders (inside the root only), and leaves a folder that holds anything else.
#[tokio::test]
async fn fs_already_gone_files_still_have_their_emptied_folders_removed() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let root = temp_dir("system");
    insert_media(
        &db,
        &Media::remote(109345678901234567, "8f3a2b1c4d5e6f70.png", 30.0),
    )
    .await;
    insert_media(
        &db,
        &Media::remote(109345678901234568, "0123456789abcdef.png", 30.0),
    )
    .await;
    // The newest upload, so the ownership check finds the storage is this instance's.
    let live = root.join("media_attachments/files/109/345/678/901/234/999/original/live.png");
    std::fs::create_dir_all(live.parent().unwrap()).unwrap();
    std::fs::write(&live, b"png").unwrap();
    insert_media(&db, &Media::local(109345678901234999, "live.png", 0.0)).await;
    // Row 567: both files gone, their style folders left empty by the killed run.
    let gone = root.join(format!("cache/media_attachments/files/{P18}"));
    for style in ["original", "small"] {
        std::fs::create_dir_all(gone.join(style)).unwrap();
    }
    // Row 568: original gone (empty folder), small still there.
    let half = root.join("cache/media_attachments/files/109/345/678/901/234/568");
    std::fs::create_dir_all(half.join("original")).unwrap();
    std::fs::create_dir_all(half.join("small")).unwrap();
    std::fs::write(half.join("small/0123456789abcdef.png"), b"x").unwrap();
    let env = fs_env_file(&db, &root);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let media = &run.json()["passes"][0];
    assert_eq!(media["rows_cleared"], 2, "{media:#}");
    assert_eq!(media["objects_already_gone"], 3, "{media:#}");
    assert!(
        !gone.exists(),
        "the emptied partition folder of row 567 is removed"
    );
    assert!(!half.exists(), "row 568's folders are removed once empty");
    assert!(live.exists(), "the local upload stays");
    assert!(root.exists(), "the root itself stays");
    assert!(
        root.join("media_attachments/files").exists(),
        "a folder that still holds a file stays"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn objects_already_missing_still_clear_the_row() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    let bucket = TestBucket::new().await;
    insert_media(
        &db,
        &Media::remote(109345678901234567, "8f3a2b1c4d5e6f70.png", 30.0),
    )
    .await;
    // Only the original exists; small is already gone.
    bucket
        .put(
            &format!("cache/media_attachments/files/{P18}/original/8f3a2b1c4d5e6f70.png"),
            b"x",
        )
        .await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let p = &run.json()["passes"][0];
    assert_eq!(p["objects_deleted"], 1);
    assert_eq!(p["objects_already_gone"], 1);
    assert_eq!(p["rows_cleared"], 1);
    assert_eq!(
        p["bytes_freed"], 1,
        "freed bytes come from the listing, not the database"
    );
    assert_eq!(media_names(&db, 109345678901234567).await.0, None);
    db.drop_db().await;
}

#[tokio::test]
async fn dry_run_sends_no_mutating_request_and_changes_no_row() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let bucket = TestBucket::new().await;
    let world = seed_world(&db, true).await;
    seed_objects_s3(&bucket, &world).await;
    insert_card(&db, 4242, Some("cccccccccccccccc.jpg"), 400.0).await;
    let before = db.dump("media_attachments").await;
    let before_cards = db.dump("preview_cards").await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    bucket.reset_stats();
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--dry-run",
        "--preview-cards",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["dry_run"], true);
    assert_eq!(
        r["passes"][0]["rows_cleared"], 7,
        "dry run reports what would be cleared"
    );
    assert_eq!(r["passes"][0]["objects_deleted"], world.gone.len() as u64);
    let stats = bucket.stats();
    assert_eq!(stats["mutating"], 0, "{stats}");
    assert!(
        stats["total"].as_u64().unwrap() > 0,
        "the dry run did list to size"
    );
    assert_eq!(db.dump("media_attachments").await, before);
    assert_eq!(db.dump("preview_cards").await, before_cards);
    let all: BTreeSet<String> = world.gone.union(&world.kept).cloned().collect();
    assert_eq!(bucket.keys().await, all);
    db.drop_db().await;
}

#[tokio::test]
async fn keep_interacted_keeps_media_of_bookmarked_and_favourited_posts() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    insert_account(
        &db,
        1,
        Some("remote.example"),
        None,
        None,
        Some(1),
        1.0,
        1.0,
    )
    .await;
    insert_account(&db, 2, None, None, None, Some(1), 1.0, 1.0).await;
    for s in [501, 502, 503, 504] {
        insert_status(&db, s, 1, false).await;
    }
    sqlx::query("INSERT INTO bookmarks (account_id, status_id, created_at, updated_at) VALUES (2, 501, now(), now())")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO favourites (account_id, status_id, created_at, updated_at) VALUES (2, 502, now(), now())")
        .execute(&db.pool)
        .await
        .unwrap();
    // A favourite by a remote account does not protect.
    sqlx::query("INSERT INTO favourites (account_id, status_id, created_at, updated_at) VALUES (1, 503, now(), now())")
        .execute(&db.pool)
        .await
        .unwrap();
    for (i, s) in [501_i64, 502, 503, 504].iter().enumerate() {
        let mut m = Media::remote(
            109345678901234500 + i as i64,
            &format!("000000000000000{i}.png"),
            30.0,
        );
        m.status_id = Some(*s);
        insert_media(&db, &m).await;
        // The bucket holds the files, as a real one does: prune refuses a database none of
        // whose newest files is in the storage (the ownership check).
        bucket
            .put(
                &format!(
                    "cache/media_attachments/files/109/345/678/901/234/50{i}/original/000000000000000{i}.png"
                ),
                b"png",
            )
            .await;
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--keep-interacted",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["passes"][0]["rows_cleared"], 2);
    assert!(
        media_names(&db, 109345678901234500).await.0.is_some(),
        "bookmarked kept"
    );
    assert!(
        media_names(&db, 109345678901234501).await.0.is_some(),
        "locally favourited kept"
    );
    assert!(media_names(&db, 109345678901234502).await.0.is_none());
    assert!(media_names(&db, 109345678901234503).await.0.is_none());
    db.drop_db().await;
}

#[tokio::test]
async fn profiles_and_preview_cards_follow_tootctl_rules() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let bucket = TestBucket::new().await;
    // Stale remote account: avatar (GIF: original + static) and header go.
    insert_account(
        &db,
        11,
        Some("remote.example"),
        Some(("aaaaaaaaaaaaaaa1.gif", "image/gif")),
        Some(("aaaaaaaaaaaaaaa2.png", "image/png")),
        Some(1),
        40.0,
        40.0,
    )
    .await;
    // Stale, but followed by someone: kept without --include-follows.
    insert_account(
        &db,
        12,
        Some("remote.example"),
        Some(("aaaaaaaaaaaaaaa3.png", "image/png")),
        None,
        Some(1),
        40.0,
        40.0,
    )
    .await;
    // Recently webfingered: kept.
    insert_account(
        &db,
        13,
        Some("remote.example"),
        Some(("aaaaaaaaaaaaaaa4.png", "image/png")),
        None,
        Some(1),
        1.0,
        40.0,
    )
    .await;
    // Local account: never.
    insert_account(
        &db,
        14,
        None,
        Some(("aaaaaaaaaaaaaaa5.png", "image/png")),
        None,
        Some(1),
        400.0,
        400.0,
    )
    .await;
    sqlx::query("INSERT INTO follows (account_id, target_account_id, created_at, updated_at) VALUES (14, 12, now(), now())")
        .execute(&db.pool)
        .await
        .unwrap();
    // Cards: 200 days old goes, 100 days old stays (default 180 days).
    insert_card(&db, 4242, Some("cccccccccccccccc.jpg"), 200.0).await;
    insert_card(&db, 4243, Some("cccccccccccccccd.jpg"), 100.0).await;
    let keys = [
        "cache/accounts/avatars/000/000/011/original/aaaaaaaaaaaaaaa1.gif",
        "cache/accounts/avatars/000/000/011/static/aaaaaaaaaaaaaaa1.png",
        "cache/accounts/headers/000/000/011/original/aaaaaaaaaaaaaaa2.png",
        "cache/accounts/avatars/000/000/012/original/aaaaaaaaaaaaaaa3.png",
        "cache/accounts/avatars/000/000/013/original/aaaaaaaaaaaaaaa4.png",
        "accounts/avatars/000/000/014/original/aaaaaaaaaaaaaaa5.png",
        "cache/preview_cards/images/000/004/242/original/cccccccccccccccc.jpg",
        "cache/preview_cards/images/000/004/243/original/cccccccccccccccd.jpg",
    ];
    for k in keys {
        bucket.put(k, b"img").await;
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--days",
        "30",
        "--prune-profiles",
        "--preview-cards",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["passes"][1]["pass"], "profiles");
    assert_eq!(r["passes"][1]["rows_cleared"], 1);
    assert_eq!(r["passes"][2]["pass"], "preview_cards");
    assert_eq!(r["passes"][2]["rows_cleared"], 1);
    let left = bucket.keys().await;
    let want: BTreeSet<String> = [keys[3], keys[4], keys[5], keys[7]]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(left, want);
    let acct: (Option<String>, Option<String>, Option<String>, String) = sqlx::query_as(
        "SELECT avatar_file_name, header_file_name, avatar_remote_url, header_remote_url FROM accounts WHERE id = 11",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((acct.0, acct.1), (None, None));
    assert_eq!(
        acct.2.as_deref(),
        Some("https://remote.example/avatar.png"),
        "remote URLs kept"
    );
    let card: (Option<String>, i64) = sqlx::query_as(
        "SELECT image_file_name, count(*) OVER () FROM preview_cards WHERE id = 4242",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(card.0, None, "image cleared, the card row stays");
    db.drop_db().await;
}

/// Issue 8 case 5, S3: a hostile `file_file_name` with `..` segments. Its keys are never
/// sent (neither in `DeleteObjects` nor on the request line of the single-delete
/// fallback, where a server that normalises dot segments would delete another object);
/// the row is left as it is and listed; other rows, also with reserved characters in
/// their names, are pruned as usual through the fallback.
#[tokio::test]
async fn case5_s3_keys_with_dot_segments_never_reach_the_server() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    // Another account's avatar: what the hostile name climbs to (10 segments up from
    // `original/` of an 18-digit partition under cache/ is the bucket root).
    let victim = "accounts/avatars/000/000/001/original/victim.png";
    bucket.put(victim, b"an avatar").await;
    let hostile_id = 109345678901234567;
    let hostile = format!("{}{victim}", "../".repeat(10));
    insert_media(&db, &Media::remote(hostile_id, &hostile, 30.0)).await;
    // The hostile row's own would-be keys exist literally too (S3 allows any key).
    for style in ["original", "small"] {
        bucket
            .put(
                &format!("cache/media_attachments/files/{P18}/{style}/{hostile}"),
                b"literal",
            )
            .await;
    }
    // Two ordinary rows, one with reserved characters that the fallback must encode.
    let plain_id = 109345678901234568;
    let odd_id = 109345678901234569;
    let odd_name = "a+b c%41;é=?#.png";
    insert_media(&db, &Media::remote(plain_id, "0123456789abcdef.png", 30.0)).await;
    insert_media(&db, &Media::remote(odd_id, odd_name, 30.0)).await;
    let mut ordinary = BTreeSet::new();
    for (p, name) in [
        ("109/345/678/901/234/568", "0123456789abcdef.png"),
        ("109/345/678/901/234/569", odd_name),
    ] {
        for style in ["original", "small"] {
            let k = format!("cache/media_attachments/files/{p}/{style}/{name}");
            bucket.put(&k, b"cached").await;
            ordinary.insert(k);
        }
    }
    let before_hostile = row_text(&db, hostile_id).await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();

    // A provider without multi-object delete, fronted by a dot-segment normaliser.
    bucket.faults(serde_json::json!({
        "multi_delete_not_implemented": true,
        "normalize_dot_segments": true,
    }));
    bucket.reset_stats();
    let run = mastomedia(&["--env-file", env, "prune", "--json"]);
    let left = bucket.keys().await;
    assert!(
        left.contains(victim),
        "the victim object was deleted through the hostile key\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(
        row_text(&db, hostile_id).await,
        before_hostile,
        "row untouched"
    );
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_cleared"], 2, "{report:#}");
    assert_eq!(media["rows_failed"], 1, "{report:#}");
    let failures = media["failures"].as_array().expect("failures listed");
    assert_eq!(
        failures.len(),
        2,
        "both styles of the hostile row: {report:#}"
    );
    for f in failures {
        assert_eq!(f["id"], hostile_id, "{f}");
        assert_eq!(f["code"], "InvalidKey", "{f}");
    }
    let stats = bucket.stats();
    let sent: Vec<&str> = stats["delete_keys"]
        .as_array()
        .expect("delete_keys")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert!(
        sent.iter()
            .all(|k| !k.split('/').any(|s| s == ".." || s == ".")),
        "a key with dot segments was sent: {sent:?}"
    );
    assert_eq!(sent.len(), 4, "one DeleteObject per ordinary key: {stats}");
    for k in &ordinary {
        assert!(
            !left.contains(k),
            "{k} was pruned (fallback encodes the key)"
        );
    }
    assert_eq!(media_names(&db, plain_id).await.0, None);
    assert_eq!(media_names(&db, odd_id).await.0, None);

    // A dry run reports the row as failed and sends nothing mutating.
    bucket.reset_stats();
    let dry = mastomedia(&["--env-file", env, "prune", "--dry-run", "--json"]);
    assert_eq!(
        dry.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        dry.stdout, dry.stderr
    );
    assert_eq!(dry.json()["passes"][0]["rows_failed"], 1, "{}", dry.stdout);
    assert_eq!(bucket.stats()["mutating"], 0);

    // With multi-object delete the key is not put into DeleteObjects either.
    bucket.faults(serde_json::json!({}));
    bucket.reset_stats();
    let again = mastomedia(&["--env-file", env, "prune", "--json"]);
    assert_eq!(
        again.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        again.stdout, again.stderr
    );
    assert_eq!(bucket.stats()["mutating"], 0, "{}", bucket.stats());
    assert!(bucket.keys().await.contains(victim));
    assert_eq!(row_text(&db, hostile_id).await, before_hostile);
    db.drop_db().await;
}

async fn row_text(db: &TestDb, id: i64) -> String {
    sqlx::query_scalar("SELECT row_to_json(m)::text FROM media_attachments m WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("media row")
}

/// Issue 8 case 5, filesystem: a partition folder inside the root that is a symlink to a
/// folder outside it, and a file that is a symlink to a file outside. Prune deletes
/// nothing outside the root, removes no folder there, and leaves both rows as they are.
#[tokio::test]
async fn case5_fs_symlinks_out_of_the_root_are_never_followed() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let root = temp_dir("system");
    let outside = temp_dir("outside");
    // Row A: its partition folder is a symlink to `outside/part`.
    let a_id = 109345678901234567;
    let part = outside.join("part");
    for style in ["original", "small"] {
        std::fs::create_dir_all(part.join(style)).unwrap();
        std::fs::write(part.join(style).join("aaaaaaaaaaaaaaaa.png"), b"not ours").unwrap();
    }
    let link = root.join(format!("cache/media_attachments/files/{P18}"));
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&part, &link).unwrap();
    insert_media(&db, &Media::remote(a_id, "aaaaaaaaaaaaaaaa.png", 30.0)).await;
    // Row B: a real folder, but its original is a symlink to a file outside.
    let b_id = 109345678901234568;
    let b_dir = root.join("cache/media_attachments/files/109/345/678/901/234/568");
    std::fs::create_dir_all(b_dir.join("original")).unwrap();
    std::fs::write(outside.join("victim.png"), b"not ours either").unwrap();
    std::os::unix::fs::symlink(
        outside.join("victim.png"),
        b_dir.join("original/bbbbbbbbbbbbbbbb.png"),
    )
    .unwrap();
    insert_media(&db, &Media::remote(b_id, "bbbbbbbbbbbbbbbb.png", 30.0)).await;
    // Row C: ordinary, pruned as usual.
    let c_id = 109345678901234569;
    let c_dir = root.join("cache/media_attachments/files/109/345/678/901/234/569");
    for style in ["original", "small"] {
        std::fs::create_dir_all(c_dir.join(style)).unwrap();
        std::fs::write(c_dir.join(style).join("cccccccccccccccc.png"), b"cached").unwrap();
    }
    insert_media(&db, &Media::remote(c_id, "cccccccccccccccc.png", 30.0)).await;
    let (before_a, before_b) = (row_text(&db, a_id).await, row_text(&db, b_id).await);
    let env = fs_env_file(&db, &root);

    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    for style in ["original", "small"] {
        assert!(
            part.join(style).is_dir(),
            "folder {style} outside the root was removed\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        assert!(
            part.join(style).join("aaaaaaaaaaaaaaaa.png").exists(),
            "{style} outside the root was deleted"
        );
    }
    assert!(
        outside.join("victim.png").exists(),
        "the symlink's target was deleted"
    );
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_cleared"], 1, "{report:#}");
    assert_eq!(media["rows_failed"], 2, "{report:#}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the partition symlink is left for the admin"
    );
    assert_eq!(row_text(&db, a_id).await, before_a, "row A untouched");
    assert_eq!(row_text(&db, b_id).await, before_b, "row B untouched");
    assert_eq!(media_names(&db, c_id).await.0, None, "row C cleared");
    assert!(
        !c_dir.exists(),
        "row C's emptied partition folder is removed"
    );
    let failures = media["failures"].as_array().expect("failures listed");
    assert!(
        failures.iter().all(|f| f["code"] == "InvalidKey"),
        "{report:#}"
    );
    // Review finding F7: the refusal names the key as the admin sees it, not a Rust
    // debug form (`ObjectKey("…")`).
    for f in failures {
        let message = f["message"].as_str().expect("a message");
        assert!(
            message.contains("refusing key \"cache/") && !message.contains("ObjectKey("),
            "{f}"
        );
    }
    db.drop_db().await;
}
