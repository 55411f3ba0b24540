//! `mastomedia prune` against a misbehaving S3 server: per-key delete errors (D1), retried
//! and permanent; SlowDown storms (T1); providers that insist on `Content-MD5` or lack
//! multi-object delete (D4); the advisory lock, held elsewhere or lost mid-run (its
//! session terminated); and an interrupt in the middle of a run (D5: no row ever names a
//! deleted object). Faults are injected by the proxy of
//! `tests/support/s3server.py`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use crate::support::seed::{Media, insert_media, media_names};
use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file};

/// First id of the rows seeded here (18 digits: one partition per row).
const BASE_ID: i64 = 109345678901240000;

/// The stored file name of seeded row `i`: 16 hex characters and `.png`.
fn file_name(i: i64) -> String {
    format!("{i:016x}.png")
}

/// The two keys (original, small) of a remote PNG row with schema version 1.
fn keys_of(id: i64, name: &str) -> [String; 2] {
    let p = crate::support::partition18(id);
    [
        format!("cache/media_attachments/files/{p}/original/{name}"),
        format!("cache/media_attachments/files/{p}/small/{name}"),
    ]
}

/// A seeded row: its id and both keys.
struct Row {
    id: i64,
    keys: [String; 2],
}

/// Inserts `n` remote PNG rows, 30 days old, one at a time, and puts both objects of each.
async fn seed_rows(db: &TestDb, bucket: &TestBucket, n: i64) -> Vec<Row> {
    let mut rows = Vec::new();
    for i in 0..n {
        let id = BASE_ID + i;
        let name = file_name(i);
        insert_media(db, &Media::remote(id, &name, 30.0)).await;
        let keys = keys_of(id, &name);
        for k in &keys {
            bucket.put(k, format!("bytes of {k}").as_bytes()).await;
        }
        rows.push(Row { id, keys });
    }
    rows
}

