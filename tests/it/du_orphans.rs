//! `mastomedia du` and `mastomedia orphans` end to end: real PostgreSQL (4.2 and 4.6
//! fixtures), the S3 server (moto behind the SigV4 proxy; versioning and multipart straight
//! to moto) and the filesystem backend. Totals are checked against the seed, byte for
//! byte; orphans must never delete a referenced or unrecognised key; a run killed half-way
//! resumes from its journal.

mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::seed::{Media, insert_media};
use crate::support::{
    Mastodon, Run, TestBucket, TestDb, fs_env_file, mastomedia, mastomedia_env, s3_env_file,
    temp_dir,
};
use world::{Cat, Obj};

const TABLES: [&str; 8] = [
    "media_attachments",
    "accounts",
    "preview_cards",
    "custom_emojis",
    "site_uploads",
    "backups",
    "imports",
    "preview_card_providers",
];

async fn dump_all(db: &TestDb) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(db.dump(t).await);
    }
    out
}

fn ok(run: &Run) -> Value {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run.json()
}

/// Checks every category line, the other line and the total of a `du --json` report
/// against the objects seeded and the database sums.
fn check_du(report: &Value, objs: &[Obj], db: &BTreeMap<Cat, (i64, i64)>) {
    let mut want: BTreeMap<Cat, (u64, u64)> = BTreeMap::new();
    let (mut other, mut total) = ((0u64, 0u64), (0u64, 0u64));
    for o in objs {
        let size = o.size as u64;
        total = (total.0 + 1, total.1 + size);
        match o.cat {
            Some(c) => {
                let e = want.entry(c).or_default();
                *e = (e.0 + 1, e.1 + size);
            }
            None => other = (other.0 + 1, other.1 + size),
        }
    }
    let lines = report["categories"].as_array().expect("categories");
    let mut seen = BTreeSet::new();
    for l in lines {
        let cat: Cat = (
            leak(l["class"].as_str().unwrap()),
            leak(l["attachment"].as_str().unwrap()),
            l["cache"].as_bool().unwrap(),
        );
        seen.insert(cat);
        let (objects, bytes) = want.get(&cat).copied().unwrap_or_default();
        assert_eq!(l["objects"], objects, "{cat:?}: {l}");
        assert_eq!(l["bytes"], bytes, "{cat:?}: {l}");
        match db.get(&cat) {
            Some((b, f)) => {
                assert_eq!(l["db_bytes"], *b, "{cat:?}: {l}");
                assert_eq!(l["db_files"], *f, "{cat:?}: {l}");
                assert_eq!(l["difference"], bytes as i64 - b, "{cat:?}: {l}");
            }
            None => assert!(l["db_bytes"].is_null(), "{cat:?} has no database sum: {l}"),
        }
    }
    for c in want.keys() {
        assert!(seen.contains(c), "no line for {c:?}");
    }
    for c in db.keys() {
        assert!(seen.contains(c), "no line for database category {c:?}");
    }
    assert_eq!(report["other"]["objects"], other.0);
    assert_eq!(report["other"]["bytes"], other.1);
    assert_eq!(report["total"]["objects"], total.0);
    assert_eq!(report["total"]["bytes"], total.1);
    assert_eq!(report["complete"], true);
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn keys_of(objs: &[Obj], pred: impl Fn(&Obj) -> bool) -> BTreeSet<String> {
    objs.iter()
        .filter(|o| pred(o))
        .map(|o| o.key.clone())
        .collect()
}

/// Checks the class counts and the listed keys of an `orphans --json` report.
fn check_classes(report: &Value, objs: &[Obj]) {
    for (class, field) in [
        ("referenced", "referenced"),
        ("orphan", "orphans"),
        ("stale", "stale"),
        ("unrecognised", "unrecognised"),
    ] {
        let mine: Vec<&Obj> = objs.iter().filter(|o| o.class == class).collect();
        assert_eq!(
            report[field]["objects"],
            mine.len(),
            "{field}: {}",
            report[field]
        );
        let bytes: usize = mine.iter().map(|o| o.size).sum();
        assert_eq!(report[field]["bytes"], bytes, "{field}");
        let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
        for o in &mine {
            *reasons.entry(o.reason).or_default() += 1;
        }
        assert_eq!(
            report[field]["reasons"],
            serde_json::json!(reasons),
            "{field}"
        );
    }
    let listed: BTreeMap<String, (String, String)> = report["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_owned(),
                (
                    k["class"].as_str().unwrap().to_owned(),
                    k["reason"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = objs
        .iter()
        .filter(|o| o.class != "referenced")
        .map(|o| (o.key.clone(), (o.class.to_owned(), o.reason.to_owned())))
        .collect();
    assert_eq!(listed, want);
}

fn journal_arg(dir: &Path) -> String {
    dir.join("journal.sqlite").display().to_string()
}

#[tokio::test]
async fn du_s3_totals_match_the_seed_and_the_database() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    world::seed_rows(&db, true).await;
    let bucket = TestBucket::new().await;
    let mut objs = world::objects(true);
    objs.push(world::thumbnail_obj(true));
    world::put_s3(&bucket, &objs, None).await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();

    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "du",
        "--json",
        "--concurrency",
        "3",
    ]));
    check_du(&report, &objs, &world::db_sums(true));
    assert_eq!(
        report["other"]["examples"][0],
        "cache/media_attachments/files/109/original/x.png"
    );
    assert!(report.get("noncurrent").is_none(), "only with --versions");
    // S3 is listed in key ranges (no delimiter discovery): this bucket of fewer than
    // 1000 objects takes the store check and one chain of one page, plus at most one
    // request per split chain (2 splits per slot at --concurrency 3).
    let lists = report["requests"]["ListObjectsV2"].as_u64().unwrap();
    assert!((2..=1 + 1 + 2 * 3).contains(&lists), "{lists} listings");

    // The human table: data on stdout, progress on stderr.
    let run = mastomedia(&["--env-file", env, "du"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("cache  media_attachments/files"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("(outside Mastodon's layout)"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("objects/s"),
        "progress stays on stderr"
    );
    assert!(run.stderr.contains("du: "), "{}", run.stderr);

    // --prefix: only the cache/ lines, and their database sums.
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "du",
        "--json",
        "--prefix",
        "cache/",
    ]));
    let cached: Vec<Obj> = objs
        .iter()
        .filter(|o| o.key.starts_with("cache/"))
        .cloned()
        .collect();
    let sums: BTreeMap<Cat, (i64, i64)> = world::db_sums(true)
        .into_iter()
        .filter(|(c, _)| c.2)
        .collect();
    check_du(&report, &cached, &sums);
    // A SlowDown storm on listings (T1): the SDK's retries absorb it, totals stay exact.
    let env_retry = s3_env_file(&db, &bucket.name, &[("S3_RETRY_LIMIT", "8")]);
    bucket.reset_stats();
    bucket.faults(serde_json::json!({"slowdown": {"count": 6, "ops": ["ListObjectsV2"]}}));
    let report = ok(&mastomedia(&[
        "--env-file",
        env_retry.to_str().unwrap(),
        "du",
        "--json",
    ]));
    check_du(&report, &objs, &world::db_sums(true));
    assert_eq!(bucket.stats()["injected"], 6);
    bucket.faults(serde_json::json!({}));
    // Versions need S3 versioning calls; the bucket is unversioned, which is fine.
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "du",
        "--json",
        "--versions",
    ]));
    check_du(&report, &objs, &world::db_sums(true));
    assert_eq!(report["noncurrent"]["versions"], 0);
    db.drop_db().await;
}

