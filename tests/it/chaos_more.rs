//! Issue 12, the scenarios `tests/it/chaos.rs` and `tests/it/chaos_fs.rs` left open:
//! SIGKILL at seeded moments during `migrate --verify` and `migrate --repair` (S3),
//! during `reconcile --apply` on S3 and on the filesystem (one driver for both), and a
//! real PostgreSQL restart (`tests/it/support/pgcluster.rs`) during an S3 prune and during
//! `migrate --database`. Every kill uses the one kill-loop driver
//! (`support::invariants::run_and_kill_when`) and is followed by the invariants, a clean
//! re-run and the invariants with everything done.
//!
//! `MASTOMEDIA_CHAOS_SEED=N` replays one seed, `MASTOMEDIA_CHAOS_ITERATIONS=N` runs more,
//! as in `tests/it/chaos.rs`; `docs/reliability.md` quotes the figures each scenario
//! prints (`--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::types::ObjectCannedAcl;

use crate::chaos::{
    check_migrate, migrate_bucket, migrate_cmd, migrate_env, migrate_tree, protect, prune_cmd,
    seed_prune_world,
};
use crate::chaos_fs::wait_bounded;
use crate::migrate::{CACHE_CONTROL, GIF, JPEG, PNG, acl, bytes, get, write_file};
use crate::support::backend::Backend;
use crate::support::invariants::{
    Ending, Rng, Snapshot, check_prune, command, iterations, rerun, rows_json, run_and_kill,
    run_and_kill_when, seeds, snapshot,
};
use crate::support::pgcluster::PgCluster;
use crate::support::seed::{Media, insert_account, insert_media};
use crate::support::{
    Mastodon, TestBucket, TestDb, fs_env_file, partition18, s3_env_file, temp_dir,
};

/// Default SIGKILL iterations per command, as in `tests/it/chaos.rs`; each loop here runs
/// half of them (CI time): `migrate --verify` and `--repair` 15 each (beside the 30 of
/// `chaos::migrate_sigkill_at_random_moments_then_rerun`), reconcile 15 on S3 and 15 on
/// the filesystem.
const KILLS: usize = 30;

/// First id of the rows seeded here (the other chaos files use 109_5… and 109_6…).
const BASE_ID: i64 = 109_700_000_000_000_000;
/// Ids per iteration.
const STRIDE: i64 = 1_000;

/// A ZIP archive's first bytes (a backup).
const ZIP: &[u8] = b"PK\x03\x04\x14\0\0\0";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Figures of one scenario, printed for `docs/reliability.md`.
#[derive(Default)]
struct Figures {
    kills: usize,
    finished_first: usize,
    reruns: usize,
    completed: usize,
    checks: usize,
    /// Kills that left the work partly done (some but not all of it).
    partial: usize,
}

impl Figures {
    fn killed(&mut self, what: &str, e: Ending) {
        match e {
            Ending::Killed(_) => self.kills += 1,
            Ending::Finished(code) => {
                assert_eq!(code, 0, "{what}: the unkilled run");
                self.finished_first += 1;
            }
        }
    }

    fn print(&self, scenario: &str, seeds: &[u64], unit: &str) {
        eprintln!(
            "chaos {scenario}: seeds {:?}..{:?}: {} kills ({} runs finished before their kill moment, \
             {} kills left the work partly done), {} re-runs, {} {unit} completed, 0 rows lost, \
             0 foreign keys deleted ({} checks)",
            seeds.first(),
            seeds.last(),
            self.kills,
            self.finished_first,
            self.partial,
            self.reruns,
            self.completed,
            self.checks
        );
    }
}

fn json(out: &str, what: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{out}"))
}

// ------------------------------------------------------------------------ migrate --verify

