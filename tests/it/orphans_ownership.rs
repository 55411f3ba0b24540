//! Issue 8, case 1: `orphans --delete` must refuse (exit 3, nothing deleted) whenever the
//! database may not be the owner of the storage: another instance's database, a stale copy
//! missing its newest rows, a copy with almost nothing left. The report-only mode prints
//! the same warning; `--accept-risk <name>` goes on.

use std::collections::BTreeSet;

use mastomedia::plan::layout::{Attachment, KeyPrefix, StoredAttachment};
use serde_json::Value;

use crate::support::seed::{Media, insert_account, insert_media};
use crate::support::{Mastodon, Run, TestBucket, TestDb, mastomedia, s3_env_file, temp_dir};

/// Rows of the seeded instance.
const ROWS: i64 = 40;

/// A Mastodon snowflake id minted `days_ago` (mastodon-storage.md §2: ms << 16 | seq).
fn snowflake(days_ago: f64, seq: i64) -> i64 {
    let ms = chrono::Utc::now().timestamp_millis() - (days_ago * 86_400_000.0) as i64;
    (ms << 16) | seq
}

/// One media row of the world: every fourth is a local upload, the rest cached remote
/// copies; ids grow with `i` (row 0 is the oldest, 30 days old).
fn row(i: i64) -> Media {
    let days = 30.0 - i as f64 * 0.7;
    let id = snowflake(days, i);
    let name = format!("{:016x}.png", 0xabc0_0000 + i);
    if i % 4 == 0 {
        Media::local(id, &name, days)
    } else {
        Media::remote(id, &name, days)
    }
}

/// The keys of a row (original and small), as Mastodon lays them out.
fn keys_of(m: &Media) -> Vec<String> {
    StoredAttachment {
        attachment: Attachment::MediaFile,
        id: m.id,
        file_name: m.file_name.as_deref().unwrap(),
        content_type: m.content_type.as_deref(),
        storage_schema_version: m.version,
        remote: !m.remote_url.is_empty(),
        site_upload_var: None,
    }
    .keys(&KeyPrefix::default())
    .into_iter()
    .map(|k| k.as_str().to_owned())
    .collect()
}

/// A bucket holding the objects of all [`ROWS`] rows; returns the rows (oldest first).
async fn full_bucket(bucket: &TestBucket) -> Vec<Media> {
    let rows: Vec<Media> = (0..ROWS).map(row).collect();
    for m in &rows {
        for k in keys_of(m) {
            bucket.put(&k, b"media bytes").await;
        }
    }
    rows
}

async fn insert_rows(db: &TestDb, rows: &[Media]) {
    for m in rows {
        insert_media(db, m).await;
    }
}

fn orphans(env: &std::path::Path, journal: &std::path::Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "--env-file",
        env.to_str().unwrap(),
        "orphans",
        "--journal",
        journal.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    mastomedia(&args)
}

fn risks(report: &Value) -> BTreeSet<String> {
    report["ownership_findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no ownership_findings in {report}"))
        .iter()
        .map(|f| f["risk"].as_str().unwrap().to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Asserts a refused run: exit 3, the refusal names the flags, nothing was sent that
/// changes the bucket, and every object is still there.
async fn assert_refused(run: &Run, bucket: &TestBucket, before: &BTreeSet<String>) -> Value {
    assert_eq!(
        run.code, 3,
        "a refused run exits 3\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let refused = report["refused"].as_str().unwrap_or_default();
    assert!(refused.contains("--accept-risk"), "{report}");
    assert!(refused.contains("Nothing was deleted"), "{refused}");
    assert!(
        run.stderr.contains("may not be the owner"),
        "{}",
        run.stderr
    );
    assert_eq!(bucket.stats()["mutating"], 0, "{}", bucket.stats());
    assert_eq!(&bucket.keys().await, before);
    report
}

#[tokio::test]
async fn case1_another_instances_database_with_one_local_account_is_refused() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    insert_account(&db, 1, None, None, None, None, 1.0, 1.0).await;
    let bucket = TestBucket::new().await;
    full_bucket(&bucket).await;
    let before = bucket.keys().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let dir = temp_dir("own1");
    let journal = dir.join("j.sqlite");
    bucket.reset_stats();

    let run = orphans(&env, &journal, &["--delete", "--min-age", "0"]);
    let report = assert_refused(&run, &bucket, &before).await;
    assert!(risks(&report).contains("no-stored-files"), "{report}");

    // The report-only mode prints the same warning (exit 0).
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "orphans",
        "--journal",
        journal.to_str().unwrap(),
        "--min-age",
        "0",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("WARNING (no-stored-files, --delete would refuse)"),
        "{}",
        run.stdout
    );
    assert_eq!(bucket.keys().await, before);
    db.drop_db().await;
}

