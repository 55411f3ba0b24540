//! `migrate`'s copy pipeline: the journal diff of every source file
//! (`plan::migrate::diff`), the presence HEADs that keep deleted objects deleted and the
//! empty-journal refusal (docs/ARCHITECTURE.md invariant 11), aborting a killed run's
//! unfinished multipart uploads, then uploads on the pipeline engine (`pool/engine.rs`) through the dry-run
//! [`Gate`], journalled in batches. Fills a [`MigrateReport`] that `report/migrate.rs`
//! formats. `--verify` is `pool/verify.rs`, `--repair` `pool/repair.rs`.

use std::collections::HashSet;
use std::path::PathBuf;

use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use super::Gate;
use super::engine::{
    self, AfterFatal, Commit, Control, EngineOptions, Failed, FlushPolicy, Intake,
};
use crate::inventory::source::{Source, SourceFile, read_head};
use crate::inventory::standing::{still_named, vouched_standing};
use crate::journal::migrate::{FileRecord, FileState};
use crate::journal::{AnyJournal, Journal, JournalError, RunCounts, RunTally};
use crate::mastodon::{Db, DbError};
use crate::model::KeyPrefix;
use crate::plan::headers::{CACHE_CONTROL, content_type};
use crate::plan::migrate::{
    Diff, Journalled, SourceFacts, UploadAcl, deleted_at_source, diff, empty_journal_sample,
    is_stale_upload, multipart_keys, owed, refuses_empty_journal, skipped_by_cache, upload_acl,
};
use crate::plan::parse::parse_key;
use crate::report::migrate::MigrateReport;
use crate::report::{MAX_LISTED_FAILURES, Progress, ProgressMode};
use crate::store::{Body, Existing, ObjectHeaders, Store, StoreError};

/// Journal writes are grouped in transactions of this many files...
pub(super) const JOURNAL_BATCH: usize = 200;
/// ...or of what finished in this long, whichever comes first.
pub(super) const JOURNAL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Why a copy, verify or repair pass stopped (the command maps
/// [`MigrateError::ForeignJournal`] to exit 2, the rest to exit 3).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading or writing the journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A presence HEAD in the target failed (other than "not found").
    #[error("checking the target for files copied before")]
    Head(#[source] StoreError),
    /// The owner lookup of missing keys failed (`--database`).
    #[error("looking up the rows of missing keys: {0}")]
    Owners(DbError),
    /// Listing unfinished multipart uploads failed with a fatal error.
    #[error("listing unfinished multipart uploads")]
    ListUploads(#[source] StoreError),
    /// Listing the target bucket failed (`--repair`).
    #[error("listing the bucket: {0}")]
    Listing(StoreError),
    /// The journal knows nothing of the target but sampled source files are already in the
    /// bucket ([`crate::plan::migrate::refuses_empty_journal`]).
    #[error(
        "the journal {} knows nothing of this target, but the bucket already holds {present} of {sampled} sampled source files (e.g. {example}): it is not the journal of the earlier copy (the default one lives under the home of the user who ran it, {}). Uploading what is missing would bring back what Mastodon deleted in the bucket since. Pass --journal with the first pass's journal, or --accept-empty-journal to upload every missing file anyway",
        journal,
        state_dir.display()
    )]
    ForeignJournal {
        /// The journal (file path, or PostgreSQL location without password).
        journal: String,
        /// Sampled files found in the bucket.
        present: usize,
        /// Files sampled.
        sampled: usize,
        /// The first of those found.
        example: String,
        /// Where default journals live ([`crate::journal::state_dir`]).
        state_dir: PathBuf,
    },
}

/// Options of a copy pass (from the command line).
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// `--skip-cache`: leave `cache/` out.
    pub skip_cache: bool,
    /// `--reupload-missing`: upload what the journal holds as deleted in the bucket.
    pub reupload_missing: bool,
    /// `--accept-empty-journal`: skip the empty-journal refusal.
    pub accept_empty_journal: bool,
    /// The journal recorded an earlier (non-dry) run against this target, though perhaps no
    /// file: a run killed before its first journal commit. Such a journal is this
    /// migration's, so the empty-journal refusal does not apply.
    pub journal_ran_before: bool,
    /// Files uploaded (or HEADs, MD5s) at once.
    pub concurrency: usize,
    /// Files larger than this many bytes are uploaded in parts.
    pub threshold: u64,
}

