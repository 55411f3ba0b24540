//! The safety invariants of issue 12, checked against PostgreSQL and the bucket after
//! every chaos scenario (`tests/it/chaos.rs`), plus the seeded randomness those scenarios
//! draw from.
//!
//! * a row cleared by prune has none of its objects left (no row "lost": Mastodon would
//!   otherwise point at nothing while the object lingers, or a row would name an object
//!   that is gone without being cleared by a completed run);
//! * every object no selected row owns (local media, emoji, new media, unrelated keys,
//!   neighbours in the same folder) survives byte for byte: same key, same size, same
//!   ETag (moto's ETag of a single-part PUT is the MD5 of the body, RFC 1864);
//! * after a final clean re-run every selected row is cleared and its objects are gone;
//! * rows prune does not select are untouched, every column.
//!
//! Every assertion message names the seed, and `MASTOMEDIA_CHAOS_SEED=N` replays one
//! (see `docs/reliability.md`).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestBucket, TestDb};

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed generator, so a seed gives the
/// same world, faults and kill moment on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x6d61_7374_6f6d_6564)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `p` (0..1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// The seeds a scenario runs: `MASTOMEDIA_CHAOS_SEED=N` gives just `[N]` (a replay);
/// otherwise `iterations` seeds from `base` (`MASTOMEDIA_CHAOS_ITERATIONS` overrides the
/// default count of the kill scenarios, see [`iterations`]).
pub fn seeds(base: u64, iterations: usize) -> Vec<u64> {
    if let Some(seed) = std::env::var("MASTOMEDIA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return vec![seed];
    }
    (0..iterations as u64).map(|i| base + i).collect()
}

/// `MASTOMEDIA_CHAOS_ITERATIONS`, else `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("MASTOMEDIA_CHAOS_ITERATIONS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// Key → (size, ETag) of every object in the bucket, read straight from moto.
pub type Snapshot = BTreeMap<String, (i64, String)>;

/// Lists the whole bucket (straight to moto, no faults).
pub async fn snapshot(bucket: &TestBucket) -> Snapshot {
    let mut out = Snapshot::new();
    let mut token = None;
    loop {
        let page = bucket
            .client
            .list_objects_v2()
            .bucket(&bucket.name)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list the bucket");
        for o in page.contents() {
            out.insert(
                o.key().unwrap_or_default().to_owned(),
                (
                    o.size().unwrap_or(-1),
                    o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                ),
            );
        }
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return out,
        }
    }
}

/// Every key of `protected` is still in `now` with the same size and ETag; returns how
/// many were checked. `what` names the scenario and stage for the message.
pub fn assert_survive(what: &str, protected: &Snapshot, now: &Snapshot) -> usize {
    for (k, v) in protected {
        match now.get(k) {
            None => panic!("{what}: foreign key deleted: {k}"),
            Some(n) => assert_eq!(n, v, "{what}: foreign key changed: {k}"),
        }
    }
    protected.len()
}

/// `row_to_json` of each of `ids` in `table` (absent rows are `None`).
pub async fn rows_json(db: &TestDb, table: &str, ids: &[i64]) -> BTreeMap<i64, Option<String>> {
    let mut out = BTreeMap::new();
    for id in ids {
        let j: Option<String> = sqlx::query_scalar(&format!(
            "SELECT row_to_json(t)::text FROM {table} t WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .expect("read row");
        out.insert(*id, j);
    }
    out
}

/// The media rows prune may clear, with the keys each owns.
pub type Selected = BTreeMap<i64, Vec<String>>;

/// What one check found, for the figures of `docs/reliability.md`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Rows found cleared.
    pub cleared: usize,
    /// Rows found still naming their file.
    pub pending: usize,
    /// Foreign objects checked byte for byte.
    pub foreign_checked: usize,
}

/// The prune invariants at any moment (after a kill, a fault, an interrupt): a cleared
/// selected row has none of its keys left; every protected object and row is untouched;
/// nothing outside `selected` ∪ `protected` appeared. When `final_run`, every selected
/// row must also be cleared and all its keys gone.
pub async fn check_prune(
    what: &str,
    db: &TestDb,
    bucket: &TestBucket,
    selected: &Selected,
    protected: &Snapshot,
    protected_rows: &BTreeMap<i64, Option<String>>,
    final_run: bool,
) -> Tally {
    let now = snapshot(bucket).await;
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
            "{what}: an unknown key appeared in the bucket: {k}"
        );
    }
    tally
}

/// The command line of one binary run, with the clean environment of
/// `support::mastomedia` (PATH, HOME, a long status interval) plus `env`.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mastomedia"));
    cmd.args(args).env_clear();
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.env("MASTOMEDIA_STATUS_INTERVAL", "3600");
    cmd.env("XDG_STATE_HOME", super::state_home());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// How a watched run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGKILLed after the proxy saw this many requests of the bucket.
    Killed(u64),
    /// It finished before the kill moment came, with this exit code.
    Finished(i32),
}

/// Spawns `cmd` (stdout and stderr discarded) and SIGKILLs it once the proxy has seen
/// `after_requests` requests for `bucket` plus `extra_ms` milliseconds, or lets it finish
/// if it ends first. The caller resets the bucket's stats before.
pub fn run_and_kill(
    cmd: Command,
    bucket: &TestBucket,
    after_requests: u64,
    extra_ms: u64,
) -> Ending {
    run_and_kill_when(
        cmd,
        || bucket.stats()["total"].as_u64().unwrap_or(0),
        after_requests,
        extra_ms,
        Duration::from_millis(10),
    )
}

/// The kill-loop driver of every SIGKILL scenario (`tests/it/chaos.rs`,
/// `tests/it/chaos_fs.rs`, `tests/it/chaos_more.rs`): spawns `cmd` (stdout and stderr
/// discarded), polls `progress()` every `poll` (requests the proxy saw, files gone, rows
/// cleared: whatever the scenario counts) and SIGKILLs the run once it reaches `after`,
/// plus `extra_ms` milliseconds; a run that ends first is [`Ending::Finished`]. Fails
/// the test when the run neither ends nor gets there in 120 s.
pub fn run_and_kill_when(
    mut cmd: Command,
    mut progress: impl FnMut() -> u64,
    after: u64,
    extra_ms: u64,
    poll: Duration,
) -> Ending {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mastomedia");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the run") {
            return Ending::Finished(status.code().unwrap_or(-1));
        }
        let seen = progress();
        if seen >= after {
            std::thread::sleep(Duration::from_millis(extra_ms));
            let _ = child.kill();
            let status = child.wait().expect("wait for the killed run");
            if status.code().is_some() {
                // it exited on its own in the meantime
                return Ending::Finished(status.code().unwrap_or(-1));
            }
            return Ending::Killed(seen);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run neither finished nor reached {after} in 120 s"
        );
        std::thread::sleep(poll);
    }
}

/// Runs `cmd` to its end; a run that meets the advisory lock of a killed run whose
/// session PostgreSQL has not yet noticed gone (exit 3, "another mastomedia … is
/// running") is retried a few times, 200 ms apart. Returns (exit code, stdout, stderr).
pub fn rerun(mut make: impl FnMut() -> Command) -> (i32, String, String) {
    for _ in 0..50 {
        let out = make().output().expect("run mastomedia");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        if code == 3 && stderr.contains("is running") {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        return (
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        );
    }
    panic!("the advisory lock of a killed run was never released");
}
