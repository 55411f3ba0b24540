//! Run records: one per run of `prune`, `migrate` or `orphans`, with its shard, its
//! outcome and its progress (rows, objects, bytes, failures, last update), so that
//! `mastomedia status` shows every shard of the last runs, from one journal or several.
//!
//! Progress is counted in a [`RunTally`] (atomics, shared with the pipelines' commit
//! stages) and written by a [`RunRecorder`] at most every [`PROGRESS_EVERY`] into a
//! PostgreSQL journal (the shared one `status` watches), never per object; the final
//! counts come from the run's own report ([`RunRecorder::finish`]), in both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AnyJournal, Journal, JournalError, RunId};
use crate::model::Shard;

/// How often a running job writes its progress into its run record (at most).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a run did so far. Per job: `prune` rows cleared, objects deleted, bytes freed,
/// rows failed; `migrate` files uploaded (objects), bytes uploaded, files failed (no rows);
/// `orphans` objects scanned, bytes of the objects scanned, deletes failed (no rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Database rows handled (prune: cleared).
    pub rows: u64,
    /// Objects handled (prune: deleted; migrate: uploaded; orphans: scanned).
    pub objects: u64,
    /// Bytes (prune: freed; migrate: uploaded; orphans: scanned).
    pub bytes: u64,
    /// Items that failed (prune: rows; migrate: files; orphans: deletes).
    pub failures: u64,
}

/// Counts shared between a run's commit stages and its [`RunRecorder`]: cheap to clone
/// (one `Arc`), updated with relaxed atomics once per committed batch.
#[derive(Debug, Clone, Default)]
pub struct RunTally(Arc<[AtomicU64; 4]>);

impl RunTally {
    /// Adds one batch's counts.
    pub fn add(&self, c: RunCounts) {
        for (slot, n) in self.0.iter().zip([c.rows, c.objects, c.bytes, c.failures]) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The counts so far.
    pub fn get(&self) -> RunCounts {
        let [rows, objects, bytes, failures] =
            [0, 1, 2, 3].map(|i| self.0[i].load(Ordering::Relaxed));
        RunCounts {
            rows,
            objects,
            bytes,
            failures,
        }
    }
}

/// The state a run record shows. A record whose process died (SIGKILL, power loss) stays
/// [`RunState::Running`]; `status` calls it stale when its last update is old.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// No outcome recorded yet: running, or died without a word.
    Running,
    /// Ended normally (`success`, or `items_failed`: see the failures).
    Finished,
    /// Stopped by a fatal or usage error (exit 3 or 2).
    Failed,
    /// Stopped by Ctrl-C / SIGTERM after finishing the work in flight (exit 130).
    Interrupted,
}

impl RunState {
    /// The state of a recorded `outcome` (`None`: no outcome yet).
    pub fn of(outcome: Option<&str>) -> Self {
        match outcome {
            None => RunState::Running,
            Some("success" | "items_failed") => RunState::Finished,
            Some("interrupted") => RunState::Interrupted,
            Some(_) => RunState::Failed,
        }
    }

    /// The name shown: `running`, `finished`, `failed`, `interrupted`.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Interrupted => "interrupted",
        }
    }
}

/// One run as a journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The job: `prune`, `migrate`, `orphans`.
    pub job: String,
    /// The target as journalled (`JobKey::journal_target`: with a `#shard=K/N` suffix for
    /// a shard); shown through [`RunRecord::shown_target`].
    pub target: String,
    /// The shard, `None` for an unsharded run.
    pub shard: Option<Shard>,
    /// The outcome (`success`, `items_failed`, `usage`, `fatal`, `interrupted`), `None`
    /// while running.
    pub outcome: Option<String>,
    /// When it started (UTC).
    pub started_at: DateTime<Utc>,
    /// Its last progress write, or its end (UTC).
    pub updated_at: DateTime<Utc>,
    /// When it ended (UTC), `None` while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its counts at the last write.
    pub counts: RunCounts,
}

impl RunRecord {
    /// The state its outcome means.
    pub fn state(&self) -> RunState {
        RunState::of(self.outcome.as_deref())
    }

