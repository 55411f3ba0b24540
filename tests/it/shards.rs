//! Issue 13: `--shard K/N`. Shards of one job run as concurrent processes against one
//! database and one bucket and must end exactly where one unsharded run on an identical
//! seed ends (rows and objects), with no key deleted or uploaded twice (the proxy's
//! request log); a shard killed with SIGKILL is resumed alone; the advisory locks keep the
//! same shard, and a sharded beside an unsharded run, apart; `JOB_COMPLETION_INDEX` and
//! `MASTOMEDIA_SHARDS` are honoured and bad values are usage errors.
//!
//! Black-box: the binary, the real PostgreSQL and the S3 server of the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::chaos::{PruneWorld, protect, seed_prune_world};
use crate::migrate::{PNG, bytes, env_file, journal, write_file};
use crate::support::invariants::{
    Ending, Rng, Snapshot, check_prune, command, rerun, run_and_kill, snapshot,
};
use crate::support::{Mastodon, TestBucket, TestDb, s3_env_file, temp_dir};

const N: u32 = 4;
/// Remote media rows prune selects in each world (ids `BASE_ID + i`, consecutive, so
/// `id mod 4` gives every shard a quarter).
const ROWS: u64 = 120;
/// First id of `chaos::seed_prune_world`'s iteration 0.
const BASE_ID: i64 = 109_500_000_000_000_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One prune world: a database and a bucket seeded from the one fixed seed, so two worlds
/// are identical (same ids, keys and bodies).
struct World {
    db: TestDb,
    bucket: TestBucket,
    env: PathBuf,
    seeded: PruneWorld,
}

async fn prune_world() -> World {
    let db = TestDb::new(Mastodon::V4_6, "America/Santiago").await;
    let bucket = TestBucket::new().await;
    // Small batches: many DeleteObjects per shard, so shards interleave.
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "8")]);
    let mut rng = Rng::new(13_000);
    let seeded = seed_prune_world(&db, &bucket, 0, &mut rng, Some(ROWS)).await;
    World {
        db,
        bucket,
        env,
        seeded,
    }
}

/// Every media row and every object (key, size, ETag). Timestamps are compared as
/// set or not: the seed writes them relative to the time it runs, and a clear sets
/// `updated_at` to the time of the clear.
async fn end_state(w: &World) -> (Vec<String>, Snapshot) {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT (row_to_json(t)::jsonb \
           - ARRAY['updated_at', 'created_at', 'file_updated_at', 'thumbnail_updated_at'] \
           || jsonb_build_object('file_updated_at', t.file_updated_at IS NOT NULL, \
                'thumbnail_updated_at', t.thumbnail_updated_at IS NOT NULL))::text \
         FROM media_attachments t ORDER BY id",
    )
    .fetch_all(&w.db.pool)
    .await
    .unwrap();
    (rows, snapshot(&w.bucket).await)
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mastomedia")
}

/// Waits for `child`; (exit code, stdout, stderr).
fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str, err: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\n{err}"))
}

fn prune_cmd(env: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["--env-file", s(env), "prune", "--json"];
    args.extend_from_slice(extra);
    command(&args, &[])
}