/// One migration: where from, where to, and its journal.
pub struct Migration<'a> {
    /// The target: a bucket, or a folder on the local disk (bucket → disk, for admins
    /// leaving a provider).
    pub target: &'a dyn Store,
    /// The target's `S3_KEY_PREFIX` (none on the local disk).
    pub key_prefix: &'a KeyPrefix,
    /// The target's `S3_PERMISSION` (`None`: set but empty, no ACL is sent). A disk
    /// target passes `public-read`: the decision then says which files are private
    /// (written 0600, `store::Store::upload`).
    pub permission: Option<&'a str>,
    /// The source.
    pub source: &'a Source,
    /// The dry-run gate every upload and abort passes.
    pub gate: Gate,
    /// The journal.
    pub journal: &'a AnyJournal,
    /// The run record's progress: files uploaded, their bytes, files failed.
    pub tally: RunTally,
    /// The journal's name of the target (`plan::migrate::target_id`).
    pub target_id: &'a str,
    /// Mastodon's database (`--database`): suspension and moderation state.
    pub db: Option<&'a Db>,
    /// Options.
    pub opts: CopyOptions,
}

fn facts(f: &SourceFile) -> SourceFacts<'_> {
    SourceFacts {
        size: f.size,
        version: &f.version,
        world_readable: f.world_readable,
    }
}

/// The plan's view of a journal record.
pub(super) fn journalled(r: &FileRecord) -> Journalled<'_> {
    Journalled {
        size: r.size,
        version: &r.version,
        state: r.state,
        source_private: r.source_private,
    }
}

/// Copies every file of `files` that the journal diff says to upload; counts the rest.
/// Per-file failures are listed in `report`; a fatal store error (or a provider without
/// ACLs) stops intake and sets `report.fatal`. Errors: [`MigrateError`].
pub async fn copy_all(
    job: &Migration<'_>,
    files: &[SourceFile],
    cancel: &CancellationToken,
    mode: ProgressMode,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    let opts = job.opts;
    let dry_run = job.gate.is_dry_run();
    let known = job.journal.migrate_files(job.target_id).await?;
    // Only journalled keys: what deleted_at_source asks of it (a first pass holds none).
    let mut seen: HashSet<&str> = HashSet::new();
    let mut todo = Vec::new();
    let mut copied_before = Vec::new();
    let mut deleted_in_bucket = Vec::new();
    for f in files {
        if skipped_by_cache(&f.key, opts.skip_cache) {
            report.files_skipped_cache += 1;
            continue;
        }
        if known.contains_key(&f.key) {
            seen.insert(f.key.as_str());
        }
        report.files_total += 1;
        report.bytes_total += f.size;
        match diff(known.get(&f.key).map(journalled).as_ref(), &facts(f)) {
            // Never resurrected by a catch-up pass; only --reupload-missing puts it back.
            Diff::DeletedInBucket => deleted_in_bucket.push(f),
            Diff::Unchanged => report.files_unchanged += 1,
            Diff::Upload => todo.push(f),
            Diff::UploadIfPresent => {
                todo.push(f);
                copied_before.push(f);
            }
        }
    }
    // Changed at the source since the copy: uploaded again only over an object still
    // there (gone from the bucket means deleted there on purpose).
    if !opts.reupload_missing {
        let gone = missing_in_target(job, &copied_before).await?;
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
            if !dry_run {
                job.journal.record_migrated(job.target_id, &records).await?;
            }
            todo.retain(|f| !gone.contains(f.key.as_str()));
            deleted_in_bucket.extend(
                copied_before
                    .into_iter()
                    .filter(|f| gone.contains(f.key.as_str())),
            );
        }
    }
    let journal_empty = known.is_empty() && !opts.journal_ran_before;
    let sample = empty_journal_sample(journal_empty, opts.accept_empty_journal, &todo);
    if !sample.is_empty() {
        let missing = missing_in_target(job, &sample).await?;
        let present: Vec<&str> = sample
            .iter()
            .map(|f| f.key.as_str())
            .filter(|k| !missing.contains(*k))
            .collect();
        if refuses_empty_journal(&present) {
            return Err(MigrateError::ForeignJournal {
                journal: job.journal.location().to_owned(),
                present: present.len(),
                sampled: sample.len(),
                example: present[0].to_owned(),
                state_dir: crate::journal::state_dir(),
            });
        }
    }
    if opts.reupload_missing && !deleted_in_bucket.is_empty() {
        // With the database, only what a row still names is owed.
        let named = match job.db {
            Some(db) => {
                let keys: Vec<&str> = deleted_in_bucket.iter().map(|f| f.key.as_str()).collect();
                Some(still_named(db, &keys).await.map_err(MigrateError::Owners)?)
            }
            None => None,
        };
        let (back, left): (Vec<&SourceFile>, Vec<&SourceFile>) = deleted_in_bucket
            .into_iter()
            .partition(|f| owed(&f.key, named.as_ref()));
        todo.extend(back);
        deleted_in_bucket = left;
    }
    report.files_unchanged += deleted_in_bucket.len() as u64;
    report.deleted_in_bucket = deleted_in_bucket.len() as u64;
    report.deleted_in_bucket_keys = deleted_in_bucket
        .iter()
        .take(MAX_LISTED_FAILURES)
        .map(|f| f.key.clone())
        .collect();
    let gone = deleted_at_source(known.keys(), &seen, opts.skip_cache);
    report.deleted_at_source = gone.len() as u64;
    report.deleted_at_source_keys = gone
        .into_iter()
        .take(MAX_LISTED_FAILURES)
        .map(str::to_owned)
        .collect();

    if todo.iter().any(|f| f.size > opts.threshold) {
        abort_stale_uploads(job, &todo, cancel, report).await?;
    }
    // What the journal says this migration wrote may be replaced at the target; anything
    // else already there is kept (`store::Existing::Keep`).
    let ours: HashSet<&str> = todo
        .iter()
        .map(|f| f.key.as_str())
        .filter(|k| known.contains_key(k))
        .collect();
    upload_all(job, todo, &ours, cancel, mode, report).await
}

