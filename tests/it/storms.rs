//! Issue 9, cases 3 and 4: error storms and keys that break listings or batch deletes.
//!
//! Case 3: every command rides out the same storms with one retry policy (every HTTP
//! attempt takes a `--rate` permit and is counted; listings are retried at item level; a
//! failed listing fails only the rows that need it). Case 4: a key with a control
//! character (`\x01`, U+FFFE: the listing XML cannot carry it) does not stop prune, du or
//! orphans (listings use `EncodingType=url`), and a row whose listing keeps failing
//! fails alone. Faults come from `tests/support/s3server.py` (`error_rate` is seeded, so a
//! failing run replays; `list_errors` fails every listing whose key range covers one
//! prefix, so a range listing over it fails as well as the prefix's own listing).

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt};

use crate::support::seed::{Media, insert_media, media_names};
use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file, temp_dir};

/// First id of the rows seeded here (18 digits).
const BASE_ID: i64 = 109345678901240000;
/// Ids this far apart never share a (coarse) listing prefix: one listing per row.
const SPARSE: i64 = 1_000_000_000;

/// The two keys (original, small) of a remote row with schema version 1.
fn keys_of(id: i64, name: &str) -> [String; 2] {
    let p = crate::support::partition18(id);
    [
        format!("cache/media_attachments/files/{p}/original/{name}"),
        format!("cache/media_attachments/files/{p}/small/{name}"),
    ]
}

/// Inserts `n` remote rows 30 days old, `SPARSE` ids apart (each its own listing), named
/// by `name(i)`, and puts both objects of each (16 puts at a time). Returns (id, keys).
async fn seed(
    db: &TestDb,
    bucket: &TestBucket,
    n: i64,
    name: impl Fn(i64) -> String,
) -> Vec<(i64, [String; 2])> {
    let mut rows = Vec::new();
    for i in 0..n {
        let id = BASE_ID + i * SPARSE;
        let file = name(i);
        insert_media(db, &Media::remote(id, &file, 30.0)).await;
        rows.push((id, keys_of(id, &file)));
    }
    let keys: Vec<String> = rows.iter().flat_map(|(_, k)| k.iter().cloned()).collect();
    stream::iter(keys)
        .for_each_concurrent(16, |k| async move { bucket.put(&k, b"0123456789").await })
        .await;
    rows
}

/// Whether `key` exists (HEAD straight to moto).
async fn exists(bucket: &TestBucket, key: &str) -> bool {
    bucket
        .client
        .head_object()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await
        .is_ok()
}

fn png(i: i64) -> String {
    format!("{i:016x}.png")
}

