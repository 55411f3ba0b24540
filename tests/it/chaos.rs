//! Issue 12: the README's safety promises as properties, checked after many seeded faults
//! (`tests/it/support/invariants.rs` has the checker, `tests/support/s3server.py` the
//! fault layer). Each scenario prints one line of figures (run with `--nocapture` to see
//! them; `docs/reliability.md` quotes the last run) and names its seed in every
//! assertion message; `MASTOMEDIA_CHAOS_SEED=N` replays one seed,
//! `MASTOMEDIA_CHAOS_ITERATIONS=N` runs more (default 30 kills per command).
//!
//! Black-box only: the binary, the real PostgreSQL and the S3 server of the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use crate::migrate::{CACHE_CONTROL, GIF, JPEG, PNG, acl, bytes, get, write_file};
use crate::support::invariants::{
    Ending, Rng, Selected, Snapshot, Tally, check_prune, command, iterations, rerun, rows_json,
    run_and_kill, seeds, snapshot,
};
use crate::support::seed::{Media, insert_emoji, insert_media};
use crate::support::{Mastodon, TestBucket, TestDb, partition18, s3_env_file, temp_dir};

/// Default SIGKILL iterations per command (prune, migrate, orphans --delete).
const KILLS: usize = 30;

/// First id of the rows seeded here; iteration `i` uses ids from `BASE_ID + i * STRIDE`.
const BASE_ID: i64 = 109_500_000_000_000_000;
/// Ids per iteration.
const STRIDE: i64 = 1_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The keys (original, small) of a media row with schema version 1: `cache/` for remote.
fn media_keys(id: i64, name: &str, remote: bool) -> Vec<String> {
    let p = partition18(id);
    let c = if remote { "cache/" } else { "" };
    vec![
        format!("{c}media_attachments/files/{p}/original/{name}"),
        format!("{c}media_attachments/files/{p}/small/{name}"),
    ]
}

/// Puts every `(key, body)`, 16 at a time, straight to moto.
async fn put_all(bucket: &TestBucket, objects: &[(String, Vec<u8>)]) {
    stream::iter(objects)
        .for_each_concurrent(16, |(k, b)| async move { bucket.put(k, b).await })
        .await;
}

/// The snapshot entries of `keys` (which must exist).
fn pick(all: &Snapshot, keys: &BTreeSet<String>) -> Snapshot {
    keys.iter()
        .map(|k| {
            (
                k.clone(),
                all.get(k)
                    .unwrap_or_else(|| panic!("seeded {k} is in the bucket"))
                    .clone(),
            )
        })
        .collect()
}

// ------------------------------------------------------------------------ prune world

/// One prune world: what prune must clear and what it must leave.
pub(super) struct PruneWorld {
    pub(super) selected: Selected,
    pub(super) protected_keys: BTreeSet<String>,
    pub(super) protected_rows: Vec<i64>,
}

/// Seeds iteration `iter` of a prune world into `db` and `bucket` from `rng`: 8–30
/// selected remote rows (30 days old, some with a left-behind neighbour in the same
/// folder), and the objects prune must never touch: old local uploads, new remote media,
/// a local emoji, unrelated keys and same-folder neighbours whose names differ from the
/// row's by a suffix.
pub(super) async fn seed_prune_world(
    db: &TestDb,
    bucket: &TestBucket,
    iter: i64,
    rng: &mut Rng,
    selected_rows: Option<u64>,
) -> PruneWorld {
    let base = BASE_ID + iter * STRIDE;
    let n = selected_rows.unwrap_or_else(|| rng.range(8, 30)) as i64;
    let mut objects = Vec::new();
    let mut selected = Selected::new();
    let mut protected = BTreeSet::new();
    let mut protected_rows = Vec::new();
    for i in 0..n {
        let id = base + i;
        let name = format!("{:016x}.png", rng.next());
        insert_media(db, &Media::remote(id, &name, 30.0 + i as f64 / 10.0)).await;
        let keys = media_keys(id, &name, true);
        for k in &keys {
            objects.push((
                k.clone(),
                format!("selected {k} {}", rng.next()).into_bytes(),
            ));
        }
        if rng.chance(0.3) {
            // A neighbour: same folder, a name that extends the row's (exact keys only).
            let k = format!("{}.bak", keys[0]);
            objects.push((k.clone(), b"neighbour".to_vec()));
            protected.insert(k);
        }
        selected.insert(id, keys);
    }
    // Old local uploads and new remote media: not selected.
    for j in 0..2 {
        let id = base + 500 + j;
        let name = format!("{:016x}.png", rng.next());
        insert_media(db, &Media::local(id, &name, 40.0)).await;
        for k in media_keys(id, &name, false) {
            objects.push((k.clone(), format!("local {k}").into_bytes()));
            protected.insert(k);
        }
        protected_rows.push(id);
        let id = base + 600 + j;
        let name = format!("{:016x}.png", rng.next());
        insert_media(db, &Media::remote(id, &name, 1.0)).await;
        for k in media_keys(id, &name, true) {
            objects.push((k.clone(), format!("new {k}").into_bytes()));
            protected.insert(k);
        }
        protected_rows.push(id);
    }
    let emoji_id = 1_000 + iter;
    let emoji_name = format!("{:016x}.png", rng.next());
    insert_emoji(db, emoji_id, None, &emoji_name).await;
    let ep = format!("{emoji_id:09}");
    let ep = format!("{}/{}/{}", &ep[0..3], &ep[3..6], &ep[6..9]);
    for style in ["original", "static"] {
        let k = format!("custom_emojis/images/{ep}/{style}/{emoji_name}");
        objects.push((k.clone(), b"emoji".to_vec()));
        protected.insert(k);
    }
    for k in [
        format!("backups/{iter}/archive.zip"),
        format!("unrelated/{iter}/{:x}.txt", rng.next()),
        format!("site_uploads/files/000/000/{iter:03}/original/logo.png"),
    ] {
        objects.push((k.clone(), format!("foreign {k}").into_bytes()));
        protected.insert(k);
    }
    put_all(bucket, &objects).await;
    PruneWorld {
        selected,
        protected_keys: protected,
        protected_rows,
    }
}

