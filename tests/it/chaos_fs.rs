//! Issue 12 on the filesystem backend (`PAPERCLIP_ROOT_PATH`) and with a real PostgreSQL
//! restart: the scenarios of `tests/it/chaos.rs` that apply to local storage (SIGKILL
//! during prune and orphans --delete, the database sessions terminated, SIGTERM) and
//! "Postgres restarted" on a cluster of the test's own.
//!
//! Every storage root lives in a folder of its own next to a sentinel file, an empty
//! sibling folder and a copy of the very files prune or orphans will delete (same
//! relative paths, outside the root): after every kill and re-run that folder must be
//! byte-identical apart from the root. Inside the root, the invariants of
//! `tests/it/support/invariants.rs`, read from the disk: no row cleared whose files still
//! exist; local uploads, emoji, new media, unrelated files and same-folder neighbours
//! survive byte for byte; no file appears; the root itself stays.
//!
//! `MASTOMEDIA_CHAOS_SEED=N` replays one seed, `MASTOMEDIA_CHAOS_ITERATIONS=N` runs more
//! (default 30 kills per command), as in `tests/it/chaos.rs`; `docs/reliability.md`
//! quotes the figures each scenario prints (`--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::invariants::{
    Ending, Rng, Selected, Tally, command, iterations, rerun, rows_json, run_and_kill_when, seeds,
};
use crate::support::seed::{Media, insert_emoji, insert_media};
use crate::support::{Mastodon, TestDb, fs_env_file, partition18, temp_dir};

/// Default SIGKILL iterations per command, as in `tests/it/chaos.rs`.
const KILLS: usize = 30;

/// First id of the rows seeded here; iteration `i` uses ids from `BASE_ID + i * STRIDE`.
const BASE_ID: i64 = 109_600_000_000_000_000;
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

// ------------------------------------------------------------------------ the disk

/// Relative path → content of every regular file below a folder.
type Files = BTreeMap<String, Vec<u8>>;

