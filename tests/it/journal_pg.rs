//! The PostgreSQL journal (`--journal postgres://…`, issue 13 item 3) and `mastomedia
//! status`, on the real PostgreSQL server of the test support: a journal database of its
//! own per test (its URL carries a password, which must never be printed; the test server
//! trusts loopback, so the password is not checked), and once Mastodon's own seeded
//! database, where the journal must write nothing outside its schema `mastomedia`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

use crate::migrate::{PNG, bytes, env_file as migrate_env};
use crate::support::invariants::{Ending, command, rerun, run_and_kill};
use crate::support::seed::{Media, insert_media};
use crate::support::{
    Mastodon, Run, TestBucket, TestDb, mastomedia_env, partition18, s3_env_file, temp_dir, unique,
};
use mastomedia::journal::{
    AnyJournal, FileRecord, FileState, Journal, JournalLocation, RunCounts, RunQuery, RunState,
};
use mastomedia::model::{JobKey, Shard};

/// The password every journal URL of these tests carries.
const PASSWORD: &str = "journal-pw-Zq81";

fn admin_url() -> String {
    std::env::var("MASTOMEDIA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A scratch database for a journal.
pub(crate) struct JournalDb {
    name: String,
    /// Its URL, with [`PASSWORD`].
    pub(crate) url: String,
    /// A superuser pool on it (for reading the tables).
    pool: PgPool,
}

impl JournalDb {
    pub(crate) async fn new() -> Self {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&admin_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required at {} ({e}). Start it with `bash scripts/services.sh`",
                    admin_url()
                )
            });
        let name = unique("mmjournal").replace('-', "_");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        admin.close().await;
        Self::on(&name).await
    }

    /// The journal URL of an existing database `name` (Mastodon's, for one test).
    async fn on(name: &str) -> Self {
        let opts: PgConnectOptions = admin_url().parse().unwrap();
        let opts = opts.database(name).password(PASSWORD);
        let url = format!(
            "postgres://{}:{PASSWORD}@{}:{}/{name}",
            opts.get_username(),
            opts.get_host(),
            opts.get_port()
        );
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .unwrap();
        Self {
            name: name.to_owned(),
            url,
            pool,
        }
    }

    pub(crate) async fn drop_db(self) {
        self.pool.close().await;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url())
            .await
            .unwrap();
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await;
    }

    /// `(command, shard_index, outcome, row_count, object_count, byte_count,
    /// failure_count)` of every run, by id.
    async fn runs(&self) -> Vec<(String, Option<i32>, Option<String>, i64, i64, i64, i64)> {
        sqlx::query_as(
            "SELECT command, shard_index, outcome, row_count, object_count, byte_count, failure_count \
             FROM mastomedia.runs ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts that nothing a run printed holds the journal URL's password.
fn no_password(what: &str, run: &Run) {
    assert!(
        !run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD),
        "{what}: the password was printed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// A tree of `n` PNG files under `root`: key → bytes.
fn tree(root: &Path, n: usize, tag: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let key = format!(
            "media_attachments/files/110/000/000/000/{:03}/{:03}/original/{tag}{i:04}.png",
            i / 100,
            i % 100
        );
        let body = bytes(PNG, &format!("{tag}{key}"), 100 + i * 7);
        let path = root.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &body).unwrap();
        out.insert(key, body);
    }
    out
}

fn migrate_cmd(env: &Path, root: &Path, journal: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "--env-file",
        s(env),
        "migrate",
        "--from",
        s(root),
        "--journal",
        journal,
        "--json",
    ];
    args.extend_from_slice(extra);
    command(&args, &[])
}

/// Every key of `tree` is in `bucket` with its size, and nothing else is.
async fn assert_copied(what: &str, bucket: &TestBucket, tree: &BTreeMap<String, Vec<u8>>) {
    let keys = bucket.keys().await;
    assert_eq!(
        keys,
        tree.keys().cloned().collect(),
        "{what}: the bucket holds exactly the tree"
    );
    let client = crate::support::s3_client(&crate::support::s3().moto);
    for (k, body) in tree {
        let head = client
            .head_object()
            .bucket(&bucket.name)
            .key(k)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.content_length(),
            Some(body.len() as i64),
            "{what}: {k}"
        );
    }
}

fn status(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    mastomedia_env(&all, env)
}

