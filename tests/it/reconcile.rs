//! Issue 14, item 3: `mastomedia reconcile [--apply]`, on S3 (the real S3 server on
//! loopback) and on the filesystem, with real PostgreSQL: rows with a missing original, a
//! missing `small` only, a missing thumbnail, a remote avatar and a local header gone;
//! local rows reported and never cleared; `--apply` twice is idempotent; a run SIGKILLed
//! while clearing is finished by the next one; the wrong storage and "most rows missing"
//! are refused (exit 3) with nothing changed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::backend::Backend;
use crate::support::seed::{Media, insert_account, insert_media, media_names};
use crate::support::{
    Mastodon, TestBucket, TestDb, mastomedia, partition18, s3_env_file, temp_dir,
};

const BASE: i64 = 109_345_678_901_240_000;

fn media_key(cache: bool, attachment: &str, id: i64, style: &str, name: &str) -> String {
    format!(
        "{}media_attachments/{attachment}/{}/{style}/{name}",
        if cache { "cache/" } else { "" },
        partition18(id)
    )
}

/// The newest upload: a local image whose file is there (the ownership check's sample),
/// older than reconcile's default --min-age of a day, so it is checked too.
async fn live(db: &TestDb, store: &Backend) {
    let id = BASE + 900_000;
    insert_media(db, &Media::local(id, "1234567890abcdef.png", 1.5)).await;
    for style in ["original", "small"] {
        store
            .put(
                &media_key(false, "files", id, style, "1234567890abcdef.png"),
                b"png",
            )
            .await;
    }
}

fn n(o: i64) -> String {
    format!("{:016x}.png", 0xc0_0000 + o)
}

/// Offsets: 1 complete, 2 original missing, 3 `small` missing, 4 thumbnail missing (remote
/// media); 5 a local image whose original is gone; account 3 (remote) with its avatar gone,
/// account 4 (local) with its header gone.
async fn seed(db: &TestDb, store: &Backend) {
    live(db, store).await;
    for o in 1..=4 {
        let mut m = Media::remote(BASE + o, &n(o), 3.0);
        if o == 4 {
            m.thumb_name = Some("fedcba9876543210.jpeg".into());
        }
        insert_media(db, &m).await;
        if o != 2 {
            store
                .put(&media_key(true, "files", BASE + o, "original", &n(o)), b"o")
                .await;
        }
        if o != 3 {
            store
                .put(&media_key(true, "files", BASE + o, "small", &n(o)), b"s")
                .await;
        }
    }
    // The 4.6 schema's thumbnail version stays NULL: a prefix-less thumbnail key, absent.
    insert_media(db, &Media::local(BASE + 5, &n(5), 3.0)).await;
    store
        .put(&media_key(false, "files", BASE + 5, "small", &n(5)), b"s")
        .await;
    insert_account(
        db,
        3,
        Some("remote.example"),
        Some(("aaaaaaaaaaaaaaaa.png", "image/png")),
        None,
        Some(1),
        1.0,
        1.0,
    )
    .await;
    insert_account(
        db,
        4,
        None,
        None,
        Some(("bbbbbbbbbbbbbbbb.png", "image/png")),
        Some(1),
        1.0,
        1.0,
    )
    .await;
}

fn reconcile(db: &TestDb, store: &Backend, args: &[&str]) -> serde_json::Value {
    let env = store.env(db);
    let mut all = vec!["--env-file", env.to_str().unwrap(), "reconcile", "--json"];
    all.extend_from_slice(args);
    let run = mastomedia(&all);
    assert_eq!(run.code, 0, "{args:?}\n{}\n{}", run.stdout, run.stderr);
    run.json()
}

fn category<'a>(s: &'a serde_json::Value, name: &str, remote: bool) -> &'a serde_json::Value {
    s[if remote { "remote" } else { "local" }]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == name)
        .unwrap_or_else(|| panic!("no {name} {remote} in {s}"))
}