/// `(total, per op)` attempts of a `--json` report.
fn attempts(report: &serde_json::Value) -> u64 {
    report["attempts"]
        .as_object()
        .unwrap_or_else(|| panic!("attempts in the report: {report:#}"))
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// Checks the storm of a `prune --json` run against the server's log: what `--json`
/// calls attempts is what the server saw, per operation; errors were injected on each of
/// `stormed` (e.g. `ListObjectsV2` for sizing and `DeleteObjects`); every answer of
/// status 400 or more the server sent was one it injected (moto itself failed nothing);
/// and every retry the tool made answered an injected error (attempts beyond the
/// operations ≤ injected; the runs set a read timeout long enough that no attempt times
/// out). Returns the injected count.
fn assert_storm_matches_the_server_log(
    report: &serde_json::Value,
    stats: &serde_json::Value,
    stormed: &[&str],
) -> u64 {
    let injected = stats["injected"].as_u64().unwrap();
    let per_op = |field: &str, op: &str| report[field][op].as_u64().unwrap_or(0);
    for op in ["ListObjectsV2", "DeleteObjects"] {
        assert_eq!(
            per_op("attempts", op),
            stats["ops"][op].as_u64().unwrap_or(0),
            "{op}: {report:#}\n{stats}"
        );
    }
    for &op in stormed {
        assert!(
            stats["injected_ops"][op].as_u64().unwrap_or(0) > 0,
            "the storm hit {op}: {stats}"
        );
    }
    let sum = |v: &serde_json::Value| -> u64 {
        v.as_object()
            .map(|o| o.values().map(|n| n.as_u64().unwrap()).sum())
            .unwrap_or(0)
    };
    assert_eq!(sum(&stats["injected_ops"]), injected, "{stats}");
    assert_eq!(
        sum(&stats["error_answers"]),
        injected,
        "every error answer was injected: {stats}"
    );
    let requests = sum(&report["requests"]);
    let attempts = attempts(report);
    assert_eq!(
        attempts,
        stats["total"].as_u64().unwrap(),
        "{report:#}\n{stats}"
    );
    assert!(
        attempts > requests && attempts - requests <= injected,
        "retries ({}) answer injected errors ({injected}): {report:#}\n{stats}",
        attempts - requests
    );
    assert!(report["throttled"].as_u64().unwrap() > 0, "{report:#}");
    eprintln!(
        "storm: {injected} injected ({}), {attempts} attempts for {requests} requests",
        stats["injected_ops"]
    );
    injected
}

/// Issue 11 changed this test on purpose: with range listings a chunk is sized by about
/// one `ListObjectsV2` page instead of one listing per row, so 300 dense rows no longer
/// make hundreds of requests and "more than 100 injected errors" measured the old request
/// pattern, not the storm. The end state is asserted as before; the storm is checked
/// against the server's log ([`assert_storm_matches_the_server_log`]: both operations
/// stormed) with chunks of 20 keys (30 range listings and 30 `DeleteObjects`), and
/// [`case3_prune_rides_out_30_percent_errors_on_the_per_row_listings`] keeps the per-row
/// listing path under a storm of more than 100 errors.
#[tokio::test]
async fn case3_prune_rides_out_30_percent_errors_on_every_operation() {
    let db = TestDb::new(Mastodon::V4_6, "Asia/Kathmandu").await;
    let bucket = TestBucket::new().await;
    let rows = seed(&db, &bucket, 300, png).await;
    bucket.faults(serde_json::json!({
        "error_rate": { "rate": 0.3, "codes": ["SlowDown", "InternalError"], "seed": 9 }
    }));
    bucket.reset_stats();
    // A read timeout no loaded moto answer reaches: every retry is an injected error's.
    let env = s3_env_file(
        &db,
        &bucket.name,
        &[("S3_BATCH_DELETE_LIMIT", "20"), ("S3_READ_TIMEOUT", "60")],
    );
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--concurrency",
        "8",
        "--json",
    ]);
    let stats = bucket.stats();
    assert_eq!(
        run.code, 0,
        "the storm is ridden out\nstdout:\n{}\nstderr:\n{}\nserver: {stats}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_cleared"], 300, "{report:#}");
    assert_eq!(media["rows_failed"], 0, "{report:#}");
    assert_eq!(media["objects_deleted"], 600, "{report:#}");
    assert_eq!(media["objects_already_gone"], 0, "{report:#}");
    assert_eq!(media["bytes_freed"], 6000, "{report:#}");
    for (id, _) in &rows {
        assert_eq!(media_names(&db, *id).await.0, None, "row {id} cleared");
    }
    assert_eq!(bucket.keys().await, BTreeSet::new(), "every object is gone");
    assert_storm_matches_the_server_log(&report, &stats, &["ListObjectsV2", "DeleteObjects"]);
    // Range listings sized the chunks: fewer listings than rows.
    let listings = report["requests"]["ListObjectsV2"].as_u64().unwrap();
    assert!(listings < 300, "{report:#}");
    db.drop_db().await;
}

/// The per-row listing path under the same storm: after the first key of every 50th row
/// (the first of each chunk of 100 keys) sit 999 objects of no candidate's, so the first
/// page of each chunk's range listing answers one key of 100 and the density rule gives
/// the range up (`RangeMerge::feed` in `src/plan/ranges.rs`): every row is sized by
/// its own partition listing. More than 100 injected errors; exact sizes; the 999-object
/// folders keep every object that is no candidate's.
#[tokio::test]
async fn case3_prune_rides_out_30_percent_errors_on_the_per_row_listings() {
    let db = TestDb::new(Mastodon::V4_6, "Asia/Kathmandu").await;
    let bucket = TestBucket::new().await;
    let rows = seed(&db, &bucket, 300, png).await;
    let mut noise = Vec::new();
    for (_, keys) in rows.iter().step_by(50) {
        // `…/original/<name>` < `…/original/~NNN` < `…/small/<name>`.
        for j in 0..999 {
            noise.push((format!("{}~{j:03}", keys[0]), b"other".to_vec()));
        }
    }
    bucket.put_many(&noise);
    bucket.faults(serde_json::json!({
        "error_rate": { "rate": 0.3, "codes": ["SlowDown", "InternalError"], "seed": 9 }
    }));
    bucket.reset_stats();
    // A read timeout no loaded moto answer reaches: every retry is an injected error's.
    let env = s3_env_file(
        &db,
        &bucket.name,
        &[("S3_BATCH_DELETE_LIMIT", "100"), ("S3_READ_TIMEOUT", "60")],
    );
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--concurrency",
        "8",
        "--json",
    ]);
    let stats = bucket.stats();
    assert_eq!(
        run.code, 0,
        "the storm is ridden out\nstdout:\n{}\nstderr:\n{}\nserver: {stats}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_cleared"], 300, "{report:#}");
    assert_eq!(media["rows_failed"], 0, "{report:#}");
    assert_eq!(media["objects_deleted"], 600, "{report:#}");
    assert_eq!(media["objects_already_gone"], 0, "{report:#}");
    assert_eq!(media["bytes_freed"], 6000, "{report:#}");
    for (id, _) in &rows {
        assert_eq!(media_names(&db, *id).await.0, None, "row {id} cleared");
    }
    let want: BTreeSet<String> = noise.into_iter().map(|(k, _)| k).collect();
    assert_eq!(bucket.keys().await, want, "only the other objects stay");
    // Every row took its own listing (plus the given-up range pages).
    let listings = report["requests"]["ListObjectsV2"].as_u64().unwrap();
    assert!(listings >= 300, "per-row listings: {report:#}");
    // Six DeleteObjects only: the storm need not hit them here (the test above does).
    let injected = assert_storm_matches_the_server_log(&report, &stats, &["ListObjectsV2"]);
    assert!(injected > 100, "the storm happened: {stats}");
    db.drop_db().await;
}