#[tokio::test]
async fn du_versions_counts_noncurrent_versions_delete_markers_and_multipart() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    insert_media(
        &db,
        &Media::remote(109345678901234567, "8f3a2b1c4d5e6f70.png", 3.0),
    )
    .await;
    let bucket = TestBucket::new().await;
    bucket.enable_versioning().await;
    let p = "109/345/678/901/234/567";
    let original = format!("cache/media_attachments/files/{p}/original/8f3a2b1c4d5e6f70.png");
    let small = format!("cache/media_attachments/files/{p}/small/8f3a2b1c4d5e6f70.png");
    let pruned =
        "cache/media_attachments/files/109/345/678/901/234/599/original/0000000000000000.png";
    bucket.put(&original, &[1u8; 1000]).await;
    bucket.put(&original, &[2u8; 1100]).await; // overwritten: 1000 bytes noncurrent
    bucket.put(&small, &[3u8; 300]).await;
    bucket.put(pruned, &[4u8; 5000]).await;
    bucket
        .client
        .delete_object()
        .bucket(&bucket.name)
        .key(pruned)
        .send()
        .await
        .expect("delete"); // a delete marker; 5000 bytes still billed
    let upload = bucket
        .client
        .create_multipart_upload()
        .bucket(&bucket.name)
        .key("backups/dumps/000/000/001/original/big.zip")
        .send()
        .await
        .expect("start multipart");
    // Two parts (issue 9.5 reported 0 parts for a 2-part, 5,000-byte upload).
    for (n, len) in [(1, 2048), (2, 2952)] {
        bucket
            .client
            .upload_part()
            .bucket(&bucket.name)
            .key("backups/dumps/000/000/001/original/big.zip")
            .upload_id(upload.upload_id().unwrap())
            .part_number(n)
            .body(vec![5u8; len].into())
            .send()
            .await
            .expect("upload part");
    }

    let env = s3_env_file(&db, &bucket.name, &[]);
    let report = ok(&mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "du",
        "--versions",
        "--json",
    ]));
    assert_eq!(
        report["total"],
        serde_json::json!({"objects": 2, "bytes": 1400})
    );
    assert_eq!(
        report["noncurrent"],
        serde_json::json!({"versions": 2, "bytes": 6000, "delete_markers": 1, "objects": 3})
    );
    assert_eq!(
        report["incomplete_multipart"],
        serde_json::json!({"uploads": 1, "parts": 2, "bytes": 5000, "unsized_uploads": 0})
    );
    let files = report["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["class"] == "media_attachments" && l["attachment"] == "files" && l["cache"] == true
        })
        .unwrap()
        .clone();
    assert_eq!(files["objects"], 2);
    assert_eq!(files["db_bytes"], 1234);
    let human = mastomedia(&["--env-file", env.to_str().unwrap(), "du", "--versions"]);
    assert!(
        human.stdout.contains("pruning alone frees nothing"),
        "{}",
        human.stdout
    );

    // --versions on the filesystem is a usage error.
    let root = temp_dir("du-fs");
    let env = fs_env_file(&db, &root);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "du", "--versions"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--versions needs S3"), "{}", run.stderr);
    db.drop_db().await;
}

