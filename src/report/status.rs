//! `mastomedia status`: the run records of one or more journals as a table (stdout) or
//! `--json`: newest run of each (job, target, shard) first, then the older ones asked for
//! (`--limit`, `--all`). A record still "running" whose last update is older than
//! `--stale-after` is shown as `stale`: its process most likely died (SIGKILL, reboot),
//! and re-running the job resumes it.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use humansize::{BINARY, format_size};
use serde::Serialize;

use super::Summary;
use crate::journal::{RunRecord, RunState};

/// The status report. JSON shape:
///
/// ```json
/// {"journals": ["/…/migrate-….sqlite", "postgres://mm@db:5432/j (schema mastomedia)"],
///  "stale_after_seconds": 600, "now": "2026-05-01T10:00:00.000Z",
///  "runs": [{"job": "migrate", "target": "…", "shard": "0/4", "shard_index": 0,
///            "shard_count": 4, "state": "running", "stale": false, "outcome": null,
///            "started_at": "…", "updated_at": "…", "finished_at": null,
///            "seconds_since_update": 3, "rows": 0, "objects": 120, "bytes": 123456,
///            "failures": 0, "journal": "…"}],
///  "note": null}
/// ```
///
/// `state` is `running`, `stale`, `finished`, `failed` or `interrupted`; times are UTC
/// (RFC 3339); `bytes` in bytes. Targets and journals never carry a password.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The journals read (paths, or PostgreSQL locations without password).
    pub journals: Vec<String>,
    /// `--stale-after`.
    pub stale_after_seconds: u64,
    /// When the report was made (UTC).
    pub now: String,
    /// The runs, in display order.
    pub runs: Vec<StatusRun>,
    /// Why there is nothing to show, when so (no journal found).
    pub note: Option<String>,
}

/// One run line.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRun {
    /// `prune`, `migrate`, `orphans`.
    pub job: String,
    /// The storage or bucket, without the shard suffix or credentials.
    pub target: String,
    /// `K/N`, or `None` unsharded.
    pub shard: Option<String>,
    /// K.
    pub shard_index: Option<u32>,
    /// N.
    pub shard_count: Option<u32>,
    /// `running`, `stale`, `finished`, `failed`, `interrupted`.
    pub state: &'static str,
    /// A running record not updated within `--stale-after`.
    pub stale: bool,
    /// The recorded outcome (`success`, `items_failed`, `usage`, `fatal`, `interrupted`).
    pub outcome: Option<String>,
    /// Start (UTC).
    pub started_at: String,
    /// Last update (UTC).
    pub updated_at: String,
    /// End (UTC).
    pub finished_at: Option<String>,
    /// Seconds from the last update to the report.
    pub seconds_since_update: i64,
    /// Rows (prune: cleared).
    pub rows: u64,
    /// Objects (prune: deleted; migrate: uploaded; orphans: scanned).
    pub objects: u64,
    /// Bytes (prune: freed; migrate: uploaded; orphans: scanned).
    pub bytes: u64,
    /// Failed items.
    pub failures: u64,
    /// The journal holding the record.
    pub journal: String,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `2h 3m`, `4m 10s`, `12s`.