/// The protected snapshot and rows of a world (taken right after seeding).
pub(super) async fn protect(
    db: &TestDb,
    bucket: &TestBucket,
    w: &PruneWorld,
    into: &mut Snapshot,
    rows: &mut BTreeMap<i64, Option<String>>,
) {
    into.extend(pick(&snapshot(bucket).await, &w.protected_keys));
    rows.extend(rows_json(db, "media_attachments", &w.protected_rows).await);
}

pub(super) fn prune_cmd(env: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["--env-file", s(env), "prune", "--json"];
    args.extend_from_slice(extra);
    command(&args, &[])
}

/// Figures of one scenario, printed for `docs/reliability.md`.
#[derive(Default)]
struct Figures {
    kills: usize,
    finished_first: usize,
    reruns: usize,
    rows_cleared: usize,
    foreign_checked: usize,
    /// Re-runs refused as an empty journal (the known gap of
    /// `migrate_sigkill_before_the_first_journal_commit_then_plain_rerun_resumes`).
    refused_empty_journal: usize,
}

impl Figures {
    fn add(&mut self, t: Tally) {
        self.foreign_checked += t.foreign_checked;
    }

    fn print(&self, scenario: &str, seeds: &[u64]) {
        eprintln!(
            "chaos {scenario}: seeds {:?}..{:?}: {} kills ({} runs finished before their kill moment), {} re-runs, \
             {} rows/objects completed, 0 rows lost, 0 foreign keys deleted ({} foreign-object checks), \
             {} re-runs refused as an empty journal (known gap)",
            seeds.first(),
            seeds.last(),
            self.kills,
            self.finished_first,
            self.reruns,
            self.rows_cleared,
            self.foreign_checked,
            self.refused_empty_journal
        );
    }
}