#[tokio::test]
async fn case3_du_and_orphans_ride_out_a_storm_at_the_start() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    let bucket = TestBucket::new().await;
    let rows = seed(&db, &bucket, 12, png).await;
    // Two orphans: a row id nobody has.
    let orphan_keys = keys_of(BASE_ID + 999 * SPARSE, "0000000000000fff.png");
    for k in &orphan_keys {
        bucket.put(k, b"0123456789").await;
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();
    let storm = serde_json::json!({
        "error_rate": { "rate": 1.0, "codes": ["SlowDown", "InternalError"], "seconds": 2.0 }
    });

    bucket.faults(storm.clone());
    let run = mastomedia(&["--env-file", env, "du", "--json"]);
    assert_eq!(
        run.code,
        0,
        "du rides out the storm\nstdout:\n{}\nstderr:\n{}\nserver: {}",
        run.stdout,
        run.stderr,
        bucket.stats()
    );
    let report = run.json();
    assert_eq!(
        report["total"]["objects"],
        2 * rows.len() as u64 + 2,
        "{report:#}"
    );
    assert_eq!(report["total"]["bytes"], 10 * (2 * rows.len() as u64 + 2));
    assert!(bucket.stats()["injected"].as_u64().unwrap() > 0);
    // Retried: more HTTP attempts than operations. (Whether any of the injected answers
    // was a 503 rather than a 500 depends on how many attempts fell in the 2 s window, so
    // `throttled` is not asserted here; case3_throttled_runs_print_the_rate_hint does.)
    let attempts: u64 = report["attempts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let requests: u64 = report["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(attempts > requests, "{report:#}");

    bucket.faults(storm);
    let journal = temp_dir("storm-journal").join("j.sqlite");
    let run = mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        journal.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        run.code, 0,
        "orphans rides out the storm\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(
        report["scanned"]["objects"],
        2 * rows.len() as u64 + 2,
        "{report:#}"
    );
    assert_eq!(report["referenced"]["objects"], 2 * rows.len() as u64);
    assert_eq!(report["orphans"]["objects"], 2);
    assert_eq!(report["complete"], true);
    db.drop_db().await;
}

#[tokio::test]
async fn case3_rate_bounds_every_attempt_and_json_counts_attempts() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    seed(&db, &bucket, 60, png).await;
    bucket.faults(serde_json::json!({
        "error_rate": { "rate": 0.3, "codes": ["SlowDown", "InternalError"], "seed": 3 }
    }));
    bucket.reset_stats();
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "20")]);
    let rate = 20;
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--concurrency",
        "8",
        "--rate",
        &rate.to_string(),
        "--json",
    ]);
    let stats = bucket.stats();
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}\nserver: {stats}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["passes"][0]["rows_cleared"], 60, "{report:#}");
    // Attempts are spaced 1/rate apart; +1 allows one arrival's network jitter at the
    // edge of a window.
    let most = stats["max_per_second"].as_u64().unwrap();
    assert!(
        most <= rate + 1,
        "the server saw {most} attempts within one second at --rate {rate}: {stats}"
    );
    assert_eq!(
        attempts(&report),
        stats["total"].as_u64().unwrap(),
        "{report:#}\n{stats}"
    );
    assert_eq!(
        report["attempts"]["DeleteObjects"], stats["ops"]["DeleteObjects"],
        "{report:#}\n{stats}"
    );
    // The human summary shows attempts and the hint.
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "du"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("\nattempts: "), "{}", run.stdout);
    db.drop_db().await;
}

