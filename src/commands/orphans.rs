//! `mastomedia orphans`: find (and with `--delete` remove) objects no row owns.
//!
//! Order of work: config → database (schema, advisory lock `orphans`) → store check →
//! journal (resume position: `--start-after`, else the unfinished scan of the same mode,
//! else the beginning) → the scan ([`crate::pool::scan::run_scan`]: listing below `S3_KEY_PREFIX` +
//! `--prefix`, batches classified and, with `--delete`, deleted through the dry-run gate,
//! position journalled in key order) → the journal forgets a finished scan → report. All
//! of it after the lock is `pool/orphans.rs` ([`run_orphans`]).

use anyhow::anyhow;

use super::{CommandError, interrupt_token, journal_location, load_config, open_store};
use crate::cli::orphans::Args;
use crate::config::{Config, StorageConfig};
use crate::inventory::owners::has_any_rows;
use crate::mastodon::Db;
use crate::model::JobKey;
use crate::pool::orphans::{OrphansError, OrphansRun, OrphansSettings, run_orphans};
use crate::report::Summary as _;
use crate::report::{ExitCode, ProgressMode};

/// Runs `orphans` and returns the exit code (0; 1 some deletes failed; 130 interrupted,
/// position kept). Prints the report (stdout) itself. Errors: configuration or journal
/// (2); database, credentials or bucket (3).
pub async fn run(
    env_file: &std::path::Path,
    args: Args,
    quiet: bool,
) -> Result<ExitCode, CommandError> {
    let shard = super::shard(&args.shard)?;
    let cfg = load_config(env_file)?;
    let journal = journal_location(args.journal.as_ref(), cfg.journal.as_ref())?;
    let db = Db::connect(&cfg.database, args.concurrency + 2)
        .await
        .map_err(CommandError::fatal)?;
    let mut key = JobKey::new("orphans", journal_target(&cfg));
    if let Some(s) = shard {
        key = key.with_shard(s);
    }
    let lock = db
        .lock_for(&key, args.delete && !args.dry_run)
        .await
        .map_err(CommandError::fatal)?;
    if args.delete && !args.dry_run && !has_any_rows(&db).await.map_err(CommandError::fatal)? {
        return Err(CommandError::fatal(anyhow!(
            "the database has no media attachments and no accounts, so every object would look orphaned: refusing to delete. Check DATABASE_URL / DB_NAME"
        )));
    }
    let limiter = crate::store::Limiter::new(
        super::shard_rate(args.rate, shard),
        (args.concurrency as usize) * 2,
    );
    let run = OrphansRun {
        db: &db,
        lock: lock.as_ref(),
        key: &key,
        key_prefix: cfg.key_prefix(),
        journal,
        settings: OrphansSettings {
            delete: args.delete,
            dry_run: args.dry_run,
            include_stale: args.include_stale,
            min_age: args.min_age,
            prefix: args.prefix.clone(),
            start_after: args.start_after.clone(),
            accepted: args.accept_risk.iter().map(|r| (*r).into()).collect(),
            max_share: args.max_share,
            concurrency: args.concurrency as usize,
        },
        progress: ProgressMode::detect(quiet),
        cancel: interrupt_token(),
    };
    let report = run_orphans(run, open_store(&cfg, limiter))
        .await
        .map_err(|e| match e {
            OrphansError::JournalOpen(j) => j.into(),
            e => CommandError::fatal(e),
        })?;
    report.print(args.json);
    Ok(report.exit_code())
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