/// SIGKILL at a seeded moment (after the k-th request plus a few ms) during prune, then the
/// invariants, a clean re-run and the invariants again with everything cleared.
#[tokio::test]
async fn prune_sigkill_at_random_moments_then_rerun() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let bucket = TestBucket::new().await;
    // Small batches: a kill lands between batches, and between a batch and its rows.
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "4")]);
    let seeds = seeds(12_000, iterations(KILLS));
    let mut fig = Figures::default();
    let mut protected = Snapshot::new();
    let mut protected_rows = BTreeMap::new();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = seed_prune_world(&db, &bucket, iter as i64, &mut rng, None).await;
        protect(&db, &bucket, &w, &mut protected, &mut protected_rows).await;
        let what = format!("prune SIGKILL seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let after = rng.range(1, 12);
        let extra = rng.range(0, 40);
        let rate = ["40", "80", "200"][rng.range(0, 2) as usize];
        bucket.reset_stats();
        match run_and_kill(
            prune_cmd(&env, &["--rate", rate, "--concurrency", "2"]),
            &bucket,
            after,
            extra,
        ) {
            Ending::Killed(_) => fig.kills += 1,
            Ending::Finished(code) => {
                assert_eq!(code, 0, "{what}: the unkilled run");
                fig.finished_first += 1;
            }
        }
        let t = check_prune(
            &format!("{what}, after the kill"),
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            false,
        )
        .await;
        fig.add(t);
        let (code, out, err) = rerun(|| prune_cmd(&env, &[]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        let t = check_prune(
            &format!("{what}, after the re-run"),
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            true,
        )
        .await;
        fig.rows_cleared += t.cleared;
        fig.add(t);
    }
    fig.print("prune SIGKILL", &seeds);
    db.drop_db().await;
}

/// The tool's database sessions terminated mid-run (`pg_terminate_backend`, as a restart
/// or failover does): the run stops (exit 1 or 3, never a panic), nothing is half done,
/// and the re-run finishes.
#[tokio::test]
async fn prune_database_sessions_terminated_mid_run() {
    let db = TestDb::new(Mastodon::V4_6, "Asia/Kathmandu").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "4")]);
    let seeds = seeds(12_100, iterations(KILLS).div_ceil(10));
    let mut fig = Figures::default();
    let mut protected = Snapshot::new();
    let mut protected_rows = BTreeMap::new();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = seed_prune_world(&db, &bucket, iter as i64, &mut rng, Some(60)).await;
        protect(&db, &bucket, &w, &mut protected, &mut protected_rows).await;
        let what = format!("prune pg_terminate seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let child = prune_cmd(&env, &["--rate", "30", "--concurrency", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until some rows are cleared (deleting is under way), plus a seeded delay.
        let started = Instant::now();
        let ids: Vec<i64> = w.selected.keys().copied().collect();
        loop {
            let cleared: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM media_attachments WHERE id = ANY($1) AND file_file_name IS NULL",
            )
            .bind(&ids)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            if cleared > 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: nothing cleared in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        let killed: Vec<i32> = sqlx::query_scalar(
            "WITH v AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = 'mastomedia' \
             AND datname = current_database() AND pid <> pg_backend_pid()) \
             SELECT pid FROM v WHERE pg_terminate_backend(pid)",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let out = child.wait_with_output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !killed.is_empty() {
            fig.kills += 1;
            assert!(
                [0, 1, 3].contains(&code),
                "{what}: sessions {killed:?} terminated: exit 1 or 3 (or 0 if it had just finished), got {code}\n{stderr}"
            );
        } else {
            fig.finished_first += 1;
        }
        let t = check_prune(
            &format!("{what}, after the terminate"),
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            false,
        )
        .await;
        fig.add(t);
        let (code, out, err) = rerun(|| prune_cmd(&env, &[]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        let t = check_prune(
            &format!("{what}, after the re-run"),
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            true,
        )
        .await;
        fig.rows_cleared += t.cleared;
        fig.add(t);
    }
    fig.print("prune pg_terminate_backend", &seeds);
    db.drop_db().await;
}

/// Permanent AccessDenied on seeded keys (and 10 % transient 503/500 on every operation):
/// the rows owning a refused key stay exactly as they were, the run exits 1 and lists
/// them, every other row is cleared; once the provider relents a re-run clears the rest.
#[tokio::test]
async fn prune_permanent_access_denied_on_some_keys() {
    let db = TestDb::new(Mastodon::V4_6, "America/Los_Angeles").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "8")]);
    let seeds = seeds(12_200, iterations(KILLS).div_ceil(15));
    let mut protected = Snapshot::new();
    let mut protected_rows = BTreeMap::new();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = seed_prune_world(&db, &bucket, iter as i64, &mut rng, Some(30)).await;
        protect(&db, &bucket, &w, &mut protected, &mut protected_rows).await;
        let what = format!("prune AccessDenied seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let mut refused_rows = BTreeSet::new();
        let mut errors = serde_json::Map::new();
        for (id, keys) in &w.selected {
            if rng.chance(0.2) {
                refused_rows.insert(*id);
                let k = &keys[rng.range(0, keys.len() as u64 - 1) as usize];
                errors.insert(k.clone(), "AccessDenied".into());
            }
        }
        if refused_rows.is_empty() {
            let (id, keys) = w.selected.iter().next().unwrap();
            refused_rows.insert(*id);
            errors.insert(keys[0].clone(), "AccessDenied".into());
        }
        let refused_ids: Vec<i64> = refused_rows.iter().copied().collect();
        let before = rows_json(&db, "media_attachments", &refused_ids).await;
        bucket.faults(serde_json::json!({
            "delete_errors": errors,
            "error_rate": {"rate": 0.1, "seed": seed, "codes": ["SlowDown", "InternalError"]},
        }));
        let (code, out, err) = rerun(|| prune_cmd(&env, &[]));
        assert_eq!(code, 1, "{what}: some keys refused: exit 1\n{out}\n{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let media = &report["passes"][0];
        assert_eq!(
            media["rows_failed"],
            refused_rows.len(),
            "{what}: {media:#}"
        );
        let listed: BTreeSet<String> = media["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["key"].as_str().unwrap().to_owned())
            .collect();
        let want: BTreeSet<String> = errors.keys().cloned().collect();
        assert_eq!(listed, want, "{what}: exactly the refused keys are listed");
        assert_eq!(
            rows_json(&db, "media_attachments", &refused_ids).await,
            before,
            "{what}: rows owning a refused key are untouched"
        );
        let t = check_prune(
            &what,
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            false,
        )
        .await;
        assert_eq!(
            (t.cleared, t.pending),
            (w.selected.len() - refused_rows.len(), refused_rows.len()),
            "{what}: every row without a refused key is cleared"
        );
        // The refused keys are still there.
        let now = snapshot(&bucket).await;
        for k in errors.keys() {
            assert!(now.contains_key(k), "{what}: refused {k} still exists");
        }
        bucket.faults(serde_json::json!({}));
        let (code, out, err) = rerun(|| prune_cmd(&env, &[]));
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        check_prune(
            &format!("{what}, after the re-run"),
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            true,
        )
        .await;
    }
    db.drop_db().await;
}

/// SIGTERM in the middle of a prune: exit 130, the batches in flight are finished (the
/// report's cleared rows are the database's, and no row still naming its file has lost an
/// object: no batch was cut between its delete and its row update), the re-run completes.
#[tokio::test]
async fn prune_sigterm_exits_130_and_finishes_in_flight_work() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "5")]);
    let seeds = seeds(12_300, iterations(KILLS).div_ceil(15));
    let mut protected = Snapshot::new();
    let mut protected_rows = BTreeMap::new();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = seed_prune_world(&db, &bucket, iter as i64, &mut rng, Some(120)).await;
        protect(&db, &bucket, &w, &mut protected, &mut protected_rows).await;
        let what = format!("prune SIGTERM seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        bucket.reset_stats();
        let child = prune_cmd(&env, &["--rate", "30", "--concurrency", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let after = rng.range(10, 30);
        let started = Instant::now();
        while bucket.stats()["ops"]["DeleteObjects"].as_u64().unwrap_or(0) < 1
            || bucket.stats()["total"].as_u64().unwrap_or(0) < after
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: no delete within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(130),
            "{what}: SIGTERM: exit 130\n{stdout}\n{stderr}"
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["interrupted"], true, "{what}: {report:#}");
        let t = check_prune(
            &format!("{what}, after SIGTERM"),
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            false,
        )
        .await;
        // In-flight work finished: the report's cleared rows are the database's, and every
        // row still naming its file has all its objects (no batch was left half-recorded).
        assert_eq!(
            report["passes"][0]["rows_cleared"], t.cleared,
            "{what}: the report matches the database"
        );
        let now = snapshot(&bucket).await;
        let names: BTreeMap<i64, Option<String>> =
            sqlx::query_as("SELECT id, file_file_name FROM media_attachments WHERE id = ANY($1)")
                .bind(w.selected.keys().copied().collect::<Vec<_>>())
                .fetch_all(&db.pool)
                .await
                .unwrap()
                .into_iter()
                .collect();
        for (id, keys) in &w.selected {
            if names[id].is_some() {
                for k in keys {
                    assert!(
                        now.contains_key(k),
                        "{what}: row {id} still names its file but {k} is gone: a batch was cut short"
                    );
                }
            }
        }
        assert!(t.pending > 0, "{what}: the signal came before the end");
        let (code, out, err) = rerun(|| prune_cmd(&env, &[]));
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        check_prune(
            &format!("{what}, after the re-run"),
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            true,
        )
        .await;
    }
    db.drop_db().await;
}

/// Connection resets before the response (nothing happened) and after it (deleted, answer
/// lost), and stalled listings past `S3_READ_TIMEOUT`: prune ends as a clean run would.
#[tokio::test]
async fn prune_survives_resets_and_stalls() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(
        &db,
        &bucket.name,
        &[("S3_BATCH_DELETE_LIMIT", "6"), ("S3_READ_TIMEOUT", "2")],
    );
    let seeds = seeds(12_400, iterations(KILLS).div_ceil(15));
    let mut protected = Snapshot::new();
    let mut protected_rows = BTreeMap::new();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = seed_prune_world(&db, &bucket, iter as i64, &mut rng, Some(30)).await;
        protect(&db, &bucket, &w, &mut protected, &mut protected_rows).await;
        let what = format!("prune resets seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        bucket.faults(serde_json::json!({
            "reset": {"rate": 0.25, "seed": seed, "when": "both"},
            "stall": {"count": 2, "ops": ["ListObjectsV2"], "seconds": 6},
        }));
        bucket.reset_stats();
        let (code, out, err) = rerun(|| prune_cmd(&env, &[]));
        let stats = bucket.stats();
        assert_eq!(code, 0, "{what}\n{out}\n{err}\nserver: {stats}");
        assert!(
            stats["resets_before"].as_u64().unwrap() > 0
                && stats["resets_after"].as_u64().unwrap() > 0,
            "{what}: both kinds of reset happened: {stats}"
        );
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            report["passes"][0]["rows_cleared"],
            w.selected.len(),
            "{what}: {report:#}"
        );
        check_prune(
            &what,
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            true,
        )
        .await;
        bucket.faults(serde_json::json!({}));
    }
    db.drop_db().await;
}

