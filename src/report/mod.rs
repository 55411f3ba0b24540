//! Reporting: progress on stderr (a bar on a terminal, a periodic status line under cron),
//! the final summary (human text or `--json` on stdout), and exit codes.
//!
//! Must not: print progress to stdout, or print secrets.

pub mod budget;
pub mod cert;
pub mod config;
pub mod doctor;
pub mod log;
pub mod metrics;
pub mod migrate;
pub mod orphans;
mod progress;
pub mod reconcile;
pub mod status;
pub mod usage;
pub mod usage_html;

pub use budget::BudgetReport;
pub use progress::{LogWriter, Progress, ProgressMode};

use std::collections::BTreeMap;
use std::fmt::Write as _;

use humansize::{BINARY, format_size};
use serde::Serialize;

use crate::mastodon::RowTable;
use crate::store::RequestStats;

/// Process exit codes, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything selected was handled.
    Success = 0,
    /// Finished, but some items failed (listed in the report).
    ItemsFailed = 1,
    /// Usage or configuration error; nothing was changed.
    Usage = 2,
    /// Fatal: database, credentials or bucket unreachable; the run stopped.
    Fatal = 3,
    /// Interrupted (Ctrl-C / SIGTERM); in-flight work was finished, safe to re-run.
    Interrupted = 130,
}

impl ExitCode {
    /// Rank for [`ExitCode::worst`]: success < items failed < interrupted < usage < fatal.
    fn severity(self) -> u8 {
        match self {
            ExitCode::Success => 0,
            ExitCode::ItemsFailed => 1,
            ExitCode::Interrupted => 2,
            ExitCode::Usage => 3,
            ExitCode::Fatal => 4,
        }
    }

    /// The worst of `codes`, the one a run that met all of them exits with: fatal (3) >
    /// usage (2) > interrupted (130) > items failed (1) > success (0). No codes: success.
    pub fn worst(codes: impl IntoIterator<Item = ExitCode>) -> ExitCode {
        codes
            .into_iter()
            .max_by_key(|c| c.severity())
            .unwrap_or(ExitCode::Success)
    }

    /// The name a run's record in the journal carries for this outcome (`runs.outcome`):
    /// `success`, `items_failed`, `usage`, `fatal` or `interrupted`.
    pub fn outcome(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::ItemsFailed => "items_failed",
            ExitCode::Usage => "usage",
            ExitCode::Fatal => "fatal",
            ExitCode::Interrupted => "interrupted",
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    /// The process status: the enum's value (0, 1, 2, 3 or 130).
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// What a finished run came to, the three facts every summary's exit code is read from
/// (the one ladder of the README's exit codes): fatal > interrupted > failed > success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A fatal error (or a refusal) stopped the run: exit 3.
    pub fatal: bool,
    /// Ctrl-C / SIGTERM stopped intake: exit 130.
    pub interrupted: bool,
    /// Some items (rows, keys, files, checks) failed: exit 1.
    pub failed: bool,
}

impl Outcome {
    /// The exit code: [`ExitCode::worst`] of the codes whose fact is true (0 when none).
    pub fn exit_code(self) -> ExitCode {
        ExitCode::worst(
            [
                (self.fatal, ExitCode::Fatal),
                (self.interrupted, ExitCode::Interrupted),
                (self.failed, ExitCode::ItemsFailed),
            ]
            .into_iter()
            .filter_map(|(fact, code)| fact.then_some(code)),
        )
    }
}

/// The request lines every summary prints:
///
/// ```text
/// requests: <total> (<Op> <n>, ...)            operations the tool made
/// attempts: <total> (<Op> <n>, ...); throttled <t>   HTTP attempts the provider saw
/// hint: the provider throttled <t> requests: lower --rate (e.g. --rate <r>)
/// ```
///
/// The hint appears only when a throttle (503 `SlowDown`, 429) was answered; it suggests
/// half the `--rate` in force, or 50 when none was set. No trailing newline.
pub fn requests_line(stats: &RequestStats) -> String {
    let list = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "requests: {} ({})\nattempts: {} ({}); throttled {}",
        stats.total_requests(),
        list(&stats.requests),
        stats.total_attempts(),
        list(&stats.attempts),
        stats.throttled
    );
    if stats.throttled > 0 {
        let suggest = stats.rate.map_or(50, |r| (r / 2).max(1));
        let _ = write!(
            s,
            "\nhint: the provider throttled {} requests: lower --rate (e.g. --rate {suggest})",
            stats.throttled
        );
    }
    s
}

