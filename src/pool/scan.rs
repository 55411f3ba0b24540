//! The orphan scan pipeline (`mastomedia orphans`): one listing in key order, cut into
//! batches of the store's batch limit; batches processed `concurrency` at a time (parse
//! every key with [`parse_key`], one owner lookup per table per batch
//! ([`Owners::lookup`]), classify with [`classify`], delete the deletable ones older than
//! `min_age_days` through the dry-run [`Gate`] via [`super::delete_with_retries_locked`]); results
//! applied and the journal position moved in key order, so it never passes a batch that
//! is not finished (`docs/reference/provider-quirks.md#l1`). Runs on the pipeline engine ([`super::engine`]).
//!
//! What may be deleted: exact listed keys that the parser placed in Mastodon's layout and
//! whose batch lookup proved unowned (orphans; stale copies only with `include_stale`),
//! never a prefix, never an unrecognised or referenced key, never a young object.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::engine::{self, AfterFatal, Commit, EngineOptions, Failed, FlushPolicy, Intake};
use super::{Gate, HeldLock, delete_with_retries_locked};
use crate::inventory::owners::Owners;
use crate::journal::{Journal, JournalError, RunCounts, RunTally};
use crate::mastodon::{Db, DbError};
use crate::model::Shard;
use crate::plan::layout::{KeyPrefix, ObjectKey};
use crate::plan::orphans::{Class, classify, too_young};
use crate::plan::ownership::{NEWER_KEY_GRACE_MINUTES, OwnershipStats, above_max_id, snowflake_ms};
use crate::plan::parse::{ParsedKey, Unrecognised, parse_key};
use crate::report::Progress;
use crate::report::orphans::{Action, KeyFailure, OrphansReport};
use crate::store::{DeleteOutcome, ObjectMeta, Store, StoreError};
use tokio_util::sync::CancellationToken;

/// Attempts per key for retryable delete failures, and the first backoff.
const KEY_ATTEMPTS: u32 = 4;
const RETRY_BASE: Duration = Duration::from_millis(500);

/// The database side of the scan: who owns the keys of a batch.
pub trait OwnerLookup: Sync {
    /// The rows owning `keys`' partitions ([`Owners::lookup`] on Mastodon's database).
    /// Errors: the lookup failed (fatal).
    fn owners(
        &self,
        keys: &[ParsedKey<'_>],
    ) -> impl Future<Output = Result<Owners, DbError>> + Send;
}

impl OwnerLookup for Db {
    async fn owners(&self, keys: &[ParsedKey<'_>]) -> Result<Owners, DbError> {
        Owners::lookup(self, keys).await
    }
}

/// Settings of one scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// `S3_KEY_PREFIX` (stripped before parsing).
    pub key_prefix: KeyPrefix,
    /// The listing prefix (with `S3_KEY_PREFIX`).
    pub prefix: String,
    /// Start after this key.
    pub start_after: Option<String>,
    /// Delete deletable objects (orphans; stale copies with `include_stale`).
    pub delete: bool,
    /// Stale copies are deletable too.
    pub include_stale: bool,
    /// Objects younger than this are never deleted.
    pub min_age_days: f64,
    /// The dry-run gate every delete passes.
    pub gate: Gate,
    /// Batches in flight at once.
    pub concurrency: usize,
    /// The journal's name for the storage (`s3://bucket@host`, `file:///root`), with the
    /// shard (`JobKey::journal_target`).
    pub target: String,
    /// `--shard K/N`: only listed keys this shard owns ([`Shard::owns_key`] of the key
    /// below `S3_KEY_PREFIX`) are classified; owners are still looked up in the whole
    /// database, so a key is never an orphan because its row falls in another shard.
    pub shard: Option<Shard>,
    /// The highest id of each table when the scan started (`None`: empty table); keys
    /// above it count as [`OwnershipStats::newer_keys`]. Tables not in the map are not
    /// checked.
    pub max_ids: Arc<BTreeMap<&'static str, Option<i64>>>,
    /// When the scan started: objects modified within [`NEWER_KEY_GRACE_MINUTES`] before
    /// it never count as newer keys.
    pub started: DateTime<Utc>,
    /// The run record's progress: objects and bytes scanned, failed deletes, per batch.
    pub tally: RunTally,
}

/// Runs the scan, counting into `report` (classes, keys, deletes, failures, `last_key`,
/// `fatal`, ownership signs). Returns whether the listing reached its end with every
/// batch applied. `cancel` stops intake: batches in flight finish and are journalled.
/// `db` answers the owner lookups; `lock` is proved held before every delete request.
/// `journal` `None`: the position is not recorded (the read-only first pass of a deleting
/// run, which decides whether the database may own the storage).
#[allow(clippy::too_many_arguments)] // the scan's collaborators, each borrowed for the run
pub async fn run_scan<S: Store + ?Sized, O: OwnerLookup, L: HeldLock + Sync, J: Journal + Sync>(
    db: &O,
    lock: Option<&L>,
    store: Arc<S>,
    journal: Option<&J>,
    opts: &ScanOptions,
    progress: &Progress,
    cancel: &CancellationToken,
    report: &mut OrphansReport,
) -> bool {
    let batch_size = store.batch_limit().clamp(1, 1000);
    let engine = EngineOptions {
        concurrency: opts.concurrency,
        // The position moves after every batch (`docs/reference/provider-quirks.md#l1`).
        flush: FlushPolicy::EACH,
        // After a fatal error nothing more is applied: the position stays before the
        // batches not applied, so the next run handles them again.
        after_fatal: AfterFatal::Discard,
    };

    // Stage 1: one listing in key order, cut into batches.
    let producer = {
        let (store, prefix) = (store.clone(), opts.prefix.clone());
        let start_after = opts.start_after.clone();
        let (shard, key_prefix) = (opts.shard, opts.key_prefix.clone());
        move |mut intake: Intake<Vec<ObjectMeta>>| async move {
            use futures::StreamExt as _;
            let mut pages = crate::store::pages(start_after.as_deref(), |after, token| {
                let (store, prefix) = (&store, &prefix);
                async move {
                    super::retry_read("listing", || {
                        store.list_page(prefix, false, after, token.clone())
                    })
                    .await
                }
            });
            loop {
                if intake.is_stopped() {
                    return Ok(false);
                }
                let Some(page) = pages.next().await else {
                    return Ok(true);
                };
                let page = page.map_err(ScanError::Listing)?;
                let objects = match shard {
                    None => page.objects,
                    Some(s) => page
                        .objects
                        .into_iter()
                        .filter(|o| s.owns_key(key_prefix.strip(o.key.as_str())))
                        .collect(),
                };
                for chunk in objects.chunks(batch_size) {
                    if !intake.send(chunk.to_vec()).await {
                        return Ok(false);
                    }
                }
            }
        }
    };

    // Stage 2: batches, `concurrency` at a time; stage 3: results in key order, the
    // journal position moved after each.
    let mut commit = ScanCommit {
        journal,
        opts,
        progress,
        report: &mut *report,
        position: None,
    };
    let outcome = engine::run(
        &engine,
        cancel,
        producer,
        |objs, _| async {
            process_batch(store.as_ref(), db, lock, opts, objs)
                .await
                .map_err(Failed::nothing)
        },
        &mut commit,
    )
    .await;
    report.fatal = outcome.fatal.map(|e| e.to_string());
    match outcome.produced {
        Ok(true) => report.fatal.is_none() && !cancel.is_cancelled(),
        Ok(false) => false,
        Err(e) => {
            if report.fatal.is_none() {
                report.fatal = Some(format!("listing {}: {e}", store.describe()));
            }
            false
        }
    }
}

/// The commit stage of a scan: counts a finished batch into the report, and (flush)
/// moves the journal position after it.
struct ScanCommit<'a, J> {
    journal: Option<&'a J>,
    opts: &'a ScanOptions,
    progress: &'a Progress,
    report: &'a mut OrphansReport,
    /// The last key committed and the objects committed since the last flush.
    position: Option<(String, u64)>,
}