fn ago(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

impl StatusReport {
    /// The report of `records` (each with the journal it came from and whether that
    /// journal receives progress while a run goes on: PostgreSQL does, SQLite only at
    /// the end), at `now`: staleness decided against `stale_after_seconds` where progress
    /// is written (elsewhere an old update says nothing), runs ordered newest of each
    /// (job, target, shard) first (by job, target, shard), then the older ones, newest
    /// first.
    pub fn new(
        journals: Vec<String>,
        records: Vec<(String, bool, RunRecord)>,
        stale_after_seconds: u64,
        now: DateTime<Utc>,
    ) -> Self {
        let mut records = records;
        records.sort_by_key(|r| std::cmp::Reverse(r.2.started_at));
        // Runs seen so far per (job, target, shard): the rank of the next one.
        type Group = (String, String, Option<(u32, u32)>);
        let mut seen: HashMap<Group, usize> = HashMap::new();
        let mut ranked: Vec<(usize, StatusRun)> = records
            .into_iter()
            .map(|(journal, live, r)| {
                let shard = r.shard.map(|s| (s.index(), s.count()));
                let target = r.shown_target();
                let n = seen
                    .entry((r.job.clone(), target.clone(), shard))
                    .or_insert(0);
                let rank = *n;
                *n += 1;
                let since = (now - r.updated_at).num_seconds();
                let state = r.state();
                let stale = live
                    && state == RunState::Running
                    && since > i64::try_from(stale_after_seconds).unwrap_or(i64::MAX);
                let run = StatusRun {
                    job: r.job.clone(),
                    target,
                    shard: r.shard.map(|s| s.to_string()),
                    shard_index: r.shard.map(|s| s.index()),
                    shard_count: r.shard.map(|s| s.count()),
                    state: if stale { "stale" } else { state.name() },
                    stale,
                    outcome: r.outcome.clone(),
                    started_at: time(r.started_at),
                    updated_at: time(r.updated_at),
                    finished_at: r.finished_at.map(time),
                    seconds_since_update: since,
                    rows: r.counts.rows,
                    objects: r.counts.objects,
                    bytes: r.counts.bytes,
                    failures: r.counts.failures,
                    journal,
                };
                (rank, run)
            })
            .collect();
        // Stable: within one rank and group key, newest first stays.
        ranked.sort_by(|(ra, a), (rb, b)| {
            ra.cmp(rb)
                .then_with(|| a.job.cmp(&b.job))
                .then_with(|| a.target.cmp(&b.target))
                .then_with(|| a.shard_count.cmp(&b.shard_count))
                .then_with(|| a.shard_index.cmp(&b.shard_index))
        });
        Self {
            journals,
            stale_after_seconds,
            now: time(now),
            runs: ranked.into_iter().map(|(_, r)| r).collect(),
            note: None,
        }
    }
}

impl Summary for StatusReport {
    fn human(&self) -> String {
        let mut s = String::new();
        if let Some(note) = &self.note {
            let _ = writeln!(s, "{note}");
            return s;
        }
        if self.runs.is_empty() {
            let _ = writeln!(s, "no runs recorded in {}", self.journals.join(", "));
            return s;
        }
        let header = [
            "JOB",
            "TARGET",
            "SHARD",
            "STATE",
            "STARTED (UTC)",
            "LAST UPDATE (UTC)",
            "ROWS",
            "OBJECTS",
            "BYTES",
            "FAILURES",
        ];
        let short = |t: &str| t.get(..19).unwrap_or(t).replace('T', " ");
        let rows: Vec<[String; 10]> = self
            .runs
            .iter()
            .map(|r| {
                [
                    r.job.clone(),
                    r.target.clone(),
                    r.shard.clone().unwrap_or_else(|| "-".into()),
                    r.state.to_owned(),
                    short(&r.started_at),
                    format!(
                        "{} ({} ago)",
                        short(&r.updated_at),
                        ago(r.seconds_since_update)
                    ),
                    r.rows.to_string(),
                    r.objects.to_string(),
                    format_size(r.bytes, BINARY),
                    r.failures.to_string(),
                ]
            })
            .collect();
        let mut width = header.map(str::len);
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
                // Numbers right-aligned, text left-aligned.
                if i >= 6 {
                    let _ = write!(l, "{cell:>w$}  ");
                } else {
                    let _ = write!(l, "{cell:<w$}  ");
                }
            }
            l.trim_end().to_owned()
        };
        let _ = writeln!(s, "{}", line(&header.map(str::to_owned)));
        for row in &rows {
            let _ = writeln!(s, "{}", line(row));
        }
        for r in self.runs.iter().filter(|r| r.stale) {
            let shard = r
                .shard
                .as_deref()
                .map(|k| format!(" shard {k}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "stale: {}{shard} of {} has not updated its record for {} (over {}s): its process most likely died; run it again to resume",
                r.job,
                r.target,
                ago(r.seconds_since_update),
                self.stale_after_seconds
            );
        }
        let _ = writeln!(s, "journal: {}", self.journals.join(", "));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::RunCounts;
    use crate::model::Shard;

    fn rec(
        job: &str,
        shard: Option<(u32, u32)>,
        started: i64,
        updated: i64,
        outcome: Option<&str>,
    ) -> RunRecord {
        let t = |m: i64| DateTime::from_timestamp(1_800_000_000 + m * 60, 0).unwrap();
        RunRecord {
            job: job.into(),
            target: match shard {
                Some((k, n)) => format!("s3://media@host#shard={k}/{n}"),
                None => "s3://media@host".into(),
            },
            shard: shard.map(|(index, count)| Shard::new(index, count).unwrap()),
            outcome: outcome.map(str::to_owned),
            started_at: t(started),
            updated_at: t(updated),
            finished_at: outcome.map(|_| t(updated)),
            counts: RunCounts {
                rows: 1,
                objects: 2,
                bytes: 3 * 1024 * 1024,
                failures: 0,
            },
        }
    }

    #[test]
    fn newest_per_shard_first_and_old_running_records_are_stale() {
        let now = DateTime::from_timestamp(1_800_000_000 + 100 * 60, 0).unwrap();
        let j = |r| ("j".to_owned(), true, r);
        let records = vec![
            j(rec("migrate", Some((1, 2)), 10, 20, Some("success"))),
            j(rec("migrate", Some((0, 2)), 50, 60, None)),
            j(rec("migrate", Some((1, 2)), 90, 99, None)),
            j(rec("prune", None, 80, 85, Some("fatal"))),
            // A SQLite journal's record is never called stale: it has no progress.
            ("f".to_owned(), false, rec("orphans", None, 1, 1, None)),
        ];
        let r = StatusReport::new(vec!["j".into()], records, 600, now);
        let got: Vec<(&str, Option<&str>, &str)> = r
            .runs
            .iter()
            .map(|r| (r.job.as_str(), r.shard.as_deref(), r.state))
            .collect();
        assert_eq!(
            got,
            vec![
                ("migrate", Some("0/2"), "stale"),
                ("migrate", Some("1/2"), "running"),
                ("orphans", None, "running"),
                ("prune", None, "failed"),
                ("migrate", Some("1/2"), "finished"),
            ]
        );
        assert_eq!(r.runs[0].target, "s3://media@host");
        assert_eq!(r.runs[0].seconds_since_update, 40 * 60);
        let text = r.human();
        assert!(text.contains("3 MiB"), "{text}");
        assert!(
            text.contains("stale: migrate shard 0/2 of s3://media@host"),
            "{text}"
        );
        assert_eq!(text.matches("stale").count(), 2, "{text}");
    }
}