// ------------------------------------------------------------------------ migrate

/// A source tree: `n` files of three types (Content-Type from the extension) and sizes.
pub(super) fn migrate_tree(
    root: &Path,
    rng: &mut Rng,
    n: usize,
) -> BTreeMap<String, (Vec<u8>, &'static str)> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let (ext, magic, ct): (&str, &[u8], &'static str) = match rng.range(0, 2) {
            0 => ("png", PNG, "image/png"),
            1 => ("jpeg", JPEG, "image/jpeg"),
            _ => ("gif", GIF, "image/gif"),
        };
        let key = format!(
            "media_attachments/files/110/000/000/000/{:03}/{:03}/original/{:016x}.{ext}",
            i / 1000,
            i % 1000,
            rng.next()
        );
        let body = bytes(
            magic,
            &format!("{key}{}", rng.next()),
            rng.range(20, 4000) as usize,
        );
        write_file(root, &key, &body);
        out.insert(key, (body, ct));
    }
    out
}

/// An env file for migrate into `bucket` (the database is never contacted).
pub(super) fn migrate_env(bucket: &str) -> PathBuf {
    crate::migrate::env_file(bucket, &[])
}

pub(super) fn migrate_cmd(env: &Path, root: &Path, journal: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--env-file",
        s(env),
        "migrate",
        "--from",
        s(root),
        "--journal",
        s(journal),
        "--json",
    ];
    args.extend_from_slice(extra);
    command(&args, &[])
}

/// What migrate may have left at any moment: every object of the tree that exists is
/// byte-identical to its file (size and MD5 ETag), the foreign objects survive, and
/// nothing else appeared. With `complete`, every file is there, byte-identical, with its
/// Content-Type, Mastodon's Cache-Control and public-read.
pub(super) async fn check_migrate(
    what: &str,
    bucket: &TestBucket,
    tree: &BTreeMap<String, (Vec<u8>, &'static str)>,
    foreign: &Snapshot,
    complete: bool,
) -> usize {
    let now = snapshot(bucket).await;
    crate::support::invariants::assert_survive(what, foreign, &now);
    let mut present = 0;
    for (k, (size, etag)) in &now {
        if foreign.contains_key(k) {
            continue;
        }
        let (body, _) = tree
            .get(k)
            .unwrap_or_else(|| panic!("{what}: an unknown key appeared: {k}"));
        assert_eq!(*size, body.len() as i64, "{what}: {k}: size");
        assert_eq!(
            etag,
            &format!("{:032x}", md5_of(body)),
            "{what}: {k}: bytes differ"
        );
        present += 1;
    }
    if complete {
        assert_eq!(present, tree.len(), "{what}: every file is in the bucket");
        let checks = stream::iter(tree.iter())
            .map(|(k, (body, ct))| async move {
                let o = get(bucket, k).await;
                assert!(o.body == *body, "{what}: {k}: bytes differ");
                assert_eq!(
                    o.content_type.as_deref(),
                    Some(*ct),
                    "{what}: {k}: Content-Type"
                );
                assert_eq!(
                    o.cache_control.as_deref(),
                    Some(CACHE_CONTROL),
                    "{what}: {k}: Cache-Control"
                );
                assert!(acl(bucket, k).await, "{what}: {k}: public-read");
            })
            .buffer_unordered(8);
        checks.collect::<Vec<()>>().await;
    }
    present
}

/// MD5 (RFC 1321) of `data`, written here so the test needs no extra crate: moto's ETag of
/// a single-part upload.
fn md5_of(data: &[u8]) -> u128 {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&a0.to_le_bytes());
    out[4..8].copy_from_slice(&b0.to_le_bytes());
    out[8..12].copy_from_slice(&c0.to_le_bytes());
    out[12..16].copy_from_slice(&d0.to_le_bytes());
    u128::from_be_bytes(out)
}

/// A fresh bucket holding one foreign object migrate must leave alone.
pub(super) async fn migrate_bucket(rng: &mut Rng) -> (TestBucket, Snapshot) {
    let bucket = TestBucket::new().await;
    let k = format!("unrelated/{:x}.txt", rng.next());
    bucket.put(&k, format!("foreign {k}").as_bytes()).await;
    let foreign = snapshot(&bucket).await;
    (bucket, foreign)
}

/// SIGKILL at a seeded moment during migrate, then the invariants, a re-run with the same
/// journal and the full check (bytes, Content-Type, Cache-Control, ACL).
#[tokio::test]
async fn migrate_sigkill_at_random_moments_then_rerun() {
    let seeds = seeds(22_000, iterations(KILLS));
    let mut fig = Figures::default();
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let root = temp_dir("chaos-src");
        let n = rng.range(10, 40) as usize;
        let tree = migrate_tree(&root, &mut rng, n);
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        let env = migrate_env(&bucket.name);
        let journal = crate::migrate::journal();
        let what = format!("migrate SIGKILL seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let after = rng.range(1, n as u64);
        let extra = rng.range(0, 30);
        let rate = ["40", "100", "300"][rng.range(0, 2) as usize];
        bucket.reset_stats();
        match run_and_kill(
            migrate_cmd(
                &env,
                &root,
                &journal,
                &["--rate", rate, "--concurrency", "2"],
            ),
            &bucket,
            after,
            extra,
        ) {
            Ending::Killed(_) => fig.kills += 1,
            Ending::Finished(code) => {
                assert_eq!(code, 0, "{what}: the unkilled run");
                fig.finished_first += 1;
            }
        }
        fig.foreign_checked += foreign.len();
        check_migrate(
            &format!("{what}, after the kill"),
            &bucket,
            &tree,
            &foreign,
            false,
        )
        .await;
        // The plain re-run resumes, even after a kill before the journal's first commit
        // (the run is journalled before its first upload).
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        fig.rows_cleared += check_migrate(
            &format!("{what}, after the re-run"),
            &bucket,
            &tree,
            &foreign,
            true,
        )
        .await;
        fig.foreign_checked += foreign.len();
    }
    fig.print("migrate SIGKILL", &seeds);
}