/// SIGKILL at a seeded moment during `migrate --verify` (half the seeds copy first, so the
/// killed run is a verify pass only: HEADs and journal writes), then the invariants (every
/// object present is byte-identical, the foreign one survives), a re-run with `--verify`
/// (exit 0: every file verified, no mismatch, nothing taken for deleted in the bucket) and
/// the full check (bytes, Content-Type, Cache-Control, ACL).
#[tokio::test]
async fn migrate_verify_sigkill_at_random_moments_then_rerun() {
    let seeds = seeds(23_000, iterations(KILLS).div_ceil(2));
    let mut fig = Figures::default();
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let root = temp_dir("chaos-src");
        let n = rng.range(10, 40) as usize;
        let tree = migrate_tree(&root, &mut rng, n);
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        let env = migrate_env(&bucket.name);
        let journal = crate::migrate::journal();
        let copied_first = rng.chance(0.5);
        let what = format!(
            "migrate --verify SIGKILL seed {seed} (copied first: {copied_first}) (replay: MASTOMEDIA_CHAOS_SEED={seed})"
        );
        if copied_first {
            let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &[]));
            assert_eq!(code, 0, "{what}: the first copy\n{out}\n{err}");
        }
        // A copy and its verify pass: about 2 requests per file; a verify pass: 1.
        let span = if copied_first { n } else { 2 * n } as u64;
        let after = rng.range(1, span);
        let extra = rng.range(0, 30);
        let rate = ["40", "100", "300"][rng.range(0, 2) as usize];
        bucket.reset_stats();
        let e = run_and_kill(
            migrate_cmd(
                &env,
                &root,
                &journal,
                &["--verify", "--rate", rate, "--concurrency", "2"],
            ),
            &bucket,
            after,
            extra,
        );
        fig.killed(&what, e);
        let present = check_migrate(
            &format!("{what}, after the kill"),
            &bucket,
            &tree,
            &foreign,
            false,
        )
        .await;
        if present > 0 && present < n {
            fig.partial += 1;
        }
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &["--verify"]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run with --verify\n{out}\n{err}");
        let r = json(&out, &what);
        assert_eq!(r["verified"], n, "{what}: every file verified: {r:#}");
        assert_eq!(r["verify_mismatches"], 0, "{what}: {r:#}");
        assert_eq!(
            r["deleted_in_bucket"], 0,
            "{what}: a killed run made a file look deleted in the bucket: {r:#}"
        );
        assert_eq!(
            r["files_uploaded"].as_u64().unwrap() + r["files_unchanged"].as_u64().unwrap(),
            n as u64,
            "{what}: {r:#}"
        );
        fig.completed += check_migrate(
            &format!("{what}, after the re-run"),
            &bucket,
            &tree,
            &foreign,
            true,
        )
        .await;
        fig.checks += foreign.len() * 2;
    }
    fig.print("migrate --verify SIGKILL", &seeds, "objects");
}

// ------------------------------------------------------------------------ migrate --repair

/// What one object carries: (Content-Type, Cache-Control, public-read).
type Headers = (Option<String>, Option<String>, bool);

/// One object of a repair world: its bytes, what it carried when seeded and what a
/// complete `--repair` must give it.
struct RepairObject {
    body: Vec<u8>,
    before: Headers,
    after: Headers,
}

/// Reads the headers and ACL of `key` (straight from moto).
async fn headers_of(bucket: &TestBucket, key: &str) -> (Vec<u8>, Headers) {
    let o = get(bucket, key).await;
    let public = acl(bucket, key).await;
    (o.body, (o.content_type, o.cache_control, public))
}