/// The whole row as JSON text, for "all columns untouched" checks.
async fn row_json(db: &TestDb, id: i64) -> String {
    sqlx::query_scalar("SELECT row_to_json(m)::text FROM media_attachments m WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("media row")
}

fn all_keys(rows: &[Row]) -> BTreeSet<String> {
    rows.iter().flat_map(|r| r.keys.iter().cloned()).collect()
}

async fn assert_all_cleared(db: &TestDb, rows: &[Row]) {
    for r in rows {
        assert_eq!(media_names(db, r.id).await.0, None, "row {} cleared", r.id);
    }
}

#[tokio::test]
async fn d1_per_key_delete_errors_leave_rows_untouched() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let bucket = TestBucket::new().await;
    let rows = seed_rows(&db, &bucket, 4).await;
    // Row 0: both keys refused. Row 1: only the original refused (its small goes).
    // Rows 2 and 3: deleted normally.
    let refused = [
        rows[0].keys[0].clone(),
        rows[0].keys[1].clone(),
        rows[1].keys[0].clone(),
    ];
    let errors: serde_json::Map<String, serde_json::Value> = refused
        .iter()
        .map(|k| (k.clone(), serde_json::Value::from("AccessDenied")))
        .collect();
    bucket.faults(serde_json::json!({ "delete_errors": errors }));
    let before_0 = row_json(&db, rows[0].id).await;
    let before_1 = row_json(&db, rows[1].id).await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();

    let run = mastomedia(&["--env-file", env, "prune", "--json"]);
    assert_eq!(
        run.code, 1,
        "items failed: exit 1\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_selected"], 4, "{report:#}");
    assert_eq!(media["rows_cleared"], 2, "{report:#}");
    assert_eq!(media["rows_failed"], 2, "{report:#}");
    assert_eq!(media["objects_failed"], 3, "{report:#}");
    assert_eq!(media["objects_deleted"], 5, "{report:#}");
    let listed: BTreeSet<(String, i64, String, String)> = media["failures"]
        .as_array()
        .expect("failures array")
        .iter()
        .map(|f| {
            (
                f["table"].as_str().unwrap().to_owned(),
                f["id"].as_i64().unwrap(),
                f["key"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, i64, String, String)> = [
        (rows[0].id, &refused[0]),
        (rows[0].id, &refused[1]),
        (rows[1].id, &refused[2]),
    ]
    .into_iter()
    .map(|(id, k)| {
        (
            "media_attachments".to_owned(),
            id,
            k.clone(),
            "AccessDenied".to_owned(),
        )
    })
    .collect();
    assert_eq!(listed, want, "exactly the failed keys are listed");
    assert_eq!(
        media["failures"].as_array().unwrap().len(),
        3,
        "no duplicates"
    );

    // The rows owning a refused key are untouched, every column; the others are cleared.
    assert_eq!(row_json(&db, rows[0].id).await, before_0);
    assert_eq!(row_json(&db, rows[1].id).await, before_1);
    assert_all_cleared(&db, &rows[2..]).await;
    let left = bucket.keys().await;
    assert_eq!(left, refused.iter().cloned().collect::<BTreeSet<_>>());

    // Without --json the human summary lists the same failures; the re-run retries the
    // uncleared rows (row 1's small is already gone) and fails on the same keys.
    let run = mastomedia(&["--env-file", env, "prune"]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for (id, key) in [
        (rows[0].id, &refused[0]),
        (rows[0].id, &refused[1]),
        (rows[1].id, &refused[2]),
    ] {
        let line = format!("FAILED media_attachments {id} {key}: AccessDenied");
        assert!(
            run.stdout.contains(&line),
            "human output lists {line:?}:\n{}",
            run.stdout
        );
    }
    assert_eq!(
        run.stdout.matches("FAILED ").count(),
        3,
        "only the failed keys:\n{}",
        run.stdout
    );
    assert_eq!(row_json(&db, rows[0].id).await, before_0);
    assert_eq!(row_json(&db, rows[1].id).await, before_1);
    assert_eq!(bucket.keys().await, left);
    db.drop_db().await;
}

#[tokio::test]
async fn d1_transient_per_key_errors_are_retried_until_deleted() {
    let db = TestDb::new(Mastodon::V4_6, "America/Los_Angeles").await;
    let bucket = TestBucket::new().await;
    let rows = seed_rows(&db, &bucket, 4).await;
    // Every key answers InternalError in the DeleteObjects result twice, then deletes.
    bucket.faults(serde_json::json!({
        "delete_errors": { "*": "InternalError" },
        "delete_errors_times": 2,
    }));
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let media = &run.json()["passes"][0];
    assert_eq!(media["rows_cleared"], 4, "{media:#}");
    assert_eq!(media["rows_failed"], 0, "{media:#}");
    assert_eq!(media["objects_failed"], 0, "{media:#}");
    assert_eq!(
        media["objects_deleted"], 8,
        "retries do not double-count: {media:#}"
    );
    assert_all_cleared(&db, &rows).await;
    assert_eq!(bucket.keys().await, BTreeSet::new());
    let stats = bucket.stats();
    assert!(
        stats["ops"]["DeleteObjects"].as_u64().unwrap() >= 3,
        "the keys were retried: {stats}"
    );
    assert!(
        stats["injected"].as_u64().unwrap() >= 16,
        "every injected error happened: {stats}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn t1_slowdown_storm_on_delete_and_list_is_survived() {
    let db = TestDb::new(Mastodon::V4_6, "Asia/Tokyo").await;
    let bucket = TestBucket::new().await;
    let rows = seed_rows(&db, &bucket, 4).await;
    bucket.faults(serde_json::json!({
        "slowdown": { "count": 6, "ops": ["DeleteObjects", "ListObjectsV2"] },
    }));
    let env = s3_env_file(&db, &bucket.name, &[]);
    let started = Instant::now();
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let media = &run.json()["passes"][0];
    assert_eq!(media["rows_cleared"], 4, "{media:#}");
    assert_eq!(media["objects_deleted"], 8, "{media:#}");
    assert_eq!(media["objects_failed"], 0, "{media:#}");
    assert_all_cleared(&db, &rows).await;
    assert_eq!(bucket.keys().await, BTreeSet::new());
    let stats = bucket.stats();
    assert_eq!(stats["injected"], 6, "the whole storm was served: {stats}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "jittered backoff, not minutes of waiting: {:?}",
        started.elapsed()
    );
    db.drop_db().await;
}

#[tokio::test]
async fn t1_slowdown_storm_on_delete_objects_is_retried_without_double_counting() {
    let db = TestDb::new(Mastodon::V4_6, "America/Los_Angeles").await;
    let bucket = TestBucket::new().await;
    let rows = seed_rows(&db, &bucket, 4).await;
    // More 503s in a row than the SDK makes attempts: the pool's item-level retry takes over.
    bucket.faults(serde_json::json!({
        "slowdown": { "count": 6, "ops": ["DeleteObjects"] },
    }));
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let media = &run.json()["passes"][0];
    assert_eq!(media["rows_cleared"], 4, "{media:#}");
    assert_eq!(media["objects_deleted"], 8, "{media:#}");
    assert_eq!(media["objects_failed"], 0, "{media:#}");
    assert_all_cleared(&db, &rows).await;
    assert_eq!(bucket.keys().await, BTreeSet::new());
    let stats = bucket.stats();
    assert_eq!(stats["injected"], 6, "the whole storm was served: {stats}");
    assert!(
        stats["ops"]["DeleteObjects"].as_u64().unwrap() >= 7,
        "{stats}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn d4_content_md5_is_sent_with_delete_objects() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    let bucket = TestBucket::new().await;
    let rows = seed_rows(&db, &bucket, 3).await;
    bucket.faults(serde_json::json!({ "require_content_md5": true }));
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let media = &run.json()["passes"][0];
    assert_eq!(media["rows_cleared"], 3, "{media:#}");
    assert_eq!(media["objects_deleted"], 6, "{media:#}");
    assert_all_cleared(&db, &rows).await;
    assert_eq!(bucket.keys().await, BTreeSet::new());
    let stats = bucket.stats();
    assert_eq!(stats["injected"], 0, "no MissingContentMD5: {stats}");
    assert!(
        stats["ops"]["DeleteObjects"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn d4_no_multi_delete_falls_back_to_single_deletes() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let rows = seed_rows(&db, &bucket, 3).await;
    bucket.faults(serde_json::json!({ "multi_delete_not_implemented": true }));
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_cleared"], 3, "{report:#}");
    assert_eq!(media["objects_deleted"], 6, "{report:#}");
    assert_eq!(media["objects_failed"], 0, "{report:#}");
    assert_all_cleared(&db, &rows).await;
    assert_eq!(bucket.keys().await, BTreeSet::new());
    let stats = bucket.stats();
    assert_eq!(
        stats["ops"]["DeleteObject"], 6,
        "one DeleteObject per key: {stats}"
    );
    assert_eq!(
        report["requests"]["DeleteObject"], 6,
        "the report counts them too: {report:#}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn advisory_lock_held_elsewhere_stops_the_run_before_any_change() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let bucket = TestBucket::new().await;
    let rows = seed_rows(&db, &bucket, 2).await;
    let before = db.dump("media_attachments").await;
    let env = s3_env_file(&db, &bucket.name, &[]);

    // Another session (another run, as far as the tool can tell) holds the lock.
    let mut holder = db.pool.acquire().await.expect("connection");
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(mastomedia::mastodon::advisory_key("prune"))
        .fetch_one(&mut *holder)
        .await
        .expect("take the lock");
    assert!(got, "the test took the lock");
    bucket.reset_stats();
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(
        run.code, 3,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("another mastomedia prune is running"),
        "{}",
        run.stderr
    );
    assert_eq!(bucket.stats()["mutating"], 0);
    assert_eq!(bucket.keys().await, all_keys(&rows));
    assert_eq!(db.dump("media_attachments").await, before);

    // Released: the next run goes ahead.
    let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
        .bind(mastomedia::mastodon::advisory_key("prune"))
        .fetch_one(&mut *holder)
        .await
        .expect("release the lock");
    assert!(released);
    drop(holder);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_all_cleared(&db, &rows).await;
    db.drop_db().await;
}

/// Rows seeded for the interrupt test: at `--rate 50` with 10 rows per batch the whole run
/// takes over 15 s, ten times the moment of the interrupt.
const INTERRUPT_ROWS: i64 = 800;

/// Inserts [`INTERRUPT_ROWS`] remote PNG rows in one statement and puts their 2 objects
/// each, 32 at a time.
async fn seed_many(db: &TestDb, bucket: &TestBucket) -> BTreeMap<i64, [String; 2]> {
    sqlx::query(
        "INSERT INTO media_attachments (id, remote_url, file_file_name, file_content_type, file_file_size, \
         file_storage_schema_version, created_at, updated_at, file_updated_at, blurhash, description) \
         SELECT $1 + g, 'https://remote.example/media/' || ($1 + g)::text || '.png', lpad(to_hex(g), 16, '0') || '.png', \
         'image/png', 1234, 1, (now() AT TIME ZONE 'UTC') - interval '30 days', \
         (now() AT TIME ZONE 'UTC') - interval '30 days', (now() AT TIME ZONE 'UTC') - interval '30 days', \
         'LEHV6nWB2yk8', 'a description' FROM generate_series(0, $2 - 1) AS g",
    )
    .bind(BASE_ID)
    .bind(INTERRUPT_ROWS)
    .execute(&db.pool)
    .await
    .expect("bulk insert media");
    let rows: BTreeMap<i64, [String; 2]> = (0..INTERRUPT_ROWS)
        .map(|i| (BASE_ID + i, keys_of(BASE_ID + i, &file_name(i))))
        .collect();
    let keys: Vec<&String> = rows.values().flatten().collect();
    stream::iter(keys)
        .map(|k| bucket.put(k, b"x"))
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    rows
}

async fn cleared_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM media_attachments WHERE file_file_name IS NULL")
        .fetch_one(&db.pool)
        .await
        .expect("count cleared")
}

#[tokio::test]
async fn d5_interrupt_finishes_in_flight_work_and_never_half_clears_a_row() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let bucket = TestBucket::new().await;
    let rows = seed_many(&db, &bucket).await;
    assert_eq!(bucket.keys().await.len(), rows.len() * 2, "seeded");
    // Small batches and a low request rate: slow enough to interrupt in the middle.
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "20")]);
    let env = env.to_str().unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mastomedia"));
    cmd.args(["--env-file", env, "prune", "--rate", "50", "--json"])
        .env_clear()
        .env("MASTOMEDIA_STATUS_INTERVAL", "3600")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn mastomedia");
    // Interrupt once deleting is under way (at least ~1.5 s in and a row cleared).
    loop {
        if started.elapsed() >= Duration::from_millis(1500) && cleared_count(&db).await > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no row was cleared within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cleared_at_interrupt = cleared_count(&db).await as usize;
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT");
    let interrupted_at = Instant::now();
    let out = child.wait_with_output().expect("wait for mastomedia");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "interrupted: exit 130\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(20),
        "intake stopped at the interrupt: took {:?} to exit",
        interrupted_at.elapsed()
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["interrupted"], true, "{report:#}");

    // The invariant: a cleared row has none of its objects left; a row that still names
    // its file has all of them.
    let left = bucket.keys().await;
    let names: BTreeMap<i64, Option<String>> = sqlx::query_as::<_, (i64, Option<String>)>(
        "SELECT id, file_file_name FROM media_attachments",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut cleared = 0;
    for (id, keys) in &rows {
        match &names[id] {
            None => {
                cleared += 1;
                for k in keys {
                    assert!(!left.contains(k), "row {id} cleared but {k} still exists");
                }
            }
            Some(_) => {
                for k in keys {
                    assert!(
                        left.contains(k),
                        "row {id} still names its file but {k} is gone"
                    );
                }
            }
        }
    }
    assert!(cleared > 0, "some rows were done before the interrupt");
    // After the signal only work already handed out finishes: the chunks being deleted and
    // those queued for the workers (concurrency 4, 10 rows each), not the rest of the page.
    assert!(
        cleared - cleared_at_interrupt <= 100,
        "intake stopped at the interrupt: {cleared_at_interrupt} rows cleared then, {cleared} at exit"
    );
    assert!(
        cleared < rows.len(),
        "the interrupt stopped the run before the end"
    );
    assert_eq!(
        report["passes"][0]["rows_cleared"], cleared as u64,
        "the report matches the database"
    );
    assert_eq!(left.len(), (rows.len() - cleared) * 2, "no stray deletes");

    // Safe to re-run: the next run finishes the job.
    let run = mastomedia(&["--env-file", env, "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_eq!(
        run.json()["passes"][0]["rows_cleared"],
        (rows.len() - cleared) as u64
    );
    assert_eq!(cleared_count(&db).await, rows.len() as i64);
    assert_eq!(bucket.keys().await, BTreeSet::new());
    db.drop_db().await;
}

/// Rows seeded for the lock-loss test: at `--rate 50` with 10 rows per batch the first run
/// would take over 15 s.
const LOCK_ROWS: i64 = 800;

/// The backend pid holding an advisory lock in the test's database (the prune's lock
/// session), waiting until one does.
async fn advisory_lock_pid(db: &TestDb) -> i32 {
    let started = Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("read pg_locks");
        if let Some(p) = pid {
            return p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no advisory lock appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 8 case 4: the advisory lock lives on one session; when that session dies the run
/// must not go on without it. The lock session is terminated in the middle of a slow run:
/// the run stops before its next delete (exit 3), a second run takes the lock and finishes,
/// and no key is deleted twice.
#[tokio::test]
async fn case4_lost_lock_session_stops_the_run_before_the_next_delete() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let bucket = TestBucket::new().await;
    sqlx::query(
        "INSERT INTO media_attachments (id, remote_url, file_file_name, file_content_type, file_file_size, \
         file_storage_schema_version, created_at, updated_at, file_updated_at) \
         SELECT $1 + g, 'https://remote.example/media/' || ($1 + g)::text || '.png', lpad(to_hex(g), 16, '0') || '.png', \
         'image/png', 1234, 1, (now() AT TIME ZONE 'UTC') - interval '30 days', \
         (now() AT TIME ZONE 'UTC') - interval '30 days', (now() AT TIME ZONE 'UTC') - interval '30 days' \
         FROM generate_series(0, $2 - 1) AS g",
    )
    .bind(BASE_ID)
    .bind(LOCK_ROWS)
    .execute(&db.pool)
    .await
    .expect("bulk insert media");
    let rows: BTreeMap<i64, [String; 2]> = (0..LOCK_ROWS)
        .map(|i| (BASE_ID + i, keys_of(BASE_ID + i, &file_name(i))))
        .collect();
    let all: Vec<&String> = rows.values().flatten().collect();
    stream::iter(all)
        .map(|k| bucket.put(k, b"x"))
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    bucket.reset_stats();
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "20")]);
    let env = env.to_str().unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mastomedia"));
    cmd.args(["--env-file", env, "prune", "--rate", "50", "--json"])
        .env_clear()
        .env("MASTOMEDIA_STATUS_INTERVAL", "3600")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let started = Instant::now();
    let mut first = cmd.spawn().expect("spawn mastomedia");
    let pid = advisory_lock_pid(&db).await;
    // Kill the lock session once deleting is under way.
    loop {
        if cleared_count(&db).await > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no row was cleared within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .expect("terminate the lock session");
    assert!(killed, "the lock session {pid} was terminated");
    let killed_at = Instant::now();

    // The first run must stop soon; the second starts at the latest 5 s after the kill
    // (with the old code the first run is still deleting then, without any lock).
    let mut first_exit = None;
    while killed_at.elapsed() < Duration::from_secs(5) {
        if let Some(status) = first.try_wait().expect("poll the first run") {
            first_exit = Some((status, killed_at.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if first_exit.is_some() {
        // What the first run left: no row names a deleted object, no cleared row has one
        // left (rows of deletes sent before the loss were still cleared).
        let left = bucket.keys().await;
        let names: BTreeMap<i64, Option<String>> = sqlx::query_as::<_, (i64, Option<String>)>(
            "SELECT id, file_file_name FROM media_attachments",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        for (id, keys) in &rows {
            for k in keys {
                assert_eq!(
                    names[id].is_some(),
                    left.contains(k),
                    "row {id} and its object {k} disagree after the first run"
                );
            }
        }
    }
    let second = tokio::task::spawn_blocking({
        let env = env.to_owned();
        // Large batches: the rest in a few chunks.
        move || {
            crate::support::mastomedia_env(
                &["--env-file", &env, "prune", "--json"],
                &[("S3_BATCH_DELETE_LIMIT", "1000")],
            )
        }
    });
    let out = first.wait_with_output().expect("wait for the first run");
    let second = second.await.expect("second run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    // No key was deleted twice, across both runs.
    let stats = bucket.stats();
    let mut seen = BTreeMap::<&str, u32>::new();
    for k in stats["delete_keys"].as_array().expect("delete_keys") {
        *seen.entry(k.as_str().unwrap()).or_default() += 1;
    }
    let twice: Vec<&&str> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        twice.is_empty(),
        "{} keys were deleted by both runs, e.g. {:?}\nfirst run:\n{stdout}\n{stderr}",
        twice.len(),
        twice.first()
    );
    let (status, took) = first_exit.unwrap_or_else(|| {
        panic!(
            "the first run went on for 5 s after losing its lock\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )
    });
    assert_eq!(
        status.code(),
        Some(3),
        "lost lock: exit 3 (after {took:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let fatal = report["fatal"].as_str().unwrap_or_default();
    assert!(
        fatal.contains("lost the advisory lock")
            && fatal.contains("stopping before the next delete"),
        "{report:#}"
    );
    assert!(stderr.contains("lost the advisory lock"), "{stderr}");
    assert_eq!(
        second.code, 0,
        "second run\nstdout:\n{}\nstderr:\n{}",
        second.stdout, second.stderr
    );
    // Together they did the whole job, each key deleted once, every row cleared.
    assert_eq!(seen.len(), rows.len() * 2, "every key deleted exactly once");
    assert_eq!(cleared_count(&db).await, LOCK_ROWS);
    assert_eq!(bucket.keys().await, BTreeSet::new());
    db.drop_db().await;
}