/// Regression (found by this suite, seed 22010 of the SIGKILL scenario; fixed): migrate SIGKILLed after
/// its first uploads but before its journal's first commit leaves a journal that "knows
/// nothing of this target"; the re-run the README promises ("a killed run ... re-run")
/// refuses with exit 2 until `--accept-empty-journal`, the flag that may bring back what
/// Mastodon deleted. Expected: the target is journalled before the first upload (or every
/// upload is journalled before the next), so the plain re-run resumes. This test kills
/// right after the first PutObject reached the server. Replay: `cargo test --locked --test
/// it chaos::migrate_sigkill_before_the_first_journal_commit -- --ignored`.
#[tokio::test]
async fn migrate_sigkill_before_the_first_journal_commit_then_plain_rerun_resumes() {
    for seed in seeds(22_010, 1) {
        let mut rng = Rng::new(seed);
        let root = temp_dir("chaos-src");
        let tree = migrate_tree(&root, &mut rng, 40);
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        let env = migrate_env(&bucket.name);
        let journal = crate::migrate::journal();
        let what = format!("migrate SIGKILL after the first upload, seed {seed}");
        bucket.reset_stats();
        let mut child = migrate_cmd(&env, &root, &journal, &["--concurrency", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while bucket.stats()["ops"]["PutObject"].as_u64().unwrap_or(0) < 1 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: no upload"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        let _ = child.wait();
        check_migrate(&what, &bucket, &tree, &foreign, false).await;
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
        assert_eq!(code, 0, "{what}: the plain re-run resumes\n{out}\n{err}");
        check_migrate(&what, &bucket, &tree, &foreign, true).await;
    }
}

/// SIGTERM during migrate: exit 130, the uploads in flight finish (every object there is
/// whole), the re-run completes.
#[tokio::test]
async fn migrate_sigterm_exits_130_then_rerun_completes() {
    for seed in seeds(22_100, iterations(KILLS).div_ceil(15)) {
        let mut rng = Rng::new(seed);
        let root = temp_dir("chaos-src");
        let tree = migrate_tree(&root, &mut rng, 150);
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        let env = migrate_env(&bucket.name);
        let journal = crate::migrate::journal();
        let what = format!("migrate SIGTERM seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        bucket.reset_stats();
        let child = migrate_cmd(&env, &root, &journal, &["--rate", "40"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let after = rng.range(5, 40);
        let started = Instant::now();
        while bucket.stats()["ops"]["PutObject"].as_u64().unwrap_or(0) < after {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: uploads did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{what}: exit 130\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let present = check_migrate(
            &format!("{what}, after SIGTERM"),
            &bucket,
            &tree,
            &foreign,
            false,
        )
        .await;
        assert!(
            present < tree.len(),
            "{what}: the signal came before the end"
        );
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            r["files_uploaded"].as_u64().unwrap() + r["files_unchanged"].as_u64().unwrap(),
            tree.len() as u64,
            "{what}: {r:#}"
        );
        check_migrate(
            &format!("{what}, after the re-run"),
            &bucket,
            &tree,
            &foreign,
            true,
        )
        .await;
    }
}

/// Runs `cmd` with the journal's disk "full": RLIMIT_FSIZE (`ulimit -f`, in KiB) with
/// SIGXFSZ ignored, so a write past the limit fails with EFBIG as on a full disk.
/// No root, no mount needed.
fn with_file_size_limit(cmd: &Command, kib: u64) -> Command {
    let mut sh = Command::new("bash");
    sh.arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$@\""))
        .arg("bash")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    sh
}

/// The journal's folder unwritable: as root (CI containers) the run goes through `setpriv`
/// as nobody (65534) with a root-owned 0555 folder; otherwise the folder is made 0555.
fn as_unprivileged(cmd: &Command) -> Command {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        let mut c = Command::new(cmd.get_program());
        c.args(cmd.get_args()).env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        return c;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("chaos-bin");
    let bin = dir.join("mastomedia");
    std::fs::copy(cmd.get_program(), &bin).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(cmd.get_args())
        .env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.env("HOME", "/nonexistent");
    // As before the harness set a state folder: none this user could write.
    c.env_remove("XDG_STATE_HOME");
    c
}

/// The journal's disk full (a file-size limit) and its folder read-only: migrate and
/// orphans --delete stop with a clear error (exit 1, 2 or 3, never a panic or a
/// signal), leave only whole objects, delete nothing foreign, and a re-run with a
/// writable journal completes.
#[tokio::test]
async fn journal_full_or_read_only() {
    use std::os::unix::fs::PermissionsExt;
    for seed in seeds(32_000, iterations(KILLS).div_ceil(30)) {
        let mut rng = Rng::new(seed);
        let root = temp_dir("chaos-src");
        let tree = migrate_tree(&root, &mut rng, 150);
        // 0 KiB: nothing can be created; 120–200 KiB, a WAL frame (4 KiB) apart: the WAL fills
        // during the last migrations of the schema, at the probe row, at the run record and
        // while files are being journalled (mid-run). Each step hits another commit: 140 KiB
        // once let a retried migration "succeed" on a half-migrated file, and 168 KiB lost
        // the run record, whose failed commit `INSERT … RETURNING` never reported.
        for limit_kib in std::iter::once(0u64).chain((120..=200).step_by(4)) {
            let (bucket, foreign) = migrate_bucket(&mut rng).await;
            let env = migrate_env(&bucket.name);
            let journal = crate::migrate::journal();
            let what = format!(
                "migrate journal full at {limit_kib} KiB, seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})"
            );
            let out = with_file_size_limit(&migrate_cmd(&env, &root, &journal, &[]), limit_kib)
                .output()
                .unwrap();
            let code = out.status.code();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(code, Some(0..=3)),
                "{what}: a clear error, not a crash: {:?}\n{stderr}",
                out.status
            );
            if code != Some(0) {
                assert!(
                    stderr.contains("journal"),
                    "{what}: the error names the journal:\n{stderr}"
                );
            }
            eprintln!(
                "chaos {what}: exit {code:?}: {}",
                stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
            );
            check_migrate(
                &format!("{what}, after the full disk"),
                &bucket,
                &tree,
                &foreign,
                false,
            )
            .await;
            let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
            assert_eq!(code, 0, "{what}: re-run with room\n{out}\n{err}");
            check_migrate(
                &format!("{what}, after the re-run"),
                &bucket,
                &tree,
                &foreign,
                true,
            )
            .await;
        }
        // Read-only folder.
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        let env = migrate_env(&bucket.name);
        let ro = temp_dir("chaos-ro");
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let journal = ro.join("migrate.sqlite");
        let what = format!(
            "migrate journal read-only, seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})"
        );
        // The source must be readable by nobody too.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = as_unprivileged(&migrate_cmd(&env, &root, &journal, &[]))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1..=3)),
            "{what}: refused with a clear error: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("journal"),
            "{what}: names the journal:\n{stderr}"
        );
        eprintln!(
            "chaos {what}: exit {:?}: {}",
            out.status.code(),
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        );
        check_migrate(
            &format!("{what}, after the refusal"),
            &bucket,
            &tree,
            &foreign,
            false,
        )
        .await;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        check_migrate(
            &format!("{what}, after the re-run"),
            &bucket,
            &tree,
            &foreign,
            true,
        )
        .await;

        // orphans --delete: its journal full (nothing can be written) and read-only.
        let db = TestDb::new(Mastodon::V4_6, "UTC").await;
        let referenced = seed_orphan_rows(&db, BASE_ID, &mut rng).await;
        for mode in ["full", "read-only"] {
            let (bucket, w) = orphan_bucket(&referenced, BASE_ID, &mut rng).await;
            let keep = pick(&snapshot(&bucket).await, &w.keep);
            let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "4")]);
            let dir = temp_dir("chaos-orphans");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            let journal = dir.join("journal.sqlite");
            let what = format!(
                "orphans journal {mode}, seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})"
            );
            let cmd = orphans_cmd(&env, &journal, &[]);
            let out = if mode == "full" {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
                with_file_size_limit(&cmd, 0).output().unwrap()
            } else {
                std::fs::set_permissions(
                    env.parent().unwrap(),
                    std::fs::Permissions::from_mode(0o755),
                )
                .unwrap();
                std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)).unwrap();
                as_unprivileged(&cmd).output().unwrap()
            };
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(1..=3)),
                "{what}: a clear error: {:?}\n{stderr}",
                out.status
            );
            assert!(
                stderr.contains("journal"),
                "{what}: names the journal:\n{stderr}"
            );
            eprintln!(
                "chaos {what}: exit {:?}: {}",
                out.status.code(),
                stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
            );
            check_orphans(&what, &w, &keep, &snapshot(&bucket).await, false);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
            let (code, out, err) = rerun(|| orphans_cmd(&env, &journal, &[]));
            assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
            check_orphans(&what, &w, &keep, &snapshot(&bucket).await, true);
        }
        db.drop_db().await;
    }
}