async fn account_names(db: &TestDb, id: i64) -> (Option<String>, Option<String>) {
    sqlx::query_as("SELECT avatar_file_name, header_file_name FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn dump_all(db: &TestDb) -> (Vec<String>, Vec<String>) {
    (
        db.dump("media_attachments").await,
        db.dump("accounts").await,
    )
}

async fn finds_reports_and_clears_only_remote_rows(store: Backend) {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Auckland").await;
    seed(&db, &store).await;
    let before = dump_all(&db).await;
    let objects = store.keys().await;

    let report = reconcile(&db, &store, &[]);
    assert_eq!(report["apply"], false);
    assert_eq!(report["rows_checked"], 8, "{report}");
    assert_eq!(report["rows_missing"], 6, "{report}");
    let m = category(&report, "media_attachments", true);
    assert_eq!(
        (
            &m["rows_checked"],
            &m["rows_missing"],
            &m["missing_original"],
            &m["missing_styles_only"],
            &m["missing_thumbnail"]
        ),
        (&4.into(), &3.into(), &1.into(), &1.into(), &1.into()),
        "{report}"
    );
    let l = category(&report, "media_attachments", false);
    assert_eq!(
        (
            &l["rows_checked"],
            &l["rows_missing"],
            &l["missing_original"]
        ),
        (&2.into(), &1.into(), &1.into())
    );
    assert_eq!(category(&report, "avatars", true)["rows_missing"], 1);
    assert_eq!(category(&report, "headers", false)["rows_missing"], 1);
    let lost: Vec<i64> = report["lost_local"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(lost, vec![BASE + 5, 4], "{report}");
    // Without --apply: the counts of what --apply would do, nothing changed.
    let would: u64 = report["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows_cleared"].as_u64().unwrap())
        .sum();
    assert_eq!(would, 4, "{report}");
    assert_eq!(dump_all(&db).await, before, "report only changed a row");
    assert_eq!(store.keys().await, objects, "report only changed an object");

    let applied = reconcile(&db, &store, &["--apply"]);
    for k in [
        "rows_checked",
        "rows_missing",
        "remote",
        "local",
        "lost_local",
    ] {
        assert_eq!(applied[k], report[k], "{k}: report and --apply agree");
    }
    // Remote rows with a missing file: cleared, their leftover objects deleted.
    for o in 2..=4 {
        assert_eq!(
            media_names(&db, BASE + o).await.0,
            None,
            "media {o} cleared"
        );
    }
    assert_eq!(account_names(&db, 3).await.0, None, "remote avatar cleared");
    assert_eq!(
        media_names(&db, BASE + 1).await.0,
        Some(n(1)),
        "complete row kept"
    );
    // Local rows: listed, never changed.
    assert_eq!(media_names(&db, BASE + 5).await.0, Some(n(5)));
    assert_eq!(
        account_names(&db, 4).await.1.as_deref(),
        Some("bbbbbbbbbbbbbbbb.png")
    );
    let left = store.keys().await;
    for o in 2..=4 {
        for style in ["original", "small"] {
            assert!(
                !left.contains(&media_key(true, "files", BASE + o, style, &n(o))),
                "{o} {style} deleted"
            );
        }
    }
    assert!(left.contains(&media_key(true, "files", BASE + 1, "small", &n(1))));
    assert!(
        left.contains(&media_key(false, "files", BASE + 5, "small", &n(5))),
        "a local row's file is never deleted"
    );

    // --apply again: nothing remote left to clear, the local losses still reported.
    let after = dump_all(&db).await;
    let again = reconcile(&db, &store, &["--apply"]);
    assert_eq!(again["rows_missing"], 2, "{again}");
    assert_eq!(again["passes"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(
        dump_all(&db).await,
        after,
        "a second --apply changed something"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn s3_finds_reports_and_clears_only_remote_rows() {
    finds_reports_and_clears_only_remote_rows(Backend::S3(TestBucket::new().await)).await;
}

#[tokio::test]
async fn fs_finds_reports_and_clears_only_remote_rows() {
    finds_reports_and_clears_only_remote_rows(Backend::Fs(temp_dir("system"))).await;
}

async fn the_wrong_storage_and_mostly_missing_are_refused(store: Backend, empty: Backend) {
    let db = TestDb::new(Mastodon::V4_2, "UTC").await;
    seed(&db, &store).await;
    // 30 more remote rows whose files are all gone: most rows now miss a file.
    for o in 100..130 {
        insert_media(&db, &Media::remote(BASE + o, &n(o), 3.0)).await;
    }
    let before = dump_all(&db).await;
    // Another (empty) storage: none of the database's files is there.
    let env = empty.env(&db);
    for args in [vec!["reconcile"], vec!["reconcile", "--apply"]] {
        let mut all = vec!["--env-file", env.to_str().unwrap()];
        all.extend_from_slice(&args);
        let run = mastomedia(&all);
        assert_eq!(run.code, 3, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("Refusing"), "{}", run.stderr);
    }
    assert_eq!(dump_all(&db).await, before);
    // The right storage, but 36 of 38 rows miss a file: --apply refuses, the report says so.
    let env = store.env(&db);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "reconcile", "--apply"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--force-missing"), "{}", run.stderr);
    assert_eq!(dump_all(&db).await, before);
    let report = reconcile(&db, &store, &[]);
    assert_eq!(report["too_much_missing"], true, "{report}");
    // --force-missing: the admin says the files really are gone.
    let forced = reconcile(&db, &store, &["--apply", "--force-missing"]);
    let cleared: u64 = forced["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows_cleared"].as_u64().unwrap())
        .sum();
    assert_eq!(cleared, 34, "{forced}");
    db.drop_db().await;
}

#[tokio::test]
async fn s3_the_wrong_storage_and_mostly_missing_are_refused() {
    the_wrong_storage_and_mostly_missing_are_refused(
        Backend::S3(TestBucket::new().await),
        Backend::S3(TestBucket::new().await),
    )
    .await;
}

#[tokio::test]
async fn fs_the_wrong_storage_and_mostly_missing_are_refused() {
    the_wrong_storage_and_mostly_missing_are_refused(
        Backend::Fs(temp_dir("system")),
        Backend::Fs(temp_dir("system")),
    )
    .await;
}

/// SIGKILL while clearing (one row per delete batch, each batch held 0.3 s by the S3
/// server), then a plain re-run: every broken remote row ends cleared, the complete ones
/// and the local ones untouched. No journal needed: a cleared row is no longer checked.
#[tokio::test]
async fn a_killed_apply_is_finished_by_the_next_run() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let store = Backend::S3(bucket);
    live(&db, &store).await;
    // 30 remote rows whose original is gone (small left), 40 complete ones.
    for o in 0..70 {
        insert_media(&db, &Media::remote(BASE + o, &n(o), 3.0)).await;
        if o >= 30 {
            store
                .put(&media_key(true, "files", BASE + o, "original", &n(o)), b"o")
                .await;
        }
        store
            .put(&media_key(true, "files", BASE + o, "small", &n(o)), b"s")
            .await;
    }
    let Backend::S3(bucket) = &store else {
        unreachable!()
    };
    bucket.faults(
        serde_json::json!({"stall": {"count": 1000, "ops": ["DeleteObjects"], "seconds": 0.3}}),
    );
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "2")]);
    let cleared = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!(
                "SELECT count(*) FROM media_attachments WHERE file_file_name IS NULL AND id < {}",
                BASE + 30
            ))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_mastomedia"))
        .args([
            "--env-file",
            env.to_str().unwrap(),
            "reconcile",
            "--apply",
            "--concurrency",
            "1",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MASTOMEDIA_STATUS_INTERVAL", "3600")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cleared(&db).await < 3 {
        assert!(Instant::now() < deadline, "no row cleared within 60 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = cleared(&db).await;
    assert!(partial < 30, "killed after all were cleared: {partial}");
    bucket.faults(serde_json::json!({}));
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "reconcile",
        "--apply",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let s = run.json();
    assert_eq!(s["rows_missing"], 30 - partial, "{s}");
    assert_eq!(cleared(&db).await, 30);
    for o in 30..70 {
        assert_eq!(
            media_names(&db, BASE + o).await.0,
            Some(n(o)),
            "complete row {o} kept"
        );
    }
    let left = store.keys().await;
    for o in 0..30 {
        assert!(
            !left.contains(&media_key(true, "files", BASE + o, "small", &n(o))),
            "{o}: leftover small deleted"
        );
    }
    db.drop_db().await;
}

/// Paperclip saves a row before it writes the file, so a row fetched a moment ago names a
/// file that may not be stored yet: reconcile leaves rows changed within --min-age (a day
/// by default) alone, in the report and with --apply; `--min-age 0` checks them.
#[tokio::test]
async fn rows_changed_within_min_age_are_not_judged() {
    let store = Backend::S3(TestBucket::new().await);
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Auckland").await;
    seed(&db, &store).await;
    // A remote image fetched just now, its file not uploaded yet.
    let fresh = BASE + 950_000;
    insert_media(&db, &Media::remote(fresh, &n(50), 0.0)).await;

    let report = reconcile(&db, &store, &[]);
    assert_eq!(report["rows_checked"], 8, "{report}");
    let all = reconcile(&db, &store, &["--min-age", "0"]);
    assert_eq!(all["rows_checked"], 9, "{all}");
    let m = category(&all, "media_attachments", true);
    assert_eq!(
        m["missing_original"], 2,
        "the seeded one and the fresh one: {all}"
    );

    reconcile(&db, &store, &["--apply"]);
    assert_eq!(
        media_names(&db, BASE + 2).await.0,
        None,
        "a settled row is cleared"
    );
    assert_eq!(
        media_names(&db, fresh).await.0,
        Some(n(50)),
        "a row changed within --min-age was cleared"
    );
    db.drop_db().await;
}

/// The report changes nothing and takes no lock, so it never keeps a nightly prune out;
/// `--apply` takes prune's advisory lock and refuses (exit 3) while a prune holds it.
#[tokio::test]
async fn only_apply_takes_prunes_lock() {
    let store = Backend::S3(TestBucket::new().await);
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    seed(&db, &store).await;
    let mut conn = sqlx::pool::PoolConnection::detach(db.pool.acquire().await.unwrap());
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(mastomedia::mastodon::advisory_key("prune"))
        .execute(&mut conn)
        .await
        .unwrap();
    let report = reconcile(&db, &store, &[]);
    assert_eq!(report["rows_missing"], 6, "{report}");
    let env = store.env(&db);
    let before = dump_all(&db).await;
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "reconcile", "--apply"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("prune"), "{}", run.stderr);
    assert_eq!(
        dump_all(&db).await,
        before,
        "a refused --apply changed a row"
    );
    drop(conn);
    db.drop_db().await;
}
