//! `mastomedia orphans`: find (and with `--delete` remove) objects no row owns.
//!
//! Order of work: config → database (schema, advisory lock `orphans`) → store check →
//! journal (resume position: `--start-after`, else the unfinished scan of the same mode,
//! else the beginning) → the scan ([`run_scan`]: listing below `S3_KEY_PREFIX` +
//! `--prefix`, batches classified and, with `--delete`, deleted through the dry-run gate,
//! position journalled in key order) → the journal forgets a finished scan → report.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use super::{CommandError, interrupt_token, load_config, open_store};
use crate::cli::orphans::Args;
use crate::config::{Config, StorageConfig};
use crate::inventory::owners::has_any_rows;
use crate::journal::{Journal, JournalError, RunId, SqliteJournal, default_path};
use crate::mastodon::{Db, RunLock};
use crate::model::JobKey;
use crate::plan::layout::KeyPrefix;
use crate::plan::layout::ObjectKey;
use crate::plan::ownership::{OwnershipRisk, assess, refusal};
use crate::plan::partition::listing_prefixes;
use crate::pool::Gate;
use crate::pool::scan::{ScanOptions, run_scan};
use crate::report::Summary as _;
use crate::report::orphans::OrphansReport;
use crate::report::{ExitCode, Progress, ProgressMode};
use crate::store::{Store, validate_key};

/// Runs `orphans` and returns the exit code (0; 1 some deletes failed; 130 interrupted,
/// position kept). Prints the report (stdout) itself. Errors: configuration or journal
/// (2); database, credentials or bucket (3).
pub async fn run(
    env_file: &std::path::Path,
    args: Args,
    quiet: bool,
) -> Result<ExitCode, CommandError> {
    let cfg = load_config(env_file)?;
    let db = Db::connect(&cfg.database, args.concurrency + 2)
        .await
        .map_err(CommandError::fatal)?;
    let key = JobKey::new("orphans", journal_target(&cfg));
    let lock = db
        .lock_for(&key.lock_name(), args.delete && !args.dry_run)
        .await
        .map_err(CommandError::fatal)?;
    if args.delete && !args.dry_run && !has_any_rows(&db).await.map_err(CommandError::fatal)? {
        return Err(CommandError::fatal(anyhow!(
            "the database has no media attachments and no accounts, so every object would look orphaned: refusing to delete. Check DATABASE_URL / DB_NAME"
        )));
    }
    let limiter = crate::store::Limiter::new(args.rate, (args.concurrency as usize) * 2);
    let job = OrphansJob {
        cfg: &cfg,
        db: &db,
        lock: lock.as_ref(),
        key: &key,
        args: &args,
        quiet,
        cancel: interrupt_token(),
    };
    let report = job.run(open_store(&cfg, limiter)).await?;
    report.print(args.json);
    Ok(report.exit_code())
}

/// Before any delete: some of the newest files the database names must exist in this
/// store. A database of another instance (a staging copy, a wrong `DATABASE_URL`) owns
/// nothing here and would make every object look orphaned.
async fn ownership_check(
    sample: &[String],
    store: &dyn Store,
    key_prefix: &KeyPrefix,
) -> Result<(), CommandError> {
    if sample.is_empty() {
        return Ok(()); // no stored file at all: the scan's no-stored-files sign decides
    }
    let keys: Vec<ObjectKey> = sample.iter().map(|k| key_prefix.apply(k.clone())).collect();
    let prefixes = listing_prefixes(
        keys.iter()
            .filter(|k| validate_key(k).is_ok())
            .map(ObjectKey::as_str),
    );
    let sized = store.stat_many(&keys, &prefixes).await;
    let found = sized.iter().any(|r| matches!(r, Ok(Some(_))));
    if let Some(Err(e)) = sized
        .into_iter()
        .find(|r| r.as_ref().is_err_and(|e| e.is_fatal() || !found))
    {
        return Err(CommandError {
            code: ExitCode::Fatal,
            error: anyhow!(e).context("checking that the database's files are in this storage"),
        });
    }
    if !found {
        return Err(CommandError::fatal(anyhow!(
            "none of the {} newest files the database names (e.g. {}) exist in {}: the database and the storage do not belong to the same instance, so every object would look orphaned. Refusing to delete; check DATABASE_URL / DB_NAME and S3_BUCKET / S3_KEY_PREFIX",
            keys.len(),
            keys[0],
            store.describe()
        )));
    }
    Ok(())
}