/// Regression (found by this suite; fixed): migrate whose journal's disk fills mid-run exits 3 ("journal
/// error while writing the migration journal") after uploads went ahead of the journal; the
/// plain re-run promised by the README ("run it again") then refuses with exit 2 ("the
/// journal … knows nothing of this target, but the bucket already holds …") until
/// `--accept-empty-journal`, the flag that may bring back what Mastodon deleted. Expected:
/// the journal knows its target before the first upload (or no upload outruns a journal
/// write), so the re-run resumes. Replay: `cargo test --locked --test it
/// chaos::journal_full_mid_run_then_plain_rerun_resumes -- --ignored` (seed 32000 or
/// `MASTOMEDIA_CHAOS_SEED=N`; 200 KiB file-size limit). Timing-dependent: it fails when
/// the limit is hit before the journal's first commit, which at 200 KiB is most runs (the schema alone takes ~150 KiB of WAL).
#[tokio::test]
async fn journal_full_mid_run_then_plain_rerun_resumes() {
    for seed in seeds(32_000, 1) {
        let mut rng = Rng::new(seed);
        let root = temp_dir("chaos-src");
        let tree = migrate_tree(&root, &mut rng, 150);
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        let env = migrate_env(&bucket.name);
        let journal = crate::migrate::journal();
        let what = format!("migrate journal full at 200 KiB, seed {seed}");
        let out = with_file_size_limit(&migrate_cmd(&env, &root, &journal, &[]), 200)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{what}: the disk fills mid-run\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The error names the journal to fix (it once said only "journal error while …").
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("the journal {}", journal.display())),
            "{what}: the error names the journal\n{stderr}"
        );
        check_migrate(&what, &bucket, &tree, &foreign, false).await;
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
        assert_eq!(code, 0, "{what}: the plain re-run resumes\n{out}\n{err}");
        check_migrate(&what, &bucket, &tree, &foreign, true).await;
    }
}

// ------------------------------------------------------------------------ orphans

/// One orphans world: referenced objects (remote and local rows, an emoji), orphans (rows
/// gone) and unrecognised keys.
struct OrphanWorld {
    orphans: BTreeSet<String>,
    keep: BTreeSet<String>,
}

/// Seeds the rows once per database (ids from `base`) and returns their keys.
async fn seed_orphan_rows(db: &TestDb, base: i64, rng: &mut Rng) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..12 {
        let id = base + i * 7;
        let name = format!("{:016x}.png", rng.next());
        let remote = i % 3 != 0;
        let m = if remote {
            Media::remote(id, &name, 30.0)
        } else {
            Media::local(id, &name, 30.0)
        };
        insert_media(db, &m).await;
        keys.extend(media_keys(id, &name, remote));
    }
    insert_emoji(db, 77, None, "00000000000000ee.png").await;
    keys.push("custom_emojis/images/000/000/077/original/00000000000000ee.png".into());
    keys.push("custom_emojis/images/000/000/077/static/00000000000000ee.png".into());
    keys
}

