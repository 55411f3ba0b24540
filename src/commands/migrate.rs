//! `mastomedia migrate`: copy `public/system` (or another provider's bucket) into the
//! bucket of the env file, resumably, with Mastodon's headers; `--verify`; `--repair`.
//!
//! Order: target config and bucket check → journal → source enumeration → plan (journal
//! diff) → uploads through the pool's bounded executor and the dry-run gate, journalled in
//! batches → optional verification → summary. A provider that rejects ACLs stops the run
//! at the first upload with the setting to change (A1).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use futures::stream::{self, StreamExt};
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{CommandError, interrupt_token};
use crate::cli::migrate::Args;
use crate::config::{Config, S3Config, StorageConfig, media_root};
use crate::inventory::source::{SourceFile, list_bucket, walk_dir};
use crate::journal::migrate::{FileRecord, FileState};
use crate::journal::{Journal as _, SqliteJournal as Journal, default_path};
use crate::mastodon::Db;
use crate::plan::headers::{CACHE_CONTROL, Standing, acl_for, content_type, decide_acl};
use crate::plan::layout::KeyPrefix;
use crate::plan::parse::parse_key;
use crate::pool::{Gate, bounded};
use crate::report::Summary as _;
use crate::report::migrate::MigrateReport;
use crate::report::{ExitCode, Progress, ProgressMode};
use crate::store::s3::{Body, ObjectHeaders, S3Store};
use crate::store::{Limiter, Store, StoreError};

/// Journal writes are grouped in transactions of this many files...
const JOURNAL_BATCH: usize = 200;
/// ...or of what finished in this long, whichever comes first.
const JOURNAL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs `migrate` and returns the exit code; prints the summary itself.
pub async fn run(env_file: &Path, args: Args, quiet: bool) -> Result<ExitCode, CommandError> {
    let started = Instant::now();
    let (cfg, vars) = Config::load_with_vars(env_file)?;
    let StorageConfig::S3(target_cfg) = &cfg.storage else {
        return Err(CommandError::usage(anyhow!(
            "migrate copies into the bucket of {}: set S3_ENABLED=true, S3_BUCKET, S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY there (the source is --from DIR or --from-env OLD_ENV)",
            env_file.display()
        )));
    };
    let target = S3Store::new(
        target_cfg,
        Limiter::new(args.rate, args.concurrency as usize * 2),
    );
    target.check().await.map_err(|e| {
        CommandError::fatal(anyhow!(
            "target bucket (--env-file {}): {e}",
            env_file.display()
        ))
    })?;
    // The key prefix is part of the target: journal rows hold keys without it, so after a
    // change of S3_KEY_PREFIX they must not claim the objects are already there.
    let mut target_id = format!(
        "{}/{}",
        target_cfg.endpoint.as_deref().unwrap_or("aws"),
        target_cfg.bucket
    );
    if let Some(prefix) = target_cfg.key_prefix.as_deref() {
        target_id = format!("{target_id}/{prefix}");
    }
    let journal_path = args
        .journal
        .clone()
        .unwrap_or_else(|| default_path("migrate", &target_id));
    let journal = Journal::open(&journal_path)
        .await
        .map_err(CommandError::usage)?;
    let mut report = MigrateReport {
        dry_run: args.dry_run,
        target: target.describe(),
        journal: journal_path.display().to_string(),
        remove_command: remove_command(target_cfg),
        ..MigrateReport::default()
    };
    let gate = Gate::new(args.dry_run);
    let cancel = interrupt_token();
    let mode = ProgressMode::detect(quiet);

    if args.repair {
        report.source = report.target.clone();
        repair(
            &cfg,
            target_cfg,
            &target,
            &args,
            gate,
            &cancel,
            mode,
            &mut report,
        )
        .await?;
    } else {
        let source = Source::open(env_file, &vars, &args, target_cfg).await?;
        report.source = source.describe();
        let db = if args.database {
            Some(Db::connect(&cfg.database, 4).await.map_err(|e| {
                CommandError::fatal(anyhow!(
                    "--database reads Mastodon's database of {}: {e}",
                    env_file.display()
                ))
            })?)
        } else {
            None
        };
        let files = source.files(&mut report).await?;
        let ctx = Copy {
            target: &target,
            target_cfg,
            source: &source,
            gate,
            threshold: args.multipart_threshold,
            db: db.as_ref(),
        };
        copy_all(
            &ctx,
            &journal,
            &target_id,
            &files,
            &args,
            &cancel,
            mode,
            &mut report,
        )
        .await?;
        if args.verify && !args.dry_run && report.fatal.is_none() {
            verify(&ctx, &journal, &target_id, &files, &args, &mut report).await?;
        }
    }
    report.interrupted = cancel.is_cancelled();
    report.requests = target.limiter().stats();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    let secs = report.elapsed_seconds.max(0.001);
    report.files_per_second = report.files_uploaded as f64 / secs;
    report.mib_per_second = report.bytes_uploaded as f64 / 1048576.0 / secs;
    report.print(args.json);
    Ok(report.exit_code())
}

