//! `mastomedia prune`: the nightly job.
//!
//! Order of work: config → database (schema, advisory lock, retention setting) → store
//! check → UPDATE privilege check on every column we may clear → passes (media, then
//! profiles, then preview cards), each through the pool and its dry-run gate → summary.
//! Nothing is deleted before every check has passed, and no delete batch is sent unless
//! the advisory lock's session still holds the lock (else exit 3). A real run is recorded
//! in the journal (`--journal`, `MASTOMEDIA_JOURNAL`, else `prune-<target>.sqlite` in the
//! state folder) with its progress and outcome, for `mastomedia status`.

use std::sync::Arc;

use anyhow::anyhow;
use chrono::Utc;

use super::{CommandError, interrupt_token, journal_location, load_config, open_store};
use crate::cli::prune::Args;
use crate::journal::{AnyJournal, JournalLocation, RunRecorder, RunTally, default_path};
use crate::mastodon::{Db, DbError};
use crate::model::JobKey;
use crate::plan::domain::DomainFilter;
use crate::plan::prune::{DEFAULT_PREVIEW_CARD_DAYS, MIN_PREVIEW_CARD_DAYS, effective_days};
use crate::pool::budget::Budget;
use crate::pool::prune::{PruneError, PrunePlan, PruneRun, PruneScope, run_prune};
use crate::pool::{Gate, PassOptions};
use crate::report::Summary as _;
use crate::report::{ExitCode, ProgressMode};
use crate::store::Limiter;

/// Runs `prune` and returns the exit code. Prints the summary (stdout) itself.
pub async fn run(
    env_file: &std::path::Path,
    args: Args,
    quiet: bool,
) -> Result<ExitCode, CommandError> {
    validate(&args)?;
    let shard = super::shard(&args.shard)?;
    if shard.is_some() && args.max_cache_size.is_some() {
        // A budget is a property of the whole cache: one shard sees only its rows.
        return Err(CommandError::usage(anyhow::anyhow!(
            "--max-cache-size measures and trims the whole cache, so it cannot run as one shard (--shard, JOB_COMPLETION_INDEX): run it unsharded, or shard a --days prune"
        )));
    }
    let cfg = load_config(env_file)?;
    let journal = journal_location(args.journal.as_ref(), cfg.journal.as_ref())?;
    let db = Db::connect(&cfg.database, 4).await.map_err(db_error)?;
    tracing::info!(
        database = %cfg.database.display,
        schema_migration = db.schema().migration_version.as_deref().unwrap_or("?"),
        "connected to Mastodon's database"
    );
    let mut key = JobKey::new("prune", super::orphans::journal_target(&cfg));
    if let Some(s) = shard {
        key = key.with_shard(s);
    }
    let lock = db
        .lock_for(&key, !args.dry_run)
        .await
        .map_err(db_error)?
        .map(Arc::new);
    let setting = db.media_retention_days().await.map_err(db_error)?;
    let (days, source) = effective_days(args.days, setting);
    let now = Utc::now();
    let plan = PrunePlan {
        shard,
        ..PrunePlan::new(scope(&args), days, now)
    };
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
    let tally = RunTally::default();
    let recorder = if args.dry_run {
        None
    } else {
        record_run(journal, &key, &tally).await?
    };
    let limiter = Limiter::new(
        super::shard_rate(args.rate, shard),
        (args.concurrency as usize) * 2,
    );
    let key_prefix = cfg.key_prefix();
    let run = PruneRun {
        db: &db,
        lock,
        plan: &plan,
        days: (days, source),
        opts: PassOptions {
            concurrency: args.concurrency as usize,
            key_prefix,
            gate: Gate::new(args.dry_run),
            tally: tally.clone(),
            ..PassOptions::default()
        },
        progress: ProgressMode::detect(quiet),
        cancel: interrupt_token(),
        budget: args.max_cache_size.map(|max_bytes| Budget {
            max_bytes,
            days_floor: args.days.is_some(),
            card_ceiling: (!args.force)
                .then(|| now - chrono::Duration::days(i64::from(MIN_PREVIEW_CARD_DAYS))),
            settled_before: now - chrono::Duration::days(crate::pool::budget::MIN_BUDGET_AGE_DAYS),
        }),
    };
    let result = run_prune(run, open_store(&cfg, limiter)).await;
    if let Some(recorder) = recorder {
        let (outcome, counts) = match &result {
            Ok(report) => (report.exit_code(), report.run_counts()),
            Err(_) => (ExitCode::Fatal, tally.get()),
        };
        recorder.finish(outcome.outcome(), counts).await;
    }
    let report = result.map_err(|e| match e {
        PruneError::Store(_) | PruneError::NotOwner(_) => CommandError::fatal(e),
        PruneError::Db(e) => db_error(e),
    })?;
    report.print(args.json);
    Ok(report.exit_code())
}

/// Starts the run's record. A journal asked for (`--journal`, `MASTOMEDIA_JOURNAL`) that
/// cannot be opened stops the run before any change (exit 2 or 3); the default file
/// failing is only a warning, as prune ran before it kept records (nothing resumes from
/// them).
async fn record_run(
    location: Option<JournalLocation>,
    key: &JobKey,
    tally: &RunTally,
) -> Result<Option<RunRecorder>, CommandError> {
    let asked = location.is_some();
    let location = location
        .unwrap_or_else(|| JournalLocation::File(default_path("prune", &key.journal_target())));
    let started = async {
        let journal = AnyJournal::open(&location).await?;
        RunRecorder::start(&journal, key, tally.clone()).await
    };
    match started.await {
        Ok(r) => Ok(Some(r)),
        Err(e) if asked => Err(e.into()),
        Err(e) => {
            tracing::warn!("{e}; this run is not recorded for `mastomedia status`");
            Ok(None)
        }
    }
}

/// The passes `args` asks for (tootctl's order), `days` back from `now`.
fn scope(args: &Args) -> PruneScope {
    PruneScope {
        media: !args.no_media,
        keep_interacted: args.keep_interacted,
        profiles: args.prune_profiles || args.remove_headers,
        headers_only: args.remove_headers,
        include_follows: args.include_follows,
        preview_card_days: args.preview_cards.then_some(args.preview_cards_days),
        domains: DomainFilter::new(args.domain.clone(), args.exclude_domain.clone()),
    }
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