/// Starts shards `ks` of N as concurrent processes (each `make(shard)`), waits for all,
/// asserts exit 0 and returns their JSON summaries.
fn run_shards(ks: &[u32], make: impl Fn(&str) -> Command) -> Vec<serde_json::Value> {
    let children: Vec<(String, Child)> = ks
        .iter()
        .map(|k| {
            let shard = format!("{k}/{N}");
            let child = spawn(&mut make(&shard));
            (shard, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(shard, child)| {
            let (code, out, err) = finish(child);
            assert_eq!(code, 0, "shard {shard}:\n{out}\n{err}");
            let v = json(&out, &err);
            assert_eq!(v["shard"], shard.as_str(), "the summary names its shard");
            v
        })
        .collect()
}

/// The keys of `log` (a proxy request log), asserting that none appears twice.
fn once_each(log: &serde_json::Value, what: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for k in log.as_array().unwrap_or_else(|| panic!("{what} log")) {
        let k = k.as_str().unwrap().to_owned();
        assert!(seen.insert(k.clone()), "{what} twice: {k}");
    }
    seen
}

fn rows_cleared(v: &serde_json::Value) -> u64 {
    v["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rows_cleared"].as_u64().unwrap())
        .sum()
}

/// The selected rows of shard `k` of N.
fn shard_rows(w: &World, k: i64) -> usize {
    w.seeded
        .selected
        .keys()
        .filter(|id| id.rem_euclid(i64::from(N)) == k)
        .count()
}

#[tokio::test]
async fn four_prune_shards_end_where_one_unsharded_run_ends() {
    let (one, sharded) = (prune_world().await, prune_world().await);
    assert_eq!(
        end_state(&one).await,
        end_state(&sharded).await,
        "identical seeds"
    );
    let before = snapshot(&sharded.bucket).await;

    let (code, out, err) = finish(spawn(&mut prune_cmd(&one.env, &[])));
    assert_eq!(code, 0, "{out}\n{err}");
    let whole = json(&out, &err);
    assert_eq!(whole["shard"], serde_json::Value::Null);
    assert_eq!(rows_cleared(&whole), ROWS);

    sharded.bucket.reset_stats();
    let parts = run_shards(&[0, 1, 2, 3], |shard| {
        prune_cmd(&sharded.env, &["--shard", shard, "--concurrency", "2"])
    });
    for (k, v) in parts.iter().enumerate() {
        assert_eq!(
            rows_cleared(v) as usize,
            shard_rows(&sharded, k as i64),
            "shard {k}/{N} clears exactly its rows (id mod {N} = {k})"
        );
    }
    assert_eq!(parts.iter().map(rows_cleared).sum::<u64>(), ROWS);
    assert_eq!(
        end_state(&one).await,
        end_state(&sharded).await,
        "four shards end where one unsharded run ends"
    );
    let deleted = once_each(&sharded.bucket.stats()["delete_keys"], "deleted");
    let after = snapshot(&sharded.bucket).await;
    let gone: BTreeSet<String> = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    assert_eq!(
        deleted, gone,
        "exactly the removed keys were named, once each"
    );
    one.db.drop_db().await;
    sharded.db.drop_db().await;
}

#[tokio::test]
async fn a_prune_shard_killed_mid_run_is_resumed_alone() {
    let (one, sharded) = (prune_world().await, prune_world().await);
    let mut protected = Snapshot::new();
    let mut protected_rows = BTreeMap::new();
    protect(
        &sharded.db,
        &sharded.bucket,
        &sharded.seeded,
        &mut protected,
        &mut protected_rows,
    )
    .await;
    let (code, out, err) = finish(spawn(&mut prune_cmd(&one.env, &[])));
    assert_eq!(code, 0, "{out}\n{err}");

    run_shards(&[0, 1, 3], |shard| {
        prune_cmd(&sharded.env, &["--shard", shard])
    });
    // Shard 2 at 8/4 = 2 requests per second: killed after its first delete batches.
    sharded.bucket.reset_stats();
    let killed = run_and_kill(
        prune_cmd(&sharded.env, &["--shard", "2/4", "--rate", "8"]),
        &sharded.bucket,
        10,
        0,
    );
    assert!(matches!(killed, Ending::Killed(_)), "{killed:?}");
    let t = check_prune(
        "shard 2/4 after SIGKILL",
        &sharded.db,
        &sharded.bucket,
        &sharded.seeded.selected,
        &protected,
        &protected_rows,
        false,
    )
    .await;
    assert!(
        t.pending > 0,
        "the kill came before shard 2 finished: {} cleared",
        t.cleared
    );
    let (code, out, err) = rerun(|| prune_cmd(&sharded.env, &["--shard", "2/4"]));
    assert_eq!(code, 0, "{out}\n{err}");
    check_prune(
        "shard 2/4 resumed",
        &sharded.db,
        &sharded.bucket,
        &sharded.seeded.selected,
        &protected,
        &protected_rows,
        true,
    )
    .await;
    assert_eq!(end_state(&one).await, end_state(&sharded).await);
    one.db.drop_db().await;
    sharded.db.drop_db().await;
}

/// Waits until the proxy has seen a request for `bucket` (the run holds its lock: the
/// lock comes before the store check).
fn wait_for_first_request(bucket: &TestBucket, child: &mut Child) {
    let started = Instant::now();
    while bucket.stats()["total"].as_u64().unwrap_or(0) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the slow shard ended early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no request in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_same_shard_twice_and_sharded_beside_unsharded_refuse() {
    let w = prune_world().await;
    w.bucket.reset_stats();
    // Shard 1/4 at 4/4 = 1 request per second: holds its locks for a while.
    let mut slow = spawn(&mut prune_cmd(&w.env, &["--shard", "1/4", "--rate", "4"]));
    wait_for_first_request(&w.bucket, &mut slow);

    let (code, out, err) = finish(spawn(&mut prune_cmd(&w.env, &["--shard", "1/4"])));
    assert_eq!(code, 3, "the same shard twice\n{out}\n{err}");
    assert!(
        err.contains("another mastomedia prune shard 1/4 is running"),
        "{err}"
    );
    let (code, _, err) = finish(spawn(&mut prune_cmd(&w.env, &["--dry-run"])));
    assert_eq!(code, 3, "unsharded beside a shard\n{err}");
    assert!(
        err.contains("shards of mastomedia prune (--shard K/N) are running"),
        "{err}"
    );
    let (code, _, err) = finish(spawn(&mut prune_cmd(&w.env, &["--shard", "0/2"])));
    assert_eq!(code, 3, "another N beside shards of 4\n{err}");
    assert!(err.contains("another number of shards"), "{err}");
    // Another shard of the same N runs side by side.
    let (code, out, err) = finish(spawn(&mut prune_cmd(&w.env, &["--shard", "3/4"])));
    assert_eq!(code, 0, "shard 3/4 beside 1/4\n{out}\n{err}");
    assert_eq!(rows_cleared(&json(&out, &err)) as usize, shard_rows(&w, 3));
    let _ = slow.kill();
    let _ = slow.wait();

    // An unsharded run (here: its lock, as every release takes it, held by the test)
    // keeps every shard out.
    let mut conn = sqlx::pool::PoolConnection::detach(w.db.pool.acquire().await.unwrap());
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(mastomedia::mastodon::advisory_key("prune"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (code, _, err) = finish(spawn(&mut prune_cmd(&w.env, &["--shard", "0/4"])));
    assert_eq!(code, 3, "a shard beside an unsharded run\n{err}");
    assert!(
        err.contains("an unsharded mastomedia prune is running"),
        "{err}"
    );
    drop(conn);
    w.db.drop_db().await;
}

/// Environment, flags, and the shard (or the message) expected.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    &'static str,
);

#[tokio::test]
async fn job_completion_index_and_mastomedia_shards_pick_the_shard() {
    let w = prune_world().await;
    let dry = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["--env-file", s(&w.env), "prune", "--json", "--dry-run"];
        args.extend_from_slice(extra);
        finish(spawn(&mut command(&args, env)))
    };
    let selected = |v: &serde_json::Value| v["passes"][0]["rows_selected"].as_u64().unwrap();
    let cases: [Case; 4] = [
        (
            &[("JOB_COMPLETION_INDEX", "2"), ("MASTOMEDIA_SHARDS", "4")],
            &[],
            "2/4",
        ),
        (&[("JOB_COMPLETION_INDEX", "1")], &["--shards", "4"], "1/4"),
        (
            &[("JOB_COMPLETION_INDEX", "1"), ("MASTOMEDIA_SHARDS", "2")],
            &["--shards", "4"],
            "1/4",
        ),
        (
            &[("JOB_COMPLETION_INDEX", "3"), ("MASTOMEDIA_SHARDS", "4")],
            &["--shard", "0/4"],
            "0/4",
        ),
    ];
    for (env, extra, shard) in cases {
        let (code, out, err) = dry(env, extra);
        assert_eq!(code, 0, "{env:?} {extra:?}\n{out}\n{err}");
        let v = json(&out, &err);
        assert_eq!(v["shard"], shard, "{env:?} {extra:?}");
        let k: i64 = shard[..1].parse().unwrap();
        assert_eq!(selected(&v) as usize, shard_rows(&w, k), "{shard}");
    }
    let (code, out, err) = dry(&[], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out, &err)["shard"], serde_json::Value::Null);

    let refused: [Case; 5] = [
        (
            &[("JOB_COMPLETION_INDEX", "4"), ("MASTOMEDIA_SHARDS", "4")],
            &[],
            "does not exist",
        ),
        (&[("JOB_COMPLETION_INDEX", "1")], &[], "MASTOMEDIA_SHARDS"),
        (&[("MASTOMEDIA_SHARDS", "4")], &[], "JOB_COMPLETION_INDEX"),
        (
            &[("JOB_COMPLETION_INDEX", "x"), ("MASTOMEDIA_SHARDS", "4")],
            &[],
            "not a non-negative integer",
        ),
        (&[], &["--shard", "1/4", "--shards", "2"], "disagree"),
    ];
    for (env, extra, msg) in refused {
        let (code, out, err) = dry(env, extra);
        assert_eq!(code, 2, "{env:?} {extra:?}\n{out}\n{err}");
        assert!(err.contains(msg), "{env:?} {extra:?}: {err}");
    }
    w.db.drop_db().await;
}

#[test]
fn bad_shard_flags_are_usage_errors_on_every_sharded_command() {
    for cmd in ["prune", "migrate", "du", "orphans"] {
        for (value, msg) in [
            ("4/4", "shard 4/4 does not exist"),
            ("0/0", "must be at least 1"),
            ("a/b", "is not K/N"),
            ("-1/3", "is not K/N"),
        ] {
            let flag = format!("--shard={value}");
            let out = command(&["--env-file", "/nonexistent/.env", cmd, &flag], &[])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {flag}: {err}");
            assert!(err.contains(msg), "{cmd} {flag}: {err}");
        }
    }
    // A cache budget is a property of the whole cache: not as one shard.
    for env in [
        &[][..],
        &[("JOB_COMPLETION_INDEX", "1"), ("MASTOMEDIA_SHARDS", "4")][..],
    ] {
        let mut args = vec![
            "--env-file",
            "/nonexistent/.env",
            "prune",
            "--max-cache-size",
            "1GB",
        ];
        if env.is_empty() {
            args.push("--shard=1/4");
        }
        let out = command(&args, env).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains("cannot run as one shard"), "{err}");
    }
}