/// Writes `text` to `path` so that a reader (node_exporter's textfile collector, a web
/// server) sees the old file or the whole new one: a new temporary file in the same
/// folder (`create_new` with a random suffix: never an existing file or a planted
/// symlink in a shared folder; not ending in `.prom` or `.html`), synced, then renamed
/// over `path`. A symlink at `path` is replaced, not followed. Errors: the folder is not
/// writable, or the rename fails (the previous file is left as it was; the temporary
/// file is removed).
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".to_owned());
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `text` to stdout, where every report goes. A closed stdout (`mastomedia orphans
/// --json | head -1`, a pager quit early) is not an error of the run: the rest is dropped
/// quietly instead of panicking as `print!` does. Other write errors are said on stderr.
pub fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        log::line(
            "ERROR",
            &format!("cannot write the report to stdout: {e}"),
            serde_json::Map::new(),
        );
    }
}

/// `println!` through [`out`]: a closed stdout never panics.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::report::out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`out`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::report::out(&format!($($arg)*))
    };
}

/// The summary line of a shard run (`--shard K/N`), or `None` for the whole job: which
/// part this is and `what` it covers, and the request rate this shard used (`--rate` is
/// the total of all shards; each takes rate/N, at least 1).
pub fn shard_line(shard: Option<&str>, what: &str, rate: Option<u32>) -> Option<String> {
    let shard = shard?;
    let n = shard.split_once('/').map_or("N", |(_, n)| n);
    let rate = match rate {
        Some(r) => format!(
            "; rate {r}/s, this shard's part of --rate (the total of {n} shards, split evenly)"
        ),
        None => String::new(),
    };
    Some(format!("shard {shard}: {what} only{rate}"))
}

/// A command's final summary: human text, or JSON with `--json`.
pub trait Summary: Serialize {
    /// The human summary.
    fn human(&self) -> String;

    /// Prints the summary on stdout: pretty JSON when `json`, else the human text. Keeps
    /// its JSON for `--metrics-file` ([`metrics::record`]).
    fn print(&self, json: bool) {
        if metrics::enabled()
            && let Ok(v) = serde_json::to_value(self)
        {
            metrics::record(v);
        }
        if json {
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(self).expect("summaries serialise")
            );
        } else {
            crate::out!("{}", self.human());
        }
    }
}

/// One key (or row) that could not be handled.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// The table of the row.
    pub table: RowTable,
    /// The row id; the row was left untouched.
    pub id: i64,
    /// The key that failed, if the failure was a delete.
    pub key: Option<String>,
    /// Error code (`AccessDenied`, `SlowDown`, ...).
    pub code: String,
    /// Message.
    pub message: String,
}

/// Most failures kept in a report; beyond that they are only counted.
pub const MAX_LISTED_FAILURES: usize = 10_000;

