//! `mastomedia reconcile`: rows whose stored file is missing from the storage.
//!
//! Order of work: config → database (schema, prune's advisory lock with `--apply`, UPDATE
//! privilege on the columns it may clear) → the run ([`run_reconcile`]: store check,
//! ownership checks, the check of every row, the refusal when most are missing, the
//! clearing passes through the dry-run gate) → report.

use std::sync::Arc;

use super::{CommandError, interrupt_token, load_config, open_store};
use crate::cli::reconcile::Args;
use crate::inventory::reconcile::reconcile_selections;
use crate::mastodon::Db;
use crate::model::JobKey;
use crate::pool::reconcile::{ReconcileRun, run_reconcile};
use crate::pool::{Gate, PassOptions};
use crate::report::Summary as _;
use crate::report::{ExitCode, ProgressMode};
use crate::store::Limiter;

/// Runs `reconcile` and returns the exit code. Prints the report (stdout) itself.
/// Errors: configuration (2); database, storage, ownership or too-many-missing refusal (3).
pub async fn run(
    env_file: &std::path::Path,
    args: Args,
    quiet: bool,
) -> Result<ExitCode, CommandError> {
    let cfg = load_config(env_file)?;
    let db = Db::connect(&cfg.database, 4)
        .await
        .map_err(CommandError::fatal)?;
    // prune's lock: reconcile clears rows as prune does, so the two never overlap.
    let key = JobKey::new("prune", super::orphans::journal_target(&cfg));
    // Only --apply changes rows; a report must not keep a nightly prune out.
    let lock = if args.apply {
        db.lock_for(&key, true)
            .await
            .map_err(CommandError::fatal)?
            .map(Arc::new)
    } else {
        None
    };
    let settled_before = chrono::Utc::now()
        - chrono::Duration::milliseconds((args.min_age.min(36_500.0) * 86_400_000.0).round() as i64);
    if args.apply {
        for sel in reconcile_selections(settled_before) {
            let table = sel.table();
            let cols = crate::mastodon::update_columns(db.schema(), table, &sel.clear_groups());
            db.check_update_privilege(table.name(), &cols)
                .await
                .map_err(CommandError::fatal)?;
        }
    }
    let limiter = Limiter::new(args.rate, (args.concurrency as usize) * 2);
    let run = ReconcileRun {
        db: &db,
        lock,
        opts: PassOptions {
            concurrency: args.concurrency as usize,
            key_prefix: cfg.key_prefix(),
            gate: Gate::new(!args.apply),
            ..PassOptions::default()
        },
        force_missing: args.force_missing,
        settled_before,
        progress: ProgressMode::detect(quiet),
        cancel: interrupt_token(),
    };
    let report = run_reconcile(run, open_store(&cfg, limiter))
        .await
        .map_err(CommandError::fatal)?;
    report.print(args.json);
    Ok(report.exit_code())
}