impl<J: Journal + Sync> Commit<Batch, ScanError> for ScanCommit<'_, J> {
    async fn commit(&mut self, b: Batch) -> Result<(), ScanError> {
        let n = b.objects.len() as u64;
        let (mut bytes, mut failed) = (0u64, 0u64);
        for (class, size, listed) in b.objects {
            self.report.count(class, size);
            bytes += size;
            if let Some((key, action)) = listed {
                failed += u64::from(action == Action::Failed);
                self.report.record(&key, class, size, action);
            }
        }
        for f in b.failures {
            self.report.push_failure(f);
        }
        self.report.ownership.merge(b.ownership);
        self.progress.add(n, failed, bytes);
        self.opts.tally.add(RunCounts {
            rows: 0,
            objects: n,
            bytes,
            failures: failed,
        });
        let done = self.position.take().map_or(0, |(_, n)| n);
        self.position = Some((b.last_key, done + n));
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ScanError> {
        let Some((last_key, n)) = self.position.take() else {
            return Ok(());
        };
        if let Some(j) = self.journal {
            j.orphan_scan_advance(&self.opts.target, &self.opts.prefix, &last_key, n)
                .await?;
        }
        self.report.last_key = Some(last_key);
        Ok(())
    }
}

/// What one batch produced: per object its class and size, and for the keys worth
/// listing (not referenced) what happened to them.
struct Batch {
    last_key: String,
    objects: Vec<Handled>,
    failures: Vec<KeyFailure>,
    ownership: OwnershipStats,
}

/// One object of a batch: its class, size, and for keys worth listing what happened.
type Handled = (Class, u64, Option<(String, Action)>);

/// Why the scan stopped.
#[derive(Debug, thiserror::Error)]
enum ScanError {
    /// A batch's owner lookup or the advisory lock.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A delete failed in a way no other request can avoid.
    #[error("{0}")]
    Store(StoreError),
    /// The journal position could not be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The listing kept failing (formatted with the store by [`run_scan`]).
    #[error("{0}")]
    Listing(StoreError),
}