/// The outcome of one prune pass (media, profiles or preview cards). Byte counts are bytes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    /// `media`, `profiles` or `preview_cards`.
    pub pass: &'static str,
    /// Rows matching the selection when the pass started.
    pub rows_selected: u64,
    /// Rows whose objects are all gone and whose columns were cleared (or would be, in a dry run).
    pub rows_cleared: u64,
    /// Rows left untouched because a key could not be deleted.
    pub rows_failed: u64,
    /// Rows that changed during the run (re-fetched by Mastodon) and were left alone.
    pub rows_changed: u64,
    /// Cleared media rows still attached to a status (Mastodon re-fetches them on view).
    pub rows_attached_to_statuses: u64,
    /// Objects deleted (or that would be).
    pub objects_deleted: u64,
    /// Objects that were already missing.
    pub objects_already_gone: u64,
    /// Objects whose delete failed.
    pub objects_failed: u64,
    /// Bytes of the deleted objects as the store listed them (`docs/reference/provider-quirks.md#d6`).
    pub bytes_freed: u64,
    /// What the database's `*_file_size` columns claim for the cleared rows (tootctl's figure).
    pub db_bytes: u64,
    /// Failed items, at most [`MAX_LISTED_FAILURES`].
    pub failures: Vec<Failure>,
}

impl PassReport {
    /// Adds a failure, keeping at most [`MAX_LISTED_FAILURES`].
    pub fn push_failure(&mut self, f: Failure) {
        if self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push(f);
        }
    }
}

/// The whole prune run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Retention in days for media (and profiles).
    pub days: u32,
    /// Where `days` came from (`flag`, `instance_setting`, `default`).
    pub days_source: String,
    /// Media cutoff, RFC 3339 UTC.
    pub cutoff: String,
    /// Preview card cutoff when that pass ran.
    pub preview_cards_cutoff: Option<String>,
    /// `--domain`: only rows of these domains and their subdomains were selected (empty:
    /// every domain). Normal form, as in `accounts.domain`.
    pub domains: Vec<String>,
    /// `--exclude-domain`: rows of these domains and their subdomains were never selected.
    pub exclude_domains: Vec<String>,
    /// The store (`s3://bucket at endpoint` or `file:///root`).
    pub storage: String,
    /// `--shard K/N` of this run (`"1/4"`), `None` (JSON `null`) for the whole job.
    pub shard: Option<String>,
    /// Requests to the store: `requests` (operations) and `attempts` per operation,
    /// `throttled` answers (flattened into the top level of the JSON).
    #[serde(flatten)]
    pub requests: RequestStats,
    /// Requests (operations, [`RequestStats::total_requests`]) per object deleted (or that
    /// would be, in a dry run) over every pass: the run's request cost (issue 11's floor
    /// is about 0.002: one `DeleteObjects` and one listing page per 1000 keys). `None`
    /// when nothing was deleted.
    pub requests_per_deleted_key: Option<f64>,
    /// HTTP attempts ([`RequestStats::total_attempts`], retries included: what the
    /// provider saw and bills) per object deleted, over every pass; equal to
    /// [`PruneReport::requests_per_deleted_key`] when nothing was retried. `None` when
    /// nothing was deleted.
    pub attempts_per_deleted_key: Option<f64>,
    /// The passes that ran.
    pub passes: Vec<PassReport>,
    /// Set when Ctrl-C stopped intake.
    pub interrupted: bool,
    /// Set when a fatal storage error stopped the run.
    pub fatal: Option<String>,
    /// The bucket's versioning (`Enabled`, `Suspended`), when it keeps deleted objects as
    /// noncurrent versions: the bytes "freed" are then freed only when those versions
    /// expire (`docs/reference/provider-quirks.md#u2`). `None`: not versioned, or the filesystem.
    pub bucket_versioning: Option<String>,
    /// Wall time, seconds.
    pub elapsed_seconds: f64,
    /// `--max-cache-size`: what the cache measured and what the budget implied (absent
    /// without the flag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetReport>,
}

impl PruneReport {
    /// The run record's counts (`journal::RunCounts`), over every pass: rows cleared,
    /// objects deleted, bytes freed, rows failed.
    pub fn run_counts(&self) -> crate::journal::RunCounts {
        let mut c = crate::journal::RunCounts::default();
        for p in &self.passes {
            c.rows += p.rows_cleared;
            c.objects += p.objects_deleted;
            c.bytes += p.bytes_freed;
            c.failures += p.rows_failed;
        }
        c
    }