/// Every file and every folder below `dir` (relative paths, `/`-separated), skipping the
/// subtree `skip` (relative to `dir`) when given.
fn walk(dir: &Path, skip: Option<&str>) -> (Files, BTreeSet<String>) {
    fn go(
        base: &Path,
        d: &Path,
        skip: Option<&str>,
        files: &mut Files,
        dirs: &mut BTreeSet<String>,
    ) {
        let mut entries: Vec<_> = std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("read {}: {e}", d.display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_owned();
            if Some(rel.as_str()) == skip {
                continue;
            }
            let t = e.file_type().unwrap();
            if t.is_dir() {
                dirs.insert(rel);
                go(base, &p, skip, files, dirs);
            } else {
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut files = Files::new();
    let mut dirs = BTreeSet::new();
    go(dir, dir, skip, &mut files, &mut dirs);
    (files, dirs)
}

fn put(dir: &Path, key: &str, body: &[u8]) {
    let p = dir.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A storage root with its surroundings: `<outer>/system` is `PAPERCLIP_ROOT_PATH`;
/// `<outer>` also holds a sentinel file, an empty folder and, once [`Site::mirror`]
/// ran, copies of files the run will delete.
struct Site {
    outer: PathBuf,
    root: PathBuf,
}

impl Site {
    fn new() -> Self {
        let outer = temp_dir("chaos-fs");
        let root = outer.join("system");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(outer.join("sentinel.txt"), b"next to the root").unwrap();
        std::fs::create_dir_all(outer.join("empty-neighbour")).unwrap();
        Self { outer, root }
    }

    /// Copies `keys` to the same relative paths outside the root (in `<outer>`).
    fn mirror<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        for k in keys {
            put(&self.outer, k, format!("outside the root: {k}").as_bytes());
        }
    }

    /// Everything outside the root.
    fn outside(&self) -> (Files, BTreeSet<String>) {
        walk(&self.outer, Some("system"))
    }

    /// Every file inside the root.
    fn files(&self) -> Files {
        walk(&self.root, None).0
    }

    /// Folders below the root that are empty (left behind, or never filled).
    fn empty_folders(&self) -> usize {
        walk(&self.root, None)
            .1
            .iter()
            .filter(|d| {
                std::fs::read_dir(self.root.join(d))
                    .unwrap()
                    .next()
                    .is_none()
            })
            .count()
    }

    /// The checks that hold at any moment: the root exists and nothing outside it changed.
    fn assert_outside(&self, what: &str, before: &(Files, BTreeSet<String>)) {
        assert!(
            self.root.is_dir(),
            "{what}: the storage root itself was removed"
        );
        let now = self.outside();
        assert_eq!(now.1, before.1, "{what}: a folder outside the root changed");
        for (k, v) in &before.0 {
            assert_eq!(
                now.0.get(k),
                Some(v),
                "{what}: a file outside the root was deleted or changed: {k}"
            );
        }
        assert_eq!(
            now.0.len(),
            before.0.len(),
            "{what}: a file appeared outside the root"
        );
    }
}

/// Every protected file is still there, byte for byte; returns how many were checked.
fn assert_survive(what: &str, protected: &Files, now: &Files) -> usize {
    for (k, v) in protected {
        match now.get(k) {
            None => panic!("{what}: foreign file deleted: {k}"),
            Some(n) => assert!(n == v, "{what}: foreign file changed: {k}"),
        }
    }
    protected.len()
}

/// Waits for `child` at most `limit`; kills it and fails when it hangs.
pub(super) fn wait_bounded(mut child: Child, what: &str, limit: Duration) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: the run hung for {limit:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Spawns `cmd` (output discarded) and SIGKILLs it once `progress()` reaches `after`
/// (files the run removed) plus `extra_ms`, or lets it finish if it ends first
/// (`support::invariants::run_and_kill_when`, polled every 2 ms).
fn run_and_kill(cmd: Command, progress: impl Fn() -> usize, after: usize, extra_ms: u64) -> Ending {
    run_and_kill_when(
        cmd,
        || progress() as u64,
        after as u64,
        extra_ms,
        Duration::from_millis(2),
    )
}

// ------------------------------------------------------------------------ prune world

/// One prune world: what prune must clear and what it must leave.
struct PruneWorld {
    selected: Selected,
    protected: Files,
    protected_rows: Vec<i64>,
}

impl PruneWorld {
    /// How many of the selected rows' files are gone from `root`.
    fn gone(&self, root: &Path) -> usize {
        self.selected
            .values()
            .flatten()
            .filter(|k| !root.join(k).exists())
            .count()
    }
}

/// Seeds iteration `iter` of a prune world (the same shape as `tests/it/chaos.rs`'s S3
/// world) into `db` and below `site.root`: `n` (or 8–30) selected remote rows 30 days old,
/// some with a same-folder neighbour; old local uploads, new remote media, a local emoji
/// and unrelated files that prune must never touch. The selected files are mirrored
/// outside the root.
async fn seed_prune_world(
    db: &TestDb,
    site: &Site,
    iter: i64,
    rng: &mut Rng,
    n: Option<u64>,
) -> PruneWorld {
    let base = BASE_ID + iter * STRIDE;
    let n = n.unwrap_or_else(|| rng.range(8, 30)) as i64;
    let mut selected = Selected::new();
    let mut protected = Files::new();
    let mut protected_rows = Vec::new();
    for i in 0..n {
        let id = base + i;
        let name = format!("{:016x}.png", rng.next());
        insert_media(db, &Media::remote(id, &name, 30.0 + i as f64 / 10.0)).await;
        let keys = media_keys(id, &name, true);
        for k in &keys {
            put(
                &site.root,
                k,
                format!("selected {k} {}", rng.next()).as_bytes(),
            );
        }
        if rng.chance(0.3) {
            // A neighbour: same folder, a name that extends the row's (exact keys only).
            protected.insert(format!("{}.bak", keys[0]), b"neighbour".to_vec());
        }
        selected.insert(id, keys);
    }
    for j in 0..2 {
        let id = base + 800 + j;
        let name = format!("{:016x}.png", rng.next());
        insert_media(db, &Media::local(id, &name, 40.0)).await;
        for k in media_keys(id, &name, false) {
            protected.insert(k.clone(), format!("local {k}").into_bytes());
        }
        protected_rows.push(id);
        let id = base + 900 + j;
        let name = format!("{:016x}.png", rng.next());
        insert_media(db, &Media::remote(id, &name, 1.0)).await;
        for k in media_keys(id, &name, true) {
            protected.insert(k.clone(), format!("new {k}").into_bytes());
        }
        protected_rows.push(id);
    }
    let emoji_id = 1_000 + iter;
    let emoji_name = format!("{:016x}.png", rng.next());
    insert_emoji(db, emoji_id, None, &emoji_name).await;
    let ep = format!("{emoji_id:09}");
    let ep = format!("{}/{}/{}", &ep[0..3], &ep[3..6], &ep[6..9]);
    for style in ["original", "static"] {
        protected.insert(
            format!("custom_emojis/images/{ep}/{style}/{emoji_name}"),
            b"emoji".to_vec(),
        );
    }
    for k in [
        format!("backups/{iter}/archive.zip"),
        format!("unrelated/{iter}/{:x}.txt", rng.next()),
        format!("site_uploads/files/000/000/{iter:03}/original/logo.png"),
    ] {
        protected.insert(k.clone(), format!("foreign {k}").into_bytes());
    }
    for (k, v) in &protected {
        put(&site.root, k, v);
    }
    site.mirror(selected.values().flatten());
    PruneWorld {
        selected,
        protected,
        protected_rows,
    }
}

/// The prune invariants read from the disk (see the module docs); with `final_run`
/// every selected row must also be cleared and its files gone.
#[allow(clippy::too_many_arguments)]
async fn check_prune_fs(
    what: &str,
    db: &TestDb,
    site: &Site,
    outside: &(Files, BTreeSet<String>),
    selected: &Selected,
    protected: &Files,
    protected_rows: &BTreeMap<i64, Option<String>>,
    final_run: bool,
) -> Tally {
    site.assert_outside(what, outside);
    let now = site.files();
    let mut tally = Tally {
        foreign_checked: assert_survive(what, protected, &now),
        ..Tally::default()
    };
    let ids: Vec<i64> = selected.keys().copied().collect();
    let names: BTreeMap<i64, Option<String>> =
        sqlx::query_as("SELECT id, file_file_name FROM media_attachments WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&db.pool)
            .await
            .expect("read selected rows")
            .into_iter()
            .collect();
    for (id, keys) in selected {
        let name = names
            .get(id)
            .unwrap_or_else(|| panic!("{what}: row {id} deleted (prune never deletes rows)"));
        match name {
            None => {
                tally.cleared += 1;
                for k in keys {
                    assert!(
                        !now.contains_key(k),
                        "{what}: row lost: media_attachments {id} cleared but {k} still exists"
                    );
                }
            }
            Some(_) => {
                tally.pending += 1;
                assert!(
                    !final_run,
                    "{what}: after the clean re-run row {id} still names its file"
                );
            }
        }
    }
    let pids: Vec<i64> = protected_rows.keys().copied().collect();
    let rows_now = rows_json(db, "media_attachments", &pids).await;
    for (id, before) in protected_rows {
        assert_eq!(
            rows_now.get(id),
            Some(before),
            "{what}: unselected media_attachments row {id} changed"
        );
    }
    for k in now.keys() {
        let owned = selected.values().any(|ks| ks.contains(k));
        assert!(
            owned || protected.contains_key(k),
            "{what}: an unknown file appeared below the root: {k}"
        );
    }
    tally
}

fn prune_cmd(env: &Path, extra: &[&str]) -> Command {
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
    completed: usize,
    foreign_checked: usize,
    empty_folders_left: usize,
}

impl Figures {
    fn print(&self, scenario: &str, seeds: &[u64]) {
        eprintln!(
            "chaos {scenario}: seeds {:?}..{:?}: {} kills ({} runs finished before their kill moment), {} re-runs, \
             {} rows/files completed, 0 rows lost, 0 foreign keys deleted ({} foreign-file checks), \
             nothing outside the root touched, {} emptied folders left behind by kills",
            seeds.first(),
            seeds.last(),
            self.kills,
            self.finished_first,
            self.reruns,
            self.completed,
            self.foreign_checked,
            self.empty_folders_left,
        );
    }
}

/// The state of a prune scenario across its iterations (one database, one root).
struct PruneScene {
    db: TestDb,
    site: Site,
    env: PathBuf,
    protected: Files,
    protected_rows: BTreeMap<i64, Option<String>>,
}

impl PruneScene {
    async fn on(mut db: TestDb) -> Self {
        // Seeding commits row by row: without waiting for the WAL flush of each (this
        // session only; the tool's sessions keep the server's settings) the 510-row
        // worlds seed in a second instead of half a minute on a loaded machine.
        db.pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(conn, "SET synchronous_commit = off").await?;
                    Ok(())
                })
            })
            .connect(&db.url)
            .await
            .expect("connect to the test database");
        let site = Site::new();
        let env = fs_env_file(&db, &site.root);
        Self {
            db,
            site,
            env,
            protected: Files::new(),
            protected_rows: BTreeMap::new(),
        }
    }

    async fn world(&mut self, iter: usize, rng: &mut Rng, n: Option<u64>) -> PruneWorld {
        let w = seed_prune_world(&self.db, &self.site, iter as i64, rng, n).await;
        self.protected.extend(w.protected.clone());
        self.protected_rows
            .extend(rows_json(&self.db, "media_attachments", &w.protected_rows).await);
        w
    }

    async fn check(
        &self,
        what: &str,
        outside: &(Files, BTreeSet<String>),
        w: &PruneWorld,
        final_run: bool,
    ) -> Tally {
        check_prune_fs(
            what,
            &self.db,
            &self.site,
            outside,
            &w.selected,
            &self.protected,
            &self.protected_rows,
            final_run,
        )
        .await
    }

    /// A clean re-run (exit 0), then the final check; adds to `fig`.
    async fn rerun_and_check(
        &self,
        what: &str,
        outside: &(Files, BTreeSet<String>),
        w: &PruneWorld,
        fig: &mut Figures,
    ) {
        let (code, out, err) = rerun(|| prune_cmd(&self.env, &[]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        let t = self
            .check(&format!("{what}, after the re-run"), outside, w, true)
            .await;
        fig.completed += t.cleared;
        fig.foreign_checked += t.foreign_checked;
        fig.empty_folders_left = self.site.empty_folders();
    }
}

/// SIGKILL at a seeded moment (after the k-th file removed plus a few ms; k may be 0,
/// a kill before the first unlink) during prune on the filesystem, then the invariants,
/// a clean re-run and the invariants again with everything cleared.
#[tokio::test]
async fn fs_prune_sigkill_at_random_moments_then_rerun() {
    let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
    let mut sc = PruneScene::on(db).await;
    let seeds = seeds(14_000, iterations(KILLS));
    let mut fig = Figures::default();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = sc.world(iter, &mut rng, None).await;
        let outside = sc.site.outside();
        let what = format!("fs prune SIGKILL seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let files = w.selected.len() * 2;
        let after = rng.range(0, files as u64 * 2 / 3) as usize;
        let extra = rng.range(0, 30);
        let rate = ["100", "200", "400"][rng.range(0, 2) as usize];
        let root = sc.site.root.clone();
        match run_and_kill(
            prune_cmd(&sc.env, &["--rate", rate, "--concurrency", "2"]),
            || w.gone(&root),
            after,
            extra,
        ) {
            Ending::Killed(_) => fig.kills += 1,
            Ending::Finished(code) => {
                assert_eq!(code, 0, "{what}: the unkilled run");
                fig.finished_first += 1;
            }
        }
        let t = sc
            .check(&format!("{what}, after the kill"), &outside, &w, false)
            .await;
        fig.foreign_checked += t.foreign_checked;
        sc.rerun_and_check(&what, &outside, &w, &mut fig).await;
    }
    fig.print("fs prune SIGKILL", &seeds);
    sc.db.drop_db().await;
}

/// The tool's database sessions terminated mid-run on the filesystem
/// (`pg_terminate_backend`, as a failover does): the run stops (exit 1 or 3, never a
/// panic), nothing is half done, and the re-run finishes.
#[tokio::test]
async fn fs_prune_database_sessions_terminated_mid_run() {
    let db = TestDb::new(Mastodon::V4_6, "Asia/Kathmandu").await;
    let mut sc = PruneScene::on(db).await;
    let seeds = seeds(14_100, iterations(KILLS).div_ceil(10));
    let mut fig = Figures::default();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = sc.world(iter, &mut rng, Some(510)).await;
        let outside = sc.site.outside();
        let what =
            format!("fs prune pg_terminate seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let child = prune_cmd(&sc.env, &["--concurrency", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // On the filesystem one batch holds up to 1000 keys: the rows are cleared only
        // when the whole batch is unlinked, so the moment is "k files gone", during the
        // first of the world's two batches (510 rows, one batch at a time).
        wait_for_gone(&sc.site.root, &w, rng.range(10, 300) as usize, &what).await;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        let killed: Vec<i32> = sqlx::query_scalar(
            "WITH v AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE application_name = 'mastomedia' \
             AND datname = current_database() AND pid <> pg_backend_pid()) \
             SELECT pid FROM v WHERE pg_terminate_backend(pid)",
        )
        .fetch_all(&sc.db.pool)
        .await
        .unwrap();
        let out = wait_bounded(child, &what, Duration::from_secs(120));
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}: a panic\n{stderr}");
        if !killed.is_empty() {
            fig.kills += 1;
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            eprintln!("chaos {what}: exit {code}: {last}");
            assert!(
                [0, 1, 3].contains(&code),
                "{what}: sessions {killed:?} terminated: exit 1 or 3 (or 0 if it had just finished), got {code}\n{stderr}"
            );
        } else {
            fig.finished_first += 1;
        }
        let t = sc
            .check(&format!("{what}, after the terminate"), &outside, &w, false)
            .await;
        fig.foreign_checked += t.foreign_checked;
        sc.rerun_and_check(&what, &outside, &w, &mut fig).await;
    }
    fig.print("fs prune pg_terminate_backend", &seeds);
    sc.db.drop_db().await;
}

/// Polls until `k` of `w`'s files are gone (unlinking is under way).
async fn wait_for_gone(root: &Path, w: &PruneWorld, k: usize, what: &str) {
    let started = Instant::now();
    while w.gone(root) < k {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: fewer than {k} files unlinked in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIGTERM in the middle of a prune on the filesystem: exit 130, the work in flight is
/// finished (the report's cleared rows are the database's, and no row still naming its
/// file has lost one: no batch was cut between its unlinks and its row update), no new
/// batch is taken, the re-run completes. A filesystem batch holds up to 1000 keys, so the
/// world has 510 rows (1020 files: two batches, one at a time) and the signal comes
/// during the first. No `--rate`: its per-operation jitter (up to 50 ms, `Limiter` in
/// `src/store/limited.rs`) would make a 1000-file batch last a minute.
#[tokio::test]
async fn fs_prune_sigterm_exits_130_and_finishes_in_flight_work() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let mut sc = PruneScene::on(db).await;
    let seeds = seeds(14_300, iterations(KILLS).div_ceil(15));
    let mut fig = Figures::default();
    let mut late = 0;
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = sc.world(iter, &mut rng, Some(510)).await;
        let outside = sc.site.outside();
        let what = format!("fs prune SIGTERM seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let child = prune_cmd(&sc.env, &["--concurrency", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let after = rng.range(5, 150) as usize;
        let started = Instant::now();
        while w.gone(&sc.site.root) < after {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: no unlink within 60 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let gone_at_signal = w.gone(&sc.site.root);
        let out = wait_bounded(child, &what, Duration::from_secs(60));
        fig.kills += 1;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(130),
            "{what}: SIGTERM: exit 130\n{stdout}\n{stderr}"
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["interrupted"], true, "{what}: {report:#}");
        let t = sc
            .check(&format!("{what}, after SIGTERM"), &outside, &w, false)
            .await;
        fig.foreign_checked += t.foreign_checked;
        assert_eq!(
            report["passes"][0]["rows_cleared"], t.cleared,
            "{what}: the report matches the database"
        );
        let now = sc.site.files();
        let names: BTreeMap<i64, Option<String>> =
            sqlx::query_as("SELECT id, file_file_name FROM media_attachments WHERE id = ANY($1)")
                .bind(w.selected.keys().copied().collect::<Vec<_>>())
                .fetch_all(&sc.db.pool)
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
        // Counted right after `kill` returned: fewer than the first batch's 1000 files
        // gone means the signal came while it was in flight, so the second batch must
        // not have been taken. (Later than that, on a loaded machine, the run may have
        // finished; then there is nothing to check here.)
        if gone_at_signal < 1000 {
            assert!(
                t.pending > 0,
                "{what}: every row cleared though only {gone_at_signal} of {} files were gone \
                 right after the signal (a batch holds at most 1000): new work was taken",
                w.selected.len() * 2
            );
        } else {
            late += 1;
        }
        sc.rerun_and_check(&what, &outside, &w, &mut fig).await;
    }
    fig.print("fs prune SIGTERM", &seeds);
    eprintln!("chaos fs prune SIGTERM: {late} signals came after the first batch");
    sc.db.drop_db().await;
}

// ------------------------------------------------------------------------ orphans

/// Seeds the rows once per database (ids from `base`) and returns their keys: 12 media
/// rows (two thirds remote) and a local emoji.
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

/// One orphans world below a fresh root: the referenced files, `rng`-chosen orphans of
/// rows that do not exist (ids between the seeded ones), unrecognised files; the orphans
/// are mirrored outside the root.
fn orphan_site(referenced: &[String], base: i64, rng: &mut Rng) -> (Site, BTreeSet<String>, Files) {
    let site = Site::new();
    let mut keep: Files = referenced
        .iter()
        .map(|k| (k.clone(), format!("referenced {k}").into_bytes()))
        .collect();
    let mut orphans = BTreeSet::new();
    for j in 0..rng.range(6, 30) as i64 {
        let id = base + 1 + (j % 11) * 7 + (j / 11) % 6;
        let name = format!("{:016x}.png", rng.next());
        for k in media_keys(id, &name, true) {
            put(&site.root, &k, b"orphan");
            orphans.insert(k);
        }
    }
    for k in [
        format!("unrelated/{:x}.txt", rng.next()),
        "media_attachments/files/not/a/partition.png".to_owned(),
        format!("backups/{:x}/archive.zip", rng.next()),
    ] {
        keep.insert(k.clone(), format!("foreign {k}").into_bytes());
    }
    for (k, v) in &keep {
        put(&site.root, k, v);
    }
    site.mirror(&orphans);
    (site, orphans, keep)
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

/// SIGKILL at a seeded moment during orphans --delete on the filesystem, then the
/// invariants (kept files byte for byte, every removed file an orphan, nothing outside
/// the root touched, the database unchanged), a re-run with the same journal and the
/// final check with every orphan gone.
#[tokio::test]
async fn fs_orphans_delete_sigkill_at_random_moments_then_rerun() {
    let db = TestDb::new(Mastodon::V4_6, "America/Adak").await;
    let referenced = seed_orphan_rows(&db, BASE_ID, &mut Rng::new(44_000)).await;
    let rows_before = db.dump("media_attachments").await;
    let seeds = seeds(44_000, iterations(KILLS));
    let mut fig = Figures::default();
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let (site, orphans, keep) = orphan_site(&referenced, BASE_ID, &mut rng);
        let outside = site.outside();
        let env = fs_env_file(&db, &site.root);
        let journal = temp_dir("chaos-fs-orphans").join("journal.sqlite");
        let what = format!("fs orphans SIGKILL seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})");
        let after = rng.range(0, orphans.len() as u64 * 2 / 3) as usize;
        let extra = rng.range(0, 30);
        let rate = ["100", "200", "400"][rng.range(0, 2) as usize];
        let root = site.root.clone();
        let gone = || orphans.iter().filter(|k| !root.join(k).exists()).count();
        match run_and_kill(
            orphans_cmd(&env, &journal, &["--rate", rate]),
            gone,
            after,
            extra,
        ) {
            Ending::Killed(_) => fig.kills += 1,
            Ending::Finished(code) => {
                assert_eq!(code, 0, "{what}: the unkilled run");
                fig.finished_first += 1;
            }
        }
        let check = |stage: &str, complete: bool| {
            let what = format!("{what}, {stage}");
            site.assert_outside(&what, &outside);
            let now = site.files();
            let n = assert_survive(&what, &keep, &now);
            for k in now.keys() {
                assert!(
                    keep.contains_key(k) || orphans.contains(k),
                    "{what}: unknown file {k}"
                );
            }
            if complete {
                let left: Vec<&String> = orphans.iter().filter(|k| now.contains_key(*k)).collect();
                assert!(
                    left.is_empty(),
                    "{what}: orphans left after the re-run: {left:?}"
                );
            }
            n
        };
        fig.foreign_checked += check("after the kill", false);
        let (code, out, err) = rerun(|| orphans_cmd(&env, &journal, &[]));
        fig.reruns += 1;
        assert_eq!(code, 0, "{what}: re-run\n{out}\n{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        if report["complete"] != true {
            // The journal resumed after the killed run's position: one more pass
            // starts over and sees the rest.
            let (code, out, err) = rerun(|| orphans_cmd(&env, &journal, &[]));
            assert_eq!(code, 0, "{what}: second re-run\n{out}\n{err}");
        }
        fig.foreign_checked += check("after the re-run", true);
        fig.completed += orphans.len();
        fig.empty_folders_left += site.empty_folders();
        assert_eq!(
            db.dump("media_attachments").await,
            rows_before,
            "{what}: orphans never writes the database"
        );
    }
    fig.print("fs orphans --delete SIGKILL", &seeds);
    db.drop_db().await;
}

// ------------------------------------------------------------------------ Postgres restarted

/// "Postgres restarted" (issue 12): a cluster of the test's own (`support::pgcluster`,
/// never the shared one), restarted with `pg_ctl restart -m fast` (and, the second seed,
/// `-m immediate`: crash recovery) once prune has begun clearing rows, plus a seeded
/// delay. The run stops with a clear error (exit 1 or 3) or finishes (exit 0); never a
/// panic or a hang; the invariants hold; a re-run after the restart completes.
#[tokio::test]
async fn fs_prune_postgres_restarted_mid_run() {
    let cluster = crate::support::pgcluster::PgCluster::start();
    let db = TestDb::new_at(&cluster.admin_url(), Mastodon::V4_6, "Europe/Lisbon").await;
    let mut sc = PruneScene::on(db).await;
    let seeds = seeds(14_500, iterations(KILLS).div_ceil(10));
    let mut fig = Figures::default();
    let mut endings = Vec::new();
    for (iter, &seed) in seeds.iter().enumerate() {
        let mut rng = Rng::new(seed);
        let w = sc.world(iter, &mut rng, Some(510)).await;
        // The world was seeded with synchronous_commit off: make it durable before the
        // crash of `-m immediate`, or the restart loses seeded rows (not the tool's doing).
        sqlx::query("CHECKPOINT")
            .execute(&sc.db.pool)
            .await
            .expect("checkpoint the seeded world");
        let outside = sc.site.outside();
        let mode = if iter % 3 == 1 { "immediate" } else { "fast" };
        let what = format!(
            "fs prune Postgres restart -m {mode} seed {seed} (replay: MASTOMEDIA_CHAOS_SEED={seed})"
        );
        let child = prune_cmd(&sc.env, &["--concurrency", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_gone(&sc.site.root, &w, rng.range(10, 300) as usize, &what).await;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        let running = child.id();
        cluster.pg_ctl(&["restart", "-m", mode]);
        let out = wait_bounded(child, &what, Duration::from_secs(120));
        fig.kills += 1;
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}: a panic\n{stderr}");
        assert!(
            [0, 1, 3].contains(&code),
            "{what}: exit 0, 1 or 3 (pid {running}), got {:?}\n{stderr}\nserver log:\n{}",
            out.status,
            cluster.log()
        );
        if code != 0 {
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
            endings.push(format!("-m {mode}: exit {code}: {last}"));
        } else {
            endings.push(format!("-m {mode}: exit 0 (finished)"));
        }
        let t = sc
            .check(&format!("{what}, after the restart"), &outside, &w, false)
            .await;
        fig.foreign_checked += t.foreign_checked;
        sc.rerun_and_check(&what, &outside, &w, &mut fig).await;
    }
    fig.print("fs prune Postgres restarted", &seeds);
    for e in &endings {
        eprintln!("chaos fs prune Postgres restarted: {e}");
    }
    sc.db.drop_db().await;
    drop(cluster);
}