#[tokio::test]
async fn case1_stale_copy_missing_its_newest_quarter_is_refused() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Auckland").await;
    let bucket = TestBucket::new().await;
    let rows = full_bucket(&bucket).await;
    // A restored backup: the newest quarter of the media rows is missing.
    let kept = &rows[..(ROWS as usize * 3 / 4)];
    insert_rows(&db, kept).await;
    let before = bucket.keys().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let dir = temp_dir("own2");
    let journal = dir.join("j.sqlite");
    bucket.reset_stats();

    let run = orphans(&env, &journal, &["--delete", "--min-age", "0"]);
    let report = assert_refused(&run, &bucket, &before).await;
    assert_eq!(
        risks(&report),
        set(&["newer-keys", "large-share", "local-keys"]),
        "{report}"
    );
    assert_eq!(report["ownership"]["newer_keys"], 20, "{report}");
    assert_eq!(report["deleted"]["objects"], 20, "what would have gone");

    // Report only: the same signs, as warnings.
    let run = orphans(&env, &journal, &["--min-age", "0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        risks(&run.json()),
        set(&["newer-keys", "large-share", "local-keys"])
    );

    // A dry run says the same and deletes nothing.
    let run = orphans(&env, &journal, &["--delete", "--dry-run", "--min-age", "0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["refused"], Value::Null);
    assert_eq!(risks(&run.json()).len(), 3);
    assert_eq!(bucket.stats()["mutating"], 0);

    // Accepting only some of the risks is still refused...
    let run = orphans(
        &env,
        &journal,
        &["--delete", "--min-age", "0", "--accept-risk", "newer-keys"],
    );
    assert_refused(&run, &bucket, &before).await;

    // ...naming all of them goes on, and deletes exactly the missing rows' objects.
    let run = orphans(
        &env,
        &journal,
        &[
            "--delete",
            "--min-age",
            "0",
            "--accept-risk",
            "newer-keys",
            "--accept-risk",
            "large-share",
            "--accept-risk",
            "local-keys",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["deleted"]["objects"], 20, "{report}");
    let gone: BTreeSet<String> = rows[kept.len()..].iter().flat_map(keys_of).collect();
    let left = bucket.keys().await;
    assert_eq!(left, before.difference(&gone).cloned().collect());
    db.drop_db().await;
}

#[tokio::test]
async fn case1_copy_with_one_media_row_left_is_refused() {
    let db = TestDb::new(Mastodon::V4_2, "America/Adak").await;
    let bucket = TestBucket::new().await;
    let rows = full_bucket(&bucket).await;
    // Only the newest row is left: no key is above its id, but almost everything would go.
    insert_rows(&db, &rows[rows.len() - 1..]).await;
    let before = bucket.keys().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let dir = temp_dir("own3");
    let journal = dir.join("j.sqlite");
    bucket.reset_stats();

    let run = orphans(&env, &journal, &["--delete", "--min-age", "0"]);
    let report = assert_refused(&run, &bucket, &before).await;
    assert_eq!(
        risks(&report),
        set(&["large-share", "local-keys"]),
        "{report}"
    );
    assert!(
        report["refused"]
            .as_str()
            .unwrap()
            .contains("78 of the 80 objects scanned (97.5 %)"),
        "{report}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn case1_healthy_instance_deletes_its_few_cached_orphans_without_flags() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let rows = full_bucket(&bucket).await;
    // Every row but one remote row in the middle (deleted by Mastodon, its files left
    // behind by a failed batch delete): 2 of 80 objects are orphans, under cache/.
    let gone = &rows[5];
    assert!(!gone.remote_url.is_empty());
    for (i, m) in rows.iter().enumerate() {
        if i != 5 {
            insert_media(&db, m).await;
        }
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let dir = temp_dir("own4");
    let journal = dir.join("j.sqlite");
    let before = bucket.keys().await;

    let run = orphans(&env, &journal, &["--delete", "--min-age", "0"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["refused"], Value::Null);
    assert_eq!(report["ownership_findings"], serde_json::json!([]));
    assert_eq!(report["deleted"]["objects"], 2, "{report}");
    let expected: BTreeSet<String> = before
        .difference(&keys_of(gone).into_iter().collect())
        .cloned()
        .collect();
    assert_eq!(bucket.keys().await, expected);
    db.drop_db().await;
}

/// Issue 9, case 5 (and the replaced local avatar of issue 8, case 3): copies that are
/// surely not a row's file are stale copies, not "referenced": a local account's avatar
/// under `cache/` (a local row never stores there), a local avatar replaced since (another
/// file name), and a video's `small/` stored as `.mp4` where Mastodon writes `.png`.
/// `--include-stale` removes them (with `--accept-risk local-keys` for the one outside
/// `cache/`); the row's own files stay.
#[tokio::test]
async fn case9_5_stale_copies_of_local_rows_and_wrong_style_copies_are_found_and_removed() {
    let db = TestDb::new(Mastodon::V4_6, "Asia/Kolkata").await;
    let bucket = TestBucket::new().await;
    let rows = full_bucket(&bucket).await;
    insert_rows(&db, &rows).await;
    // A local account (serial id 7) whose avatar is 1111….png.
    insert_account(
        &db,
        7,
        None,
        Some(("1111111111111111.png", "image/png")),
        None,
        None,
        1.0,
        1.0,
    )
    .await;
    let avatar = "accounts/avatars/000/000/007/original/1111111111111111.png";
    let avatar_static = "accounts/avatars/000/000/007/static/1111111111111111.png";
    let cached_copy = "cache/accounts/avatars/000/000/007/original/1111111111111111.png";
    let replaced = "accounts/avatars/000/000/007/original/0000000000000007.png";
    // A remote video row: its files, and a copy of the original under small/.
    let mut video = Media::remote(snowflake(3.0, 77), "0a1b2c3d4e5f6071.mp4", 3.0);
    video.content_type = Some("video/mp4".into());
    insert_media(&db, &video).await;
    let video_keys = keys_of(&video);
    let wrong_style = video_keys[0].replace("/original/", "/small/");
    assert!(
        video_keys.iter().all(|k| *k != wrong_style),
        "{video_keys:?}"
    );
    for k in [
        avatar,
        avatar_static,
        cached_copy,
        replaced,
        wrong_style.as_str(),
    ]
    .into_iter()
    .chain(video_keys.iter().map(String::as_str))
    {
        bucket.put(k, b"bytes").await;
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let dir = temp_dir("stale95");
    let journal = dir.join("j.sqlite");

    let run = orphans(&env, &journal, &["--min-age", "0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    let stale: BTreeSet<String> = report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["class"] == "stale")
        .map(|k| k["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stale,
        set(&[cached_copy, replaced, wrong_style.as_str()]),
        "{report}"
    );
    assert_eq!(report["orphans"]["objects"], 0, "{report}");

    let before = bucket.keys().await;
    let run = orphans(
        &env,
        &journal,
        &[
            "--delete",
            "--include-stale",
            "--min-age",
            "0",
            "--accept-risk",
            "local-keys",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let left = bucket.keys().await;
    let want: BTreeSet<String> = before.difference(&stale).cloned().collect();
    assert_eq!(left, want);
    assert!(left.contains(avatar) && left.contains(avatar_static));
    db.drop_db().await;
}

/// Issue 8, case 4 for orphans: when the session holding the `orphans` advisory lock ends
/// mid-run, `orphans --delete` stops before its next delete (exit 3) instead of going on
/// without the lock.
#[tokio::test]
async fn case4_orphans_stops_when_its_lock_session_ends() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    // 200 cached orphans (their rows are gone) and one live row.
    let keep = row(39);
    insert_media(&db, &keep).await;
    for k in keys_of(&keep) {
        bucket.put(&k, b"kept").await;
    }
    for i in 0..200 {
        let m = Media::remote(snowflake(20.0, 1000 + i), &format!("{:016x}.png", i), 20.0);
        bucket.put(&keys_of(&m)[0], b"orphan").await;
    }
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "10")]);
    let dir = temp_dir("own-lock");
    let journal = dir.join("j.sqlite");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mastomedia"));
    cmd.args([
        "--env-file",
        env.to_str().unwrap(),
        "orphans",
        "--journal",
        journal.to_str().unwrap(),
        "--delete",
        "--min-age",
        "0",
        "--accept-risk",
        "large-share",
        "--rate",
        "4",
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("MASTOMEDIA_STATUS_INTERVAL", "3600")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn mastomedia");
    // Wait until deleting is under way, then end the lock session.
    let started = std::time::Instant::now();
    while bucket.keys().await.len() > 190 {
        assert!(
            started.elapsed().as_secs() < 60,
            "no delete within a minute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let killed: bool = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&db.pool)
    .await
    .expect("terminate the lock session");
    assert!(killed);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("advisory lock"), "{stdout}");
    let left = bucket.keys().await;
    assert!(
        left.len() > 100,
        "stopped long before the end: {} left",
        left.len()
    );
    for k in keys_of(&keep) {
        assert!(left.contains(&k));
    }
    db.drop_db().await;
}