/// migrate SIGKILLed mid-run resumes from the PostgreSQL journal exactly as from SQLite:
/// the re-run uploads only what the journal does not hold, and the bucket ends with
/// exactly the tree. Meanwhile `status` shows the killed run as running, and as stale
/// once its last update is older than `--stale-after`; the finished re-run's numbers are
/// those it reported.
#[tokio::test]
async fn migrate_killed_resumes_from_the_pg_journal_and_status_shows_it() {
    let jdb = JournalDb::new().await;
    let root = temp_dir("jpg-src");
    let files = tree(&root, 40, "m");
    let bucket = TestBucket::new().await;
    let env = migrate_env(&bucket.name, &[]);
    bucket.reset_stats();
    let ending = run_and_kill(
        migrate_cmd(
            &env,
            &root,
            &jdb.url,
            &["--rate", "10", "--concurrency", "1"],
        ),
        &bucket,
        // After the check and the 16 HEADs of the empty-journal sample, some uploads.
        32,
        0,
    );
    assert!(matches!(ending, Ending::Killed(_)), "{ending:?}");
    let journalled: i64 = sqlx::query_scalar("SELECT count(*) FROM mastomedia.migrate_files")
        .fetch_one(&jdb.pool)
        .await
        .unwrap();
    assert!(
        journalled > 0 && journalled < 40,
        "journalled before the kill: {journalled}"
    );

    // The killed run: still "running", stale with --stale-after 0 (its last write was
    // at least the run's first second ago).
    let live = status(&["--journal", &jdb.url, "--json"], &[]);
    no_password("status --json", &live);
    assert_eq!(live.code, 0, "{}", live.stderr);
    let v = live.json();
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["runs"][0]["state"], "running");
    assert_eq!(v["runs"][0]["job"], "migrate");
    let stale = status(&["--journal", &jdb.url, "--stale-after", "0"], &[]);
    no_password("status", &stale);
    assert!(
        stale
            .stdout
            .lines()
            .any(|l| l.starts_with("migrate") && l.contains(" stale ")),
        "{}",
        stale.stdout
    );
    assert!(
        stale.stdout.contains("most likely died"),
        "{}",
        stale.stdout
    );

    let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &jdb.url, &[]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let unchanged = report["files_unchanged"].as_i64().unwrap();
    assert!(unchanged >= journalled, "{report:#}");
    assert_eq!(
        report["files_uploaded"].as_i64().unwrap() + unchanged,
        40,
        "{report:#}"
    );
    assert!(
        report["journal"]
            .as_str()
            .unwrap()
            .contains("schema mastomedia"),
        "{report:#}"
    );
    assert_copied("migrate after the re-run", &bucket, &files).await;
    let journalled: i64 = sqlx::query_scalar("SELECT count(*) FROM mastomedia.migrate_files")
        .fetch_one(&jdb.pool)
        .await
        .unwrap();
    assert_eq!(journalled, 40);

    // status: the newest run first, its numbers those the run reported; --all shows the
    // killed one too, stale.
    let v = status(
        &[
            "--journal",
            &jdb.url,
            "--json",
            "--all",
            "--stale-after",
            "0",
        ],
        &[],
    )
    .json();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v:#}");
    assert_eq!(runs[0]["state"], "finished");
    assert_eq!(runs[0]["outcome"], "success");
    assert_eq!(runs[0]["objects"], report["files_uploaded"]);
    assert_eq!(runs[0]["bytes"], report["bytes_uploaded"]);
    assert_eq!(runs[0]["failures"], 0);
    assert_eq!(runs[0]["shard"], serde_json::Value::Null);
    assert_eq!(runs[1]["state"], "stale");
    assert_eq!(runs[1]["stale"], true);
    let last = status(&["--journal", &jdb.url, "--job", "migrate"], &[]);
    no_password("status text", &last);
    let line = last
        .stdout
        .lines()
        .find(|l| l.starts_with("migrate"))
        .unwrap_or_else(|| panic!("{}", last.stdout));
    let uploaded = report["files_uploaded"].to_string();
    assert!(line.contains(" finished "), "{line}");
    assert!(
        line.split_whitespace().any(|w| w == uploaded),
        "{line} / {uploaded}"
    );
    assert!(
        last.stdout.contains("postgres://postgres@"),
        "{}",
        last.stdout
    );
    jdb.drop_db().await;
}