    /// Records the store's request counts and the ratio
    /// [`PruneReport::requests_per_deleted_key`] from them and the passes' deletes.
    pub fn set_requests(&mut self, requests: RequestStats) {
        let deleted: u64 = self.passes.iter().map(|p| p.objects_deleted).sum();
        self.requests_per_deleted_key =
            (deleted > 0).then(|| requests.total_requests() as f64 / deleted as f64);
        self.attempts_per_deleted_key =
            (deleted > 0).then(|| requests.total_attempts() as f64 / deleted as f64);
        self.requests = requests;
    }

    /// The exit code this report calls for.
    pub fn exit_code(&self) -> ExitCode {
        Outcome {
            fatal: self.fatal.is_some(),
            interrupted: self.interrupted,
            failed: self
                .passes
                .iter()
                .any(|p| p.rows_failed > 0 || p.objects_failed > 0),
        }
        .exit_code()
    }

    /// The human summary (stdout).
    pub fn human(&self) -> String {
        let mut s = String::new();
        let verb = if self.dry_run { "would be " } else { "" };
        let dry = if self.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        };
        if self.days == 0 && self.budget.is_some() {
            let _ = writeln!(
                s,
                "mastomedia prune{dry}: cutoff {} (from --max-cache-size)",
                self.cutoff
            );
        } else {
            let _ = writeln!(
                s,
                "mastomedia prune{dry}: {} days ({}), cutoff {}",
                self.days, self.days_source, self.cutoff
            );
        }
        if let Some(line) = shard_line(
            self.shard.as_deref(),
            "the candidate rows with id mod N = K",
            self.requests.rate,
        ) {
            let _ = writeln!(s, "{line}");
        }
        if let Some(c) = &self.preview_cards_cutoff {
            let _ = writeln!(s, "preview cards cutoff {c}");
        }
        if let Some(b) = &self.budget {
            s.push_str(&b.human(verb));
        }
        if !self.domains.is_empty() {
            let _ = writeln!(
                s,
                "domains: {} and their subdomains",
                self.domains.join(", ")
            );
        }
        if !self.exclude_domains.is_empty() {
            let _ = writeln!(
                s,
                "excluded domains: {} and their subdomains",
                self.exclude_domains.join(", ")
            );
        }
        let _ = writeln!(s, "storage: {}", self.storage);
        for p in &self.passes {
            let _ = writeln!(
                s,
                "{:<14} rows: {} selected, {} {verb}cleared, {} failed, {} changed during run",
                p.pass, p.rows_selected, p.rows_cleared, p.rows_failed, p.rows_changed
            );
            let _ = writeln!(
                s,
                "{:<14} objects: {} {verb}deleted, {} already gone, {} failed; {} {verb}freed (database says {})",
                "",
                p.objects_deleted,
                p.objects_already_gone,
                p.objects_failed,
                format_size(p.bytes_freed, BINARY),
                format_size(p.db_bytes, BINARY)
            );
            if p.pass == "media" && p.rows_attached_to_statuses > 0 {
                let _ = writeln!(
                    s,
                    "{:<14} {} cleared rows belong to posts: Mastodon re-fetches them through the media proxy when viewed",
                    "", p.rows_attached_to_statuses
                );
            }
            if p.pass == "profiles" && p.rows_cleared > 0 {
                let _ = writeln!(
                    s,
                    "{:<14} pruned avatars/headers show the default image until the account is refreshed",
                    ""
                );
            }
            for f in &p.failures {
                let _ = writeln!(
                    s,
                    "  FAILED {} {} {}: {} {}",
                    f.table.name(),
                    f.id,
                    f.key.as_deref().unwrap_or("-"),
                    f.code,
                    f.message
                );
            }
            let unlisted = p.objects_failed.saturating_sub(p.failures.len() as u64);
            if unlisted > 0 {
                let _ = writeln!(s, "  ... and {unlisted} more failures not listed");
            }
        }
        if let Some(v) = &self.bucket_versioning {
            let _ = writeln!(
                s,
                "versioned bucket (versioning {v}): deleted objects stay stored as noncurrent versions, so the space above is freed only when they expire. \
                 Add a lifecycle rule, e.g. {{\"Rules\": [{{\"ID\": \"expire-noncurrent\", \"Status\": \"Enabled\", \"Filter\": {{}}, \"NoncurrentVersionExpiration\": {{\"NoncurrentDays\": 1}}, \"Expiration\": {{\"ExpiredObjectDeleteMarker\": true}}}}]}} \
                 (aws s3api put-bucket-lifecycle-configuration --bucket BUCKET --lifecycle-configuration file://rule.json); `mastomedia du --versions` shows what is still stored"
            );
        }
        let _ = writeln!(s, "{}", requests_line(&self.requests));
        if let Some(r) = self.requests_per_deleted_key {
            let _ = writeln!(s, "requests per {verb}deleted object: {r:.4}");
        }
        if let Some(a) = self
            .attempts_per_deleted_key
            .filter(|a| Some(*a) != self.requests_per_deleted_key)
        {
            let _ = writeln!(
                s,
                "attempts per {verb}deleted object (retries included): {a:.4}"
            );
        }
        if self.interrupted {
            let _ = writeln!(
                s,
                "interrupted: in-flight work was finished; run again to continue"
            );
        }
        if let Some(f) = &self.fatal {
            let _ = writeln!(s, "stopped: {f}");
        }
        let _ = writeln!(s, "elapsed: {:.1}s", self.elapsed_seconds);
        s
    }
}

