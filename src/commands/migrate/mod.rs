//! `mastomedia migrate`: copy `public/system` (or another provider's bucket) into the
//! bucket of the env file, resumably, with Mastodon's headers; or a bucket into the env
//! file's local folder (leaving a provider); `--verify`; `--repair`.
//!
//! Order: target config and bucket (folder) check → journal → source enumeration → plan (journal
//! diff) → uploads through the pool's bounded executor and the dry-run gate, journalled in
//! batches → optional verification → summary. A provider that rejects ACLs stops the run
//! at the first upload with the setting to change (`docs/reference/provider-quirks.md#a1`). The decisions are
//! `plan/migrate.rs`, the pipelines `pool/copy.rs`, `pool/verify.rs` and `pool/repair.rs`.

use std::path::Path;
use std::time::Instant;

use anyhow::anyhow;

mod source;
mod target;

use super::{CommandError, interrupt_token, journal_location};
use crate::cli::migrate::Args;
use crate::config::Config;
use crate::inventory::source::SourceError;
use crate::journal::Journal as _;
use crate::journal::{AnyJournal, JournalLocation, RunRecorder, RunTally, default_path};
use crate::mastodon::Db;
use crate::model::JobKey;
use crate::plan::migrate::multipart_threshold;
use crate::pool::Gate;
use crate::pool::copy::{CopyOptions, MigrateError, Migration, copy_all};
use crate::pool::repair::{Repair, repair};
use crate::pool::verify::verify;
use crate::report::Summary as _;
use crate::report::migrate::MigrateReport;
use crate::report::{ExitCode, ProgressMode};
use crate::store::Limiter;
use source::open_source;
use target::Target;

impl From<MigrateError> for CommandError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::ForeignJournal { .. } => CommandError::usage(e),
            MigrateError::Source(e) => e.into(),
            e => CommandError::fatal(e),
        }
    }
}

impl From<SourceError> for CommandError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Walk(_) => CommandError::usage(e),
            e => CommandError::fatal(e),
        }
    }
}

/// Runs `migrate` and returns the exit code; prints the summary itself.
pub async fn run(env_file: &Path, args: Args, quiet: bool) -> Result<ExitCode, CommandError> {
    let started = Instant::now();
    let shard = super::shard(&args.shard)?;
    let rate = super::shard_rate(args.rate, shard);
    let (cfg, vars) = Config::load_with_vars(env_file)?;
    let location = journal_location(args.journal.as_ref(), cfg.journal.as_ref())?;
    let limiter = Limiter::new(rate, args.concurrency as usize * 2);
    let target = Target::open(env_file, &cfg.storage, &args, limiter).await?;
    // The journal file is the target's (shared by the shards of one host); its rows are
    // keyed by the shard's own name (`JobKey::journal_target`), so shards never read or
    // overwrite each other's file records and run records.
    let mut key = JobKey::new("migrate", target.id());
    if let Some(s) = shard {
        key = key.with_shard(s);
    }
    let target_key = key.journal_target().into_owned();
    let location =
        location.unwrap_or_else(|| JournalLocation::File(default_path("migrate", key.target())));
    let journal = AnyJournal::open(&location).await?;
    // Two runs of the same migrate (or shard) would upload the same files and race on the
    // same journal rows: the second refuses (exit 3). Dry runs write nothing and lock
    // nothing.
    let _run_lock = if args.dry_run {
        None
    } else {
        Some(journal.lock_run(&key).await?)
    };
    let mut report = MigrateReport {
        dry_run: args.dry_run,
        target: target.store().describe(),
        shard: shard.map(|s| s.to_string()),
        journal: journal.location().to_owned(),
        remove_command: target.remove_command(),
        ..MigrateReport::default()
    };
    let gate = Gate::new(args.dry_run);
    let mut recorder = None;
    let tally = RunTally::default();
    let cancel = interrupt_token();
    let mode = ProgressMode::detect(quiet);
    let connect = |what: String| {
        let database = &cfg.database;
        async move {
            Db::connect(database, 4)
                .await
                .map_err(|e| CommandError::fatal(anyhow!("{what}: {e}")))
        }
    };

    if args.repair {
        // A disk target refused --repair in `Target::open`.
        let Target::Bucket(bucket, target_cfg) = &target else {
            unreachable!("--repair with a disk target is a usage error");
        };
        report.source = report.target.clone();
        let db = if args.repair_acl {
            Some(
                connect(
                    "--repair-acl checks suspended accounts and moderated posts in the database"
                        .to_owned(),
                )
                .await?,
            )
        } else {
            None
        };
        let job = Repair {
            target: bucket,
            key_prefix: &target_cfg.key_prefix,
            permission: target_cfg.permission.as_deref(),
            gate,
            concurrency: args.concurrency as usize,
            repair_acl: args.repair_acl,
            db: db.as_ref(),
            shard,
        };
        repair(&job, &cancel, mode, &mut report).await?;
    } else {
        let source = open_source(env_file, &vars, &args, rate, target.bucket()).await?;
        report.source = source.describe();
        let db = if args.database {
            let what = format!(
                "--database reads Mastodon's database of {}",
                env_file.display()
            );
            Some(connect(what).await?)
        } else {
            None
        };
        // A real run is recorded before its first upload, so a re-run after a kill knows
        // this journal is the target's even without file records (docs/reliability.md).
        let journal_ran_before = journal
            .started_runs("migrate", &target_key)
            .await
            .map_err(CommandError::fatal)?
            > 0;
        if !args.dry_run {
            recorder = Some(
                RunRecorder::start(&journal, &key, tally.clone())
                    .await
                    .map_err(CommandError::fatal)?,
            );
        }
        let job = Migration {
            target: target.store(),
            key_prefix: target.key_prefix(),
            permission: target.permission(),
            source: &source,
            gate,
            journal: &journal,
            tally,
            target_id: &target_key,
            db: db.as_ref(),
            opts: CopyOptions {
                skip_cache: args.skip_cache,
                reupload_missing: args.reupload_missing,
                accept_empty_journal: args.accept_empty_journal,
                journal_ran_before,
                concurrency: args.concurrency as usize,
                threshold: multipart_threshold(
                    args.multipart_threshold,
                    target.bucket().and_then(|c| c.multipart_threshold),
                ),
            },
        };
        let result = async {
            // The copy streams the source (a shard copies the source files whose key it
            // owns: a hash of the key below the key prefix, the same in source and target).
            copy_all(&job, shard, &cancel, mode, &mut report).await?;
            if args.verify && !args.dry_run && report.fatal.is_none() {
                // --verify holds the listing (not streamed yet): enumerated again here.
                let (mut files, _) = source.files().await?;
                if let Some(s) = shard {
                    files.retain(|f| s.owns_key(&f.key));
                }
                verify(&job, &files, &mut report).await?;
            }
            Ok::<(), MigrateError>(())
        }
        .await;
        // Set before the record's outcome is read, which says "interrupted" as the
        // exit code will.
        report.interrupted = cancel.is_cancelled();
        if let Some(recorder) = recorder {
            let outcome = match &result {
                Ok(()) => report.exit_code(),
                Err(MigrateError::ForeignJournal { .. }) => ExitCode::Usage,
                Err(_) => ExitCode::Fatal,
            };
            recorder
                .finish(outcome.outcome(), report.run_counts())
                .await;
        }
        result?;
    }
    report.interrupted = cancel.is_cancelled();
    report.requests = target.store().limiter().stats();
    report.finish(started.elapsed());
    report.print(args.json);
    Ok(report.exit_code())
}