/// A bucket "copied by another tool": 8–24 objects (media in Mastodon's layout, backups,
/// keys outside the layout) with, per object, the right or a generic Content-Type,
/// Mastodon's, another or no Cache-Control, public-read or private; some already right.
/// What a complete repair gives each (`plan::headers::decide_acl` without `--repair-acl`):
/// a generic Content-Type sniffed from the bytes, Mastodon's Cache-Control, the ACL kept,
/// except backups, always private.
async fn repair_world(bucket: &TestBucket, rng: &mut Rng) -> BTreeMap<String, RepairObject> {
    let mut out = BTreeMap::new();
    let n = rng.range(8, 24);
    for i in 0..n {
        let (key, magic, ct): (String, &[u8], &str) = match rng.range(0, 9) {
            0 => (
                format!(
                    "backups/dumps/000/000/{i:03}/original/archive-{:016x}.zip",
                    rng.next()
                ),
                ZIP,
                "application/zip",
            ),
            1 => (
                format!("unrelated/{:016x}.png", rng.next()),
                PNG,
                "image/png",
            ),
            k => {
                let (ext, magic, ct): (&str, &[u8], &str) = match k % 3 {
                    0 => ("png", PNG, "image/png"),
                    1 => ("jpeg", JPEG, "image/jpeg"),
                    _ => ("gif", GIF, "image/gif"),
                };
                (
                    format!(
                        "media_attachments/files/110/000/000/000/001/{i:03}/original/{:016x}.{ext}",
                        rng.next()
                    ),
                    magic,
                    ct,
                )
            }
        };
        let body = bytes(
            magic,
            &format!("{key}{}", rng.next()),
            rng.range(20, 3000) as usize,
        );
        let mut put = bucket
            .client
            .put_object()
            .bucket(&bucket.name)
            .key(&key)
            .body(body.clone().into());
        put = match rng.range(0, 2) {
            0 => put.content_type(ct),
            1 => put.content_type("binary/octet-stream"),
            _ => put,
        };
        put = match rng.range(0, 3) {
            0 | 1 => put.cache_control(CACHE_CONTROL),
            2 => put.cache_control("max-age=60"),
            _ => put,
        };
        if rng.chance(0.6) {
            put = put.acl(ObjectCannedAcl::PublicRead);
        }
        put.send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
        let (stored, before) = headers_of(bucket, &key).await;
        assert!(stored == body, "{key}: seeded");
        let generic = before.0.as_deref().is_none_or(|c| {
            c.is_empty() || c == "binary/octet-stream" || c == "application/octet-stream"
        });
        let after = (
            if generic {
                Some(ct.to_owned())
            } else {
                before.0.clone()
            },
            Some(CACHE_CONTROL.to_owned()),
            before.2 && !key.starts_with("backups/"),
        );
        out.insert(
            key,
            RepairObject {
                body,
                before,
                after,
            },
        );
    }
    out
}

/// The repair invariants: the bucket holds exactly the seeded keys minus those the test
/// deleted (nothing re-created, nothing deleted, nothing new); every object keeps its bytes
/// (size and MD5 ETag), and carries either all its old headers and ACL or all the repaired
/// ones (one COPY in place sets them together; never worse than before: a public object
/// stays public, a private one private, no header lost); with `complete`, the repaired ones.
async fn check_repair(
    what: &str,
    bucket: &TestBucket,
    world: &BTreeMap<String, RepairObject>,
    deleted: &BTreeSet<String>,
    complete: bool,
) -> (usize, usize) {
    let now = snapshot(bucket).await;
    let want: BTreeSet<&String> = world.keys().filter(|k| !deleted.contains(*k)).collect();
    let have: BTreeSet<&String> = now.keys().collect();
    assert_eq!(
        have, want,
        "{what}: the bucket's keys changed (an object deleted, re-created or added)"
    );
    let (mut repaired, mut untouched) = (0, 0);
    for k in want {
        let o = &world[k];
        let (body, h) = headers_of(bucket, k).await;
        assert!(body == o.body, "{what}: {k}: bytes changed");
        if h == o.after {
            repaired += 1;
        } else {
            assert!(
                !complete,
                "{what}: {k}: after the re-run {h:?}, want {:?}",
                o.after
            );
            assert_eq!(
                h, o.before,
                "{what}: {k}: neither as before nor repaired (want {:?})",
                o.after
            );
            untouched += 1;
        }
    }
    (repaired, untouched)
}

/// Deletes `keys` straight on moto from a thread of its own (the caller is inside the
/// test's runtime): "Mastodon deleted them" while a repair runs.
fn delete_behind(bucket: &TestBucket, keys: Vec<String>) {
    let client = bucket.client.clone();
    let name = bucket.name.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for k in keys {
                client
                    .delete_object()
                    .bucket(&name)
                    .key(&k)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete {k}: {e:?}"));
            }
        });
    })
    .join()
    .unwrap();
}

fn repair_cmd(env: &Path, journal: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--env-file",
        s(env),
        "migrate",
        "--repair",
        "--journal",
        s(journal),
        "--json",
    ];
    args.extend_from_slice(extra);
    command(&args, &[])
}

