//! The orphan scan pipeline (`mastomedia orphans`): one listing in key order, cut into
//! batches of the store's batch limit; batches processed `concurrency` at a time (parse
//! every key with [`parse_key`], one owner lookup per table per batch
//! ([`Owners::lookup`]), classify with [`classify`], delete the deletable ones older than
//! `min_age_days` through the dry-run [`Gate`] via [`super::delete_with_retries_locked`]); results
//! applied and the journal position moved in key order, so it never passes a batch that
//! is not finished (L1).
//!
//! What may be deleted: exact listed keys that the parser placed in Mastodon's layout and
//! whose batch lookup proved unowned (orphans; stale copies only with `include_stale`),
//! never a prefix, never an unrecognised or referenced key, never a young object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Gate, bounded, delete_with_retries_locked};
use crate::inventory::owners::Owners;
use crate::journal::Journal;
use crate::mastodon::{Db, DbError, RunLock};
use crate::plan::layout::{KeyPrefix, ObjectKey};
use crate::plan::orphans::{Class, classify, too_young};
use crate::plan::ownership::{NEWER_KEY_GRACE_MINUTES, OwnershipStats, above_max_id, snowflake_ms};
use crate::plan::parse::{ParsedKey, Unrecognised, parse_key};
use crate::report::Progress;
use crate::report::orphans::{Action, KeyFailure, OrphansReport};
use crate::store::{DeleteOutcome, ObjectMeta, Store, StoreError};

/// Attempts per key for retryable delete failures, and the first backoff.
const KEY_ATTEMPTS: u32 = 4;
const RETRY_BASE: Duration = Duration::from_millis(500);

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
    /// The journal's name for the storage (`s3://bucket@host`, `file:///root`).
    pub target: String,
    /// The highest id of each table when the scan started (`None`: empty table); keys
    /// above it count as [`OwnershipStats::newer_keys`]. Tables not in the map are not
    /// checked.
    pub max_ids: Arc<BTreeMap<&'static str, Option<i64>>>,
    /// When the scan started: objects modified within [`NEWER_KEY_GRACE_MINUTES`] before
    /// it never count as newer keys.
    pub started: DateTime<Utc>,
}

/// Runs the scan, counting into `report` (classes, keys, deletes, failures, `last_key`,
/// `fatal`, ownership signs). Returns whether the listing reached its end with every
/// batch applied. `cancel` stops intake: batches in flight finish and are journalled.
/// `journal` `None`: the position is not recorded (the read-only first pass of a deleting
/// run, which decides whether the database may own the storage).
#[allow(clippy::too_many_arguments)] // the scan's collaborators, each borrowed for the run
pub async fn run_scan<S: Store + ?Sized>(
    db: &Db,
    lock: Option<&RunLock>,
    store: Arc<S>,
    journal: Option<&Journal>,
    opts: &ScanOptions,
    progress: &Progress,
    cancel: &CancellationToken,
    report: &mut OrphansReport,
) -> bool {
    let stop = cancel.child_token();
    let batch_size = store.batch_limit().clamp(1, 1000);
    let concurrency = opts.concurrency.max(1);
    let (tx, mut rx) = mpsc::channel::<(u64, Vec<ObjectMeta>)>(concurrency);

    // Stage 1: one listing in key order, cut into batches.
    let producer = {
        let (store, stop, prefix) = (store.clone(), stop.clone(), opts.prefix.clone());
        let start_after = opts.start_after.clone();
        async move {
            let mut token = None;
            let mut first = true;
            let mut seq = 0u64;
            loop {
                if stop.is_cancelled() {
                    return Ok(false);
                }
                let after = if first { start_after.as_deref() } else { None };
                let page = super::retry_read("listing", || {
                    store.list_page(&prefix, false, after, token.clone())
                })
                .await?;
                first = false;
                for chunk in page.objects.chunks(batch_size) {
                    if tx.send((seq, chunk.to_vec())).await.is_err() {
                        return Ok(false);
                    }
                    seq += 1;
                }
                match page.next {
                    Some(t) => token = Some(t),
                    None => return Ok::<bool, StoreError>(true),
                }
            }
        }
    };

    // Stage 2: batches, `concurrency` at a time; stage 3: results in key order.
    let consumer = async {
        let batches = stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut results = std::pin::pin!(bounded(
            batches,
            concurrency,
            stop.clone(),
            |(seq, objs)| { process_batch(store.as_ref(), db, lock, opts, seq, objs) }
        ));
        let mut done: BTreeMap<u64, Batch> = BTreeMap::new();
        let mut next = 0u64;
        let mut fatal: Option<String> = None;
        while let Some(r) = results.next().await {
            match r {
                Ok(b) => {
                    done.insert(b.seq, b);
                }
                Err(e) => {
                    fatal.get_or_insert_with(|| e.to_string());
                    stop.cancel();
                }
            }
            // Commit in key order: the position never passes an unfinished batch.
            while let Some(b) = done.remove(&next) {
                next += 1;
                if fatal.is_some() {
                    continue;
                }
                let n = b.objects.len() as u64;
                let (mut bytes, mut failed) = (0u64, 0u64);
                for (class, size, listed) in b.objects {
                    report.count(class, size);
                    bytes += size;
                    if let Some((key, action)) = listed {
                        failed += u64::from(action == Action::Failed);
                        report.record(&key, class, size, action);
                    }
                }
                for f in b.failures {
                    report.push_failure(f);
                }
                report.ownership.merge(b.ownership);
                progress.add(n, failed, bytes);
                let advanced = match journal {
                    Some(j) => {
                        j.orphan_scan_advance(&opts.target, &opts.prefix, &b.last_key, n)
                            .await
                    }
                    None => Ok(()),
                };
                if let Err(e) = advanced {
                    fatal.get_or_insert_with(|| e.to_string());
                    stop.cancel();
                    continue;
                }
                report.last_key = Some(b.last_key);
            }
        }
        fatal
    };
    let (listed, fatal) = tokio::join!(producer, consumer);
    report.fatal = fatal;
    match listed {
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

/// What one batch produced: per object its class and size, and for the keys worth
/// listing (not referenced) what happened to them.
struct Batch {
    seq: u64,
    last_key: String,
    objects: Vec<Handled>,
    failures: Vec<KeyFailure>,
    ownership: OwnershipStats,
}

/// One object of a batch: its class, size, and for keys worth listing what happened.
type Handled = (Class, u64, Option<(String, Action)>);

/// Why a batch stopped the run.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Store(StoreError),
}

/// Classifies one batch and deletes what may go. Errors: the owner lookup failed, or a
/// delete failed in a way no other request can avoid (credentials, bucket).
async fn process_batch<S: Store + ?Sized>(
    store: &S,
    db: &Db,
    lock: Option<&RunLock>,
    s: &ScanOptions,
    seq: u64,
    objs: Vec<ObjectMeta>,
) -> Result<Batch, BatchError> {
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
        Owners::lookup(db, &placed).await?
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
            Err((_, e)) => return Err(BatchError::Db(e)),
        }
    };
    if let Some(DeleteOutcome::Failed(e)) = outcomes
        .iter()
        .find(|o| matches!(o, DeleteOutcome::Failed(e) if e.is_fatal()))
    {
        return Err(BatchError::Store(e.clone()));
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
        seq,
        last_key: objs.last().map(|o| o.key.to_string()).unwrap_or_default(),
        objects: out,
        failures,
        ownership,
    })
}