impl Summary for PruneReport {
    fn human(&self) -> String {
        PruneReport::human(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_worst_outcome() {
        let mut r = PruneReport::default();
        assert_eq!(r.exit_code(), ExitCode::Success);
        r.passes.push(PassReport {
            rows_failed: 1,
            ..Default::default()
        });
        assert_eq!(r.exit_code(), ExitCode::ItemsFailed);
        r.interrupted = true;
        assert_eq!(r.exit_code(), ExitCode::Interrupted);
        r.fatal = Some("x".into());
        assert_eq!(r.exit_code(), ExitCode::Fatal);
    }

    #[test]
    fn outcome_ladder_fatal_then_interrupted_then_failed() {
        let cases = [
            // (fatal, interrupted, failed) => code
            ((false, false, false), ExitCode::Success),
            ((false, false, true), ExitCode::ItemsFailed),
            ((false, true, false), ExitCode::Interrupted),
            ((false, true, true), ExitCode::Interrupted),
            ((true, false, false), ExitCode::Fatal),
            ((true, false, true), ExitCode::Fatal),
            ((true, true, false), ExitCode::Fatal),
            ((true, true, true), ExitCode::Fatal),
        ];
        for ((fatal, interrupted, failed), want) in cases {
            let o = Outcome {
                fatal,
                interrupted,
                failed,
            };
            assert_eq!(o.exit_code(), want, "{o:?}");
        }
    }

    #[test]
    fn worst_ranks_fatal_usage_interrupted_failed_success() {
        use ExitCode::*;
        let cases: &[(&[ExitCode], ExitCode)] = &[
            (&[], Success),
            (&[Success], Success),
            (&[Success, ItemsFailed], ItemsFailed),
            (&[ItemsFailed, Interrupted, Success], Interrupted),
            (&[Interrupted, Usage], Usage),
            (&[Fatal, Usage, Interrupted, ItemsFailed], Fatal),
            (&[ItemsFailed, Fatal], Fatal),
        ];
        for (codes, want) in cases {
            assert_eq!(ExitCode::worst(codes.iter().copied()), *want, "{codes:?}");
        }
        let status = |c: ExitCode| format!("{:?}", std::process::ExitCode::from(c));
        assert_eq!(
            status(Interrupted),
            format!("{:?}", std::process::ExitCode::from(130))
        );
        assert_eq!(
            status(Fatal),
            format!("{:?}", std::process::ExitCode::from(3))
        );
    }

    #[test]
    fn requests_lines_show_attempts_and_the_rate_hint_when_throttled() {
        let mut stats = RequestStats {
            requests: [("ListObjectsV2", 2)].into_iter().collect(),
            attempts: [("ListObjectsV2", 5)].into_iter().collect(),
            throttled: 0,
            rate: Some(80),
        };
        let line = requests_line(&stats);
        assert_eq!(
            line,
            "requests: 2 (ListObjectsV2 2)\nattempts: 5 (ListObjectsV2 5); throttled 0"
        );
        stats.throttled = 3;
        assert!(
            requests_line(&stats).ends_with(
                "\nhint: the provider throttled 3 requests: lower --rate (e.g. --rate 40)"
            ),
            "{}",
            requests_line(&stats)
        );
        let json = serde_json::to_value(PruneReport {
            requests: stats,
            ..PruneReport::default()
        })
        .unwrap();
        assert_eq!(json["requests"]["ListObjectsV2"], 2);
        assert_eq!(json["attempts"]["ListObjectsV2"], 5);
        assert_eq!(json["throttled"], 3);
        assert!(json.get("rate").is_none());
    }

    #[test]
    fn requests_per_deleted_key_counts_every_pass_and_is_absent_without_deletes() {
        let stats = |n| RequestStats {
            requests: [("ListObjectsV2", n), ("DeleteObjects", 2)]
                .into_iter()
                .collect(),
            ..RequestStats::default()
        };
        let mut r = PruneReport::default();
        r.set_requests(stats(1));
        assert_eq!(r.requests_per_deleted_key, None);
        assert!(serde_json::to_value(&r).unwrap()["requests_per_deleted_key"].is_null());
        for deleted in [1500, 500] {
            r.passes.push(PassReport {
                objects_deleted: deleted,
                ..Default::default()
            });
        }
        r.set_requests(stats(3));
        assert_eq!(r.requests_per_deleted_key, Some(5.0 / 2000.0));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["requests_per_deleted_key"],
            0.0025
        );
        assert!(
            r.human()
                .contains("\nrequests per deleted object: 0.0025\n"),
            "{}",
            r.human()
        );
    }

    /// Retries are what the provider bills: the attempts ratio counts them, and the summary
    /// shows it only when it differs from the requests ratio.
    #[test]
    fn attempts_per_deleted_key_counts_retries() {
        let stats = |retries: u64| RequestStats {
            requests: [("ListObjectsV2", 3), ("DeleteObjects", 2)]
                .into_iter()
                .collect(),
            attempts: [("ListObjectsV2", 3u64 + retries), ("DeleteObjects", 2)]
                .into_iter()
                .collect(),
            ..RequestStats::default()
        };
        let mut r = PruneReport::default();
        r.passes.push(PassReport {
            objects_deleted: 2000,
            ..Default::default()
        });
        r.set_requests(stats(0));
        assert_eq!(r.attempts_per_deleted_key, Some(0.0025));
        assert!(!r.human().contains("attempts per"), "{}", r.human());
        r.set_requests(stats(3));
        assert_eq!(r.requests_per_deleted_key, Some(0.0025));
        assert_eq!(r.attempts_per_deleted_key, Some(8.0 / 2000.0));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["attempts_per_deleted_key"],
            0.004
        );
        assert!(
            r.human()
                .contains("\nattempts per deleted object (retries included): 0.0040\n"),
            "{}",
            r.human()
        );
    }
}
