//! `migrate`'s copy pipeline: the journal diff of every source file
//! (`plan::migrate::diff`), the presence HEADs that keep deleted objects deleted and the
//! empty-journal refusal (docs/ARCHITECTURE.md invariant 11), aborting a killed run's
//! unfinished multipart uploads, then uploads on the pipeline engine (`pool/engine.rs`) through the dry-run
//! [`Gate`], journalled in batches. Fills a [`MigrateReport`] that `report/migrate.rs`
//! formats. `--verify` is `pool/verify.rs`, `--repair` `pool/repair.rs`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use super::Gate;
use super::engine::{
    self, AfterFatal, Commit, Control, EngineOptions, Failed, FlushPolicy, Intake,
};
use crate::inventory::source::{
    SkippedFile, Source, SourceError, SourceFile, SourceItem, read_head,
};
use crate::inventory::standing::{still_named, vouched_standing};
use crate::journal::migrate::{FileRecord, FileState};
use crate::journal::{AnyJournal, FileCursor, Journal, JournalError, RunCounts, RunTally};
use crate::mastodon::{Db, DbError};
use crate::model::{KeyPrefix, Shard};
use crate::plan::headers::{CACHE_CONTROL, content_type};
use crate::plan::migrate::{
    Diff, Journalled, SAMPLE_FOLDERS, SourceFacts, SpreadSample, UploadAcl, deleted_at_source,
    diff, is_stale_upload, owed, refuses_empty_journal, sample_folder, skipped_by_cache,
    upload_acl,
};
use crate::plan::parse::parse_key;
use crate::report::migrate::MigrateReport;
use crate::report::{MAX_LISTED_FAILURES, Progress, ProgressMode};
use crate::store::{Body, Existing, ObjectHeaders, Store, StoreError, UploadMeta};

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
    /// The source could not be enumerated (or came out of key order).
    #[error(transparent)]
    Source(#[from] SourceError),
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

/// What the producer of a copy pass counted while merging the source with the journal
/// (folded into the report at the end).
#[derive(Debug, Default)]
struct PlanTally {
    files_total: u64,
    bytes_total: u64,
    files_skipped_cache: u64,
    files_unchanged: u64,
    /// Journalled as deleted in the bucket and not uploaded again.
    deleted_in_bucket: u64,
    deleted_in_bucket_keys: Vec<String>,
    deleted_at_source: u64,
    deleted_at_source_keys: Vec<String>,
}

impl PlanTally {
    fn deleted_in_bucket(&mut self, key: &str) {
        self.deleted_in_bucket += 1;
        if self.deleted_in_bucket_keys.len() < MAX_LISTED_FAILURES {
            self.deleted_in_bucket_keys.push(key.to_owned());
        }
    }

    /// A journalled `key` the merge found no source file for
    /// ([`crate::plan::migrate::deleted_at_source`]'s rule: `--skip-cache` keys do not count).
    fn journalled_only(&mut self, key: &str, skip_cache: bool) {
        if deleted_at_source([key], &HashSet::new(), skip_cache).is_empty() {
            return;
        }
        self.deleted_at_source += 1;
        if self.deleted_at_source_keys.len() < MAX_LISTED_FAILURES {
            self.deleted_at_source_keys.push(key.to_owned());
        }
    }
}

/// One item of the copy pipeline, in key order.
enum CopyItem {
    /// An entry the folder walk skipped: listed (unreadable) or warned of (symlink).
    Skipped(SkippedFile),
    /// A file the journal diff says to upload.
    Upload {
        file: SourceFile,
        /// The journal records the key for this target: an object there may be replaced.
        ours: bool,
        /// Changed at the source since the copy ([`Diff::UploadIfPresent`]): HEAD first,
        /// uploaded only over an object still there.
        if_present: bool,
        /// The journal's `source_private` (kept when journalled deleted in the bucket).
        source_private: Option<bool>,
    },
}

/// What the stage did with one [`CopyItem`].
enum CopyDone {
    Skipped(SkippedFile),
    /// Gone from the bucket since the copy: journalled deleted in the bucket, not uploaded.
    Gone {
        file: SourceFile,
        source_private: Option<bool>,
    },
    Uploaded {
        file: SourceFile,
        /// Stale multipart uploads of its key aborted first.
        aborted: u64,
        result: Result<UploadAcl, StoreError>,
    },
}

/// Copies every source file that the journal diff says to upload; counts the rest.
///
/// The source ([`Source::stream`], key byte order, a `shard`'s own keys only) is merged
/// with the journal read in keyset pages in the same order ([`FileCursor`]), so each
/// file's diff ([`diff`]) needs only its own record and journalled keys no longer at the
/// source fall out of the merge ([`deleted_at_source`]): memory is bounded by pages and
/// the pipeline, not the tree. When the journal knows nothing of the target, a first
/// streamed pass samples the source evenly ([`SpreadSample`]) and the run refuses before
/// any upload if a sampled file is already in the bucket (invariant 11). The merge is the
/// producer of the pipeline engine ([`engine::run`]); the stage HEADs the files changed
/// at the source since the copy (uploaded only over an object still there), aborts a
/// killed run's multipart uploads of the key, and uploads; the in-order commit counts and
/// journals in batches (200 files or 500 ms; a dry run journals
/// nothing). Per-file failures are listed in `report`; a fatal store error (or a provider
/// without ACLs) stops intake and sets `report.fatal`. Errors: [`MigrateError`].
pub async fn copy_all(
    job: &Migration<'_>,
    shard: Option<Shard>,
    cancel: &CancellationToken,
    mode: ProgressMode,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    let opts = job.opts;
    let started = chrono::Utc::now();
    let journal_empty = !opts.journal_ran_before
        && job
            .journal
            .migrate_files_page(job.target_id, None, 1)
            .await?
            .is_empty();
    // The first pass, when it runs, counts what is to upload (everything: the journal is
    // empty); a catch-up pass does not know it before its end (a counter, not a bar).
    let total = if journal_empty && !opts.accept_empty_journal {
        refuse_foreign_journal(job, shard).await?
    } else {
        0
    };
    let progress = Progress::start_unit("migrate", total, "files", "copied", mode);
    let plan = std::sync::Mutex::new(PlanTally::default());
    let stale = StaleUploads {
        started,
        listed: tokio::sync::OnceCell::new(),
    };
    let engine = EngineOptions {
        concurrency: opts.concurrency,
        // At a low --rate a batch of JOURNAL_BATCH takes long to fill, and a kill -9 would
        // lose all of it (uploaded again on the next run): the interval runs on a timer.
        flush: FlushPolicy {
            every: JOURNAL_BATCH,
            interval: Some(JOURNAL_INTERVAL),
        },
        // What was uploaded before a fatal error is journalled.
        after_fatal: AfterFatal::CommitFinished,
    };
    let plan_ref = &plan;
    let producer = |intake: Intake<CopyItem>| plan_copy(job, shard, intake, plan_ref);
    let mut commit = UploadCommit {
        job,
        progress: &progress,
        report,
        batch: Vec::new(),
        gone_keys: Vec::new(),
        gone: 0,
    };
    let stale = &stale;
    let outcome = engine::run(
        &engine,
        cancel,
        producer,
        |item: CopyItem, ctl: Control| async move {
            let CopyItem::Upload {
                file,
                ours,
                if_present,
                source_private,
            } = item
            else {
                let CopyItem::Skipped(s) = item else {
                    unreachable!()
                };
                return Ok(CopyDone::Skipped(s));
            };
            let fatal = |e| {
                ctl.stop_fatal();
                Failed::nothing(e)
            };
            if if_present {
                let key = job.key_prefix.apply(file.key.clone());
                match job.target.head(&key).await {
                    Ok(None) => {
                        return Ok(CopyDone::Gone {
                            file,
                            source_private,
                        });
                    }
                    Ok(Some(_)) => {}
                    Err(e) => return Err(fatal(MigrateError::Head(e))),
                }
            }
            let aborted = if file.size > job.opts.threshold {
                stale.abort_for(job, &file.key, &ctl).await.map_err(fatal)?
            } else {
                0
            };
            let existing = if ours {
                Existing::Replace
            } else {
                Existing::Keep
            };
            let result = upload(job, &file, existing).await;
            if let Err(e) = &result
                && stops_the_run(e)
            {
                // No other upload starts; the cause is counted by the commit stage.
                ctl.stop_fatal();
            }
            Ok::<_, Failed<_, MigrateError>>(CopyDone::Uploaded {
                file,
                aborted,
                result,
            })
        },
        &mut commit,
    )
    .await;
    let (gone, gone_keys) = (commit.gone, std::mem::take(&mut commit.gone_keys));
    let plan = plan.into_inner().unwrap_or_else(|p| p.into_inner());
    report.files_total += plan.files_total;
    report.bytes_total += plan.bytes_total;
    report.files_skipped_cache += plan.files_skipped_cache;
    let deleted_in_bucket = plan.deleted_in_bucket + gone;
    report.files_unchanged += plan.files_unchanged + deleted_in_bucket;
    report.deleted_in_bucket = deleted_in_bucket;
    report.deleted_in_bucket_keys = plan
        .deleted_in_bucket_keys
        .into_iter()
        .chain(gone_keys)
        .take(MAX_LISTED_FAILURES)
        .collect();
    report.deleted_at_source = plan.deleted_at_source;
    report.deleted_at_source_keys = plan.deleted_at_source_keys;
    if let Some(e) = outcome.fatal {
        return Err(e);
    }
    // The source or the journal could not be read (what was sent is done and journalled).
    outcome.produced?;
    progress.finish();
    Ok(())
}

/// The producer of a copy pass: the source stream merged with the journal cursor, each
/// file's [`diff`] deciding whether it is counted (unchanged, skipped, journalled deleted
/// in the bucket) or sent to the stage; journalled keys the merge passes without a source
/// file are deleted at the source. With `--reupload-missing`, the files journalled as
/// deleted in the bucket are held until the end (only those), then the owed ones
/// ([`owed`], with `--database` what a row still names) are sent last. Returns `Ok(false)`
/// when intake stopped. Errors: the source or the journal could not be read, the source
/// came out of key order, the database could not be asked.
async fn plan_copy(
    job: &Migration<'_>,
    shard: Option<Shard>,
    mut intake: Intake<CopyItem>,
    plan: &std::sync::Mutex<PlanTally>,
) -> Result<bool, MigrateError> {
    let opts = job.opts;
    let tally = || plan.lock().unwrap_or_else(|p| p.into_inner());
    let mut source = job.source.stream();
    let mut journal = FileCursor::new(job.journal, job.target_id);
    let mut back: Vec<(SourceFile, Option<bool>)> = Vec::new();
    let mut previous = String::new();
    while let Some(item) = source.next().await? {
        let f = match item {
            SourceItem::Skipped(s) => {
                if shard.is_none_or(|sh| sh.owns_key(&s.key))
                    && !intake.send(CopyItem::Skipped(s)).await
                {
                    return Ok(false);
                }
                continue;
            }
            SourceItem::File(f) => f,
        };
        if shard.is_some_and(|sh| !sh.owns_key(&f.key)) {
            continue;
        }
        if !previous.is_empty() && f.key.as_str() <= previous.as_str() {
            return Err(MigrateError::Source(SourceError::Order {
                previous,
                key: f.key,
            }));
        }
        previous.clear();
        previous.push_str(&f.key);
        // The journal's records before this key have no source file.
        let rec = loop {
            match journal.peek().await? {
                Some(r) if r.key.as_str() < f.key.as_str() => {
                    let r = journal.take().expect("peeked");
                    tally().journalled_only(&r.key, opts.skip_cache);
                }
                Some(r) if r.key == f.key => break journal.take(),
                _ => break None,
            }
        };
        if skipped_by_cache(&f.key, opts.skip_cache) {
            tally().files_skipped_cache += 1;
            continue;
        }
        let verdict = diff(rec.as_ref().map(journalled).as_ref(), &facts(&f));
        let source_private = rec.as_ref().and_then(|r| r.source_private);
        let item = {
            let mut t = tally();
            t.files_total += 1;
            t.bytes_total += f.size;
            match verdict {
                // Never resurrected by a catch-up pass; only --reupload-missing puts it back.
                Diff::DeletedInBucket if opts.reupload_missing => {
                    back.push((f, source_private));
                    None
                }
                Diff::DeletedInBucket => {
                    t.deleted_in_bucket(&f.key);
                    None
                }
                Diff::Unchanged => {
                    t.files_unchanged += 1;
                    None
                }
                Diff::Upload => Some(CopyItem::Upload {
                    file: f,
                    ours: rec.is_some(),
                    if_present: false,
                    source_private,
                }),
                // Changed at the source since the copy: uploaded again only over an object
                // still there (gone from the bucket means deleted there on purpose).
                Diff::UploadIfPresent => Some(CopyItem::Upload {
                    file: f,
                    ours: true,
                    if_present: !opts.reupload_missing,
                    source_private,
                }),
            }
        };
        if let Some(item) = item
            && !intake.send(item).await
        {
            return Ok(false);
        }
    }
    while journal.peek().await?.is_some() {
        let r = journal.take().expect("peeked");
        tally().journalled_only(&r.key, opts.skip_cache);
    }
    if back.is_empty() {
        return Ok(true);
    }
    // With the database, only what a row still names is owed.
    let named = match job.db {
        Some(db) => {
            let keys: Vec<&str> = back.iter().map(|(f, _)| f.key.as_str()).collect();
            Some(still_named(db, &keys).await.map_err(MigrateError::Owners)?)
        }
        None => None,
    };
    let (owed_back, left): (Vec<_>, Vec<_>) = back
        .into_iter()
        .partition(|(f, _)| owed(&f.key, named.as_ref()));
    for (f, _) in &left {
        tally().deleted_in_bucket(&f.key);
    }
    for (f, source_private) in owed_back {
        let item = CopyItem::Upload {
            file: f,
            ours: true,
            if_present: false,
            source_private,
        };
        if !intake.send(item).await {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The empty-journal refusal (invariant 11): a first streamed pass over the source (the
/// shard's keys, without `--skip-cache`'s) keeps at most [`crate::plan::migrate::SAMPLE`]
/// files spread evenly over all of it ([`SpreadSample`], O(1) memory) and the first and
/// last file of each top-level folder ([`sample_folder`], at most [`SAMPLE_FOLDERS`]
/// folders), which are HEADed;
/// any already in the bucket refuses the run before anything is uploaded (an interrupt
/// meanwhile leaves the copy pass nothing to start). Returns how many files
/// the pass saw (all to upload: the progress total). Errors:
/// [`MigrateError::ForeignJournal`], a HEAD or the source failed.
async fn refuse_foreign_journal(
    job: &Migration<'_>,
    shard: Option<Shard>,
) -> Result<u64, MigrateError> {
    let mut sampler = SpreadSample::default();
    // The first and last file of each top-level folder, in source order.
    let mut ends: Vec<SourceFile> = Vec::new();
    let mut folders = 0usize;
    let mut prev: Option<SourceFile> = None;
    let mut source = job.source.stream();
    while let Some(item) = source.next().await? {
        let SourceItem::File(f) = item else { continue };
        if shard.is_some_and(|sh| !sh.owns_key(&f.key))
            || skipped_by_cache(&f.key, job.opts.skip_cache)
        {
            continue;
        }
        let new_folder = prev
            .as_ref()
            .is_none_or(|p| sample_folder(&p.key) != sample_folder(&f.key));
        if new_folder {
            if let Some(last) = prev.take()
                && folders <= SAMPLE_FOLDERS
            {
                ends.push(last);
            }
            folders += 1;
            if folders <= SAMPLE_FOLDERS {
                ends.push(f.clone());
            }
        }
        // Journal empty: every file is to upload (`Diff::Upload`).
        sampler.offer_with(|| f.clone());
        prev = Some(f);
    }
    if let Some(last) = prev
        && folders <= SAMPLE_FOLDERS
    {
        ends.push(last);
    }
    let offered = sampler.offered() as u64;
    let mut sample = sampler.finish();
    sample.extend(ends);
    sample.sort_by(|a, b| a.key.cmp(&b.key));
    sample.dedup_by(|a, b| a.key == b.key);
    if sample.is_empty() {
        return Ok(offered);
    }
    let refs: Vec<&SourceFile> = sample.iter().collect();
    let missing = missing_in_target(job, &refs).await?;
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
    Ok(offered)
}

/// A killed run's unfinished multipart uploads below the target's key prefix, listed once
/// (at the first file this run uploads in parts) and aborted key by key before that key's
/// upload.
struct StaleUploads {
    /// When this run started: only uploads initiated before are stale.
    started: chrono::DateTime<chrono::Utc>,
    /// Full target key → its stale uploads (not yet aborted).
    listed: tokio::sync::OnceCell<std::sync::Mutex<HashMap<String, Vec<UploadMeta>>>>,
}

impl StaleUploads {
    /// Aborts the unfinished multipart uploads of `key` (relative to the key prefix)
    /// started before this run (`plan::migrate::is_stale_upload`; billed as stored parts
    /// until aborted), through the dry-run gate, and returns how many. The first call
    /// lists them all (`ListMultipartUploads`); uploads of other keys are never touched. A
    /// disk target has none (its killed writes' temporary files are removed by
    /// `Store::upload`). Errors: the listing failed with a fatal error (a provider without
    /// the API only gets a warning).
    async fn abort_for(
        &self,
        job: &Migration<'_>,
        key: &str,
        ctl: &Control,
    ) -> Result<u64, MigrateError> {
        let Some(target) = job.target.as_s3ext() else {
            return Ok(0);
        };
        let prefix = job
            .key_prefix
            .as_deref()
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        let listed = self
            .listed
            .get_or_try_init(|| async {
                let mut marker = None;
                let mut stale: HashMap<String, Vec<UploadMeta>> = HashMap::new();
                loop {
                    if ctl.intake_stopped() {
                        break;
                    }
                    let page = match target.list_uploads_page(&prefix, marker).await {
                        Ok(p) => p,
                        Err(e) if e.is_fatal() => return Err(MigrateError::ListUploads(e)),
                        Err(e) => {
                            tracing::warn!(
                                "cannot list unfinished multipart uploads ({e}); none aborted"
                            );
                            return Ok(std::sync::Mutex::new(HashMap::new()));
                        }
                    };
                    for u in page.uploads {
                        stale.entry(u.key.as_str().to_owned()).or_default().push(u);
                    }
                    match page.next {
                        Some(m) => marker = Some(m),
                        None => break,
                    }
                }
                Ok(std::sync::Mutex::new(stale))
            })
            .await?;
        let full = format!("{prefix}{key}");
        let big = HashSet::from([full.clone()]);
        let uploads = listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&full)
            .unwrap_or_default();
        let mut aborted = 0;
        for u in uploads {
            if !is_stale_upload(u.key.as_str(), u.initiated, &big, self.started) {
                continue;
            }
            let done = job
                .gate
                .mutate(target.abort_upload(u.key.as_str(), &u.upload_id), || Ok(()))
                .await;
            match done {
                Ok(()) => aborted += 1,
                Err(e) => tracing::warn!("could not abort the unfinished upload of {}: {e}", u.key),
            }
        }
        Ok(aborted)
    }
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
    /// Uploaded (or found gone from the bucket) since the last flush.
    batch: Vec<FileRecord>,
    /// Files found gone from the bucket by the stage's HEAD, and the first of their keys.
    gone: u64,
    gone_keys: Vec<String>,
}

impl Commit<CopyDone, MigrateError> for UploadCommit<'_, '_> {
    async fn commit(&mut self, done: CopyDone) -> Result<(), MigrateError> {
        let report = &mut *self.report;
        let (f, aborted, result) = match done {
            CopyDone::Skipped(s) => {
                if s.failed {
                    report.fail(&s.key, "Unreadable", s.reason);
                } else {
                    tracing::warn!("skipping {}: {}", s.key, s.reason);
                    report.symlinks_skipped += 1;
                }
                return Ok(());
            }
            CopyDone::Gone {
                file,
                source_private,
            } => {
                self.gone += 1;
                if self.gone_keys.len() < MAX_LISTED_FAILURES {
                    self.gone_keys.push(file.key.clone());
                }
                if !self.job.gate.is_dry_run() {
                    self.batch.push(FileRecord {
                        key: file.key,
                        size: file.size,
                        version: file.version,
                        state: FileState::DeletedInBucket,
                        source_private,
                    });
                }
                return Ok(());
            }
            CopyDone::Uploaded {
                file,
                aborted,
                result,
            } => (file, aborted, result),
        };
        report.stale_uploads_aborted += aborted;
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
                        key: f.key,
                        size: f.size,
                        version: f.version,
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