#[tokio::test]
async fn orphans_s3_deletes_only_orphans_and_opted_in_stale_copies() {
    let db = TestDb::new(Mastodon::V4_6, "America/Adak").await;
    world::seed_rows(&db, true).await;
    let bucket = TestBucket::new().await;
    let mut objs = world::objects(true);
    objs.push(world::thumbnail_obj(true));
    world::put_s3(&bucket, &objs, None).await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();
    let dir = temp_dir("orphans");
    let journal = journal_arg(&dir);
    let rows_before = dump_all(&db).await;
    let all = keys_of(&objs, |_| true);

    // 1. Report only.
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        &journal,
        "--json",
    ]));
    check_classes(&report, &objs);
    assert_eq!(report["complete"], true);
    assert_eq!(report["deleted"]["objects"], 0);
    assert_eq!(bucket.keys().await, all);

    // 2. --delete with the default --min-age (1 day): everything here is minutes old.
    bucket.reset_stats();
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        &journal,
        "--delete",
        "--json",
    ]));
    assert_eq!(report["deleted"]["objects"], 0);
    assert_eq!(report["too_young"]["objects"], 5, "{}", report["too_young"]);
    assert_eq!(bucket.keys().await, all);
    assert_eq!(bucket.stats()["mutating"], 0);

    // 3. Dry run: the same selection, nothing sent.
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        &journal,
        "--delete",
        "--dry-run",
        "--min-age",
        "0",
        "--json",
    ]));
    assert_eq!(report["deleted"]["objects"], 5);
    assert_eq!(bucket.keys().await, all);
    assert_eq!(bucket.stats()["mutating"], 0);

    // 4. For real: orphans only.
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        &journal,
        "--delete",
        // The synthetic world has old orphans above the highest ids, more than 5 %
        // of its objects, and local-layout orphans: all accepted here (issue 8.1).
        "--accept-risk",
        "newer-keys",
        "--accept-risk",
        "large-share",
        "--accept-risk",
        "local-keys",
        "--min-age",
        "0",
        "--json",
    ]));
    let orphans = keys_of(&objs, |o| o.class == "orphan");
    assert_eq!(report["deleted"]["objects"], orphans.len());
    let left = bucket.keys().await;
    assert_eq!(
        left,
        all.difference(&orphans).cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(bucket.stats()["ops"]["DeleteObjects"], 1, "one batch");

    // 5. Stale copies with --include-stale; referenced and unrecognised keys always stay.
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        &journal,
        "--delete",
        // The synthetic world has old orphans above the highest ids, more than 5 %
        // of its objects, and local-layout orphans: all accepted here (issue 8.1).
        "--accept-risk",
        "newer-keys",
        "--accept-risk",
        "large-share",
        "--accept-risk",
        "local-keys",
        "--include-stale",
        "--min-age",
        "0",
        "--json",
    ]));
    let stale = keys_of(&objs, |o| o.class == "stale");
    assert_eq!(report["deleted"]["objects"], stale.len());
    assert_eq!(report["orphans"]["objects"], 0);
    let kept = keys_of(&objs, |o| {
        o.class == "referenced" || o.class == "unrecognised"
    });
    assert_eq!(bucket.keys().await, kept);
    assert_eq!(
        dump_all(&db).await,
        rows_before,
        "orphans never writes Mastodon's database"
    );

    // An empty database (wrong DATABASE_URL) would make everything an orphan: refused.
    let empty = TestDb::new(Mastodon::V4_6, "UTC").await;
    let env_empty = s3_env_file(&empty, &bucket.name, &[]);
    let run = mastomedia(&[
        "--env-file",
        env_empty.to_str().unwrap(),
        "orphans",
        "--journal",
        &journal,
        "--delete",
        "--min-age",
        "0",
    ]);
    assert_eq!(
        run.code, 3,
        /* a refusal is fatal (issue 8.1) */ "{}",
        run.stderr
    );
    assert!(run.stderr.contains("refusing to delete"), "{}", run.stderr);
    assert_eq!(bucket.keys().await, kept);
    empty.drop_db().await;

    // --include-stale without --delete is a usage error.
    let run = mastomedia(&["--env-file", env, "orphans", "--include-stale"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    db.drop_db().await;
}

#[tokio::test]
async fn du_and_orphans_respect_s3_key_prefix() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    world::seed_rows(&db, true).await;
    let bucket = TestBucket::new().await;
    let objs = world::objects(true);
    world::put_s3(&bucket, &objs, Some("social")).await;
    // Beside the prefix: another application's files, never listed, never deleted.
    let outside = [
        "robots.txt",
        "socialite/cache/media_attachments/files/000/000/001/original/x.png",
        "cache/media_attachments/files/109/345/678/901/234/574/original/ffffffffffffff01.png",
    ];
    for k in outside {
        bucket.put(k, b"not mastodon's").await;
    }
    let env = s3_env_file(&db, &bucket.name, &[("S3_KEY_PREFIX", "social/")]);
    let env = env.to_str().unwrap();
    let report = ok(&mastomedia(&["--env-file", env, "du", "--json"]));
    check_du(&report, &objs, &world::db_sums(true));
    assert_eq!(report["prefix"], "social/");

    let dir = temp_dir("orphans-prefix");
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        &journal_arg(&dir),
        "--delete",
        // The synthetic world has old orphans above the highest ids, more than 5 %
        // of its objects, and local-layout orphans: all accepted here (issue 8.1).
        "--accept-risk",
        "newer-keys",
        "--accept-risk",
        "large-share",
        "--accept-risk",
        "local-keys",
        "--min-age",
        "0",
        "--json",
    ]));
    let prefixed = |o: &Obj| Obj {
        key: format!("social/{}", o.key),
        ..o.clone()
    };
    check_classes(&report, &objs.iter().map(prefixed).collect::<Vec<_>>());
    let mut want: BTreeSet<String> = objs
        .iter()
        .filter(|o| o.class != "orphan")
        .map(|o| format!("social/{}", o.key))
        .collect();
    want.extend(outside.iter().map(|k| k.to_string()));
    assert_eq!(bucket.keys().await, want);
    db.drop_db().await;
}