/// Classifies one batch and deletes what may go. Errors: the owner lookup failed, or a
/// delete failed in a way no other request can avoid (credentials, bucket).
async fn process_batch<S: Store + ?Sized, O: OwnerLookup, L: HeldLock>(
    store: &S,
    db: &O,
    lock: Option<&L>,
    s: &ScanOptions,
    objs: Vec<ObjectMeta>,
) -> Result<Batch, ScanError> {
    let parsed: Vec<Result<ParsedKey<'_>, Unrecognised>> = objs
        .iter()
        .map(|o| parse_key(o.key.as_str(), &s.key_prefix))
        .collect();
    let placed: Vec<ParsedKey<'_>> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let owners = if placed.is_empty() {
        Owners::default()
    } else {
        db.owners(&placed).await?
    };
    let now = Utc::now();
    let settled_before = s.started - chrono::Duration::minutes(NEWER_KEY_GRACE_MINUTES);
    let mut ownership = OwnershipStats {
        scanned: objs.len() as u64,
        ..OwnershipStats::default()
    };
    let mut classes = Vec::with_capacity(objs.len());
    let mut to_delete: Vec<usize> = Vec::new();
    for (i, (o, p)) in objs.iter().zip(&parsed).enumerate() {
        // The database shows a remote row owning this key's partition (and no local one):
        // a copy that can be fetched again, whatever its location.
        let mut remote_row = false;
        let class = match p {
            Err(reason) => Class::Unrecognised(*reason),
            Ok(p) => {
                let min_id = p.id_ranges().iter().map(|r| *r.start()).min();
                let settled = o.last_modified.is_some_and(|m| m < settled_before)
                    || min_id
                        .and_then(snowflake_ms)
                        .is_some_and(|ms| ms < settled_before.timestamp_millis());
                if settled
                    && let Some(max) = s.max_ids.get(p.attachment.class())
                    && above_max_id(min_id, *max)
                {
                    ownership.add_newer(o.key.as_str());
                }
                let candidates = owners.candidates(p);
                remote_row = candidates
                    .as_deref()
                    .is_some_and(|c| !c.is_empty() && c.iter().all(|o| o.remote));
                classify(o.key.as_str(), p, candidates.as_deref(), &s.key_prefix)
            }
        };
        // What --delete would remove, also counted in a report-only scan (its warning).
        if class.deletable(s.include_stale) && !too_young(o.last_modified, now, s.min_age_days) {
            // Outside cache/ and no remote row vouching for it: it may be a local upload.
            let refetchable = remote_row || p.as_ref().is_ok_and(|p| p.cache);
            ownership.add_deletable(o.key.as_str(), refetchable);
            if s.delete {
                to_delete.push(i);
            }
        }
        classes.push(class);
    }
    let keys: Vec<ObjectKey> = to_delete.iter().map(|&i| objs[i].key.clone()).collect();
    let sizes: Vec<Option<u64>> = to_delete.iter().map(|&i| Some(objs[i].size)).collect();
    let outcomes = if keys.is_empty() {
        Vec::new()
    } else {
        // Under the run's advisory lock: proven held before every delete request (8.4).
        match delete_with_retries_locked(
            s.gate,
            store,
            &keys,
            &sizes,
            KEY_ATTEMPTS,
            RETRY_BASE,
            lock.filter(|_| !s.gate.is_dry_run()),
        )
        .await
        {
            Ok(o) => o,
            Err((_, e)) => return Err(ScanError::Db(e)),
        }
    };
    if let Some(DeleteOutcome::Failed(e)) = outcomes
        .iter()
        .find(|o| matches!(o, DeleteOutcome::Failed(e) if e.is_fatal()))
    {
        return Err(ScanError::Store(e.clone()));
    }
    let mut outcome_of: BTreeMap<usize, DeleteOutcome> =
        to_delete.into_iter().zip(outcomes).collect();
    let mut failures = Vec::new();
    let mut out = Vec::with_capacity(objs.len());
    for (i, (o, class)) in objs.iter().zip(classes).enumerate() {
        let action = match (class, outcome_of.remove(&i)) {
            (Class::Referenced(_), _) => {
                out.push((class, o.size, None));
                continue;
            }
            (_, Some(DeleteOutcome::Deleted)) if s.gate.is_dry_run() => Action::WouldDelete,
            (_, Some(DeleteOutcome::Deleted)) => Action::Deleted,
            (_, Some(DeleteOutcome::AlreadyGone)) => Action::AlreadyGone,
            (_, Some(DeleteOutcome::Failed(e))) => {
                failures.push(KeyFailure {
                    key: o.key.to_string(),
                    code: e.code().to_owned(),
                    message: e.to_string(),
                });
                Action::Failed
            }
            (c, None) if s.delete && c.deletable(s.include_stale) => Action::TooYoung,
            (_, None) if s.delete => Action::Kept,
            (_, None) => {
                if class.deletable(true) && too_young(o.last_modified, now, s.min_age_days) {
                    Action::TooYoung
                } else {
                    Action::None
                }
            }
        };
        out.push((class, o.size, Some((o.key.to_string(), action))));
    }
    Ok(Batch {
        last_key: objs.last().map(|o| o.key.to_string()).unwrap_or_default(),
        objects: out,
        failures,
        ownership,
    })
}