/// A bucket for one iteration: the referenced keys, `rng`-chosen orphans of rows that do
/// not exist (ids between the seeded ones, `cache/`), and unrecognised keys.
async fn orphan_bucket(
    referenced: &[String],
    base: i64,
    rng: &mut Rng,
) -> (TestBucket, OrphanWorld) {
    let bucket = TestBucket::new().await;
    let mut objects: Vec<(String, Vec<u8>)> = referenced
        .iter()
        .map(|k| (k.clone(), format!("referenced {k}").into_bytes()))
        .collect();
    let mut orphans = BTreeSet::new();
    let n = rng.range(6, 30);
    for j in 0..n as i64 {
        // Ids between the rows' (those are base + 7 i).
        let id = base + 1 + (j % 11) * 7 + (j / 11) % 6;
        let name = format!("{:016x}.png", rng.next());
        for k in media_keys(id, &name, true) {
            orphans.insert(k.clone());
            objects.push((k.clone(), b"orphan".to_vec()));
        }
    }
    let mut keep: BTreeSet<String> = referenced.iter().cloned().collect();
    for k in [
        format!("unrelated/{:x}.txt", rng.next()),
        "media_attachments/files/not/a/partition.png".to_owned(),
        format!("backups/{:x}/archive.zip", rng.next()),
    ] {
        objects.push((k.clone(), format!("foreign {k}").into_bytes()));
        keep.insert(k);
    }
    put_all(&bucket, &objects).await;
    (bucket, OrphanWorld { orphans, keep })
}

fn orphans_cmd(env: &Path, journal: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--env-file",
        s(env),
        "orphans",
        "--journal",
        s(journal),
        "--delete",
        "--min-age",
        "0",
        // The synthetic world is small and all orphans: accept the ownership signs.
        "--accept-risk",
        "newer-keys",
        "--accept-risk",
        "large-share",
        "--accept-risk",
        "local-keys",
        "--json",
    ];
    args.extend_from_slice(extra);
    command(&args, &[])
}

/// The orphans invariants: every kept key survives byte for byte, every deleted key was
/// an orphan; with `complete`, every orphan is gone.
fn check_orphans(what: &str, w: &OrphanWorld, keep: &Snapshot, now: &Snapshot, complete: bool) {
    crate::support::invariants::assert_survive(what, keep, now);
    for k in now.keys() {
        assert!(
            w.keep.contains(k) || w.orphans.contains(k),
            "{what}: unknown key {k}"
        );
    }
    if complete {
        let left: Vec<&String> = w.orphans.iter().filter(|k| now.contains_key(*k)).collect();
        assert!(
            left.is_empty(),
            "{what}: orphans left after the clean re-run: {left:?}"
        );
    }
}

/// SIGKILL at a seeded moment during orphans --delete (small batches), then the
/// invariants, a re-run with the same journal (it resumes) and the final check; the
/// database is never written.
#[tokio::test]
async fn orphans_delete_sigkill_at_random_moments_then_rerun() {
    let db = TestDb::new(Mastodon::V4_6, "America/Adak").await;
    let mut rng0 = Rng::new(42_000);
    let referenced = seed_orphan_rows(&db, BASE_ID, &mut rng0).await;
    let rows_before = db.dump("media_attachments").await;
    let seeds = seeds(42_000, iterations(KILLS));
    let mut fig = Figures::default();
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let (bucket, w) = orphan_bucket(&referenced, BASE_ID, &mut rng).await;
        let keep = pick(&snapshot(&bucket).await, &w.keep);
        let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "3")]);
        let journal = temp_dir("chaos-orphans").join("journal.sqlite");
        let what = format!("orphans SIGKILL seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let after = rng.range(1, 10);
        let extra = rng.range(0, 30);
        let rate = ["30", "80", "200"][rng.range(0, 2) as usize];
        bucket.reset_stats();
        match run_and_kill(
            orphans_cmd(&env, &journal, &["--rate", rate]),
            &bucket,
            after,
            extra,
        ) {
            Ending::Killed(_) => fig.kills += 1,
            Ending::Finished(code) => {
                assert_eq!(code, 0, "{what}: the unkilled run");
                fig.finished_first += 1;
            }
        }
        check_orphans(
            &format!("{what}, after the kill"),
            &w,
            &keep,
            &snapshot(&bucket).await,
            false,
        );
        let (code, out, err) = rerun(|| orphans_cmd(&env, &journal, &[]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        let now = snapshot(&bucket).await;
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        if report["complete"] != true {
            // The journal resumed after the killed run's position: one more pass
            // starts over and sees the rest.
            let (code, out, err) = rerun(|| orphans_cmd(&env, &journal, &[]));
            assert_eq!(code, 0, "{what}: second re-run\n{out}\n{err}");
        }
        let now = if report["complete"] != true {
            snapshot(&bucket).await
        } else {
            now
        };
        check_orphans(&format!("{what}, after the re-run"), &w, &keep, &now, true);
        fig.rows_cleared += w.orphans.len();
        fig.foreign_checked += keep.len() * 2;
        assert_eq!(
            db.dump("media_attachments").await,
            rows_before,
            "{what}: orphans never writes the database"
        );
    }
    fig.print("orphans --delete SIGKILL", &seeds);
    db.drop_db().await;
}

// ------------------------------------------------------------------------ storms

/// A report without the fields that count requests (they differ under a storm).
fn without_counts(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        for k in [
            "requests",
            "attempts",
            "throttled",
            "elapsed_seconds",
            "elapsed",
            "journal",
            "duration_seconds",
            "seconds",
        ] {
            o.remove(k);
        }
    }
    v
}