/// Spawns `mastomedia` like [`mastomedia_env`] does, without waiting.
fn spawn(args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mastomedia"));
    cmd.args(args).env_clear();
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.env("MASTOMEDIA_STATUS_INTERVAL", "3600")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mastomedia")
}

async fn scan_position(journal: &Path) -> Option<(String, i64)> {
    let url = format!("sqlite://{}?mode=ro", journal.display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .ok()?;
    let row: Option<(String, i64)> = sqlx::query_as("SELECT last_key, objects FROM orphan_scans")
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten();
    pool.close().await;
    row
}

#[tokio::test]
async fn orphans_killed_half_way_resumes_from_the_journal() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let base: i64 = 109345678901240000;
    let mut referenced = BTreeSet::new();
    let mut orphans = BTreeSet::new();
    for i in 0..150i64 {
        let id = base + i;
        let digits = id.to_string();
        let part: Vec<&str> = (0..6).map(|g| &digits[g * 3..g * 3 + 3]).collect();
        let key = format!(
            "cache/media_attachments/files/{}/original/{i:016x}.png",
            part.join("/")
        );
        if i % 5 == 0 {
            insert_media(&db, &Media::remote(id, &format!("{i:016x}.png"), 30.0)).await;
            referenced.insert(key.clone());
        } else {
            orphans.insert(key.clone());
        }
        bucket.put(&key, b"x").await;
    }
    // Batches of 10 keys (S3_BATCH_DELETE_LIMIT) and 3 requests per second: slow enough
    // to kill in the middle.
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "10")]);
    let env = env.to_str().unwrap();
    let dir = temp_dir("orphans-kill");
    let journal: PathBuf = dir.join("journal.sqlite");
    let journal_s = journal.display().to_string();
    let args = [
        "--env-file",
        env,
        "orphans",
        "--journal",
        &journal_s,
        "--delete",
        // The synthetic world has old orphans above the highest ids, more than 5 %
        // of its objects, and local-layout orphans: all accepted here (issue 8.1).
        "--accept-risk",
        "newer-keys",
        "--accept-risk",
        "large-share",
        "--accept-risk",
        "local-keys",
        "--min-age",
        "0",
        "--concurrency",
        "1",
        "--rate",
        "3",
    ];
    let mut child = spawn(&args);
    let started = Instant::now();
    let position = loop {
        if let Some((key, n)) = scan_position(&journal).await.filter(|(_, n)| *n >= 30) {
            break Some((key, n));
        }
        if child.try_wait().expect("poll child").is_some() {
            break None;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (_, n) = position.expect("killed before the run finished");
    let (last_key, n_after) = scan_position(&journal)
        .await
        .expect("position kept after SIGKILL");
    assert!(n_after >= n && n_after < 150, "{n_after}");
    // Everything up to the position is done: its orphans are gone.
    let left = bucket.keys().await;
    for k in orphans.iter().filter(|k| **k <= last_key) {
        assert!(
            !left.contains(k),
            "{k} is before the journalled position {last_key} but still there"
        );
    }
    assert!(
        orphans.iter().any(|k| left.contains(k)),
        "the first run did not finish"
    );

    // The second run continues after the journalled key and completes the scan.
    let mut again = args[..args.len() - 4].to_vec();
    again.push("--json");
    let report = ok(&mastomedia(&again));
    assert_eq!(report["resumed_after"], last_key.as_str());
    assert_eq!(report["complete"], true);
    // Only the rest was listed (a batch deleted but not yet journalled when killed is
    // simply no longer there).
    let scanned = report["scanned"]["objects"].as_i64().unwrap();
    assert!(
        scanned <= 150 - n_after && scanned >= 150 - n_after - 10,
        "{scanned}"
    );
    assert_eq!(
        bucket.keys().await,
        referenced,
        "every orphan gone, every referenced key kept"
    );
    assert_eq!(
        scan_position(&journal).await,
        None,
        "a finished scan forgets its position"
    );

    // A new scan starts from the beginning.
    let report = ok(&mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        &journal_s,
        "--json",
    ]));
    assert!(report["resumed_after"].is_null());
    assert_eq!(report["referenced"]["objects"], 30);
    db.drop_db().await;
}

