//! A whole `orphans` run: the store check, the ownership check of a deleting run (some of
//! the newest files the database names must be in this storage), the journal's resume
//! position, the read-only first pass of a deleting run and its refusal
//! (`plan/ownership.rs`), then the scan itself ([`super::scan::run_scan`]) and the run's
//! record in the journal. `commands/orphans.rs` only wires config, database, lock and
//! store to it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Gate;
use super::scan::{ScanOptions, run_scan};
use crate::inventory::owners::{OwnershipError, check_owned};
use crate::journal::{
    AnyJournal, Journal, JournalError, JournalLocation, RunRecorder, RunTally, default_path,
};
use crate::mastodon::{Db, DbError, RunLock};
use crate::model::{JobKey, KeyPrefix};
use crate::plan::ownership::{OwnershipRisk, assess, refusal};
use crate::report::orphans::OrphansReport;
use crate::report::{Progress, ProgressMode};
use crate::store::{Store, StoreError};

/// What the admin asked of this run (orphans' flags, as plain values).
#[derive(Debug, Clone)]
pub struct OrphansSettings {
    /// `--delete`.
    pub delete: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--include-stale`.
    pub include_stale: bool,
    /// `--min-age`, days.
    pub min_age: f64,
    /// `--prefix` (below `S3_KEY_PREFIX`).
    pub prefix: String,
    /// `--start-after`.
    pub start_after: Option<String>,
    /// `--accept-risk`, by name.
    pub accepted: BTreeSet<OwnershipRisk>,
    /// `--max-share`, percent.
    pub max_share: f64,
    /// `--concurrency`.
    pub concurrency: usize,
}

/// Everything one run needs besides the store.
#[derive(Debug)]
pub struct OrphansRun<'a> {
    /// Mastodon's database.
    pub db: &'a Db,
    /// The advisory lock of a deleting run, proved held before every delete batch.
    pub lock: Option<&'a RunLock>,
    /// The job's identity: the journal's keys.
    pub key: &'a JobKey,
    /// `S3_KEY_PREFIX` (none on the filesystem).
    pub key_prefix: KeyPrefix,
    /// `--journal` or `MASTOMEDIA_JOURNAL` (default: one SQLite file per target under the
    /// state directory).
    pub journal: Option<JournalLocation>,
    /// The flags.
    pub settings: OrphansSettings,
    /// Progress bar or cron status line.
    pub progress: ProgressMode,
    /// Stops intake (Ctrl-C, SIGTERM).
    pub cancel: CancellationToken,
}

/// Why a run stopped before its report. `JournalOpen` is a usage error (exit 2: the
/// `--journal` path or URL) unless the journal's server is unreachable or refused
/// ([`JournalError::is_usage`]); every other one is fatal (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum OrphansError {
    /// The storage check before any change.
    #[error("checking the storage before any change: {0}")]
    StoreCheck(StoreError),
    /// The database cannot be the owner of this storage
    /// ([`crate::inventory::owners::check_owned`]).
    #[error(transparent)]
    NotOwner(#[from] OwnershipError),
    /// The journal could not be opened.
    #[error(transparent)]
    JournalOpen(JournalError),
    /// Reading or writing the journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Runs `orphans` against `store`: see the module doc. The report carries the scan's
/// counts, its refusal or fatal error, and whether it was interrupted. Errors: see
/// [`OrphansError`].
pub async fn run_orphans(
    run: OrphansRun<'_>,
    store: Arc<dyn Store>,
) -> Result<OrphansReport, OrphansError> {
    let started = Instant::now();
    let args = &run.settings;
    store.check().await.map_err(OrphansError::StoreCheck)?;
    let key_prefix = run.key_prefix.clone();
    let sample = crate::inventory::owners::sample_keys(run.db, 20).await?;
    if args.delete && !args.dry_run {
        check_owned(&sample, store.as_ref(), &key_prefix).await?;
    }
    let max_ids = crate::inventory::owners::max_ids(run.db).await?;
    let base = key_prefix
        .as_deref()
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    let prefix = format!("{base}{}", args.prefix);
    let target = run.key.journal_target().into_owned();
    let location = run
        .journal
        .clone()
        .unwrap_or_else(|| JournalLocation::File(default_path("orphans", run.key.target())));
    let journal = AnyJournal::open(&location)
        .await
        .map_err(OrphansError::JournalOpen)?;
    let tally = RunTally::default();
    let recorder = RunRecorder::start(&journal, run.key, tally.clone()).await?;
    let result = async {
        let mode = match (args.delete, args.include_stale) {
            (false, _) => "report",
            (true, false) => "delete",
            (true, true) => "delete+stale",
        };
        // A dry run deletes nothing: it must never move a deleting scan's position.
        let journal_mode = if args.dry_run { "report" } else { mode };
        let start_after = resume_point(
            &journal,
            &target,
            &prefix,
            journal_mode,
            args.start_after.as_deref(),
        )
        .await?;
        let mut report = OrphansReport {
            storage: store.describe(),
            shard: run.key.shard().map(|s| s.to_string()),
            prefix: prefix.clone(),
            journal: journal.location().to_owned(),
            mode: mode.to_owned(),
            dry_run: args.dry_run,
            include_stale: args.include_stale,
            min_age_days: args.min_age,
            resumed_after: start_after.clone(),
            last_key: start_after.clone(),
            ..OrphansReport::default()
        };
        report.ownership.stored_files_named = !sample.is_empty();
        let opts = ScanOptions {
            key_prefix: key_prefix.clone(),
            prefix: prefix.clone(),
            start_after,
            delete: args.delete,
            include_stale: args.include_stale,
            min_age_days: args.min_age,
            gate: Gate::new(args.dry_run || !args.delete),
            concurrency: args.concurrency,
            target: target.clone(),
            shard: run.key.shard(),
            max_ids: Arc::new(max_ids),
            started: chrono::Utc::now(),
            tally: tally.clone(),
        };
        let accepted = &args.accepted;
        let progress_mode = run.progress;
        if args.delete && !args.dry_run {
            // Pass 1, read-only and unjournalled: would the database own what goes?
            let mut first = OrphansReport {
                dry_run: true,
                ..report.clone()
            };
            let check = OwnershipCheck::run(
                run.db,
                store.clone(),
                &opts,
                &run.cancel,
                progress_mode,
                &mut first,
            )
            .await;
            let findings = assess(&first.ownership, args.max_share, accepted);
            first.ownership_findings = findings.clone();
            // Nothing would be deleted: nothing is at risk (the signs stay as warnings).
            if let Some(r) = refusal(&findings).filter(|_| first.ownership.deletable > 0) {
                tracing::error!("{r}");
                first.refused = Some(r);
            }
            let stop_here = match check {
                OwnershipCheck::Stopped => true,
                OwnershipCheck::Listed => first.refused.is_some() || first.deleted.objects == 0,
            };
            if stop_here {
                if first.refused.is_none() && first.fatal.is_none() && !run.cancel.is_cancelled() {
                    // Nothing to delete: the read-only pass was the whole run.
                    first.dry_run = false;
                    first.complete = true;
                    journal.orphan_scan_finish(&target, &prefix).await?;
                }
                first.interrupted = run.cancel.is_cancelled() && first.fatal.is_none();
                first.requests = store.limiter().stats();
                first.elapsed_seconds = started.elapsed().as_secs_f64();
                return Ok(first);
            }
        }
        let progress = Progress::start_unit("orphans", 0, "objects", "scanned", progress_mode);
        let listed_to_end = run_scan(
            run.db,
            run.lock,
            store.clone(),
            Some(&journal),
            &opts,
            &progress,
            &run.cancel,
            &mut report,
        )
        .await;
        progress.finish();
        if listed_to_end {
            report.complete = true;
            journal.orphan_scan_finish(&target, &prefix).await?;
        }
        report.ownership_findings = assess(&report.ownership, args.max_share, accepted);
        for f in report.ownership_findings.iter().filter(|f| !f.accepted) {
            tracing::warn!(
                "the database may not own this storage ({}): {}; orphans --delete would refuse",
                f.risk.name(),
                f.message
            );
        }
        report.interrupted = run.cancel.is_cancelled() && report.fatal.is_none();
        report.requests = store.limiter().stats();
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
    .await;
    finish_run(recorder, &result).await;
    result
}

/// Records how the run ended in the journal's `runs` table (the exit code's name) with
/// the report's counts (else the tally's). A failure to write it is only a warning: the
/// work itself is done and journalled.
async fn finish_run(recorder: RunRecorder, result: &Result<OrphansReport, OrphansError>) {
    let (outcome, counts) = match result {
        Ok(report) => (report.exit_code().outcome(), report.run_counts()),
        Err(OrphansError::JournalOpen(_)) => (
            crate::report::ExitCode::Usage.outcome(),
            recorder.tally().get(),
        ),
        Err(_) => (
            crate::report::ExitCode::Fatal.outcome(),
            recorder.tally().get(),
        ),
    };
    recorder.finish(outcome, counts).await;
}

/// Where the listing starts: `--start-after`, else the journalled position of a scan of
/// the same mode, else the beginning. Records the start in the journal.
async fn resume_point(
    journal: &impl Journal,
    target: &str,
    prefix: &str,
    mode: &str,
    start_after: Option<&str>,
) -> Result<Option<String>, JournalError> {
    if let Some(k) = start_after {
        journal.orphan_scan_start(target, prefix, mode, k).await?;
        return Ok(Some(k.to_owned()));
    }
    match journal.orphan_scan(target, prefix).await? {
        Some(p) if p.mode == mode && !p.last_key.is_empty() => {
            tracing::warn!(
                "continuing the {mode} scan started {} after {} ({} objects done; journal {})",
                p.started_at,
                p.last_key,
                p.objects,
                journal.location()
            );
            Ok(Some(p.last_key))
        }
        other => {
            if let Some(p) = other.filter(|p| p.mode != mode && !p.last_key.is_empty()) {
                tracing::warn!(
                    "an unfinished {} scan stopped after {}; this {mode} scan starts from the beginning",
                    p.mode,
                    p.last_key
                );
            }
            journal.orphan_scan_start(target, prefix, mode, "").await?;
            Ok(None)
        }
    }
}

/// How the read-only first pass of a deleting run ended.
enum OwnershipCheck {
    /// The listing reached its end: the counts are complete.
    Listed,
    /// A fatal error or an interrupt stopped it (in the report): nothing may be deleted.
    Stopped,
}

impl OwnershipCheck {
    /// Scans like the deleting run will (same start, same classes, same `--min-age`),
    /// through a dry-run gate and without moving the journal position, counting into
    /// `report`.
    async fn run(
        db: &Db,
        store: Arc<dyn Store>,
        opts: &ScanOptions,
        cancel: &CancellationToken,
        mode: ProgressMode,
        report: &mut OrphansReport,
    ) -> Self {
        let read_only = ScanOptions {
            gate: Gate::new(true),
            // Not the run's progress: the deleting pass counts it.
            tally: RunTally::default(),
            ..opts.clone()
        };
        let progress =
            Progress::start_unit("orphans (ownership check)", 0, "objects", "scanned", mode);
        let (lock, journal) = (None::<&RunLock>, None::<&AnyJournal>);
        let listed = run_scan(
            db, lock, store, journal, &read_only, &progress, cancel, report,
        )
        .await;
        progress.finish();
        if listed { Self::Listed } else { Self::Stopped }
    }
}