    /// The target for display: without the `#shard=K/N` suffix of a shard's journal key
    /// (the shard has its own column). Targets never hold credentials: they are built
    /// from `S3_BUCKET` and `S3_ENDPOINT`, and configuration refuses an endpoint with a
    /// `user:password@` part.
    pub fn shown_target(&self) -> String {
        let t = match self.shard {
            Some(_) => self
                .target
                .rfind("#shard=")
                .map_or(self.target.as_str(), |i| &self.target[..i]),
            None => self.target.as_str(),
        };
        t.to_owned()
    }
}

/// Which records [`Journal::runs`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only this job (`prune`, `migrate`, `orphans`).
    pub job: Option<String>,
    /// At most this many runs per (job, target, shard), newest first; `None`: all.
    pub per_target: Option<u64>,
}

/// A run's record while it runs: started by [`RunRecorder::start`], progress (and with it
/// the last update, the run's heartbeat) written in the background every
/// [`PROGRESS_EVERY`] whether or not the tally moved, ended by
/// [`RunRecorder::finish`]. A failed progress write is a warning only: the work itself is
/// journalled elsewhere.
#[derive(Debug)]
pub struct RunRecorder {
    journal: AnyJournal,
    id: RunId,
    tally: RunTally,
    ticker: tokio::task::JoinHandle<()>,
}

impl RunRecorder {
    /// Records the start of `key`'s run in `journal` (committed before it returns) and,
    /// for a PostgreSQL journal, starts writing `tally`'s progress every
    /// [`PROGRESS_EVERY`]. A SQLite journal gets the counts at the end only: its writes
    /// from a second task raced the batch writes of migrate when the disk filled (the
    /// chaos test `journal_full_or_read_only` then found the run record gone), and one
    /// host needs no shared progress. Errors: the first write.
    pub async fn start(
        journal: &AnyJournal,
        key: &crate::model::JobKey,
        tally: RunTally,
    ) -> Result<Self, JournalError> {
        let every = matches!(journal, AnyJournal::Postgres(_)).then_some(PROGRESS_EVERY);
        Self::start_every(journal, key, tally, every).await
    }

    /// [`RunRecorder::start`] writing progress every `every` (`None`: never).
    async fn start_every(
        journal: &AnyJournal,
        key: &crate::model::JobKey,
        tally: RunTally,
        every: Option<Duration>,
    ) -> Result<Self, JournalError> {
        let id = journal.run_started(key).await?;
        let (j, t) = (journal.clone(), tally.clone());
        let ticker = tokio::spawn(async move {
            let Some(every) = every else {
                return;
            };
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                // Every tick, moved or not: the last update is the run's heartbeat, which
                // `status` judges staleness by, and a live run may count nothing for
                // longer than `--stale-after` (prune's candidate count over a table of
                // hundreds of millions of rows, a long stretch of a shard's listing).
                if let Err(e) = j.run_progress(id, t.get()).await {
                    tracing::warn!("{e}");
                }
            }
        });
        Ok(Self {
            journal: journal.clone(),
            id,
            tally,
            ticker,
        })
    }

    /// The record's id.
    pub fn id(&self) -> RunId {
        self.id
    }

    /// The tally the progress writes read.
    pub fn tally(&self) -> &RunTally {
        &self.tally
    }

    /// Stops the progress writes and records the end: `outcome` (see
    /// [`Journal::run_finished`]) with `counts`, the report's own numbers. A failure is
    /// logged as a warning.
    pub async fn finish(self, outcome: &str, counts: RunCounts) {
        self.ticker.abort();
        if let Err(e) = self.journal.run_finished(self.id, outcome, counts).await {
            tracing::warn!("{e}");
        }
    }
}

impl Drop for RunRecorder {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// Parses a journal time: RFC 3339 (SQLite's text), else SQLite's `datetime('now')` form
/// (`YYYY-MM-DD HH:MM:SS`, UTC); `None` when neither.
pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// The shard of stored columns (`None` unless both are set and valid).
pub(super) fn shard_of(index: Option<i64>, count: Option<i64>) -> Option<Shard> {
    match (index, count) {
        (Some(i), Some(n)) => Shard::new(u32::try_from(i).ok()?, u32::try_from(n).ok()?).ok(),
        _ => None,
    }
}

/// A count as stored (`BIGINT` / `INTEGER`): saturated at `i64::MAX`.
pub(super) fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_states() {
        let cases = [
            (None, RunState::Running),
            (Some("success"), RunState::Finished),
            (Some("items_failed"), RunState::Finished),
            (Some("fatal"), RunState::Failed),
            (Some("usage"), RunState::Failed),
            (Some("interrupted"), RunState::Interrupted),
        ];
        for (outcome, state) in cases {
            assert_eq!(RunState::of(outcome), state, "{outcome:?}");
        }
    }