struct OrphansJob<'a> {
    cfg: &'a Config,
    db: &'a Db,
    lock: Option<&'a RunLock>,
    /// The job's identity: the journal's keys.
    key: &'a JobKey,
    args: &'a Args,
    quiet: bool,
    cancel: CancellationToken,
}

impl OrphansJob<'_> {
    async fn run(self, store: Arc<dyn Store>) -> Result<OrphansReport, CommandError> {
        let started = Instant::now();
        let args = self.args;
        store.check().await.map_err(|e| CommandError {
            code: ExitCode::Fatal,
            error: anyhow!(e).context("checking the storage before any change"),
        })?;
        let key_prefix = match &self.cfg.storage {
            StorageConfig::S3(s3) => s3.key_prefix.clone(),
            StorageConfig::Filesystem(_) => KeyPrefix::default(),
        };
        let sample = crate::inventory::owners::sample_keys(self.db, 20)
            .await
            .map_err(CommandError::fatal)?;
        if args.delete && !args.dry_run {
            ownership_check(&sample, store.as_ref(), &key_prefix).await?;
        }
        let max_ids = crate::inventory::owners::max_ids(self.db)
            .await
            .map_err(CommandError::fatal)?;
        let base = key_prefix
            .as_deref()
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        let prefix = format!("{base}{}", args.prefix);
        let target = self.key.journal_target().into_owned();
        let journal_path = args
            .journal
            .clone()
            .unwrap_or_else(|| default_path("orphans", &target));
        let journal = SqliteJournal::open(&journal_path)
            .await
            .map_err(CommandError::usage)?;
        let run = journal
            .run_started(self.key.job(), &target)
            .await
            .map_err(CommandError::fatal)?;
        let result = async {
            let mode = match (args.delete, args.include_stale) {
                (false, _) => "report",
                (true, false) => "delete",
                (true, true) => "delete+stale",
            };
            // A dry run deletes nothing: it must never move a deleting scan's position.
            let journal_mode = if args.dry_run { "report" } else { mode };
            let start_after = resume_point(&journal, &target, &prefix, journal_mode, args)
                .await
                .map_err(CommandError::fatal)?;
            let mut report = OrphansReport {
                storage: store.describe(),
                prefix: prefix.clone(),
                journal: journal_path.display().to_string(),
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
                concurrency: args.concurrency as usize,
                target: target.clone(),
                max_ids: Arc::new(max_ids),
                started: chrono::Utc::now(),
            };
            let accepted: BTreeSet<OwnershipRisk> =
                args.accept_risk.iter().map(|r| (*r).into()).collect();
            let progress_mode = ProgressMode::detect(self.quiet);
            if args.delete && !args.dry_run {
                // Pass 1, read-only and unjournalled: would the database own what goes?
                let mut first = OrphansReport {
                    dry_run: true,
                    ..report.clone()
                };
                let check = OwnershipCheck::run(
                    self.db,
                    store.clone(),
                    &opts,
                    &self.cancel,
                    progress_mode,
                    &mut first,
                )
                .await;
                let findings = assess(&first.ownership, args.max_share, &accepted);
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
                    if first.refused.is_none()
                        && first.fatal.is_none()
                        && !self.cancel.is_cancelled()
                    {
                        // Nothing to delete: the read-only pass was the whole run.
                        first.dry_run = false;
                        first.complete = true;
                        journal
                            .orphan_scan_finish(&target, &prefix)
                            .await
                            .map_err(CommandError::fatal)?;
                    }
                    first.interrupted = self.cancel.is_cancelled() && first.fatal.is_none();
                    first.requests = store.limiter().stats();
                    first.elapsed_seconds = started.elapsed().as_secs_f64();
                    return Ok(first);
                }
            }
            let progress = Progress::start_unit("orphans", 0, "objects", "scanned", progress_mode);
            let listed_to_end = run_scan(
                self.db,
                self.lock,
                store.clone(),
                Some(&journal),
                &opts,
                &progress,
                &self.cancel,
                &mut report,
            )
            .await;
            progress.finish();
            if listed_to_end {
                report.complete = true;
                journal
                    .orphan_scan_finish(&target, &prefix)
                    .await
                    .map_err(CommandError::fatal)?;
            }
            report.ownership_findings = assess(&report.ownership, args.max_share, &accepted);
            for f in report.ownership_findings.iter().filter(|f| !f.accepted) {
                tracing::warn!(
                    "the database may not own this storage ({}): {}; orphans --delete would refuse",
                    f.risk.name(),
                    f.message
                );
            }
            report.interrupted = self.cancel.is_cancelled() && report.fatal.is_none();
            report.requests = store.limiter().stats();
            report.elapsed_seconds = started.elapsed().as_secs_f64();
            Ok(report)
        }
        .await;
        finish_run(&journal, run, &result).await;
        result
    }
}