#[tokio::test]
async fn du_shards_add_up_to_the_whole_bucket() {
    let w = prune_world().await;
    let du = |extra: &[&str]| {
        let mut args = vec!["--env-file", s(&w.env), "du", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = finish(spawn(&mut command(&args, &[])));
        assert_eq!(code, 0, "{extra:?}\n{out}\n{err}");
        json(&out, &err)
    };
    let whole = du(&[]);
    let (mut objects, mut bytes) = (0, 0);
    for k in 0..N {
        let v = du(&["--shard", &format!("{k}/{N}")]);
        assert_eq!(v["shard"], format!("{k}/{N}"));
        objects += v["total"]["objects"].as_u64().unwrap();
        bytes += v["total"]["bytes"].as_u64().unwrap();
    }
    assert!(whole["total"]["objects"].as_u64().unwrap() > ROWS);
    assert_eq!(objects, whole["total"]["objects"].as_u64().unwrap());
    assert_eq!(bytes, whole["total"]["bytes"].as_u64().unwrap());
    w.db.drop_db().await;
}

// ------------------------------------------------------------------------- migrate

/// A tree of `files` small files in Mastodon's layout (ids `BASE_ID + i`).
fn small_tree(files: usize) -> PathBuf {
    let root = temp_dir("shard-tree");
    for i in 0..files {
        let id = BASE_ID + i as i64 * 7_919;
        let p = crate::support::partition18(id);
        let key = format!("media_attachments/files/{p}/original/{i:04x}.png");
        write_file(&root, &key, &bytes(PNG, &key, 200 + i % 300));
    }
    root
}

fn migrate_cmd(env: &Path, journal: &Path, from: &Path, extra: &[&str]) -> Command {
    migrate_cmd_at(env, s(journal), from, extra)
}

/// [`migrate_cmd`] with the journal as `--journal` takes it (a path or a postgres:// URL).
fn migrate_cmd_at(env: &Path, journal: &str, from: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--env-file",
        s(env),
        "migrate",
        "--from",
        s(from),
        "--journal",
        journal,
        "--json",
    ];
    args.extend_from_slice(extra);
    command(&args, &[])
}