    #[test]
    fn tallies_add_batches() {
        let t = RunTally::default();
        let c = t.clone();
        c.add(RunCounts {
            rows: 1,
            objects: 2,
            bytes: 3,
            failures: 0,
        });
        t.add(RunCounts {
            rows: 1,
            objects: 0,
            bytes: 7,
            failures: 1,
        });
        assert_eq!(
            t.get(),
            RunCounts {
                rows: 2,
                objects: 2,
                bytes: 10,
                failures: 1
            }
        );
    }

    #[test]
    fn journal_times_parse_in_both_forms() {
        let a = parse_time("2026-05-01T10:00:00.123Z").unwrap();
        let b = parse_time("2026-05-01 10:00:00").unwrap();
        assert_eq!((a - b).num_milliseconds(), 123);
        assert_eq!(parse_time("yesterday"), None);
    }

    /// The recorder writes the tally while the run goes on (here every 10 ms instead of
    /// 5 s), then the final counts given to `finish`, and no progress after that.
    #[tokio::test]
    async fn the_recorder_writes_progress_then_the_final_counts() {
        use crate::journal::SqliteJournal;
        use crate::model::JobKey;
        let dir = std::env::temp_dir().join(format!("mm-recorder-{}", std::process::id()));
        let j = AnyJournal::Sqlite(SqliteJournal::open(&dir.join("j.sqlite")).await.unwrap());
        let tally = RunTally::default();
        let key = JobKey::new("prune", "s3://m@h");
        let r = RunRecorder::start_every(&j, &key, tally.clone(), Some(Duration::from_millis(10)))
            .await
            .unwrap();
        let batch = RunCounts {
            rows: 2,
            objects: 4,
            bytes: 100,
            failures: 1,
        };
        tally.add(batch);
        let runs = || async { j.runs(&RunQuery::default()).await.unwrap() };
        let mut seen = None;
        for _ in 0..500 {
            let now = runs().await;
            if now[0].counts == batch {
                seen = Some(now[0].clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = seen.expect("the progress was written");
        assert_eq!(seen.state(), RunState::Running);
        assert!(seen.updated_at >= seen.started_at);
        let last = RunCounts { rows: 3, ..batch };
        r.finish("items_failed", last).await;
        tally.add(batch);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let done = runs().await;
        assert_eq!(
            (done[0].state(), done[0].counts),
            (RunState::Finished, last)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A live run that counts nothing for a while (prune's candidate count, a stretch of
    /// listing another shard's keys) still moves its last update, so `status` does not
    /// call it stale and tell the operator its process died.
    #[tokio::test]
    async fn the_last_update_moves_while_the_tally_stands_still() {
        use crate::journal::SqliteJournal;
        use crate::model::JobKey;
        let dir = std::env::temp_dir().join(format!("mm-heartbeat-{}", std::process::id()));
        let j = AnyJournal::Sqlite(SqliteJournal::open(&dir.join("j.sqlite")).await.unwrap());
        let key = JobKey::new("prune", "s3://m@h");
        let r = RunRecorder::start_every(
            &j,
            &key,
            RunTally::default(),
            Some(Duration::from_millis(10)),
        )
        .await
        .unwrap();
        let first = j.runs(&RunQuery::default()).await.unwrap()[0].clone();
        let mut moved = None;
        for _ in 0..500 {
            let now = j.runs(&RunQuery::default()).await.unwrap()[0].clone();
            if now.updated_at > first.updated_at {
                moved = Some(now);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let moved = moved.expect("the last update moved although nothing was counted");
        assert_eq!(
            (moved.state(), moved.counts),
            (RunState::Running, RunCounts::default())
        );
        r.finish("success", RunCounts::default()).await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