/// Uploads `todo` on the pipeline engine ([`engine::run`]): the files are the producer's
/// items, the upload the stage (`opts.concurrency` at once), and the in-order commit counts
/// each result and journals the uploaded files through [`Journal::record_migrated`] in
/// batches of [`JOURNAL_BATCH`] or every [`JOURNAL_INTERVAL`] (a dry run journals nothing).
/// A fatal store error (or a bucket refusing ACLs) stops intake; files already uploading
/// finish and are journalled. Errors: a journal write failed.
async fn upload_all<'f>(
    job: &Migration<'_>,
    todo: Vec<&'f SourceFile>,
    ours: &HashSet<&str>,
    cancel: &CancellationToken,
    mode: ProgressMode,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    let progress = Progress::start_unit("migrate", todo.len() as u64, "files", "copied", mode);
    let engine = EngineOptions {
        concurrency: job.opts.concurrency,
        // At a low --rate a batch of JOURNAL_BATCH takes long to fill, and a kill -9 would
        // lose all of it (uploaded again on the next run): the interval runs on a timer.
        flush: FlushPolicy {
            every: JOURNAL_BATCH,
            interval: Some(JOURNAL_INTERVAL),
        },
        // What was uploaded before a fatal error is journalled.
        after_fatal: AfterFatal::CommitFinished,
    };
    let producer = |mut intake: Intake<&'f SourceFile>| async move {
        for f in todo {
            if !intake.send(f).await {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let mut commit = UploadCommit {
        job,
        progress: &progress,
        report,
        batch: Vec::new(),
    };
    let outcome = engine::run(
        &engine,
        cancel,
        producer,
        |f: &SourceFile, ctl: Control| async move {
            let existing = if ours.contains(f.key.as_str()) {
                Existing::Replace
            } else {
                Existing::Keep
            };
            let result = upload(job, f, existing).await;
            if let Err(e) = &result
                && stops_the_run(e)
            {
                // No other upload starts; the cause is counted by the commit stage.
                ctl.stop_fatal();
            }
            Ok::<_, Failed<_, MigrateError>>((f, result))
        },
        &mut commit,
    )
    .await;
    if let Some(e) = outcome.fatal {
        return Err(e);
    }
    progress.finish();
    Ok(())
}

/// Whether an upload error stops the whole copy: the bucket refuses ACLs, or no other
/// request can succeed either ([`StoreError::is_fatal`]).
fn stops_the_run(e: &StoreError) -> bool {
    e.code() == "AccessControlListNotSupported" || e.is_fatal()
}

/// The commit stage of a copy: counts each finished upload, in order, into the report and
/// the progress bar, and journals the uploaded files at each flush.
struct UploadCommit<'a, 'j> {
    job: &'a Migration<'j>,
    progress: &'a Progress,
    report: &'a mut MigrateReport,
    /// Uploaded since the last flush.
    batch: Vec<FileRecord>,
}

impl Commit<(&SourceFile, Result<UploadAcl, StoreError>), MigrateError> for UploadCommit<'_, '_> {
    async fn commit(
        &mut self,
        (f, result): (&SourceFile, Result<UploadAcl, StoreError>),
    ) -> Result<(), MigrateError> {
        let report = &mut *self.report;
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
                self.progress.add(1, 0, f.size);
                self.job.tally.add(RunCounts {
                    objects: 1,
                    bytes: f.size,
                    ..RunCounts::default()
                });
                if !self.job.gate.is_dry_run() {
                    self.batch.push(FileRecord {
                        key: f.key.clone(),
                        size: f.size,
                        version: f.version.clone(),
                        state: FileState::Uploaded,
                        source_private: Some(up.source_private),
                    });
                }
            }
            Err(e) if stops_the_run(&e) => {
                report.fatal.get_or_insert_with(|| fatal_message(&e));
                self.progress.add(1, 1, 0);
            }
            Err(e) => {
                report.fail(&f.key, e.code(), e.to_string());
                self.progress.add(1, 1, 0);
                self.job.tally.add(RunCounts {
                    failures: 1,
                    ..RunCounts::default()
                });
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), MigrateError> {
        let batch = std::mem::take(&mut self.batch);
        Ok(self
            .job
            .journal
            .record_migrated(self.job.target_id, &batch)
            .await?)
    }
}

fn fatal_message(e: &StoreError) -> String {
    if e.code() == "AccessControlListNotSupported" {
        "the bucket does not accept ACLs (AccessControlListNotSupported): set S3_PERMISSION= (empty) in the env file and give the bucket a public-read bucket policy, then run migrate again".to_owned()
    } else {
        e.to_string()
    }
}

/// The ACL for `f` (`plan::migrate::upload_acl`): the source's privacy, narrowed (and, for
/// a private source, widened) by the database's standing of the row when `--database` is
/// given. Errors: the source object vanished; the database could not answer
/// (`DatabaseUnavailable`, a per-file failure: the file is not copied).
async fn acl(job: &Migration<'_>, f: &SourceFile) -> Result<UploadAcl, StoreError> {
    let (public, acl_unreadable) = if job.permission.is_some() {
        job.source.is_public(f).await?
    } else {
        // No ACL is sent at all: nothing to decide (but journal what we know).
        (f.world_readable.unwrap_or(true), false)
    };
    let parsed = parse_key(&f.key, &KeyPrefix::default()).ok();
    let standing = match (job.db, &parsed) {
        // The database cannot answer (a restart, a failover): the file is not copied now.
        // Copying it private instead would journal it as done, and no later run would
        // publish it (the journal holds the source's privacy, not the database's
        // answer): found by `chaos_more::migrate_database_postgres_restarted_mid_run`.
        // As a per-file failure it is listed, not journalled, and the re-run copies it.
        (Some(db), Some(p)) if job.permission.is_some() => {
            Some(vouched_standing(db, &f.key, p).await.map_err(|e| {
                StoreError::Other {
                    code: "DatabaseUnavailable".to_owned(),
                    message: format!(
                        "the database could not tell whether this file may be public ({e}); not copied, run migrate again"
                    ),
                }
            })?)
        }
        _ => None,
    };
    Ok(upload_acl(
        &f.key,
        parsed.is_some(),
        job.permission,
        public,
        acl_unreadable,
        standing,
    ))
}

/// Uploads one file with Mastodon's headers through the gate; `existing` says whether an
/// object already at the target key may be replaced.
async fn upload(
    job: &Migration<'_>,
    f: &SourceFile,
    existing: Existing,
) -> Result<UploadAcl, StoreError> {
    let target_key = job.key_prefix.apply(f.key.clone());
    let (body, head) = match (job.source, &f.path, &f.source_key) {
        (Source::Dir(_), Some(path), _) => {
            let head = read_head(path).await?;
            (Body::File(path, f.size), head)
        }
        (Source::Bucket(store, _), _, Some(src_key)) => {
            (Body::Object(store.as_ref(), src_key, f.size), Vec::new())
        }
        _ => unreachable!("source files carry their path or source key"),
    };
    let uploaded = acl(job, f).await?;
    let headers = ObjectHeaders {
        content_type: content_type(&f.key, &head),
        cache_control: CACHE_CONTROL.to_owned(),
        acl: uploaded.acl.clone(),
    };
    job.gate
        .mutate(
            job.target
                .upload(&target_key, body, &headers, existing, job.opts.threshold),
            || Ok(()),
        )
        .await?;
    Ok(uploaded)
}

/// The keys of `files` that do not exist in the target (one HEAD, or stat, each, 8 at a
/// time).
/// Errors: a HEAD failed (other than "not found").
async fn missing_in_target(
    job: &Migration<'_>,
    files: &[&SourceFile],
) -> Result<HashSet<String>, MigrateError> {
    let heads: Vec<Result<Option<String>, StoreError>> = stream::iter(files.iter().copied())
        .map(|f| async move {
            let key = job.key_prefix.apply(f.key.clone());
            match job.target.head(&key).await {
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
        if let Some(k) = h.map_err(MigrateError::Head)? {
            missing.insert(k);
        }
    }
    Ok(missing)
}

/// Aborts the unfinished multipart uploads of keys this run is about to upload above the
/// multipart threshold, started before this run (a killed run's leftovers, billed as stored
/// parts until aborted; `plan::migrate::is_stale_upload`): one `ListMultipartUploads`
/// listing below the target's key prefix, then one `AbortMultipartUpload` each, through the
/// dry-run gate. Uploads of other keys are never touched. A disk target has no multipart
/// uploads (its killed writes' temporary files are removed by `Store::upload`). Errors:
/// the listing failed with a fatal error (a provider without the API only gets a warning).
async fn abort_stale_uploads(
    job: &Migration<'_>,
    todo: &[&SourceFile],
    cancel: &CancellationToken,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    let Some(target) = job.target.as_s3ext() else {
        return Ok(());
    };
    let started = chrono::Utc::now();
    let prefix = job
        .key_prefix
        .as_deref()
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    let big = multipart_keys(
        todo.iter().map(|f| (f.key.as_str(), f.size)),
        job.opts.threshold,
        &prefix,
    );
    let mut marker = None;
    let mut stale = Vec::new();
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let page = match target.list_uploads_page(&prefix, marker).await {
            Ok(p) => p,
            Err(e) if e.is_fatal() => return Err(MigrateError::ListUploads(e)),
            Err(e) => {
                tracing::warn!("cannot list unfinished multipart uploads ({e}); none aborted");
                return Ok(());
            }
        };
        stale.extend(
            page.uploads
                .into_iter()
                .filter(|u| is_stale_upload(u.key.as_str(), u.initiated, &big, started)),
        );
        match page.next {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    for u in stale {
        let done = job
            .gate
            .mutate(target.abort_upload(u.key.as_str(), &u.upload_id), || Ok(()))
            .await;
        match done {
            Ok(()) => report.stale_uploads_aborted += 1,
            Err(e) => tracing::warn!("could not abort the unfinished upload of {}: {e}", u.key),
        }
    }
    Ok(())
}