/// Records how the run ended in the journal's `runs` table (the exit code's name). A
/// failure to write it is only a warning: the work itself is done and journalled.
async fn finish_run(
    journal: &impl Journal,
    run: RunId,
    result: &Result<OrphansReport, CommandError>,
) {
    let code = match result {
        Ok(report) => report.exit_code(),
        Err(e) => e.code,
    };
    let outcome = match code {
        ExitCode::Success => "success",
        ExitCode::ItemsFailed => "items_failed",
        ExitCode::Usage => "usage",
        ExitCode::Fatal => "fatal",
        ExitCode::Interrupted => "interrupted",
    };
    if let Err(e) = journal.run_finished(run, outcome).await {
        tracing::warn!("{e}");
    }
}

/// The storage a scan position belongs to: `s3://<bucket>@<endpoint>` or
/// `file://<root>` (also names the default journal file).
pub(super) fn journal_target(cfg: &Config) -> String {
    match &cfg.storage {
        StorageConfig::S3(s3) => {
            let endpoint = s3.endpoint.as_deref().unwrap_or("aws");
            let host = endpoint
                .split_once("://")
                .map_or(endpoint, |(_, rest)| rest)
                .trim_end_matches('/');
            format!("s3://{}@{host}", s3.bucket)
        }
        StorageConfig::Filesystem(fs) => format!("file://{}", fs.root.display()),
    }
}

/// Where the listing starts: `--start-after`, else the journalled position of a scan of
/// the same mode, else the beginning. Records the start in the journal.
async fn resume_point(
    journal: &impl Journal,
    target: &str,
    prefix: &str,
    mode: &str,
    args: &Args,
) -> Result<Option<String>, JournalError> {
    if let Some(k) = &args.start_after {
        journal.orphan_scan_start(target, prefix, mode, k).await?;
        return Ok(Some(k.clone()));
    }
    match journal.orphan_scan(target, prefix).await? {
        Some(p) if p.mode == mode && !p.last_key.is_empty() => {
            tracing::warn!(
                "continuing the {mode} scan started {} after {} ({} objects done; journal {})",
                p.started_at,
                p.last_key,
                p.objects,
                journal.path().display()
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
            ..opts.clone()
        };
        let progress =
            Progress::start_unit("orphans (ownership check)", 0, "objects", "scanned", mode);
        let (lock, journal) = (None::<&RunLock>, None::<&SqliteJournal>);
        let listed = run_scan(
            db, lock, store, journal, &read_only, &progress, cancel, report,
        )
        .await;
        progress.finish();
        if listed { Self::Listed } else { Self::Stopped }
    }
}
