//! `migrate --verify`: one HEAD per journalled object of this source, compared with the
//! journal (size, and MD5 where the ETag is a plain MD5 and the source is a local file),
//! classified by `plan::migrate` (`check_head`, `check_failure`, `missing_verdict`), on the
//! pipeline engine (`pool/engine.rs`): the journal's records are the producer's items, the
//! HEAD the stage, the in-order commit journals verified and mismatched objects in batches
//! like the copy; the missing ones are decided and journalled at the end. Fills the verify fields of a [`MigrateReport`].

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;

use super::copy::{JOURNAL_BATCH, JOURNAL_INTERVAL, MigrateError, Migration, journalled};
use super::engine::{self, AfterFatal, Commit, EngineOptions, Failed, FlushPolicy, Intake};
use crate::inventory::source::{Source, SourceFile, md5_file};
use crate::inventory::standing::still_named;
use crate::journal::Journal;
use crate::journal::migrate::{FileRecord, FileState};
use crate::plan::migrate::{
    HeadCheck, check_failure, check_head, missing_verdict, unchanged_at_source,
};
use crate::report::MAX_LISTED_FAILURES;
use crate::report::migrate::MigrateReport;

/// HEADs every journalled object of this source and compares size, and MD5 where the ETag
/// is a plain MD5 (single-part upload) and the source is a local file.
///
/// An object missing from the bucket whose file is unchanged at the source (or gone there
/// too) was deleted in the bucket since the copy (Mastodon deleted the media after the
/// switch): journalled [`FileState::DeletedInBucket`], listed, not a failure, never
/// uploaded again by a catch-up pass (case 3). With `--database` the database decides
/// instead: a missing key no row names any more is not owed; one a row still names is a
/// failure that `--reupload-missing` repairs. Errors: the journal, or the owner lookup.
pub async fn verify(
    job: &Migration<'_>,
    files: &[SourceFile],
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    let current: HashMap<&str, (u64, &str)> = files
        .iter()
        .map(|f| (f.key.as_str(), (f.size, f.version.as_str())))
        .collect();
    let known = job.journal.migrate_files(job.target_id).await?;
    let engine = EngineOptions {
        concurrency: job.opts.concurrency,
        flush: FlushPolicy {
            every: JOURNAL_BATCH,
            interval: Some(JOURNAL_INTERVAL),
        },
        after_fatal: AfterFatal::CommitFinished,
    };
    let producer = |mut intake: Intake<FileRecord>| async move {
        for rec in known.into_values() {
            if !intake.send(rec).await {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let mut commit = VerifyCommit {
        job,
        report: &mut *report,
        batch: Vec::new(),
        missing: Vec::new(),
    };
    // Verify is not interrupted: every journalled object is checked.
    let outcome = engine::run(
        &engine,
        &CancellationToken::new(),
        producer,
        |rec: FileRecord, _| async move {
            let outcome = check(job, &rec).await;
            Ok::<_, Failed<_, MigrateError>>((rec, outcome))
        },
        &mut commit,
    )
    .await;
    if let Some(e) = outcome.fatal {
        return Err(e);
    }
    // The rest was journalled by the engine's last flush.
    let (mut missing, mut batch) = (commit.missing, commit.batch);
    // Which missing objects are owed.
    let named = match job.db {
        Some(db) => {
            let keys: Vec<&str> = missing.iter().map(|r| r.key.as_str()).collect();
            Some(still_named(db, &keys).await.map_err(MigrateError::Owners)?)
        }
        None => None,
    };
    missing.sort_by(|a, b| a.key.cmp(&b.key));
    report.deleted_in_bucket = 0;
    report.deleted_in_bucket_keys.clear();
    for mut rec in missing {
        let unchanged =
            unchanged_at_source(&journalled(&rec), current.get(rec.key.as_str()).copied());
        let verdict = missing_verdict(
            rec.state,
            unchanged,
            named.as_ref().map(|n| n.contains(&rec.key)),
        );
        match verdict.failure() {
            None => {
                report.deleted_in_bucket += 1;
                if report.deleted_in_bucket_keys.len() < MAX_LISTED_FAILURES {
                    report.deleted_in_bucket_keys.push(rec.key.clone());
                }
            }
            Some(message) => report.mismatch(&rec.key, "Missing".to_owned(), message.to_owned()),
        }
        rec.state = verdict.state();
        batch.push(rec);
    }
    Ok(job.journal.record_migrated(job.target_id, &batch).await?)
}

/// Compares one journalled object with the target: `Ok` when it matches, else the failure
/// code and message (`Missing` when it is not there). Size always; the MD5 where one is
/// known on both sides: a bucket target's ETag against the local source file, or a disk
/// target's file against the source bucket's ETag (one source HEAD, then the file read).
async fn check(job: &Migration<'_>, rec: &FileRecord) -> Result<(), (String, String)> {
    let path = job.source.local_path(&rec.key);
    let key = job.key_prefix.apply(rec.key.clone());
    let head = match job.target.head(&key).await {
        Err(e) => return Err(("HeadFailed".to_owned(), e.to_string())),
        Ok(head) => head,
    };
    // The MD5 the target must have, and whether there is a side to compute it on.
    let (etag, compare) = match (&head, &job.source) {
        (Some(h), _) if h.etag.is_some() => (h.etag.clone(), path.is_some()),
        (Some(h), Source::Bucket(src, prefix)) if h.size == rec.size => {
            let src_key = prefix.apply(rec.key.clone());
            match src.head(src_key.as_str()).await {
                Ok(Some(s)) => (s.etag, true),
                // Gone at the source, or unreachable: the size check stands.
                Ok(None) => (None, false),
                Err(e) => {
                    tracing::debug!("{}: source HEAD failed ({e}); size checked only", rec.key);
                    (None, false)
                }
            }
        }
        _ => (None, false),
    };
    let check = check_head(
        head.as_ref().map(|h| (h.size, etag.as_deref())),
        rec.size,
        compare,
    );
    let other_md5 = match (&check, &path) {
        // The file is gone or unreadable now: the size check stands.
        (HeadCheck::CompareMd5(_), Some(p)) => md5_file(p).await.ok(),
        (HeadCheck::CompareMd5(_), None) => match job.target.md5(&key).await {
            Ok(m) => m,
            Err(e) => return Err(("ReadFailed".to_owned(), e.to_string())),
        },
        _ => None,
    };
    match check_failure(&check, other_md5.as_deref()) {
        Some(failure) => Err(failure),
        None if check == HeadCheck::Missing => {
            Err(("Missing".to_owned(), "not in the target".to_owned()))
        }
        None => Ok(()),
    }
}

/// The commit stage of a verify pass: counts each checked object, in order, and journals
/// the verified and mismatched ones at each flush; the missing ones wait for the owner
/// lookup at the end.
struct VerifyCommit<'a, 'j> {
    job: &'a Migration<'j>,
    report: &'a mut MigrateReport,
    /// Checked since the last flush.
    batch: Vec<FileRecord>,
    /// Not in the target.
    missing: Vec<FileRecord>,
}

impl Commit<(FileRecord, Result<(), (String, String)>), MigrateError> for VerifyCommit<'_, '_> {
    async fn commit(
        &mut self,
        (mut rec, outcome): (FileRecord, Result<(), (String, String)>),
    ) -> Result<(), MigrateError> {
        self.report.verified += 1;
        match outcome {
            Ok(()) => {
                rec.state = FileState::Verified;
                self.batch.push(rec);
            }
            Err((code, _)) if code == "Missing" => self.missing.push(rec),
            Err((code, message)) => {
                self.report.mismatch(&rec.key, code, message);
                rec.state = FileState::Mismatch;
                self.batch.push(rec);
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