/// The AWS CLI command that deletes one key of the target bucket, `{}` standing for the
/// key below `S3_KEY_PREFIX` (see [`MigrateReport::remove_command_for`]).
fn remove_command(cfg: &S3Config) -> String {
    let endpoint = cfg
        .endpoint
        .as_deref()
        .map(|e| format!(" --endpoint-url {e}"))
        .unwrap_or_default();
    let prefix = cfg
        .key_prefix
        .as_deref()
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    format!("aws{endpoint} s3 rm 's3://{}/{prefix}{{}}'", cfg.bucket)
}

/// Where files come from.
enum Source {
    Dir(PathBuf),
    Bucket(Box<S3Store>, Box<S3Config>),
}

impl Source {
    async fn open(
        env_file: &Path,
        vars: &crate::config::Vars,
        args: &Args,
        target_cfg: &S3Config,
    ) -> Result<Self, CommandError> {
        if let Some(old_env) = &args.from_env {
            let old = Config::load(old_env)?;
            let StorageConfig::S3(old_cfg) = old.storage else {
                return Err(CommandError::usage(anyhow!(
                    "--from-env {}: that env file has no bucket (S3_ENABLED is not true); for local files use --from DIR",
                    old_env.display()
                )));
            };
            // Copying a bucket onto itself rewrites every object for nothing.
            if old_cfg.endpoint == target_cfg.endpoint
                && old_cfg.bucket == target_cfg.bucket
                && old_cfg.key_prefix == target_cfg.key_prefix
            {
                return Err(CommandError::usage(anyhow!(
                    "--from-env {} names the target bucket itself ({}): pass the old provider's env file, or use --repair to fix the headers of objects already there",
                    old_env.display(),
                    target_cfg.bucket
                )));
            }
            let store = S3Store::new(
                &old_cfg,
                Limiter::new(args.rate, args.concurrency as usize * 2),
            );
            store.check().await.map_err(|e| {
                CommandError::fatal(anyhow!(
                    "source bucket (--from-env {}): {e}",
                    old_env.display()
                ))
            })?;
            return Ok(Source::Bucket(Box::new(store), Box::new(old_cfg)));
        }
        let dir = args
            .from
            .clone()
            .unwrap_or_else(|| media_root(env_file, vars));
        let dir = dir.canonicalize().map_err(|e| {
            CommandError::usage(anyhow!(
                "source folder {} cannot be opened ({e}): pass --from with Mastodon's public/system folder",
                dir.display()
            ))
        })?;
        if !dir.is_dir() {
            return Err(CommandError::usage(anyhow!(
                "source {} is not a folder: pass --from DIR",
                dir.display()
            )));
        }
        Ok(Source::Dir(dir))
    }

    fn describe(&self) -> String {
        match self {
            Source::Dir(d) => format!("file://{}", d.display()),
            Source::Bucket(s, _) => s.describe(),
        }
    }

    async fn files(&self, report: &mut MigrateReport) -> Result<Vec<SourceFile>, CommandError> {
        match self {
            Source::Dir(dir) => {
                let dir = dir.clone();
                let (files, skipped) = tokio::task::spawn_blocking(move || walk_dir(&dir))
                    .await
                    .map_err(|e| CommandError::fatal(anyhow!("walking the source: {e}")))?
                    .map_err(|e| CommandError::usage(anyhow!("source: {e}")))?;
                for s in skipped {
                    if s.failed {
                        report.fail(&s.key, "Unreadable", s.reason);
                    } else {
                        tracing::warn!("skipping {}: {}", s.key, s.reason);
                        report.symlinks_skipped += 1;
                    }
                }
                Ok(files)
            }
            Source::Bucket(store, cfg) => list_bucket(store.as_ref(), &cfg.key_prefix)
                .await
                .map_err(|e| CommandError::fatal(anyhow!("listing the source bucket: {e}"))),
        }
    }
}

struct Copy<'a> {
    target: &'a S3Store,
    target_cfg: &'a S3Config,
    source: &'a Source,
    gate: Gate,
    threshold: u64,
    /// Mastodon's database (`--database`): suspension and moderation state.
    db: Option<&'a Db>,
}

/// How one file was (or would be) uploaded.
struct Uploaded {
    /// The source was private (file not world-readable, private or unreadable ACL).
    source_private: bool,
    /// The source ACL could not be read (taken as private).
    acl_unreadable: bool,
    /// The canned ACL sent (`None`: no ACL header).
    acl: Option<String>,
}