#[tokio::test]
async fn four_migrate_shards_upload_what_one_run_uploads_once_each() {
    let tree = small_tree(240);
    let (one, sharded) = (TestBucket::new().await, TestBucket::new().await);
    let (env_one, env_sharded) = (env_file(&one.name, &[]), env_file(&sharded.name, &[]));
    let (code, out, err) = finish(spawn(&mut migrate_cmd(&env_one, &journal(), &tree, &[])));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json(&out, &err)["files_uploaded"], 240);

    // One journal file for all four shards: concurrent SQLite writers (WAL, busy timeout).
    let shared = journal();
    sharded.reset_stats();
    let parts = run_shards(&[0, 1, 2, 3], |shard| {
        migrate_cmd(
            &env_sharded,
            &shared,
            &tree,
            &["--shard", shard, "--concurrency", "4"],
        )
    });
    let uploaded: u64 = parts
        .iter()
        .map(|v| v["files_uploaded"].as_u64().unwrap())
        .sum();
    assert_eq!(uploaded, 240);
    assert!(
        parts
            .iter()
            .all(|v| v["files_uploaded"].as_u64().unwrap() > 20),
        "every shard got a fair part: {:?}",
        parts
            .iter()
            .map(|v| &v["files_uploaded"])
            .collect::<Vec<_>>()
    );
    let put = once_each(&sharded.stats()["put_keys"], "uploaded");
    assert_eq!(put.len(), 240);
    assert_eq!(snapshot(&one).await, snapshot(&sharded).await);

    // Each shard's journal keys are its own: a second pass of each uploads nothing.
    sharded.reset_stats();
    for v in run_shards(&[0, 1, 2, 3], |shard| {
        migrate_cmd(&env_sharded, &shared, &tree, &["--shard", shard])
    }) {
        assert_eq!(v["files_uploaded"], 0, "{v}");
    }
    assert!(once_each(&sharded.stats()["put_keys"], "uploaded").is_empty());
}