#[tokio::test]
async fn case3_throttled_runs_print_the_rate_hint() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    seed(&db, &bucket, 4, png).await;
    bucket.faults(serde_json::json!({ "slowdown": { "count": 3, "ops": ["ListObjectsV2"] } }));
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "du", "--rate", "100"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("hint: the provider throttled 3 requests: lower --rate (e.g. --rate 50)"),
        "{}",
        run.stdout
    );
    db.drop_db().await;
}

#[tokio::test]
async fn case4_control_character_keys_do_not_stop_du_orphans_or_prune() {
    let db = TestDb::new(Mastodon::V4_6, "America/Sao_Paulo").await;
    let bucket = TestBucket::new().await;
    // Rows 0 and 1 are named with a control character and U+FFFE, which XML 1.0 cannot
    // carry; the others are ordinary. A stray key with \x01 is the bucket's first key.
    let rows = seed(&db, &bucket, 6, |i| match i {
        0 => "bad\u{1}name.png".to_owned(),
        1 => "odd\u{FFFE}name.png".to_owned(),
        _ => png(i),
    })
    .await;
    bucket.put("\u{1}first key+with %20 plus", b"xx").await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();

    let run = mastomedia(&["--env-file", env, "du", "--json"]);
    assert_eq!(
        run.code, 0,
        "du\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["total"]["objects"], 13, "{report:#}");
    assert_eq!(report["other"]["objects"], 1, "{report:#}");

    let journal = temp_dir("cc-journal").join("j.sqlite");
    let run = mastomedia(&[
        "--env-file",
        env,
        "orphans",
        "--journal",
        journal.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        run.code, 0,
        "orphans\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["scanned"]["objects"], 13, "{report:#}");
    assert_eq!(report["referenced"]["objects"], 12, "{report:#}");
    assert_eq!(report["unrecognised"]["objects"], 1, "{report:#}");

    let run = mastomedia(&["--env-file", env, "prune", "--json"]);
    assert_eq!(
        run.code, 0,
        "prune\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(report["passes"][0]["rows_cleared"], 6, "{report:#}");
    assert_eq!(report["passes"][0]["objects_deleted"], 12, "{report:#}");
    for (id, _) in &rows {
        assert_eq!(media_names(&db, *id).await.0, None, "row {id} cleared");
    }
    // Every row's objects are gone; the stray key (decoded exactly once: its '+' and
    // "%20" are what was stored) is still there. HEAD, since a plain listing of this
    // bucket cannot be parsed.
    for k in rows.iter().flat_map(|(_, k)| k.iter()) {
        assert!(!exists(&bucket, k).await, "{k:?} deleted");
    }
    assert!(exists(&bucket, "\u{1}first key+with %20 plus").await);
    db.drop_db().await;
}

#[tokio::test]
async fn case4_a_row_whose_listing_keeps_failing_fails_alone() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let rows = seed(&db, &bucket, 8, png).await;
    let bad = &rows[3];
    let bad_prefix = bad.1[0].rsplitn(3, '/').nth(2).unwrap().to_owned() + "/";
    // Every listing whose range covers the row's folder fails: the range listing of the
    // chunk (a wider prefix, started before the first row) and the row's own listing.
    bucket.faults(serde_json::json!({ "list_errors": { bad_prefix.clone(): "AccessDenied" } }));
    let before = bucket.keys().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(
        run.code, 1,
        "one row failed: exit 1\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_cleared"], 7, "{report:#}");
    assert_eq!(media["rows_failed"], 1, "{report:#}");
    let failed: BTreeSet<i64> = media["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(failed, BTreeSet::from([bad.0]), "{report:#}");
    assert!(
        media_names(&db, bad.0).await.0.is_some(),
        "the bad row is untouched"
    );
    let left = bucket.keys().await;
    assert_eq!(
        left,
        bad.1.iter().cloned().collect(),
        "only its objects stay"
    );
    assert!(before.is_superset(&left));
    // The range listing failed and its rows fell back to their own listings: one range
    // page and eight partition listings at least, the failed ones injected by the server.
    let listings = report["requests"]["ListObjectsV2"].as_u64().unwrap();
    assert!(listings > rows.len() as u64, "{report:#}");
    let stats = bucket.stats();
    assert!(
        stats["injected_ops"]["ListObjectsV2"].as_u64().unwrap() >= 2,
        "the range and the row's own listing failed: {stats}"
    );
    db.drop_db().await;
}