impl Copy<'_> {
    /// Whether the source of `f` is public: a world-readable file, or an object whose ACL
    /// grants READ to everyone. `Ok((public, unreadable))`; an ACL that cannot be read
    /// counts as private. Errors: the object vanished (`NotFound`).
    async fn source_public(&self, f: &SourceFile) -> Result<(bool, bool), StoreError> {
        match (self.source, &f.source_key) {
            (Source::Bucket(store, _), Some(src_key)) => match store.is_public(src_key).await {
                Ok(public) => Ok((public, false)),
                Err(StoreError::NotFound) => Err(StoreError::NotFound),
                Err(e) => {
                    tracing::warn!(
                        "{}: the source ACL cannot be read ({e}); copied private",
                        f.key
                    );
                    Ok((false, true))
                }
            },
            _ => Ok((f.world_readable.unwrap_or(false), false)),
        }
    }

    /// The ACL for `f` ([`decide_acl`]): the source's privacy, narrowed (and, for a private
    /// source, widened) by the database's standing of the row when `--database` is given.
    async fn acl(&self, f: &SourceFile) -> Result<Uploaded, StoreError> {
        let permission = self.target_cfg.permission.as_deref();
        let (public, acl_unreadable) = if permission.is_some() {
            self.source_public(f).await?
        } else {
            // No ACL is sent at all: nothing to decide (but journal what we know).
            (f.world_readable.unwrap_or(true), false)
        };
        let parsed = parse_key(&f.key, &KeyPrefix::default()).ok();
        let standing = match (self.db, &parsed) {
            (Some(db), Some(p)) if permission.is_some() => {
                Some(vouched_standing(db, &f.key, p).await.unwrap_or_else(|e| {
                    tracing::warn!("{}: {e}; copied private", f.key);
                    Standing::Hidden
                }))
            }
            _ => None,
        };
        Ok(Uploaded {
            source_private: !public,
            acl_unreadable,
            acl: decide_acl(&f.key, parsed.is_some(), permission, public, standing),
        })
    }

    async fn upload(&self, f: &SourceFile) -> Result<Uploaded, StoreError> {
        let target_key = self.target_cfg.key_prefix.apply(f.key.clone());
        let (body, head) = match (self.source, &f.path, &f.source_key) {
            (Source::Dir(_), Some(path), _) => {
                let head = read_head(path).await?;
                (Body::File(path, f.size), head)
            }
            (Source::Bucket(store, _), _, Some(src_key)) => {
                (Body::Object(store.as_ref(), src_key, f.size), Vec::new())
            }
            _ => unreachable!("source files carry their path or source key"),
        };
        let uploaded = self.acl(f).await?;
        let headers = ObjectHeaders {
            content_type: content_type(&f.key, &head),
            cache_control: CACHE_CONTROL.to_owned(),
            acl: uploaded.acl.clone(),
        };
        self.gate
            .mutate(
                self.target
                    .upload(target_key.as_str(), body, &headers, self.threshold),
                || Ok(()),
            )
            .await?;
        Ok(uploaded)
    }
}

async fn read_head(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_failure(path, &e))?;
    let mut buf = vec![0u8; 64];
    let mut n = 0;
    while n < buf.len() {
        let read = file
            .read(&mut buf[n..])
            .await
            .map_err(|e| io_failure(path, &e))?;
        if read == 0 {
            break;
        }
        n += read;
    }
    buf.truncate(n);
    Ok(buf)
}