#[tokio::test]
async fn a_migrate_shard_killed_mid_run_is_resumed_alone() {
    let tree = small_tree(160);
    let (one, sharded) = (TestBucket::new().await, TestBucket::new().await);
    let (env_one, env_sharded) = (env_file(&one.name, &[]), env_file(&sharded.name, &[]));
    let (code, out, err) = finish(spawn(&mut migrate_cmd(&env_one, &journal(), &tree, &[])));
    assert_eq!(code, 0, "{out}\n{err}");
    let shared = journal();
    run_shards(&[0, 2, 3], |shard| {
        migrate_cmd(&env_sharded, &shared, &tree, &["--shard", shard])
    });
    sharded.reset_stats();
    // 20/4 = 5 requests per second: killed mid-shard, after the first run's 16 sampled
    // HEADs of an empty journal and a dozen uploads.
    let killed = run_and_kill(
        migrate_cmd(
            &env_sharded,
            &shared,
            &tree,
            &["--shard", "1/4", "--rate", "20", "--concurrency", "1"],
        ),
        &sharded,
        30,
        0,
    );
    assert!(matches!(killed, Ending::Killed(_)), "{killed:?}");
    let first = once_each(&sharded.stats()["put_keys"], "uploaded");
    let (code, out, err) = rerun(|| migrate_cmd(&env_sharded, &shared, &tree, &["--shard", "1/4"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let v = json(&out, &err);
    assert!(
        v["files_unchanged"].as_u64().unwrap() > 0,
        "the resumed shard skips what its journal recorded: {v}"
    );
    assert_eq!(snapshot(&one).await, snapshot(&sharded).await);
    assert!(!first.is_empty(), "the kill came after the first uploads");
}

// ------------------------------------------------------------------------- orphans

fn orphans_cmd(env: &Path, journal: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--env-file",
        s(env),
        "orphans",
        "--delete",
        "--min-age",
        "0",
        "--accept-risk",
        "large-share",
        // The seed's site upload has no row: an orphan outside cache/, in both worlds.
        "--accept-risk",
        "local-keys",
        "--journal",
        s(journal),
        "--json",
    ];
    args.extend_from_slice(extra);
    command(&args, &[])
}

#[tokio::test]
async fn four_orphans_shards_delete_what_one_run_deletes_once_each() {
    let (one, sharded) = (prune_world().await, prune_world().await);
    // Every third selected row deleted from the database: its objects are orphans.
    let gone: Vec<i64> = one.seeded.selected.keys().copied().step_by(3).collect();
    for w in [&one, &sharded] {
        sqlx::query("DELETE FROM media_attachments WHERE id = ANY($1)")
            .bind(&gone)
            .execute(&w.db.pool)
            .await
            .unwrap();
    }
    let before = snapshot(&sharded.bucket).await;
    let dir = temp_dir("shard-orphans");
    let (code, out, err) = finish(spawn(&mut orphans_cmd(
        &one.env,
        &dir.join("one.sqlite"),
        &[],
    )));
    assert_eq!(code, 0, "{out}\n{err}");
    let whole = json(&out, &err);
    assert_eq!(whole["shard"], serde_json::Value::Null);
    let removed_by_one: BTreeSet<String> = {
        let after = snapshot(&one.bucket).await;
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .cloned()
            .collect()
    };
    let orphan_keys: BTreeSet<String> = gone
        .iter()
        .flat_map(|id| one.seeded.selected[id].iter().cloned())
        .collect();
    assert!(
        removed_by_one.is_superset(&orphan_keys),
        "the unsharded run deletes the rows' keys"
    );

    sharded.bucket.reset_stats();
    let shared = dir.join("shared.sqlite");
    let parts = run_shards(&[0, 1, 2, 3], |shard| {
        orphans_cmd(&sharded.env, &shared, &["--shard", shard])
    });
    assert!(
        parts
            .iter()
            .all(|v| v["deleted"]["objects"].as_u64().unwrap() > 0),
        "every shard deleted a part: {parts:?}"
    );
    assert_eq!(end_state(&one).await, end_state(&sharded).await);
    let deleted = once_each(&sharded.bucket.stats()["delete_keys"], "deleted");
    assert_eq!(
        deleted, removed_by_one,
        "the shards deleted what one run deletes"
    );
    one.db.drop_db().await;
    sharded.db.drop_db().await;
}

/// Two processes of the same migrate shard: the second refuses (exit 3) before it uploads
/// anything, and so does an unsharded migrate beside shards, while another shard runs
/// side by side. migrate may run without a Mastodon database, so the lock lives with the
/// journal (`journal::RunLock`): lock files beside a SQLite journal, advisory locks in a
/// PostgreSQL one.
async fn the_same_migrate_shard_twice_refuses(journal: &str) {
    let tree = small_tree(40);
    let bucket = TestBucket::new().await;
    let env = env_file(&bucket.name, &[]);
    bucket.reset_stats();
    // Shard 1/4 at 4/4 = 1 request per second, one at a time: holds its lock a while.
    let slow_args = ["--shard", "1/4", "--rate", "4", "--concurrency", "1"];
    let mut slow = spawn(&mut migrate_cmd_at(&env, journal, &tree, &slow_args));
    // Its first upload comes after its lock.
    let started = Instant::now();
    while bucket.stats()["put_keys"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(
            slow.try_wait().unwrap().is_none(),
            "the slow shard ended early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no upload in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, out, err) = finish(spawn(&mut migrate_cmd_at(
        &env,
        journal,
        &tree,
        &["--shard", "1/4"],
    )));
    assert_eq!(code, 3, "the same shard twice\n{out}\n{err}");
    assert!(
        err.contains("another mastomedia migrate of shard 1/4 is running"),
        "{err}"
    );
    let (code, out, err) = finish(spawn(&mut migrate_cmd_at(&env, journal, &tree, &[])));
    assert_eq!(code, 3, "unsharded beside a shard\n{out}\n{err}");
    assert!(
        err.contains("another mastomedia migrate (or a shard of it"),
        "{err}"
    );
    let (code, out, err) = finish(spawn(&mut migrate_cmd_at(
        &env,
        journal,
        &tree,
        &["--shard", "3/4"],
    )));
    assert_eq!(code, 0, "shard 3/4 beside 1/4\n{out}\n{err}");
    assert!(json(&out, &err)["files_uploaded"].as_u64().unwrap() > 0);
    let _ = slow.kill();
    let _ = slow.wait();
    // Killed, its lock is gone with it: the shard runs again.
    let (code, out, err) = finish(spawn(&mut migrate_cmd_at(
        &env,
        journal,
        &tree,
        &["--shard", "1/4"],
    )));
    assert_eq!(code, 0, "shard 1/4 after the kill\n{out}\n{err}");
}

#[tokio::test]
async fn the_same_migrate_shard_twice_refuses_with_a_sqlite_journal() {
    the_same_migrate_shard_twice_refuses(s(&journal())).await;
}

#[tokio::test]
async fn the_same_migrate_shard_twice_refuses_with_a_postgres_journal() {
    let jdb = crate::journal_pg::JournalDb::new().await;
    the_same_migrate_shard_twice_refuses(&jdb.url).await;
    jdb.drop_db().await;
}
