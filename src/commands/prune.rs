//! `mastomedia prune`: the nightly job.
//!
//! Order of work: config → database (schema, advisory lock, retention setting) → store
//! check → UPDATE privilege check on every column we may clear → passes (media, then
//! profiles, then preview cards), each through the pool and its dry-run gate → summary.
//! Nothing is deleted before every check has passed, and no delete batch is sent unless
//! the advisory lock's session still holds the lock (else exit 3).

use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use super::{CommandError, interrupt_token, load_config, open_store};
use crate::cli::prune::Args;
use crate::config::{Config, StorageConfig};
use crate::inventory::Selection;
use crate::mastodon::{Db, DbError, RunLock};
use crate::model::JobKey;
use crate::plan::layout::KeyPrefix;
use crate::plan::prune::{
    DEFAULT_PREVIEW_CARD_DAYS, DaysSource, MIN_PREVIEW_CARD_DAYS, cutoff, effective_days,
};
use crate::pool::{Gate, LockedDb, PassError, PassOptions, run_pass};
use crate::report::Summary as _;
use crate::report::{ExitCode, PassReport, Progress, ProgressMode, PruneReport};
use crate::store::{Limiter, Store, StoreError};

/// Runs `prune` and returns the exit code. Prints the summary (stdout) itself.
pub async fn run(
    env_file: &std::path::Path,
    args: Args,
    quiet: bool,
) -> Result<ExitCode, CommandError> {
    validate(&args)?;
    let cfg = load_config(env_file)?;
    let db = Db::connect(&cfg.database, 4).await.map_err(db_error)?;
    tracing::info!(
        database = %cfg.database.display,
        schema_migration = db.schema().migration_version.as_deref().unwrap_or("?"),
        "connected to Mastodon's database"
    );
    let key = JobKey::new("prune", super::orphans::journal_target(&cfg));
    let lock = db
        .lock_for(&key.lock_name(), !args.dry_run)
        .await
        .map_err(db_error)?
        .map(Arc::new);
    let setting = db.media_retention_days().await.map_err(db_error)?;
    let (days, source) = effective_days(args.days, setting);
    let now = Utc::now();
    let plan = Plan::new(&args, days, now);
    for sel in &plan.selections {
        let table = sel.table();
        let cols = crate::mastodon::update_columns(db.schema(), table, &sel.clear_groups());
        match db.check_update_privilege(table.name(), &cols).await {
            Ok(()) => {}
            // A dry run changes nothing: an auditor's read-only user may run it.
            Err(e @ crate::mastodon::DbError::NoUpdatePrivilege { .. }) if args.dry_run => {
                tracing::warn!("{e} (this dry run goes on: it updates nothing)");
            }
            Err(e) => return Err(db_error(e)),
        }
    }
    let limiter = Limiter::new(args.rate, (args.concurrency as usize) * 2);
    let job = PruneJob {
        cfg: &cfg,
        db: &db,
        args: &args,
        plan: &plan,
        days,
        source,
        quiet,
        cancel: interrupt_token(),
        lock,
    };
    let report = job.run(open_store(&cfg, limiter)).await?;
    report.print(args.json);
    Ok(report.exit_code())
}

fn validate(args: &Args) -> Result<(), CommandError> {
    if args.include_follows && !(args.prune_profiles || args.remove_headers) {
        return Err(CommandError::usage(anyhow!(
            "--include-follows needs --prune-profiles or --remove-headers"
        )));
    }
    if args.no_media && !(args.prune_profiles || args.remove_headers || args.preview_cards) {
        return Err(CommandError::usage(anyhow!(
            "--no-media leaves nothing to do: add --prune-profiles, --remove-headers or --preview-cards"
        )));
    }
    if args.preview_cards && args.preview_cards_days < MIN_PREVIEW_CARD_DAYS && !args.force {
        return Err(CommandError::usage(anyhow!(
            "--preview-cards-days {} is below {MIN_PREVIEW_CARD_DAYS}: Mastodon re-fetches a card only when its link is shared again after two weeks, so cards would stay image-less. Use --force to do it anyway (default {DEFAULT_PREVIEW_CARD_DAYS})",
            args.preview_cards_days
        )));
    }
    Ok(())
}

fn db_error(e: DbError) -> CommandError {
    CommandError::fatal(e)
}

/// The passes to run, in order.
struct Plan {
    selections: Vec<Selection>,
    media_cutoff: chrono::DateTime<Utc>,
    card_cutoff: Option<chrono::DateTime<Utc>>,
}

impl Plan {
    fn new(args: &Args, days: u32, now: chrono::DateTime<Utc>) -> Self {
        let media_cutoff = cutoff(now, days);
        let mut selections = Vec::new();
        if !args.no_media {
            selections.push(Selection::Media {
                cutoff: media_cutoff,
                keep_interacted: args.keep_interacted,
            });
        }
        if args.prune_profiles || args.remove_headers {
            selections.push(Selection::Profiles {
                cutoff: media_cutoff,
                headers_only: args.remove_headers,
                include_follows: args.include_follows,
            });
        }
        let card_cutoff = args
            .preview_cards
            .then(|| cutoff(now, args.preview_cards_days));
        if let Some(c) = card_cutoff {
            selections.push(Selection::PreviewCards { cutoff: c });
        }
        Self {
            selections,
            media_cutoff,
            card_cutoff,
        }
    }
}