#[tokio::test]
async fn du_and_orphans_on_the_filesystem_with_the_4_2_schema() {
    let db = TestDb::new(Mastodon::V4_2, "Asia/Kathmandu").await;
    world::seed_rows(&db, false).await;
    let root = temp_dir("du-orphans-fs");
    let mut objs = world::objects(false);
    objs.push(world::thumbnail_obj(false));
    world::put_fs(&root, &objs, 3.0);
    // A fresh orphan (an upload in flight): kept by --min-age.
    let young = Obj {
        key: "cache/media_attachments/files/109/345/678/901/234/598/original/0123456789abcdef.png"
            .into(),
        size: 77,
        cat: Some(("media_attachments", "files", true)),
        class: "orphan",
        reason: "row_gone",
    };
    world::put_fs(&root, std::slice::from_ref(&young), 0.0);
    objs.push(young.clone());
    let env = fs_env_file(&db, &root);
    let env = env.to_str().unwrap();

    let report = ok(&mastomedia(&["--env-file", env, "du", "--json"]));
    check_du(&report, &objs, &world::db_sums(false));
    assert!(report["storage"].as_str().unwrap().starts_with("file://"));

    let dir = temp_dir("orphans-fs-journal");
    let run = mastomedia_env(
        &[
            "--env-file",
            env,
            "orphans",
            "--delete",
            "--accept-risk",
            "newer-keys",
            "--accept-risk",
            "large-share",
            "--accept-risk",
            "local-keys",
            "--json",
        ],
        &[("XDG_STATE_HOME", dir.to_str().unwrap())],
    );
    let report = ok(&run);
    check_classes(&report, &objs);
    assert_eq!(report["too_young"]["objects"], 1);
    let gone = keys_of(&objs, |o| o.class == "orphan" && o.key != young.key);
    assert_eq!(report["deleted"]["objects"], gone.len());
    for o in &objs {
        assert_eq!(
            root.join(&o.key).exists(),
            !gone.contains(&o.key),
            "{}",
            o.key
        );
    }
    // Emptied partition folders are removed; the root stays.
    assert!(!root.join("backups/dumps/000/000/002").exists());
    assert!(root.join("backups/dumps/000/000/001/original").exists());
    assert!(
        dir.join("mastomedia").read_dir().unwrap().count() > 0,
        "the default journal lives under XDG_STATE_HOME"
    );
    db.drop_db().await;
}