/// SIGKILL at a seeded moment during `migrate --repair`, with one or two objects deleted
/// behind its back at another seeded moment (as Mastodon deletes media while it runs):
/// after the kill no object has worse headers or ACL than before, none lost its bytes,
/// none was deleted or re-created, and the only writes were COPYs in place; a re-run
/// repairs the rest (exit 0), and a third run has nothing left to do (no write at all).
#[tokio::test]
async fn migrate_repair_sigkill_at_random_moments_then_rerun() {
    let seeds = seeds(24_000, iterations(KILLS).div_ceil(2));
    let mut fig = Figures::default();
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let bucket = TestBucket::new().await;
        let world = repair_world(&bucket, &mut rng).await;
        let env = migrate_env(&bucket.name);
        let journal = crate::migrate::journal();
        let what =
            format!("migrate --repair SIGKILL seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let n = world.len() as u64;
        let keys: Vec<&String> = world.keys().collect();
        let mut doomed = BTreeSet::new();
        for _ in 0..rng.range(1, 2) {
            doomed.insert(keys[rng.range(0, n - 1) as usize].clone());
        }
        // A repair: a listing, then about 2–3 requests per object (HEAD, ACL, COPY).
        let after = rng.range(1, 2 * n);
        let delete_at = rng.range(1, 2 * n);
        let extra = rng.range(0, 30);
        let rate = ["40", "100", "300"][rng.range(0, 2) as usize];
        bucket.reset_stats();
        let mut deleted = false;
        let e = run_and_kill_when(
            repair_cmd(&env, &journal, &["--rate", rate, "--concurrency", "2"]),
            || {
                let seen = bucket.stats()["total"].as_u64().unwrap_or(0);
                if !deleted && seen >= delete_at {
                    delete_behind(&bucket, doomed.iter().cloned().collect());
                    deleted = true;
                }
                seen
            },
            after,
            extra,
            Duration::from_millis(10),
        );
        fig.killed(&what, e);
        if !deleted {
            delete_behind(&bucket, doomed.iter().cloned().collect());
        }
        let stats = bucket.stats();
        assert_eq!(
            stats["mutating"],
            stats["ops"]["CopyObject"].as_u64().unwrap_or(0),
            "{what}: a write other than a COPY in place: {stats}"
        );
        let (done, left) = check_repair(
            &format!("{what}, after the kill"),
            &bucket,
            &world,
            &doomed,
            false,
        )
        .await;
        if done > 0 && left > 0 {
            fig.partial += 1;
        }
        bucket.reset_stats();
        let (code, out, err) = rerun(|| repair_cmd(&env, &journal, &[]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        let stats = bucket.stats();
        assert_eq!(
            stats["mutating"],
            stats["ops"]["CopyObject"].as_u64().unwrap_or(0),
            "{what}: re-run: {stats}"
        );
        let (done, _) = check_repair(
            &format!("{what}, after the re-run"),
            &bucket,
            &world,
            &doomed,
            true,
        )
        .await;
        fig.completed += done;
        fig.checks += done;
        bucket.reset_stats();
        let (code, out, err) = rerun(|| repair_cmd(&env, &journal, &[]));
        assert_eq!(code, 0, "{what}: third run\n{out}\n{err}");
        assert_eq!(json(&out, &what)["repaired"], 0, "{what}: third run: {out}");
        assert_eq!(bucket.stats()["mutating"], 0, "{what}: third run wrote");
    }
    fig.print("migrate --repair SIGKILL", &seeds, "objects");
}

// ------------------------------------------------------------------------ reconcile

/// Key of a media row's `style` file (`cache/` for remote rows).
fn media_key(remote: bool, id: i64, style: &str, name: &str) -> String {
    format!(
        "{}media_attachments/files/{}/{style}/{name}",
        if remote { "cache/" } else { "" },
        partition18(id)
    )
}

/// Key → bytes (filesystem) or "size ETag" (S3) of every stored object.
async fn contents(store: &Backend) -> BTreeMap<String, Vec<u8>> {
    match store {
        Backend::S3(b) => snapshot(b)
            .await
            .into_iter()
            .map(|(k, (size, etag))| (k, format!("{size} {etag}").into_bytes()))
            .collect(),
        Backend::Fs(root) => {
            let mut out = BTreeMap::new();
            for k in store.keys().await {
                let body = std::fs::read(root.join(&k)).unwrap();
                out.insert(k, body);
            }
            out
        }
    }
}

/// The reconcile invariants: rows it must never change (complete remote rows, local rows
/// with a missing file, the newest upload) are unchanged, every column, and their files
/// are all there byte for byte; a cleared broken row has none of its files left (no row
/// cleared whose file exists); nothing unknown appeared. With `final_run` every broken
/// remote row is cleared and its leftover files are gone. Returns the broken rows cleared.
async fn check_reconcile(
    what: &str,
    db: &TestDb,
    store: &Backend,
    kept_rows: &BTreeMap<i64, Option<String>>,
    kept_files: &BTreeMap<String, Vec<u8>>,
    broken: &BTreeMap<i64, Vec<String>>,
    final_run: bool,
) -> usize {
    let ids: Vec<i64> = kept_rows.keys().copied().collect();
    let rows_now = rows_json(db, "media_attachments", &ids).await;
    for (id, before) in kept_rows {
        assert_eq!(
            rows_now.get(id),
            Some(before),
            "{what}: media_attachments row {id} (complete or local) changed"
        );
    }
    let now = contents(store).await;
    for (k, v) in kept_files {
        match now.get(k) {
            None => panic!("{what}: a file reconcile must keep was deleted: {k}"),
            Some(n) => assert!(n == v, "{what}: a kept file changed: {k}"),
        }
    }
    let bids: Vec<i64> = broken.keys().copied().collect();
    let names: BTreeMap<i64, Option<String>> =
        sqlx::query_as("SELECT id, file_file_name FROM media_attachments WHERE id = ANY($1)")
            .bind(&bids)
            .fetch_all(&db.pool)
            .await
            .expect("read broken rows")
            .into_iter()
            .collect();
    let mut cleared = 0;
    for (id, keys) in broken {
        let name = names
            .get(id)
            .unwrap_or_else(|| panic!("{what}: row {id} deleted (reconcile never deletes rows)"));
        if name.is_none() {
            cleared += 1;
            for k in keys {
                assert!(
                    !now.contains_key(k),
                    "{what}: row lost: media_attachments {id} cleared but {k} still exists"
                );
            }
        } else {
            assert!(
                !final_run,
                "{what}: after the clean re-run broken row {id} still names its file"
            );
        }
    }
    for k in now.keys() {
        assert!(
            kept_files.contains_key(k) || broken.values().any(|ks| ks.contains(k)),
            "{what}: an unknown file appeared: {k}"
        );
    }
    if final_run {
        for keys in broken.values() {
            for k in keys {
                assert!(!now.contains_key(k), "{what}: leftover {k} not deleted");
            }
        }
    }
    cleared
}

fn reconcile_cmd(env: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--env-file",
        s(env),
        "reconcile",
        "--apply",
        "--json",
        "--concurrency",
        "1",
    ];
    args.extend_from_slice(extra);
    command(&args, &[])
}

/// The reconcile kill loop, on either storage: one database and one storage, where the
/// newest upload (a local image whose files are there, the ownership check's sample)
/// stays and each iteration's world replaces the previous one's. Each iteration seeds 3–10 remote rows whose original is gone (their
/// `small` left over), 10–20 complete remote rows and 1–2 local rows whose original is
/// gone; SIGKILLs `reconcile --apply` at a seeded moment (S3: after the k-th request,
/// every DeleteObjects of 2 keys held 0.1 s; filesystem: once k leftover files are
/// unlinked, k from 0), checks [`check_reconcile`], re-runs it clean and checks again.
async fn reconcile_sigkill_loop(store: Backend, label: &str, base_seed: u64) {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Chatham").await;
    let env = match &store {
        Backend::S3(b) => {
            b.faults(serde_json::json!({
                "stall": {"count": 100_000, "ops": ["DeleteObjects"], "seconds": 0.1}
            }));
            s3_env_file(&db, &b.name, &[("S3_BATCH_DELETE_LIMIT", "2")])
        }
        Backend::Fs(root) => fs_env_file(&db, root),
    };
    let mut kept_rows = BTreeMap::new();
    let live = BASE_ID + 999_000;
    let live_name = "00000000000000aa.png";
    insert_media(&db, &Media::local(live, live_name, 1.5)).await;
    for style in ["original", "small"] {
        store
            .put(&media_key(false, live, style, live_name), b"live")
            .await;
    }
    kept_rows.extend(rows_json(&db, "media_attachments", &[live]).await);
    let seeds = seeds(base_seed, iterations(KILLS).div_ceil(2));
    let mut fig = Figures::default();
    let live_rows = kept_rows.clone();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let base = BASE_ID + iter as i64 * STRIDE;
        // The previous iteration's world, checked: gone, so every run checks ~30 rows.
        let old: Vec<String> = store
            .keys()
            .await
            .into_iter()
            .filter(|k| !k.ends_with(live_name))
            .collect();
        match &store {
            Backend::S3(b) => b.delete_behind_the_back(&old).await,
            Backend::Fs(root) => {
                for k in &old {
                    std::fs::remove_file(root.join(k)).unwrap();
                }
            }
        }
        sqlx::query("DELETE FROM media_attachments WHERE id >= $1 AND id < $2")
            .bind(BASE_ID)
            .bind(live)
            .execute(&db.pool)
            .await
            .unwrap();
        let mut kept_rows = live_rows.clone();
        let mut broken = BTreeMap::new();
        let mut kept_ids = Vec::new();
        let nb = rng.range(3, 10) as i64;
        for i in 0..nb {
            let id = base + i;
            let name = format!("{:016x}.png", rng.next());
            insert_media(&db, &Media::remote(id, &name, 3.0)).await;
            let small = media_key(true, id, "small", &name);
            store
                .put(&small, format!("left over {small}").as_bytes())
                .await;
            broken.insert(id, vec![media_key(true, id, "original", &name), small]);
        }
        for i in 0..rng.range(10, 20) as i64 {
            let id = base + 100 + i;
            let name = format!("{:016x}.png", rng.next());
            insert_media(&db, &Media::remote(id, &name, 3.0)).await;
            for style in ["original", "small"] {
                store
                    .put(&media_key(true, id, style, &name), b"complete")
                    .await;
            }
            kept_ids.push(id);
        }
        for i in 0..rng.range(1, 2) as i64 {
            let id = base + 200 + i;
            let name = format!("{:016x}.png", rng.next());
            insert_media(&db, &Media::local(id, &name, 3.0)).await;
            store
                .put(&media_key(false, id, "small", &name), b"local small")
                .await;
            kept_ids.push(id);
        }
        kept_rows.extend(rows_json(&db, "media_attachments", &kept_ids).await);
        let leftovers: BTreeSet<String> = broken.values().map(|ks| ks[1].clone()).collect();
        let kept_files: BTreeMap<String, Vec<u8>> = contents(&store)
            .await
            .into_iter()
            .filter(|(k, _)| !leftovers.contains(k))
            .collect();
        let what = format!(
            "{label} reconcile --apply SIGKILL seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})"
        );
        let e = match &store {
            Backend::S3(b) => {
                b.reset_stats();
                // After the k-th delete batch (k from 0: a kill before any) reached the
                // server, plus up to 150 ms (a batch is held 0.1 s).
                let after = rng.range(0, nb as u64 / 2);
                let extra = rng.range(0, 150);
                run_and_kill_when(
                    reconcile_cmd(&env, &[]),
                    || b.stats()["ops"]["DeleteObjects"].as_u64().unwrap_or(0),
                    after,
                    extra,
                    Duration::from_millis(10),
                )
            }
            Backend::Fs(root) => {
                let after = rng.range(0, nb as u64 * 2 / 3);
                let extra = rng.range(0, 30);
                // Without a rate a dozen unlinks end before the first poll.
                let rate = ["20", "50", "100"][rng.range(0, 2) as usize];
                run_and_kill_when(
                    reconcile_cmd(&env, &["--rate", rate]),
                    || leftovers.iter().filter(|k| !root.join(k).exists()).count() as u64,
                    after,
                    extra,
                    Duration::from_millis(2),
                )
            }
        };
        fig.killed(&what, e);
        let cleared = check_reconcile(
            &format!("{what}, after the kill"),
            &db,
            &store,
            &kept_rows,
            &kept_files,
            &broken,
            false,
        )
        .await;
        let now = contents(&store).await;
        let gone = leftovers.iter().filter(|k| !now.contains_key(*k)).count();
        if (gone > 0 || cleared > 0) && cleared < broken.len() {
            fig.partial += 1;
        }
        let (code, out, err) = rerun(|| reconcile_cmd(&env, &[]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        fig.completed += check_reconcile(
            &format!("{what}, after the re-run"),
            &db,
            &store,
            &kept_rows,
            &kept_files,
            &broken,
            true,
        )
        .await;
        fig.checks += kept_rows.len() + kept_files.len();
    }
    fig.print(
        &format!("{label} reconcile --apply SIGKILL"),
        &seeds,
        "broken rows cleared",
    );
    db.drop_db().await;
}

/// [`reconcile_sigkill_loop`] on S3.
#[tokio::test]
async fn reconcile_apply_sigkill_at_random_moments_then_rerun_s3() {
    reconcile_sigkill_loop(Backend::S3(TestBucket::new().await), "S3", 16_000).await;
}

/// [`reconcile_sigkill_loop`] on the filesystem.
#[tokio::test]
async fn reconcile_apply_sigkill_at_random_moments_then_rerun_fs() {
    reconcile_sigkill_loop(Backend::Fs(temp_dir("system")), "fs", 16_500).await;
}

// ------------------------------------------------------------------------ Postgres restarted

/// Restarts `cluster` (`-m fast`, or `-m immediate` for every third iteration from the
/// second), waits for the run to end (at most 120 s: never a hang) and checks it ended
/// with exit 0, or 1–3 and an error line, never a panic; returns a line for the figures.
fn restart_and_wait(
    cluster: &PgCluster,
    child: std::process::Child,
    what: &str,
    mode: &str,
) -> String {
    cluster.pg_ctl(&["restart", "-m", mode]);
    let out = wait_bounded(child, what, Duration::from_secs(120));
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: a panic\n{stderr}");
    assert!(
        (0..=3).contains(&code),
        "{what}: exit 0..3, got {:?}\n{stderr}\nserver log:\n{}",
        out.status,
        cluster.log()
    );
    // migrate lists a file the database could not vouch for as a per-file failure.
    let unanswered = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|r| {
            r["failures"].as_array().map(|f| {
                f.iter()
                    .filter(|f| f["code"] == "DatabaseUnavailable")
                    .count()
            })
        })
        .unwrap_or(0);
    let unanswered = if unanswered > 0 {
        format!(", {unanswered} files not copied (DatabaseUnavailable)")
    } else {
        String::new()
    };
    if code == 0 {
        return format!("-m {mode}: exit 0 (finished){unanswered}");
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned();
    assert!(
        !last.is_empty(),
        "{what}: exit {code} with no error message"
    );
    format!("-m {mode}: exit {code}{unanswered}: {last}")
}

/// "Postgres restarted" during an S3 prune (the filesystem's is
/// `chaos_fs::fs_prune_postgres_restarted_mid_run`): a cluster of the test's own,
/// restarted once rows are being cleared plus a seeded delay; the run stops with a clear
/// error or finishes, the prune invariants hold, a re-run completes.
#[tokio::test]
async fn prune_postgres_restarted_mid_run() {
    let cluster = PgCluster::start();
    let db = TestDb::new_at(&cluster.admin_url(), Mastodon::V4_6, "Europe/Lisbon").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "4")]);
    let seeds = seeds(12_500, iterations(KILLS).div_ceil(10));
    let mut fig = Figures::default();
    let mut endings = Vec::new();
    let mut protected = Snapshot::new();
    let mut protected_rows = BTreeMap::new();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = seed_prune_world(&db, &bucket, iter as i64, &mut rng, Some(60)).await;
        protect(&db, &bucket, &w, &mut protected, &mut protected_rows).await;
        sqlx::query("CHECKPOINT")
            .execute(&db.pool)
            .await
            .expect("checkpoint the seeded world");
        let mode = if iter % 3 == 1 { "immediate" } else { "fast" };
        let what = format!(
            "prune Postgres restart -m {mode} seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})"
        );
        let child = prune_cmd(&env, &["--rate", "30", "--concurrency", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ids: Vec<i64> = w.selected.keys().copied().collect();
        let started = Instant::now();
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
        endings.push(restart_and_wait(&cluster, child, &what, mode));
        fig.kills += 1;
        let t = check_prune(
            &format!("{what}, after the restart"),
            &db,
            &bucket,
            &w.selected,
            &protected,
            &protected_rows,
            false,
        )
        .await;
        fig.checks += t.foreign_checked;
        if t.pending > 0 {
            fig.partial += 1;
        }
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
        fig.completed += t.cleared;
        fig.checks += t.foreign_checked;
    }
    fig.print("prune Postgres restarted (S3)", &seeds, "rows cleared");
    for e in &endings {
        eprintln!("chaos prune Postgres restarted (S3): {e}");
    }
    db.drop_db().await;
    drop(cluster);
}