/// 30 % 503 SlowDown / 500 InternalError on every operation, for every command: du,
/// orphans (report and --delete), prune and migrate end with the same results as a clean
/// run of the same world.
#[tokio::test]
async fn storm_of_30_percent_errors_on_every_command_gives_the_clean_results() {
    for seed in seeds(52_000, iterations(KILLS).div_ceil(30)) {
        let what = format!("30 % storm seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let storm = serde_json::json!({
            "error_rate": {"rate": 0.3, "seed": seed, "codes": ["SlowDown", "InternalError"]}
        });
        let mut rng = Rng::new(seed);
        let db = TestDb::new(Mastodon::V4_6, "Asia/Tokyo").await;
        let referenced = seed_orphan_rows(&db, BASE_ID, &mut rng).await;
        let mut rng_a = rng.clone();
        let (clean, w) = orphan_bucket(&referenced, BASE_ID, &mut rng_a).await;
        let mut rng_b = rng.clone();
        let (stormy, w2) = orphan_bucket(&referenced, BASE_ID, &mut rng_b).await;
        assert_eq!(w.orphans, w2.orphans, "twin worlds");
        let env_clean = s3_env_file(&db, &clean.name, &[]);
        let env_storm = s3_env_file(&db, &stormy.name, &[]);
        stormy.faults(storm.clone());

        // du
        let du = |env: &Path| {
            let (code, out, err) = rerun(|| command(&["--env-file", s(env), "du", "--json"], &[]));
            assert_eq!(code, 0, "{what}: du\n{out}\n{err}");
            let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v.as_object_mut().unwrap().remove("storage");
            without_counts(v)
        };
        assert_eq!(du(&env_clean), du(&env_storm), "{what}: du");

        // orphans, report only: the same classification, key by key.
        let report = |env: &Path| {
            let j = temp_dir("chaos-j").join("j.sqlite");
            let (code, out, err) = rerun(|| {
                command(
                    &[
                        "--env-file",
                        s(env),
                        "orphans",
                        "--journal",
                        s(&j),
                        "--min-age",
                        "0",
                        "--json",
                    ],
                    &[],
                )
            });
            assert_eq!(code, 0, "{what}: orphans\n{out}\n{err}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            (
                v["keys"].clone(),
                v["orphans"].clone(),
                v["referenced"].clone(),
                v["unrecognised"].clone(),
            )
        };
        assert_eq!(
            report(&env_clean),
            report(&env_storm),
            "{what}: orphans report"
        );

        // orphans --delete
        let keep = pick(&snapshot(&stormy).await, &w.keep);
        let del = |env: &Path| {
            let j = temp_dir("chaos-j").join("j.sqlite");
            let (code, out, err) = rerun(|| orphans_cmd(env, &j, &[]));
            assert_eq!(code, 0, "{what}: orphans --delete\n{out}\n{err}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v["deleted"].clone()
        };
        assert_eq!(del(&env_clean), del(&env_storm), "{what}: orphans --delete");
        check_orphans(&what, &w, &keep, &snapshot(&stormy).await, true);
        assert_eq!(
            snapshot(&clean).await.keys().collect::<Vec<_>>(),
            snapshot(&stormy).await.keys().collect::<Vec<_>>(),
            "{what}: the same objects are left"
        );
        db.drop_db().await;

        // prune: a stormy world against its invariants and the clean counts.
        let db = TestDb::new(Mastodon::V4_6, "Asia/Tokyo").await;
        let bucket = TestBucket::new().await;
        let w = seed_prune_world(&db, &bucket, 0, &mut rng, Some(40)).await;
        let mut protected = Snapshot::new();
        let mut protected_rows = BTreeMap::new();
        protect(&db, &bucket, &w, &mut protected, &mut protected_rows).await;
        bucket.faults(storm.clone());
        let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "10")]);
        let (code, out, err) = rerun(|| prune_cmd(&env, &[]));
        assert_eq!(code, 0, "{what}: prune\n{out}\n{err}\n{}", bucket.stats());
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            r["passes"][0]["rows_cleared"],
            w.selected.len(),
            "{what}: {r:#}"
        );
        assert_eq!(
            r["passes"][0]["objects_deleted"],
            w.selected.values().map(Vec::len).sum::<usize>(),
            "{what}: {r:#}"
        );
        check_prune(
            &what,
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            true,
        )
        .await;
        assert!(
            bucket.stats()["injected"].as_u64().unwrap() > 0,
            "{what}: the storm happened"
        );
        db.drop_db().await;

        // migrate
        let root = temp_dir("chaos-src");
        let tree = migrate_tree(&root, &mut rng, 40);
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        bucket.faults(storm.clone());
        let env = migrate_env(&bucket.name);
        let journal = crate::migrate::journal();
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
        assert_eq!(code, 0, "{what}: migrate\n{out}\n{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["files_uploaded"], tree.len(), "{what}: {r:#}");
        bucket.faults(serde_json::json!({}));
        check_migrate(&what, &bucket, &tree, &foreign, true).await;
    }
}

/// Resets (before and after the response) and stalls during migrate and orphans --delete:
/// the same end as a clean run.
#[tokio::test]
async fn migrate_and_orphans_survive_resets_and_stalls() {
    for seed in seeds(62_000, iterations(KILLS).div_ceil(30)) {
        let what = format!("resets seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let faults = serde_json::json!({
            "reset": {"rate": 0.2, "seed": seed, "when": "both"},
            "stall": {"count": 1, "ops": ["ListObjectsV2"], "seconds": 6},
        });
        let mut rng = Rng::new(seed);
        let root = temp_dir("chaos-src");
        let tree = migrate_tree(&root, &mut rng, 40);
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        bucket.faults(faults.clone());
        let env = crate::migrate::env_file(&bucket.name, &[("S3_READ_TIMEOUT", "2")]);
        let journal = crate::migrate::journal();
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
        let stats = bucket.stats();
        assert_eq!(code, 0, "{what}: migrate\n{out}\n{err}\n{stats}");
        assert!(
            stats["resets_after"].as_u64().unwrap() > 0,
            "{what}: {stats}"
        );
        bucket.faults(serde_json::json!({}));
        check_migrate(&what, &bucket, &tree, &foreign, true).await;

        let db = TestDb::new(Mastodon::V4_6, "UTC").await;
        let referenced = seed_orphan_rows(&db, BASE_ID, &mut rng).await;
        let (bucket, w) = orphan_bucket(&referenced, BASE_ID, &mut rng).await;
        let keep = pick(&snapshot(&bucket).await, &w.keep);
        bucket.faults(faults.clone());
        let env = s3_env_file(
            &db,
            &bucket.name,
            &[("S3_BATCH_DELETE_LIMIT", "4"), ("S3_READ_TIMEOUT", "2")],
        );
        let journal = temp_dir("chaos-orphans").join("journal.sqlite");
        let (code, out, err) = rerun(|| orphans_cmd(&env, &journal, &[]));
        assert_eq!(code, 0, "{what}: orphans\n{out}\n{err}\n{}", bucket.stats());
        check_orphans(&what, &w, &keep, &snapshot(&bucket).await, true);
        db.drop_db().await;
    }
}