/// A database of another instance (here: one remote account whose avatar is not in this
/// bucket) must not make the bucket look orphaned: `--delete` refuses before deleting.
#[tokio::test]
async fn orphans_delete_refuses_a_database_that_owns_nothing_in_the_bucket() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    crate::support::seed::insert_account(
        &db,
        7,
        Some("remote.example"),
        Some(("aaaaaaaaaaaaaaa7.png", "image/png")),
        None,
        Some(1),
        1.0,
        1.0,
    )
    .await;
    let keys = [
        "cache/media_attachments/files/109/345/678/901/234/567/original/8f3a2b1c4d5e6f70.png",
        "media_attachments/files/109/345/678/901/234/568/original/0000000000000001.png",
    ];
    for k in keys {
        bucket.put(k, b"x").await;
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let before = bucket.keys().await;
    bucket.reset_stats();
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "orphans",
        "--delete",
        "--min-age",
        "0",
    ]);
    assert_eq!(
        run.code, 3,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("do not belong to the same instance"),
        "{}",
        run.stderr
    );
    assert_eq!(bucket.stats()["mutating"], 0);
    assert_eq!(bucket.keys().await, before);
    db.drop_db().await;
}

/// `du --versions` above one listing slot: S3 sends a page's versions and its delete markers
/// as two lists, and a key-range chain cut the page at its bound and resumed after the page's
/// last entry, a delete marker of an early key: objects and markers went missing at
/// `--concurrency 8` (the hostile test's F1). Counted against a paged ListObjectVersions.
#[tokio::test]
async fn du_versions_counts_every_version_and_marker_at_any_concurrency() {
    use futures::stream::{self, StreamExt};
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    bucket.enable_versioning().await;
    let keys: Vec<String> = (0..1300u64)
        .map(|i| match i % 3 {
            0 => format!(
                "accounts/avatars/000/000/{:03}/original/{i:016x}.png",
                i / 3
            ),
            1 => {
                let id = 109_000_000_000_000_000 + i * 1_000_000_000;
                let d = id.to_string();
                let p: Vec<&str> = (0..6).map(|g| &d[g * 3..g * 3 + 3]).collect();
                format!(
                    "cache/media_attachments/files/{}/original/{i:016x}.png",
                    p.join("/")
                )
            }
            _ => format!(
                "media_attachments/files/000/001/{:03}/original/{i:016x}.png",
                i / 3
            ),
        })
        .collect();
    stream::iter(keys.iter().enumerate())
        .for_each_concurrent(16, |(i, k)| {
            let bucket = &bucket;
            async move {
                bucket.put(k, &vec![1u8; 100 + i % 50]).await;
                if i % 3 == 0 {
                    bucket.put(k, &[2u8; 200]).await;
                }
                if i % 5 == 0 {
                    bucket
                        .client
                        .delete_object()
                        .bucket(&bucket.name)
                        .key(k)
                        .send()
                        .await
                        .expect("delete");
                }
            }
        })
        .await;
    // The truth: every page of ListObjectVersions.
    let (mut current, mut current_bytes, mut noncurrent, mut markers) = (0u64, 0u64, 0u64, 0u64);
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = bucket
            .client
            .list_object_versions()
            .bucket(&bucket.name)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(id_marker.clone())
            .send()
            .await
            .expect("list versions");
        for v in page.versions() {
            if v.is_latest() == Some(true) {
                current += 1;
                current_bytes += v.size().unwrap_or(0) as u64;
            } else {
                noncurrent += 1;
            }
        }
        markers += page.delete_markers().len() as u64;
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_version_id_marker().map(str::to_owned);
    }
    assert_eq!((current, markers), (1040, 260), "the seed");
    let env = s3_env_file(&db, &bucket.name, &[]);
    for c in ["1", "8", "32"] {
        let r = ok(&mastomedia(&[
            "--env-file",
            env.to_str().unwrap(),
            "du",
            "--versions",
            "--concurrency",
            c,
            "--json",
        ]));
        assert_eq!(
            r["total"],
            serde_json::json!({"objects": current, "bytes": current_bytes}),
            "--concurrency {c}"
        );
        assert_eq!(
            r["noncurrent"]["versions"], noncurrent,
            "--concurrency {c}: {r:#}"
        );
        assert_eq!(
            r["noncurrent"]["delete_markers"], markers,
            "--concurrency {c}: {r:#}"
        );
    }
}