/// "Postgres restarted" during `migrate --database`: 120 local media files whose rows
/// exist, a sixth of them of a suspended account (their copies must stay private). The
/// cluster restarts after the k-th upload: the run stops with a clear error or finishes;
/// every object present is byte-identical and none of a suspended account is public; the
/// re-run (exit 0) leaves every file in the bucket, byte-identical, with its Content-Type,
/// Mastodon's Cache-Control, and public-read exactly when its account is in good standing.
#[tokio::test]
async fn migrate_database_postgres_restarted_mid_run() {
    let cluster = PgCluster::start();
    let db = TestDb::new_at(&cluster.admin_url(), Mastodon::V4_6, "Asia/Kolkata").await;
    insert_account(&db, 11, None, None, None, Some(1), 1.0, 1.0).await;
    insert_account(&db, 12, None, None, None, Some(1), 1.0, 1.0).await;
    sqlx::query("UPDATE accounts SET suspended_at = now() WHERE id = 12")
        .execute(&db.pool)
        .await
        .unwrap();
    let seeds = seeds(22_500, iterations(KILLS).div_ceil(10));
    let mut fig = Figures::default();
    let mut endings = Vec::new();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let root = temp_dir("chaos-src");
        let mut tree = BTreeMap::new();
        let mut hidden = BTreeSet::new();
        for i in 0..120 {
            let id = BASE_ID + 500_000 + iter as i64 * STRIDE + i;
            let (ext, magic, ct): (&str, &[u8], &'static str) = match rng.range(0, 2) {
                0 => ("png", PNG, "image/png"),
                1 => ("jpeg", JPEG, "image/jpeg"),
                _ => ("gif", GIF, "image/gif"),
            };
            let name = format!("{:016x}.{ext}", rng.next());
            let suspended = i % 6 == 5;
            let mut m = Media::local(id, &name, 10.0);
            m.account_id = Some(if suspended { 12 } else { 11 });
            m.content_type = Some(ct.to_owned());
            insert_media(&db, &m).await;
            let key = format!(
                "media_attachments/files/{}/original/{name}",
                partition18(id)
            );
            let body = bytes(
                magic,
                &format!("{key}{}", rng.next()),
                rng.range(20, 3000) as usize,
            );
            write_file(&root, &key, &body);
            if suspended {
                hidden.insert(key.clone());
            }
            tree.insert(key, (body, ct));
        }
        sqlx::query("CHECKPOINT")
            .execute(&db.pool)
            .await
            .expect("checkpoint the seeded world");
        let (bucket, foreign) = migrate_bucket(&mut rng).await;
        let env = s3_env_file(&db, &bucket.name, &[]);
        let journal = crate::migrate::journal();
        let mode = if iter % 3 == 1 { "immediate" } else { "fast" };
        let what = format!(
            "migrate --database Postgres restart -m {mode} seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})"
        );
        bucket.reset_stats();
        let child = migrate_cmd(
            &env,
            &root,
            &journal,
            &["--database", "--rate", "40", "--concurrency", "2"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let after = rng.range(5, 60);
        let started = Instant::now();
        while bucket.stats()["ops"]["PutObject"].as_u64().unwrap_or(0) < after {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: uploads did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        endings.push(restart_and_wait(&cluster, child, &what, mode));
        fig.kills += 1;
        let check_hidden = |stage: &str| {
            let what = format!("{what}, {stage}");
            let bucket = &bucket;
            let hidden = &hidden;
            async move {
                let now = snapshot(bucket).await;
                for k in hidden.iter().filter(|k| now.contains_key(*k)) {
                    assert!(
                        !acl(bucket, k).await,
                        "{what}: {k} of a suspended account is public"
                    );
                }
            }
        };
        let present = check_migrate(
            &format!("{what}, after the restart"),
            &bucket,
            &tree,
            &foreign,
            false,
        )
        .await;
        if present < tree.len() {
            fig.partial += 1;
        }
        check_hidden("after the restart").await;
        let (code, out, err) = rerun(|| migrate_cmd(&env, &root, &journal, &["--database"]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        let now = snapshot(&bucket).await;
        crate::support::invariants::assert_survive(&what, &foreign, &now);
        for (k, (body, ct)) in &tree {
            let o = get(&bucket, k).await;
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
            assert_eq!(
                acl(&bucket, k).await,
                !hidden.contains(k),
                "{what}: {k}: public-read exactly when its account is in good standing"
            );
        }
        fig.completed += tree.len();
        fig.checks += tree.len() + foreign.len();
    }
    fig.print("migrate --database Postgres restarted", &seeds, "objects");
    for e in &endings {
        eprintln!("chaos migrate --database Postgres restarted: {e}");
    }
    db.drop_db().await;
    drop(cluster);
}