struct PruneJob<'a> {
    cfg: &'a Config,
    db: &'a Db,
    args: &'a Args,
    plan: &'a Plan,
    days: u32,
    source: DaysSource,
    quiet: bool,
    cancel: CancellationToken,
    /// Proved held before every delete batch.
    lock: Option<Arc<RunLock>>,
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl PruneJob<'_> {
    async fn run(self, store: Arc<dyn Store>) -> Result<PruneReport, CommandError> {
        let started = Instant::now();
        let key_prefix = match &self.cfg.storage {
            StorageConfig::S3(s3) => s3.key_prefix.clone(),
            StorageConfig::Filesystem(_) => KeyPrefix::default(),
        };
        let opts = PassOptions {
            concurrency: self.args.concurrency as usize,
            key_prefix,
            gate: Gate::new(self.args.dry_run),
            ..PassOptions::default()
        };
        check_store(store.as_ref(), &opts).await.map_err(|e| {
            CommandError::fatal(anyhow!(e)).with_context("checking the storage before any change")
        })?;
        let mut report = PruneReport {
            dry_run: self.args.dry_run,
            days: self.days,
            days_source: serde_json::to_value(self.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            cutoff: rfc3339(self.plan.media_cutoff),
            preview_cards_cutoff: self.plan.card_cutoff.map(rfc3339),
            storage: store.describe(),
            ..PruneReport::default()
        };
        // A versioned bucket keeps what prune deletes (docs/reference/provider-quirks.md#u2): say so instead of claiming
        // freed space. A provider that cannot tell is not a reason to stop.
        let versioning = match store.as_s3ext() {
            Some(s3) => s3.versioning().await,
            None => Ok(None),
        };
        report.bucket_versioning = match versioning {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("could not read the bucket's versioning: {e}");
                None
            }
        };
        tracing::info!(
            days = self.days,
            source = %self.source,
            cutoff = %report.cutoff,
            storage = %report.storage,
            dry_run = self.args.dry_run,
            "prune starting"
        );
        let mode = ProgressMode::detect(self.quiet);
        for sel in &self.plan.selections {
            if self.cancel.is_cancelled() {
                break;
            }
            let name = match sel {
                Selection::Media { .. } => "media",
                Selection::Profiles { .. } => "profiles",
                Selection::PreviewCards { .. } => "preview_cards",
            };
            let total = match sel.count(self.db).await {
                Ok(t) => t,
                // Earlier passes may have deleted already: keep their summary.
                Err(e) if !report.passes.is_empty() => {
                    report.fatal = Some(db_error(e).error.to_string());
                    break;
                }
                Err(e) => return Err(db_error(e)),
            };
            let verb = if self.args.dry_run {
                "would be freed"
            } else {
                "freed"
            };
            let progress = Progress::start_unit(
                &format!("prune {name}"),
                total.max(0) as u64,
                "rows",
                verb,
                mode,
            );
            let pass = PassReport {
                pass: name,
                rows_selected: total.max(0) as u64,
                ..PassReport::default()
            };
            let rows = LockedDb {
                db: self.db,
                lock: self.lock.as_deref(),
            };
            let result = run_pass(
                sel.cursor(self.db, opts.page_size),
                &rows,
                store.clone(),
                sel,
                &opts,
                &progress,
                &self.cancel,
                pass,
            )
            .await;
            progress.finish();
            let (pass, error) = match result {
                Ok(p) => (p, None),
                Err(failure) => {
                    let (p, e) = *failure;
                    (p, Some(e))
                }
            };
            report.passes.push(pass);
            match error {
                None => {}
                Some(PassError::Db(e @ DbError::LockLost { .. })) => {
                    // Stop with the summary of what was done; exit 3.
                    tracing::error!("{e}");
                    report.fatal = Some(e.to_string());
                    break;
                }
                // Deletes may have been confirmed before the error: print what was done
                // (the rows of unfinished batches were left untouched), then exit 3.
                Some(PassError::Db(e)) => {
                    let e = db_error(e).error;
                    tracing::error!("{e:#}");
                    report.fatal = Some(format!(
                        "{e:#} (rows whose update did not commit keep their file names; the next run finds their objects already gone and clears them)"
                    ));
                    break;
                }
                Some(PassError::Store(e)) => {
                    report.fatal = Some(format!(
                        "{e} (the rows of the failed batch were left untouched)"
                    ));
                    break;
                }
            }
        }
        report.interrupted = self.cancel.is_cancelled();
        report.set_requests(store.limiter().stats());
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// Checks the store before any change. A retryable failure (SlowDown storm, network
/// trouble) that outlasts the store's retry policy is tried again on the pool's item-level
/// schedule (`key_attempts`, full jitter from `retry_base`) before the run gives up (`docs/reference/provider-quirks.md#t1`);
/// anything else (credentials, missing bucket) fails at once.
async fn check_store(store: &dyn Store, opts: &PassOptions) -> Result<(), StoreError> {
    let mut attempt = 1;
    loop {
        match store.check().await {
            Err(e) if e.is_retryable() && attempt < opts.key_attempts => {
                let cap = opts.retry_base.saturating_mul(1 << (attempt - 1).min(6));
                let wait = cap.mul_f64(fastrand::f64());
                tracing::warn!(error = %e, ?wait, "storage check failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

impl CommandError {
    fn with_context(mut self, ctx: &'static str) -> Self {
        self.error = self.error.context(ctx);
        self
    }
}