/// orphans --delete SIGKILLed half-way resumes from the PostgreSQL journal's position and
/// ends with exactly the referenced keys.
#[tokio::test]
async fn orphans_killed_resumes_from_the_pg_journal() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let jdb = JournalDb::new().await;
    let bucket = TestBucket::new().await;
    let base: i64 = 109345678901240000;
    let mut referenced = std::collections::BTreeSet::new();
    for i in 0..120i64 {
        let id = base + i;
        let key = format!(
            "cache/media_attachments/files/{}/original/{i:016x}.png",
            partition18(id)
        );
        if i % 4 == 0 {
            insert_media(&db, &Media::remote(id, &format!("{i:016x}.png"), 30.0)).await;
            referenced.insert(key.clone());
        }
        bucket.put(&key, b"x").await;
    }
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "10")]);
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "--env-file".to_owned(),
            s(&env).to_owned(),
            "orphans".into(),
            "--journal".into(),
            jdb.url.clone(),
            "--delete".into(),
            "--accept-risk".into(),
            "newer-keys".into(),
            "--accept-risk".into(),
            "large-share".into(),
            "--min-age".into(),
            "0".into(),
            "--json".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let first = args(&["--concurrency", "1", "--rate", "3"]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let mut child = command(&first, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let position = loop {
        let p: Option<(String, i64)> =
            sqlx::query_as("SELECT last_key, objects FROM mastomedia.orphan_scans")
                .fetch_optional(&jdb.pool)
                .await
                .unwrap_or(None);
        if let Some(p) = p.filter(|(_, n)| *n >= 30) {
            break p;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    let _ = child.wait();
    let (last_key, _) =
        sqlx::query_as::<_, (String, i64)>("SELECT last_key, objects FROM mastomedia.orphan_scans")
            .fetch_one(&jdb.pool)
            .await
            .unwrap();
    assert!(last_key >= position.0);
    let again = args(&[]);
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    let (code, out, err) = rerun(|| command(&again, &[]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["resumed_after"], last_key.as_str(), "{report:#}");
    assert_eq!(report["complete"], true);
    assert_eq!(
        bucket.keys().await,
        referenced,
        "exactly the referenced keys"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM mastomedia.orphan_scans")
        .fetch_one(&jdb.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a finished scan forgets its position");
    let runs = jdb.runs().await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].2, None, "the killed run has no outcome");
    assert_eq!(runs[1].2.as_deref(), Some("success"));
    assert_eq!(runs[1].4, report["scanned"]["objects"].as_i64().unwrap());
    assert_eq!(runs[1].6, 0);
    jdb.drop_db().await;
    db.drop_db().await;
}

/// prune records a finished run with the rows, objects and bytes of its summary, in a
/// journal that lives in Mastodon's own database: the journal's tables (and sqlx's
/// `_sqlx_migrations`) are all in the schema `mastomedia`, no table appears in `public`,
/// and Mastodon's tables hold exactly what prune itself wrote.
#[tokio::test]
async fn prune_records_its_run_in_mastodons_database_outside_public() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    let bucket = TestBucket::new().await;
    let base: i64 = 109345678901250000;
    for i in 0..12i64 {
        let id = base + i;
        let name = format!("{i:016x}.png");
        let days = if i < 8 { 30.0 } else { 1.0 };
        insert_media(&db, &Media::remote(id, &name, days)).await;
        for style in ["original", "small"] {
            let key = format!(
                "cache/media_attachments/files/{}/{style}/{name}",
                partition18(id)
            );
            bucket.put(&key, &vec![7u8; 100 + i as usize]).await;
        }
    }
    let tables = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, String)>(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = tables(db.pool.clone()).await;
    assert!(before.iter().all(|(schema, _)| schema == "public"));
    let accounts = db.dump("accounts").await;
    let statuses = db.dump("statuses").await;
    let jdb = JournalDb::on(&db.name).await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia_env(
        &[
            "--env-file",
            s(&env),
            "prune",
            "--journal",
            &jdb.url,
            "--json",
        ],
        &[],
    );
    no_password("prune", &run);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    let pass = &report["passes"][0];
    assert_eq!(pass["rows_cleared"], 8, "{report:#}");

    let after = tables(db.pool.clone()).await;
    let public_after: Vec<_> = after
        .iter()
        .filter(|(s, _)| s == "public")
        .cloned()
        .collect();
    assert_eq!(public_after, before, "no table created in public");
    let ours: Vec<&str> = after
        .iter()
        .filter(|(s, _)| s == "mastomedia")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(
        ours,
        vec!["_sqlx_migrations", "migrate_files", "orphan_scans", "runs"]
    );
    assert_eq!(db.dump("accounts").await, accounts);
    assert_eq!(db.dump("statuses").await, statuses);
    // media_attachments: only the documented columns of the pruned rows changed.
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM media_attachments WHERE file_file_name IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(kept, 4);

    let runs = jdb.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (job, shard, outcome, rows, objects, bytes, failures) = &runs[0];
    assert_eq!(
        (job.as_str(), *shard, outcome.as_deref()),
        ("prune", None, Some("success"))
    );
    assert_eq!(*rows, pass["rows_cleared"].as_i64().unwrap());
    assert_eq!(*objects, pass["objects_deleted"].as_i64().unwrap());
    assert_eq!(*objects, 16);
    assert_eq!(*bytes, pass["bytes_freed"].as_i64().unwrap());
    assert_eq!(*failures, 0);

    // status, JSON and text, against the summary's numbers.
    let v = status(&["--journal", &jdb.url, "--json", "--job", "prune"], &[]);
    no_password("status", &v);
    let v = v.json();
    let r = &v["runs"][0];
    assert_eq!(r["state"], "finished");
    assert_eq!(r["rows"], pass["rows_cleared"]);
    assert_eq!(r["objects"], pass["objects_deleted"]);
    assert_eq!(r["bytes"], pass["bytes_freed"]);
    assert!(r["target"].as_str().unwrap().starts_with("s3://"), "{r}");
    let dry = mastomedia_env(
        &[
            "--env-file",
            s(&env),
            "prune",
            "--dry-run",
            "--journal",
            &jdb.url,
        ],
        &[],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(jdb.runs().await.len(), 1, "a dry run is not recorded");
    jdb.pool.close().await;
    db.drop_db().await;
}

/// Two processes start at once on a journal database nobody used yet (both create the
/// schema and migrate), each migrating its own tree; then sharded writers of one job
/// write their records at the same time from two connection pools. Every record is
/// there, exact, and `status` shows every shard.
#[tokio::test]
async fn concurrent_writers_share_one_pg_journal() {
    let jdb = JournalDb::new().await;
    let (ra, rb) = (temp_dir("jpg-a"), temp_dir("jpg-b"));
    let (ta, tb) = (tree(&ra, 30, "a"), tree(&rb, 30, "b"));
    let (ba, bb) = (TestBucket::new().await, TestBucket::new().await);
    let (ea, eb) = (migrate_env(&ba.name, &[]), migrate_env(&bb.name, &[]));
    let mut a = migrate_cmd(&ea, &ra, &jdb.url, &[]);
    let mut b = migrate_cmd(&eb, &rb, &jdb.url, &[]);
    for c in [&mut a, &mut b] {
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    let (pa, pb) = (a.spawn().unwrap(), b.spawn().unwrap());
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    for o in [&oa, &ob] {
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_copied("first concurrent migrate", &ba, &ta).await;
    assert_copied("second concurrent migrate", &bb, &tb).await;
    let runs = jdb.runs().await;
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| r.2.as_deref() == Some("success") && r.4 == 30)
    );

    // Sharded writers: 4 shards of one orphans job, each with its own pool, recording
    // progress, scan positions and file records at once.
    let location = JournalLocation::parse(jdb.url.as_ref()).unwrap();
    let writers = (0..4u32).map(|k| {
        let location = location.clone();
        tokio::spawn(async move {
            let j = AnyJournal::open(&location).await.unwrap();
            let key =
                JobKey::new("orphans", "s3://media@host").with_shard(Shard::new(k, 4).unwrap());
            let target = key.journal_target().into_owned();
            let id = j.run_started(&key).await.unwrap();
            j.orphan_scan_start(&target, "", "delete", "")
                .await
                .unwrap();
            for step in 1..=20u64 {
                j.orphan_scan_advance(&target, "", &format!("k{step:03}"), 10)
                    .await
                    .unwrap();
                j.run_progress(
                    id,
                    RunCounts {
                        rows: 0,
                        objects: step * 10,
                        bytes: step * 100,
                        failures: 0,
                    },
                )
                .await
                .unwrap();
                // Every shard writes the same keys into its own target: no conflict
                // between shards, an upsert within one.
                let files: Vec<FileRecord> = (0..5)
                    .map(|i| FileRecord {
                        key: format!("f{i}"),
                        size: step,
                        version: "v".into(),
                        state: FileState::Uploaded,
                        source_private: Some(false),
                    })
                    .collect();
                j.record_migrated(&target, &files).await.unwrap();
            }
            let counts = RunCounts {
                rows: u64::from(k),
                objects: 200,
                bytes: 2000,
                failures: u64::from(k % 2),
            };
            j.run_finished(id, "success", counts).await.unwrap();
            (target, counts)
        })
    });
    let mut want = Vec::new();
    for w in writers {
        want.push(w.await.unwrap());
    }
    let j = AnyJournal::open(&location).await.unwrap();
    let records = j
        .runs(&RunQuery {
            job: Some("orphans".into()),
            per_target: Some(1),
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 4);
    for (target, counts) in &want {
        let r = records.iter().find(|r| &r.target == target).unwrap();
        assert_eq!(r.counts, *counts);
        assert_eq!(r.state(), RunState::Finished);
        assert_eq!(r.shown_target(), "s3://media@host");
        let p = j.orphan_scan(target, "").await.unwrap().unwrap();
        assert_eq!((p.last_key.as_str(), p.objects), ("k020", 200));
        let files = j.migrate_files(target).await.unwrap();
        assert_eq!(files.len(), 5);
        assert!(files.values().all(|f| f.size == 20));
    }
    let v = status(&["--journal", &jdb.url, "--json", "--job", "orphans"], &[]).json();
    let shards: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["shard"].as_str().unwrap())
        .collect();
    assert_eq!(shards, vec!["0/4", "1/4", "2/4", "3/4"]);
    jdb.drop_db().await;
}

/// A bad journal URL is a usage error (exit 2) naming what to fix, without the password;
/// an unreachable PostgreSQL journal stops migrate before any upload (exit 3, nothing in
/// the bucket, no record); a missing journal file for `status` is exit 2; and without
/// any journal `status` says where it looked (exit 0). MASTOMEDIA_JOURNAL is the default
/// of `--journal`.
#[tokio::test]
async fn bad_and_unreachable_journals_change_nothing() {
    let root = temp_dir("jpg-bad");
    tree(&root, 3, "x");
    let bucket = TestBucket::new().await;
    let env = migrate_env(&bucket.name, &[]);
    let bad = format!("postgres://mm:{PASSWORD}@127.0.0.1:notaport/j");
    let run = mastomedia_env(
        &[
            "--env-file",
            s(&env),
            "migrate",
            "--from",
            s(&root),
            "--journal",
            &bad,
        ],
        &[],
    );
    no_password("bad URL", &run);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("not a valid PostgreSQL URL"),
        "{}",
        run.stderr
    );
    let run = mastomedia_env(
        &["--env-file", s(&env), "migrate", "--from", s(&root)],
        &[("MASTOMEDIA_JOURNAL", &bad)],
    );
    no_password("bad MASTOMEDIA_JOURNAL", &run);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("MASTOMEDIA_JOURNAL"), "{}", run.stderr);

    let state = temp_dir("jpg-state");
    let xdg = [("XDG_STATE_HOME", s(&state))];
    let unreachable = format!("postgres://mm:{PASSWORD}@127.0.0.1:9/journal");
    for how in ["--journal", "env"] {
        let mut args = vec!["--env-file", s(&env), "migrate", "--from", s(&root)];
        let mut envs = xdg.to_vec();
        if how == "env" {
            envs.push(("MASTOMEDIA_JOURNAL", &unreachable));
        } else {
            args.extend(["--journal", &unreachable]);
        }
        let run = mastomedia_env(&args, &envs);
        no_password("unreachable", &run);
        assert_eq!(run.code, 3, "{how}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("cannot open the PostgreSQL journal postgres://mm@127.0.0.1:9/journal"),
            "{how}: {}",
            run.stderr
        );
        assert!(bucket.keys().await.is_empty(), "{how}: nothing uploaded");
        assert!(
            std::fs::read_dir(&state).unwrap().next().is_none(),
            "{how}: no fallback journal written"
        );
    }
    let prune_env = s3_env_file_without_db(&bucket.name);
    let run = mastomedia_env(
        &["--env-file", s(&prune_env), "prune", "--journal", &bad],
        &[],
    );
    no_password("prune bad URL", &run);
    assert_eq!(run.code, 2, "{}", run.stderr);

    let missing = state.join("nope.sqlite");
    let run = status(&["--journal", s(&missing)], &xdg);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no journal at"), "{}", run.stderr);
    assert!(!missing.exists(), "status never creates a journal");
    let run = status(&[], &xdg);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("no journal found in"), "{}", run.stdout);

    // The default journals of the state folder: a SQLite migrate run shows up.
    let run = mastomedia_env(
        &["--env-file", s(&env), "migrate", "--from", s(&root)],
        &xdg,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = status(&["--json"], &xdg).json();
    assert_eq!(v["runs"][0]["job"], "migrate", "{v:#}");
    assert_eq!(v["runs"][0]["objects"], 3);
    assert_eq!(v["runs"][0]["state"], "finished");
    assert!(v["journals"][0].as_str().unwrap().ends_with(".sqlite"));
}

/// An env file whose database is never reached: a bad `--journal` stops prune first.
fn s3_env_file_without_db(bucket: &str) -> std::path::PathBuf {
    migrate_env(bucket, &[])
}

/// Through PgBouncer in transaction pooling (which refuses the startup option setting
/// search_path, or would drop it), the journal is refused (exit 3) before anything is
/// written: no schema `mastomedia` appears in Mastodon's database.
#[tokio::test]
async fn a_pooler_that_drops_search_path_is_refused_before_any_write() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let url = crate::support::pgbouncer().url(&db);
    let run = status(&["--journal", &url], &[]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("refusing the PostgreSQL journal")
            && run.stderr.contains("connect directly"),
        "{}",
        run.stderr
    );
    let schemas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'mastomedia'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(schemas, 0, "nothing written");
    db.drop_db().await;
}

/// A journal user that may not create the schema `mastomedia` (no CREATE on the database,
/// as in Mastodon's own database with its app user), or may not use one a DBA created for
/// someone else: refused (exit 3) with the statement the owner must run, nothing created
/// anywhere, the password never printed; once the owner ran it, the journal opens.
#[tokio::test]
async fn a_user_that_may_not_create_the_schema_is_told_what_to_ask_for() {
    let db = JournalDb::new().await;
    let role = unique("mmlow").replace('-', "_");
    for sql in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"),
        format!("REVOKE CREATE ON DATABASE {} FROM PUBLIC", db.name),
    ] {
        db.pool.execute(sql.as_str()).await.unwrap();
    }
    let opts: PgConnectOptions = admin_url().parse().unwrap();
    let url = format!(
        "postgres://{role}:{PASSWORD}@{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        db.name
    );
    let tables = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT n.nspname FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' \
             AND n.nspname NOT IN ('information_schema', 'public') \
             UNION ALL SELECT schemaname || '.' || tablename FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let refused = |what: &str, run: &Run| {
        no_password(what, run);
        assert_eq!(run.code, 3, "{what}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("CREATE SCHEMA mastomedia AUTHORIZATION {role};"))
                && run.stderr.contains("nothing was written"),
            "{what}: {}",
            run.stderr
        );
    };
    let run = status(&["--env-file", "/dev/null", "--journal", &url], &[]);
    refused("no CREATE on the database", &run);
    assert_eq!(tables().await, Vec::<String>::new());

    // A schema of another owner, without USAGE for the journal user.
    db.pool.execute("CREATE SCHEMA mastomedia").await.unwrap();
    let run = status(&["--env-file", "/dev/null", "--journal", &url], &[]);
    refused("a schema it may not use", &run);
    assert_eq!(tables().await, vec!["mastomedia".to_owned()]);

    // What the message asks for.
    db.pool.execute("DROP SCHEMA mastomedia").await.unwrap();
    db.pool
        .execute(format!("CREATE SCHEMA mastomedia AUTHORIZATION {role}").as_str())
        .await
        .unwrap();
    let run = status(&["--env-file", "/dev/null", "--journal", &url], &[]);
    no_password("with the schema", &run);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("no runs recorded"), "{}", run.stdout);
    assert!(
        tables().await.iter().all(|t| t.starts_with("mastomedia")),
        "{:?}",
        tables().await
    );
    db.drop_db().await;
    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&db_admin().await)
        .await;
}

async fn db_admin() -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url())
        .await
        .unwrap()
}