fn io_failure(path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Other {
        code: if e.kind() == std::io::ErrorKind::PermissionDenied {
            "EACCES".into()
        } else {
            format!("{:?}", e.kind())
        },
        message: format!("{}: {e}", path.display()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn copy_all(
    ctx: &Copy<'_>,
    journal: &Journal,
    target_id: &str,
    files: &[SourceFile],
    args: &Args,
    cancel: &CancellationToken,
    mode: ProgressMode,
    report: &mut MigrateReport,
) -> Result<(), CommandError> {
    let known = journal
        .migrate_files(target_id)
        .await
        .map_err(CommandError::fatal)?;
    let mut seen: HashSet<&str> = HashSet::new();
    let mut todo = Vec::new();
    let mut deleted_in_bucket = Vec::new();
    for f in files {
        if args.skip_cache && f.key.starts_with("cache/") {
            report.files_skipped_cache += 1;
            continue;
        }
        seen.insert(f.key.as_str());
        report.files_total += 1;
        report.bytes_total += f.size;
        match known.get(&f.key) {
            Some(r)
                if r.size == f.size
                    && r.version == f.version
                    && r.state == FileState::DeletedInBucket =>
            {
                // Deleted in the bucket since the copy, on purpose: never resurrected by a
                // catch-up pass (case 3); only --reupload-missing puts it back.
                deleted_in_bucket.push(f);
            }
            Some(r)
                if r.size == f.size
                    && r.version == f.version
                    && r.state != FileState::Mismatch
                    && !privacy_changed(r, f) =>
            {
                report.files_unchanged += 1;
            }
            _ => todo.push(f),
        }
    }
    // A file copied before whose source changed (a new mtime: `touch`, a copy without -t)
    // is uploaded again only over an object still there: gone from the bucket means
    // deleted there on purpose, whatever the source did since (never resurrected).
    if !args.reupload_missing {
        let copied_before: Vec<&SourceFile> = todo
            .iter()
            .copied()
            .filter(|f| {
                known
                    .get(&f.key)
                    .is_some_and(|r| matches!(r.state, FileState::Uploaded | FileState::Verified))
            })
            .collect();
        let gone = missing_in_target(ctx, &copied_before).await?;
        if !gone.is_empty() {
            let records: Vec<FileRecord> = copied_before
                .iter()
                .filter(|f| gone.contains(f.key.as_str()))
                .map(|f| FileRecord {
                    key: f.key.clone(),
                    size: f.size,
                    version: f.version.clone(),
                    state: FileState::DeletedInBucket,
                    source_private: known.get(&f.key).and_then(|r| r.source_private),
                })
                .collect();
            if !args.dry_run {
                journal
                    .record_migrated(target_id, &records)
                    .await
                    .map_err(CommandError::fatal)?;
            }
            todo.retain(|f| !gone.contains(f.key.as_str()));
            deleted_in_bucket.extend(
                copied_before
                    .into_iter()
                    .filter(|f| gone.contains(f.key.as_str())),
            );
        }
    }
    // A journal that knows nothing of this target while the bucket already holds the
    // source's files is not this migration's journal: uploading what is missing would
    // bring back what Mastodon deleted since the copy.
    if known.is_empty() && !todo.is_empty() && !args.accept_empty_journal {
        let step = (todo.len() / SAMPLE).max(1);
        let sample: Vec<&SourceFile> = todo.iter().copied().step_by(step).take(SAMPLE).collect();
        let missing = missing_in_target(ctx, &sample).await?;
        let present: Vec<&str> = sample
            .iter()
            .map(|f| f.key.as_str())
            .filter(|k| !missing.contains(*k))
            .collect();
        if !present.is_empty() {
            return Err(CommandError::usage(anyhow!(
                "the journal {} knows nothing of this target, but the bucket already holds {} of {} sampled source files (e.g. {}): it is not the journal of the earlier copy (the default one lives under the home of the user who ran it, {}). Uploading what is missing would bring back what Mastodon deleted in the bucket since. Pass --journal with the first pass's journal, or --accept-empty-journal to upload every missing file anyway",
                journal.path().display(),
                present.len(),
                sample.len(),
                present[0],
                crate::journal::state_dir().display()
            )));
        }
    }
    if args.reupload_missing && !deleted_in_bucket.is_empty() {
        // With the database, only what a row still names is owed.
        let owed = match ctx.db {
            Some(db) => {
                let keys: Vec<&str> = deleted_in_bucket.iter().map(|f| f.key.as_str()).collect();
                Some(still_named(db, &keys).await?)
            }
            None => None,
        };
        let (back, left): (Vec<&SourceFile>, Vec<&SourceFile>) = deleted_in_bucket
            .into_iter()
            .partition(|f| owed.as_ref().is_none_or(|o| o.contains(&f.key)));
        todo.extend(back);
        deleted_in_bucket = left;
    }
    report.files_unchanged += deleted_in_bucket.len() as u64;
    report.deleted_in_bucket = deleted_in_bucket.len() as u64;
    report.deleted_in_bucket_keys = deleted_in_bucket
        .iter()
        .take(crate::report::MAX_LISTED_FAILURES)
        .map(|f| f.key.clone())
        .collect();
    let mut gone: Vec<&String> = known
        .keys()
        .filter(|k| !(seen.contains(k.as_str()) || (args.skip_cache && k.starts_with("cache/"))))
        .collect();
    gone.sort();
    report.deleted_at_source = gone.len() as u64;
    report.deleted_at_source_keys = gone
        .into_iter()
        .take(crate::report::MAX_LISTED_FAILURES)
        .cloned()
        .collect();

    if todo.iter().any(|f| f.size > ctx.threshold) {
        abort_stale_uploads(ctx, &todo, cancel, report).await?;
    }

    let progress = Progress::start_unit("migrate", todo.len() as u64, "files", "copied", mode);
    let stop = cancel.child_token();
    let mut results = std::pin::pin!(bounded(
        stream::iter(todo),
        args.concurrency as usize,
        stop.clone(),
        |f: &SourceFile| async move { (f, ctx.upload(f).await) },
    ));
    let mut batch: Vec<FileRecord> = Vec::new();
    // Flush on a timer too: at a low --rate a batch of JOURNAL_BATCH takes long to fill,
    // and a kill -9 would lose all of it (uploaded again on the next run).
    let mut tick = tokio::time::interval(JOURNAL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (f, result) = tokio::select! {
            next = results.next() => match next {
                Some(r) => r,
                None => break,
            },
            _ = tick.tick() => {
                journal
                    .record_migrated(target_id, &batch)
                    .await
                    .map_err(CommandError::fatal)?;
                batch.clear();
                continue;
            }
        };
        match result {
            Ok(up) => {
                report.files_uploaded += 1;
                report.bytes_uploaded += f.size;
                if up.acl.as_deref() == Some("private") {
                    report.files_uploaded_private += 1;
                }
                if up.acl_unreadable {
                    report.source_acl_unreadable += 1;
                }
                progress.add(1, 0, f.size);
                if !args.dry_run {
                    batch.push(FileRecord {
                        key: f.key.clone(),
                        size: f.size,
                        version: f.version.clone(),
                        state: FileState::Uploaded,
                        source_private: Some(up.source_private),
                    });
                }
            }
            Err(e) if e.code() == "AccessControlListNotSupported" || e.is_fatal() => {
                stop.cancel();
                report.fatal.get_or_insert_with(|| fatal_message(&e));
                progress.add(1, 1, 0);
            }
            Err(e) => {
                report.fail(&f.key, e.code(), e.to_string());
                progress.add(1, 1, 0);
            }
        }
        if batch.len() >= JOURNAL_BATCH {
            journal
                .record_migrated(target_id, &batch)
                .await
                .map_err(CommandError::fatal)?;
            batch.clear();
        }
    }
    journal
        .record_migrated(target_id, &batch)
        .await
        .map_err(CommandError::fatal)?;
    progress.finish();
    Ok(())
}

/// Whether a journalled, otherwise unchanged file changed its privacy at the source since
/// the copy (a folder source only: Mastodon chmods the files of a suspended account to
/// 0600 and back on unsuspension, leaving the mtime alone). A row journalled before the
/// privacy was recorded counts as copied public (what migrate then did).
fn privacy_changed(rec: &FileRecord, f: &SourceFile) -> bool {
    match f.world_readable {
        Some(readable) => rec.source_private.unwrap_or(false) == readable,
        None => false,
    }
}

fn fatal_message(e: &StoreError) -> String {
    if e.code() == "AccessControlListNotSupported" {
        "the bucket does not accept ACLs (AccessControlListNotSupported): set S3_PERMISSION= (empty) in the env file and give the bucket a public-read bucket policy, then run migrate again".to_owned()
    } else {
        e.to_string()
    }
}

/// HEADs every journalled object of this source and compares size, and MD5 where the ETag
/// is a plain MD5 (single-part upload) and the source is a local file.
///
/// An object missing from the bucket whose file is unchanged at the source (or gone there
/// too) was deleted in the bucket since the copy (Mastodon deleted the media after the
/// switch): journalled [`FileState::DeletedInBucket`], listed, not a failure, never
/// uploaded again by a catch-up pass (case 3). With `--database` the database decides
/// instead: a missing key no row names any more is not owed; one a row still names is a
/// failure that `--reupload-missing` repairs.
async fn verify(
    ctx: &Copy<'_>,
    journal: &Journal,
    target_id: &str,
    files: &[SourceFile],
    args: &Args,
    report: &mut MigrateReport,
) -> Result<(), CommandError> {
    let current: HashMap<&str, (u64, &str)> = files
        .iter()
        .map(|f| (f.key.as_str(), (f.size, f.version.as_str())))
        .collect();
    let known = journal
        .migrate_files(target_id)
        .await
        .map_err(CommandError::fatal)?;
    let paths: HashMap<String, Option<PathBuf>> = match ctx.source {
        Source::Dir(root) => known
            .keys()
            .map(|k| (k.clone(), Some(root.join(k))))
            .collect(),
        Source::Bucket(..) => known.keys().map(|k| (k.clone(), None)).collect(),
    };
    let checks = stream::iter(known.values().cloned()).map(|rec| {
        let path = paths.get(&rec.key).cloned().flatten();
        async move {
            let key = ctx.target_cfg.key_prefix.apply(rec.key.clone());
            let outcome = match ctx.target.head(key.as_str()).await {
                Err(e) => Err(("HeadFailed".to_owned(), e.to_string())),
                Ok(None) => Err(("Missing".to_owned(), "not in the bucket".to_owned())),
                Ok(Some(h)) if h.size != rec.size => Err((
                    "SizeMismatch".to_owned(),
                    format!("bucket has {} bytes, journal {}", h.size, rec.size),
                )),
                Ok(Some(h)) => match (h.etag.filter(|t| is_md5(t)), path) {
                    (Some(etag), Some(p)) => match md5_file(&p).await {
                        Ok(local) if local == etag => Ok(()),
                        Ok(local) => Err((
                            "Md5Mismatch".to_owned(),
                            format!("bucket {etag}, file {local}"),
                        )),
                        // The file is gone or unreadable now: the size check stands.
                        Err(_) => Ok(()),
                    },
                    _ => Ok(()),
                },
            };
            (rec, outcome)
        }
    });
    let mut checks = std::pin::pin!(checks.buffer_unordered(args.concurrency as usize));
    let mut batch = Vec::new();
    let mut missing = Vec::new();
    while let Some((mut rec, outcome)) = checks.next().await {
        report.verified += 1;
        match outcome {
            Ok(()) => {
                rec.state = FileState::Verified;
                batch.push(rec);
            }
            Err((code, _)) if code == "Missing" => missing.push(rec),
            Err((code, message)) => {
                verify_failure(report, &rec.key, code, message);
                rec.state = FileState::Mismatch;
                batch.push(rec);
            }
        }
    }
    // Which missing objects are owed.
    let named = match ctx.db {
        Some(db) => {
            let keys: Vec<&str> = missing.iter().map(|r| r.key.as_str()).collect();
            Some(still_named(db, &keys).await?)
        }
        None => None,
    };
    missing.sort_by(|a, b| a.key.cmp(&b.key));
    report.deleted_in_bucket = 0;
    report.deleted_in_bucket_keys.clear();
    for mut rec in missing {
        let unchanged = current
            .get(rec.key.as_str())
            .is_none_or(|(size, version)| *size == rec.size && *version == rec.version);
        let copied = rec.state != FileState::Mismatch && unchanged;
        let owed = match &named {
            Some(named) => named.contains(&rec.key),
            None => !copied,
        };
        if !owed {
            rec.state = FileState::DeletedInBucket;
            report.deleted_in_bucket += 1;
            if report.deleted_in_bucket_keys.len() < crate::report::MAX_LISTED_FAILURES {
                report.deleted_in_bucket_keys.push(rec.key.clone());
            }
        } else if copied {
            // A row still names it: Mastodon links to a missing object.
            verify_failure(
                report,
                &rec.key,
                "Missing".to_owned(),
                "not in the bucket, but a row of the database still names it: `migrate --reupload-missing --database` puts it back".to_owned(),
            );
            rec.state = FileState::DeletedInBucket;
        } else {
            verify_failure(
                report,
                &rec.key,
                "Missing".to_owned(),
                "not in the bucket (changed at the source since the copy: the next run uploads it)"
                    .to_owned(),
            );
            rec.state = FileState::Mismatch;
        }
        batch.push(rec);
    }
    journal
        .record_migrated(target_id, &batch)
        .await
        .map_err(CommandError::fatal)
}

fn verify_failure(report: &mut MigrateReport, key: &str, code: String, message: String) {
    report.verify_mismatches += 1;
    if report.failures.len() < crate::report::MAX_LISTED_FAILURES {
        report.failures.push(crate::report::migrate::FileFailure {
            key: key.to_owned(),
            code,
            message,
        });
    }
}

/// Source files sampled in the target when the journal is empty.
const SAMPLE: usize = 16;

/// The keys of `files` that do not exist in the target bucket (one HEAD each, 8 at a time).
/// Errors: a HEAD failed (other than "not found").
async fn missing_in_target(
    ctx: &Copy<'_>,
    files: &[&SourceFile],
) -> Result<HashSet<String>, CommandError> {
    let heads: Vec<Result<Option<String>, StoreError>> = stream::iter(files.iter().copied())
        .map(|f| async move {
            let key = ctx.target_cfg.key_prefix.apply(f.key.clone());
            match ctx.target.head(key.as_str()).await {
                Ok(None) => Ok(Some(f.key.clone())),
                Ok(Some(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut missing = HashSet::new();
    for h in heads {
        match h {
            Ok(Some(k)) => {
                missing.insert(k);
            }
            Ok(None) => {}
            Err(e) => {
                return Err(CommandError::fatal(
                    anyhow!(e).context("checking the target for files copied before"),
                ));
            }
        }
    }
    Ok(missing)
}

/// Aborts the unfinished multipart uploads of keys this run is about to upload above the
/// multipart threshold, started before this run (a killed run's leftovers, billed as stored
/// parts until aborted): one `ListMultipartUploads` listing below the target's key prefix,
/// then one `AbortMultipartUpload` each, through the dry-run gate. Uploads of other keys are
/// never touched. Errors: the listing failed with a fatal error (a provider without the
/// API only gets a warning).
async fn abort_stale_uploads(
    ctx: &Copy<'_>,
    todo: &[&SourceFile],
    cancel: &CancellationToken,
    report: &mut MigrateReport,
) -> Result<(), CommandError> {
    let started = chrono::Utc::now();
    let prefix = ctx
        .target_cfg
        .key_prefix
        .as_deref()
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    let big: HashSet<String> = todo
        .iter()
        .filter(|f| f.size > ctx.threshold)
        .map(|f| format!("{prefix}{}", f.key))
        .collect();
    let mut marker = None;
    let mut stale = Vec::new();
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let page = match ctx.target.list_uploads_page(&prefix, marker).await {
            Ok(p) => p,
            Err(e) if e.is_fatal() => {
                return Err(CommandError::fatal(
                    anyhow!(e).context("listing unfinished multipart uploads"),
                ));
            }
            Err(e) => {
                tracing::warn!("cannot list unfinished multipart uploads ({e}); none aborted");
                return Ok(());
            }
        };
        stale.extend(
            page.uploads.into_iter().filter(|u| {
                big.contains(u.key.as_str()) && u.initiated.is_some_and(|t| t < started)
            }),
        );
        match page.next {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    for u in stale {
        let done = ctx
            .gate
            .mutate(
                ctx.target.abort_stale_upload(u.key.as_str(), &u.upload_id),
                || Ok(()),
            )
            .await;
        match done {
            Ok(()) => report.stale_uploads_aborted += 1,
            Err(e) => tracing::warn!("could not abort the unfinished upload of {}: {e}", u.key),
        }
    }
    Ok(())
}

/// Of `keys` (without `S3_KEY_PREFIX`), those a row of Mastodon's database still names: the
/// row's exact key, a variant of it, or a shared partition where a neighbour may (as
/// `orphans` decides, `plan::orphans::classify`). Keys outside the layout, or of tables
/// this database cannot answer for, are kept (the database cannot say they are not owed).
/// A key of a local row that now stores another file (a replaced avatar) is not named.
async fn still_named(db: &Db, keys: &[&str]) -> Result<HashSet<String>, CommandError> {
    use crate::plan::orphans::{Class, Kept, classify};
    let prefix = KeyPrefix::default();
    let mut named = HashSet::new();
    for chunk in keys.chunks(500) {
        let mut parsed = Vec::new();
        for k in chunk {
            match parse_key(k, &prefix) {
                Ok(p) => parsed.push((*k, p)),
                Err(_) => {
                    named.insert((*k).to_owned());
                }
            }
        }
        let only: Vec<_> = parsed.iter().map(|(_, p)| p.clone()).collect();
        let owners = crate::inventory::owners::Owners::lookup(db, &only)
            .await
            .map_err(|e| {
                CommandError::fatal(anyhow!("looking up the rows of missing keys: {e}"))
            })?;
        for (k, p) in &parsed {
            let candidates = owners.candidates(p);
            let class = classify(k, p, candidates.as_deref(), &prefix);
            if matches!(
                class,
                Class::Referenced(Kept::Owned | Kept::Variant | Kept::Uncertain)
            ) {
                named.insert((*k).to_owned());
            }
        }
    }
    Ok(named)
}

fn is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn md5_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `--repair`: every object below the key prefix gets Mastodon's Content-Type (when it
/// is missing or generic) and Cache-Control, and its ACL ([`decide_acl`]): backups and
/// imports private; keys outside Mastodon's layout keep their ACL; otherwise public objects
/// stay public and private ones private, unless `--repair-acl`, which asks the database:
/// media of suspended accounts and moderated posts become private, and a private object
/// becomes public only when its row exists in good standing (A3). One COPY per object
/// that needs it, none otherwise.
#[allow(clippy::too_many_arguments)]
async fn repair(
    cfg: &Config,
    target_cfg: &S3Config,
    target: &S3Store,
    args: &Args,
    gate: Gate,
    cancel: &CancellationToken,
    mode: ProgressMode,
    report: &mut MigrateReport,
) -> Result<(), CommandError> {
    let prefix = target_cfg
        .key_prefix
        .as_deref()
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    let db = if args.repair_acl {
        Some(Arc::new(Db::connect(&cfg.database, 4).await.map_err(
            |e| {
                CommandError::fatal(anyhow!(
                    "--repair-acl checks suspended accounts and moderated posts in the database: {e}"
                ))
            },
        )?))
    } else {
        None
    };
    let progress = Progress::start_unit("repair", 0, "objects", "checked", mode);
    let mut token = None;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let page = target
            .list_page(&prefix, false, None, token)
            .await
            .map_err(|e| CommandError::fatal(anyhow!("listing the bucket: {e}")))?;
        let keys: Vec<String> = page
            .objects
            .iter()
            .map(|o| o.key.as_str().to_owned())
            .collect();
        let mut results = std::pin::pin!(bounded(
            stream::iter(keys),
            args.concurrency as usize,
            cancel.clone(),
            |key: String| {
                let db = db.clone();
                let prefix = prefix.clone();
                async move {
                    let out = repair_one(
                        target,
                        target_cfg,
                        &key,
                        &key[prefix.len()..],
                        args,
                        gate,
                        db.as_deref(),
                    )
                    .await;
                    (key, out)
                }
            },
        ));
        while let Some((key, out)) = results.next().await {
            report.repair_checked += 1;
            progress.add(1, u64::from(out.is_err()), 0);
            match out {
                Ok(Repaired::Fixed) => report.repaired += 1,
                Ok(Repaired::FixedLeftPrivate) => {
                    report.repaired += 1;
                    report.left_private += 1;
                }
                Ok(Repaired::LeftPrivate) => report.left_private += 1,
                Ok(Repaired::Fine) | Ok(Repaired::Vanished) => {}
                Err(e) => report.fail(&key, e.code(), e.to_string()),
            }
        }
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    progress.finish();
    Ok(())
}

enum Repaired {
    Fine,
    Fixed,
    FixedLeftPrivate,
    LeftPrivate,
    Vanished,
}

async fn repair_one(
    target: &S3Store,
    target_cfg: &S3Config,
    full_key: &str,
    key: &str,
    args: &Args,
    gate: Gate,
    db: Option<&Db>,
) -> Result<Repaired, StoreError> {
    // An object deleted since the listing is not an error (L3).
    let Some(head) = target.head(full_key).await? else {
        return Ok(Repaired::Vanished);
    };
    let generic =
        |ct: &str| ct.is_empty() || ct == "binary/octet-stream" || ct == "application/octet-stream";
    let want_ct = match head.content_type.as_deref() {
        Some(ct) if !generic(ct) => ct.to_owned(),
        _ => {
            let bytes = match target
                .get_stream(full_key, (head.size > 0).then(|| (0, head.size.min(64))))
                .await
            {
                Ok(s) => s
                    .collect()
                    .await
                    .map(|b| b.into_bytes().to_vec())
                    .unwrap_or_default(),
                Err(StoreError::NotFound) => return Ok(Repaired::Vanished),
                Err(e) => return Err(e),
            };
            content_type(key, &bytes)
        }
    };
    let permission = target_cfg.permission.as_deref();
    let (acl, acl_changes, left_private) = match permission {
        None => (None, false, false),
        Some(p) => {
            let public = match target.is_public(full_key).await {
                Ok(public) => public,
                Err(StoreError::NotFound) => return Ok(Repaired::Vanished),
                Err(e) => return Err(e),
            };
            let parsed = parse_key(key, &KeyPrefix::default()).ok();
            let standing = match (args.repair_acl, &parsed) {
                (true, Some(parsed)) => Some(standing(db, key, parsed).await),
                _ => None,
            };
            let want = decide_acl(key, parsed.is_some(), Some(p), public, standing);
            let want_public = want.as_deref() != Some("private");
            // "Left private": a private object this run could have published (it is not a
            // backup or import, and the permission is a public one) but did not.
            let left_private =
                !want_public && !public && acl_for(key, Some(p)).as_deref() != Some("private");
            (want, want_public != public, left_private)
        }
    };
    let ct_changes = head.content_type.as_deref() != Some(want_ct.as_str());
    let cc_changes = head.cache_control.as_deref() != Some(CACHE_CONTROL);
    if !(ct_changes || cc_changes || acl_changes) {
        return Ok(if left_private {
            Repaired::LeftPrivate
        } else {
            Repaired::Fine
        });
    }
    let headers = ObjectHeaders {
        content_type: want_ct,
        cache_control: CACHE_CONTROL.to_owned(),
        acl,
    };
    match gate
        .mutate(target.repair_in_place(full_key, &headers), || Ok(()))
        .await
    {
        Ok(()) if left_private => Ok(Repaired::FixedLeftPrivate),
        Ok(()) => Ok(Repaired::Fixed),
        Err(StoreError::NotFound) => Ok(Repaired::Vanished),
        Err(e) => Err(e),
    }
}

/// The database's standing of `key` ([`vouched_standing`]). Without a database, or when
/// it cannot answer, [`Standing::Hidden`] (keep private).
async fn standing(
    db: Option<&Db>,
    key: &str,
    parsed: &crate::plan::parse::ParsedKey<'_>,
) -> Standing {
    let Some(db) = db else {
        return Standing::Hidden;
    };
    vouched_standing(db, key, parsed).await.unwrap_or_else(|e| {
        tracing::warn!("{e}: left private");
        Standing::Hidden
    })
}

/// [`Db::standing`] of the rows in `key`'s partition, where [`Standing::Good`] also needs a
/// row that names this very file ([`crate::plan::orphans::row_names`]): a row in the same
/// folder (another file name, a neighbour in a shared 13–17-digit partition) never vouches
/// for publishing a private object. `key` is without `S3_KEY_PREFIX`. Errors: a query.
async fn vouched_standing(
    db: &Db,
    key: &str,
    parsed: &crate::plan::parse::ParsedKey<'_>,
) -> Result<Standing, crate::mastodon::DbError> {
    let s = db.standing(parsed.attachment, &parsed.id_ranges()).await?;
    if s != Standing::Good {
        return Ok(s);
    }
    let owners = crate::inventory::owners::Owners::lookup(db, std::slice::from_ref(parsed)).await?;
    let named = owners
        .candidates(parsed)
        .is_some_and(|c| crate::plan::orphans::row_names(key, parsed, &c, &KeyPrefix::default()));
    Ok(if named {
        Standing::Good
    } else {
        Standing::NoRow
    })
}
