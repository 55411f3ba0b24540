//! The staged worker pool, its pipeline engine ([`engine`]) and **the one dry-run gate**.
//!
//! A prune pass runs on the engine as overlapping stages joined by bounded queues, so
//! memory stays flat whatever the number of rows:
//!
//! ```text
//! rows (keyset pages) → chunks of ≤ batch-limit keys → windows of ≤ 16 chunks (range listings)
//!   → [stat sizes → delete → retry]×concurrency → row clears (in order)
//! ```
//!
//! On a store that sizes by listing, the producer gathers a window of up to
//! [`WINDOW_CHUNKS`] chunks and lists the ranges of `plan::ranges` over the window's keys
//! once, so each (attachment folder, id width) costs about one page per 1000 listed objects
//! across the window instead of one listing per chunk; each chunk goes to the workers with
//! the sizes those listings covered, and sizes every other key as before.
//!
//! Invariants: a row is cleared only when every one of its keys is confirmed gone (deleted
//! or already missing); a row with a failed key is left as it was and counted. Every delete
//! and every row update goes through [`Gate`]; with `dry_run` nothing is sent that changes
//! anything. Cancelling stops intake; chunks already in flight finish, with their updates.
//! Right before each delete batch the run's advisory lock is proved held (the database
//! side's [`HeldLock`]); once it is lost no chunk sends another delete.

pub mod budget;
pub mod copy;
pub mod engine;
mod gate;
pub mod orphans;
pub mod prune;
pub mod reconcile;
pub mod repair;
mod retry;
pub mod scan;
pub mod verify;

pub use crate::inventory::bounded;
pub use crate::inventory::{READ_ATTEMPTS, READ_RETRY_BASE, retry_read};
pub use engine::{HeldLock, RowSink};
pub use gate::Gate;
pub use retry::delete_with_retries_locked;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};

use self::engine::{AfterFatal, Commit, Control, EngineOptions, Failed, FlushPolicy, Intake};
use crate::inventory::{CandidateRow, Cursor, Selection};
use crate::journal::{RunCounts, RunTally};
use crate::mastodon::{ClearRequest, Db, DbError, RunLock};
use crate::plan::layout::{KeyPrefix, ObjectKey};
use crate::plan::prune::row_keys;
use crate::report::{Failure, PassReport, Progress};
use crate::store::{DeleteOutcome, Store, StoreError, validate_key};
use tokio_util::sync::CancellationToken;

/// Settings of one pass.
#[derive(Debug, Clone)]
pub struct PassOptions {
    /// Delete chunks in flight at once.
    pub concurrency: usize,
    /// `S3_KEY_PREFIX`.
    pub key_prefix: KeyPrefix,
    /// Rows per database page.
    pub page_size: i64,
    /// Attempts per key for retryable per-key failures (SlowDown, InternalError).
    pub key_attempts: u32,
    /// First backoff between key retries (full jitter, doubling).
    pub retry_base: Duration,
    /// The dry-run gate every delete and row update passes through.
    pub gate: Gate,
    /// Sizes already listed for some rows (`prune --max-cache-size`'s sizing pass,
    /// [`budget::KnownSizes`]): those rows are not listed again.
    pub known_sizes: Option<Arc<budget::KnownSizes>>,
    /// The run record's progress (rows cleared, objects deleted, bytes freed, rows
    /// failed), added once per committed chunk.
    pub tally: RunTally,
}

impl Default for PassOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            key_prefix: KeyPrefix::default(),
            page_size: 1000,
            key_attempts: 4,
            retry_base: Duration::from_millis(500),
            gate: Gate::new(true),
            known_sizes: None,
            tally: RunTally::default(),
        }
    }
}

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The database failed (fatal).
    #[error(transparent)]
    Db(#[from] DbError),
    /// The store failed in a way no other request can avoid (fatal).
    #[error("{0}")]
    Store(StoreError),
}

/// The candidate rows of a pass, one keyset page at a time (`inventory::Cursor` on
/// Mastodon's database).
pub trait Rows: Send {
    /// The next page, in id order; empty at the end. Errors: the query failed (fatal).
    fn next_page(&mut self) -> impl Future<Output = Result<Vec<CandidateRow>, DbError>> + Send;
}

impl Rows for Cursor {
    async fn next_page(&mut self) -> Result<Vec<CandidateRow>, DbError> {
        Cursor::next_page(self).await
    }
}

impl HeldLock for RunLock {
    async fn ensure_held(&self) -> Result<(), DbError> {
        RunLock::ensure_held(self).await
    }
}

/// Mastodon's database as a deleting job's database side: guarded clears on `db`, the
/// advisory lock proved on `lock` (`None`: a run without the lock, e.g. a dry run through
/// transaction pooling, or tests of the pool).
#[derive(Debug, Clone, Copy)]
pub struct LockedDb<'a> {
    /// Where rows are cleared.
    pub db: &'a Db,
    /// The run's advisory lock.
    pub lock: Option<&'a RunLock>,
}

impl HeldLock for LockedDb<'_> {
    async fn ensure_held(&self) -> Result<(), DbError> {
        match self.lock {
            Some(l) => l.ensure_held().await,
            None => Ok(()),
        }
    }
}

impl RowSink for LockedDb<'_> {
    async fn clear_rows(
        &self,
        req: &ClearRequest,
        now: NaiveDateTime,
    ) -> Result<Vec<i64>, DbError> {
        self.db.clear(req, now).await
    }
}

/// A chunk: rows whose keys together fit in one batch delete, and the sizes its window's
/// range listings covered (key → size, `None`: listed past, so gone; keys absent here are
/// sized per partition).
#[derive(Default)]
struct Chunk {
    rows: Vec<(CandidateRow, Vec<ObjectKey>)>,
    covered: Covered,
}

/// Sizes a range listing answered, by key (`None`: the listing passed the key: gone).
type Covered = HashMap<String, Option<u64>>;

/// Chunks per window of range listings (at most `16 × batch-limit` keys, 16,000 on S3).
/// Each listed (folder, id width) class costs at most one partly filled page more than its
/// objects need per window, so 16 chunks bring that to ≤ 1/16,000 request per key per
/// class; the window (its rows, keys and covered sizes, a few MB) is held once, beside the
/// `concurrency` chunks in flight, whatever the number of rows (invariant 8).
pub const WINDOW_CHUNKS: usize = 16;

/// How long a window with full chunks waits for the next rows page before it is listed
/// and sent as it is (a slow database page must not leave the workers idle).
pub const WINDOW_WAIT: Duration = Duration::from_secs(1);

/// What happened to one row of a chunk.
struct RowResult {
    row: CandidateRow,
    gone: bool,
    deleted: u64,
    already_gone: u64,
    failed: Vec<(ObjectKey, StoreError)>,
    bytes: u64,
}

/// Runs one prune pass of `selection` over `rows` and returns its report. `sink` is the
/// database side (row clears through the gate, the advisory lock proved before every
/// delete batch). `cancel` stops intake.
/// Errors: fatal database or storage errors ([`PassError`]), with the report up to then
/// (the summary says what was deleted and cleared before the error).
#[allow(clippy::too_many_arguments)] // the pass's collaborators, each borrowed for the run
pub async fn run_pass<S: Store + ?Sized, R: Rows, K: RowSink>(
    mut rows: R,
    sink: &K,
    store: Arc<S>,
    selection: &Selection,
    opts: &PassOptions,
    progress: &Progress,
    cancel: &CancellationToken,
    mut report: PassReport,
) -> Result<PassReport, Box<(PassReport, PassError)>> {
    let gate = opts.gate;
    let batch_limit = store.batch_limit().max(1);
    let engine = EngineOptions {
        concurrency: opts.concurrency,
        flush: FlushPolicy::EACH,
        // After a fatal error (or a lost advisory lock) no chunk starts deleting any more,
        // but rows whose objects were already confirmed gone are still cleared: the
        // guarded UPDATE cannot clear a row another run or Mastodon changed meanwhile,
        // and skipping it would leave rows naming deleted objects until the next run.
        after_fatal: AfterFatal::CommitFinished,
    };

    // Stage 1: read pages and cut them into chunks of at most `batch_limit` keys; gather
    // full chunks into a window, list the window's ranges once and send its chunks with
    // the sizes the listings covered. A window is sent when it holds `WINDOW_CHUNKS`
    // chunks, after a short (or the last) rows page, when the next page keeps it waiting
    // `WINDOW_WAIT`, and before a failed page's error (as before, the chunks cut before
    // it are processed). A store that does not size by listing gets each chunk at once.
    let prefix = opts.key_prefix.clone();
    let window_chunks = if store.sizes_by_listing() {
        WINDOW_CHUNKS
    } else {
        1
    };
    let page_size = usize::try_from(opts.page_size).unwrap_or(usize::MAX);
    let window_store = Arc::clone(&store);
    let known = opts.known_sizes.clone();
    let producer = |mut intake: Intake<Chunk>| async move {
        let store = window_store.as_ref();
        let known = known.as_deref();
        let mut window: Vec<Chunk> = Vec::new();
        let mut chunk = Chunk::default();
        let mut keys_in_chunk = 0usize;
        loop {
            if intake.is_stopped() {
                break;
            }
            let page = {
                let next = rows.next_page();
                tokio::pin!(next);
                loop {
                    let waiting = !window.is_empty();
                    tokio::select! {
                        biased;
                        page = &mut next => break page,
                        _ = tokio::time::sleep(WINDOW_WAIT), if waiting => {
                            if !send_window(&mut intake, store, &mut window, known).await {
                                return Ok(false);
                            }
                        }
                    }
                }
            };
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    send_window(&mut intake, store, &mut window, known).await;
                    return Err(PassError::Db(e));
                }
            };
            if page.is_empty() {
                break;
            }
            let short = page.len() < page_size;
            for row in page {
                if intake.is_stopped() {
                    // Stop intake at once: rows not yet handed to a worker stay as they are.
                    return Ok(false);
                }
                let keys = row_keys(&row, &prefix);
                if keys_in_chunk + keys.len() > batch_limit && !chunk.rows.is_empty() {
                    window.push(std::mem::take(&mut chunk));
                    keys_in_chunk = 0;
                    if window.len() >= window_chunks
                        && !send_window(&mut intake, store, &mut window, known).await
                    {
                        return Ok(false);
                    }
                }
                keys_in_chunk += keys.len();
                chunk.rows.push((row, keys));
            }
            if short
                && !window.is_empty()
                && !send_window(&mut intake, store, &mut window, known).await
            {
                return Ok(false);
            }
        }
        if intake.is_stopped() {
            return Ok(false);
        }
        if !chunk.rows.is_empty() {
            window.push(chunk);
        }
        if !window.is_empty() {
            send_window(&mut intake, store, &mut window, known).await;
        }
        Ok(true)
    };

    // Stage 2: size and delete chunks, `concurrency` at a time; stage 3: clear rows whose
    // objects are all gone, one statement per chunk, in chunk order.
    let mut commit = PruneCommit {
        sink,
        gate,
        selection,
        progress,
        tally: &opts.tally,
        report: &mut report,
    };
    let outcome = engine::run(
        &engine,
        cancel,
        producer,
        |chunk, ctl| process_chunk(store.as_ref(), gate, chunk, opts, sink, ctl),
        &mut commit,
    )
    .await;
    // The counts so far go back with a fatal error: the summary says what was done.
    let fatal = match outcome.produced {
        Ok(_) => outcome.fatal,
        Err(e) => Some(outcome.fatal.unwrap_or(e)),
    };
    match fatal {
        Some(e) => Err(Box::new((report, e))),
        None => Ok(report),
    }
}

/// Lists the ranges of the keys of `window`'s chunks once (on a store that
/// [`Store::sizes_by_listing`]; rows with a key [`validate_key`] refuses and rows whose
/// sizes `known` holds are left out, as `process_chunk` and `chunk_sizes` skip them) and
/// sends each chunk, in order, with the sizes covering its own keys. Chunks have disjoint
/// keys, so a key this run deletes in one chunk is never another chunk's "present".
/// Returns `false` when intake stopped (the listing is abandoned on the stop: it only
/// read): the chunks not sent stay as they are.
async fn send_window<S: Store + ?Sized>(
    intake: &mut Intake<Chunk>,
    store: &S,
    window: &mut Vec<Chunk>,
    known: Option<&budget::KnownSizes>,
) -> bool {
    let chunks = std::mem::take(window);
    let keys = chunks
        .iter()
        .flat_map(|c| c.rows.iter())
        .filter(|(row, keys)| {
            keys.iter().all(|k| validate_key(k).is_ok())
                && known.is_none_or(|known| known.get(row, keys).is_none())
        })
        .flat_map(|(_, keys)| keys.iter());
    let mut covered = tokio::select! {
        biased;
        _ = intake.stopped() => return false,
        covered = listed_sizes(store, keys) => covered,
    };
    for mut chunk in chunks {
        chunk.covered = chunk
            .rows
            .iter()
            .flat_map(|(_, keys)| keys.iter())
            .filter_map(|k| covered.remove_entry(k.as_str()))
            .collect();
        if !intake.send(chunk).await {
            return false;
        }
    }
    true
}

/// The commit stage of a pass: counts every row of a finished chunk and clears, through
/// the gate, the rows whose objects are all gone.
struct PruneCommit<'a, K> {
    sink: &'a K,
    gate: Gate,
    selection: &'a Selection,
    progress: &'a Progress,
    tally: &'a RunTally,
    report: &'a mut PassReport,
}

impl<K: RowSink> Commit<Vec<RowResult>, PassError> for PruneCommit<'_, K> {
    async fn commit(&mut self, rows: Vec<RowResult>) -> Result<(), PassError> {
        let report = &mut *self.report;
        let mut to_clear = Vec::new();
        let (mut bytes, mut failed_rows) = (0u64, 0u64);
        let (cleared_before, objects) = (
            report.rows_cleared,
            rows.iter().map(|r| r.deleted).sum::<u64>(),
        );
        for r in &rows {
            report.objects_deleted += r.deleted;
            report.objects_already_gone += r.already_gone;
            report.objects_failed += r.failed.len() as u64;
            if r.gone {
                to_clear.push(r);
            } else {
                failed_rows += 1;
                report.rows_failed += 1;
                for (key, err) in &r.failed {
                    report.push_failure(Failure {
                        table: r.row.table,
                        id: r.row.id,
                        key: Some(key.to_string()),
                        code: err.code().to_owned(),
                        message: err.to_string(),
                    });
                }
            }
        }
        if !to_clear.is_empty() {
            let req = ClearRequest {
                table: self.selection.table(),
                attachments: self.selection.clear_groups(),
                rows: to_clear
                    .iter()
                    .map(|r| (r.row.id, r.row.expected_names.clone()))
                    .collect(),
            };
            let cleared = match self
                .gate
                .clear(self.sink, &req, Utc::now().naive_utc())
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    // Stop intake; the rows of this chunk stay as they were (their objects
                    // are found already gone by the next run).
                    report.rows_failed += to_clear.len() as u64;
                    self.progress.add(rows.len() as u64, failed_rows, bytes);
                    self.tally.add(RunCounts {
                        rows: 0,
                        objects,
                        bytes: 0,
                        failures: failed_rows + to_clear.len() as u64,
                    });
                    return Err(PassError::Db(e));
                }
            };
            let cleared: std::collections::HashSet<i64> = cleared.into_iter().collect();
            for r in to_clear {
                if cleared.contains(&r.row.id) {
                    report.rows_cleared += 1;
                    report.bytes_freed += r.bytes;
                    bytes += r.bytes;
                    report.db_bytes += r
                        .row
                        .files
                        .iter()
                        .map(|f| f.db_size.max(0) as u64)
                        .sum::<u64>();
                    if r.row.attached_to_status {
                        report.rows_attached_to_statuses += 1;
                    }
                } else {
                    report.rows_changed += 1;
                    report.bytes_freed += r.bytes;
                    bytes += r.bytes;
                }
            }
        }
        self.progress.add(rows.len() as u64, failed_rows, bytes);
        self.tally.add(RunCounts {
            rows: report.rows_cleared - cleared_before,
            objects,
            bytes,
            failures: failed_rows,
        });
        Ok(())
    }

    /// The lock loss is the cause to report, whatever other chunks saw after it.
    fn supersedes(new: &PassError, old: &PassError) -> bool {
        matches!((old, new), (PassError::Store(_), PassError::Db(_)))
    }
}

/// A chunk that stopped the pass: the error, and the results of the rows of the chunk
/// whose deletes had already been sent (their confirmed-gone rows are still cleared).
type ChunkError = Failed<Vec<RowResult>, PassError>;

fn store_fatal(e: StoreError) -> ChunkError {
    Failed::nothing(PassError::Store(e))
}

/// The error of a chunk that stopped because another one hit a fatal error first.
fn stopped() -> ChunkError {
    store_fatal(StoreError::Transport(
        "run stopped by an earlier fatal error".into(),
    ))
}

/// Sizes, deletes and retries one chunk. Returns a fatal store error (bad credentials,
/// missing bucket) instead of per-row results when nothing else could work either, and
/// [`DbError::LockLost`] when the advisory lock is gone right before a delete batch.
async fn process_chunk<S: Store + ?Sized, L: HeldLock>(
    store: &S,
    gate: Gate,
    chunk: Chunk,
    opts: &PassOptions,
    lock: &L,
    ctl: Control,
) -> Result<Vec<RowResult>, ChunkError> {
    // A row with a key no backend may address (`..`, `.` or empty segments, built from a
    // hostile `*_file_name`) is left as it is and listed; none of its keys is sized or
    // deleted, in a dry run too.
    let (chunk, refused) = split_refused(chunk);
    let mut out = refused;
    let keys: Vec<ObjectKey> = chunk
        .rows
        .iter()
        .flat_map(|(_, k)| k.iter().cloned())
        .collect();
    if keys.is_empty() {
        return Ok(out);
    }
    if ctl.fatal() {
        return Err(stopped());
    }
    // Sizes from the store itself (docs/reference/provider-quirks.md#d6); the same in a dry run. Sizing only reads, so an
    // interrupt abandons it and skips the chunk: nothing of it has been deleted yet.
    let sized = tokio::select! {
        biased;
        _ = ctl.interrupt() => return Ok(Vec::new()),
        // Another chunk hit a fatal error or lost the lock: this one has deleted nothing.
        _ = ctl.fatal_stop() => return Err(stopped()),
        r = chunk_sizes(store, &chunk, &keys, opts) => r,
    };
    if ctl.interrupted() {
        return Ok(Vec::new());
    }
    if let Some(Err(e)) = sized.iter().find(|r| matches!(r, Err(e) if e.is_fatal())) {
        return Err(store_fatal(e.clone()));
    }
    // A row with a key that could not be sized (its listing kept failing) is left as it
    // is for this run, alone: the chunk's other rows go on.
    let (chunk, keys, sizes) = {
        let mut kept = Vec::with_capacity(chunk.rows.len());
        let (mut keys, mut sizes) = (Vec::with_capacity(sized.len()), Vec::new());
        let mut sized = sized.into_iter();
        for (row, row_keys) in chunk.rows {
            let row_sizes: Vec<_> = sized.by_ref().take(row_keys.len()).collect();
            if row_sizes.iter().all(Result::is_ok) {
                keys.extend(row_keys.iter().cloned());
                sizes.extend(row_sizes.into_iter().map(|r| r.unwrap_or(None)));
                kept.push((row, row_keys));
            } else {
                let failed = row_keys
                    .into_iter()
                    .zip(row_sizes)
                    .filter_map(|(k, r)| r.err().map(|e| (k, e)))
                    .collect();
                out.push(RowResult {
                    row,
                    gone: false,
                    deleted: 0,
                    already_gone: 0,
                    failed,
                    bytes: 0,
                });
            }
        }
        let chunk = Chunk {
            rows: kept,
            ..Chunk::default()
        };
        (chunk, keys, sizes)
    };
    if keys.is_empty() {
        return Ok(out);
    }
    // Another chunk hit a fatal error (or lost the lock) while this one was sizing.
    if ctl.fatal() {
        return Err(stopped());
    }
    // Item-level retries of retryable per-key failures, full jitter, doubling; the lock is
    // proved held right before each batch is sent.
    let (outcomes, lock_lost) = match delete_with_retries_locked(
        gate,
        store,
        &keys,
        &sizes,
        opts.key_attempts,
        opts.retry_base,
        Some(lock),
    )
    .await
    {
        Ok(o) => (o, None),
        Err((o, e)) => {
            // Stop the other chunks before their next delete, at once.
            ctl.stop_fatal();
            (o, Some(e))
        }
    };
    if let Some(DeleteOutcome::Failed(e)) = outcomes
        .iter()
        .find(|o| matches!(o, DeleteOutcome::Failed(e) if e.is_fatal()))
    {
        return Err(store_fatal(e.clone()));
    }
    let mut i = 0;
    out.reserve(chunk.rows.len());
    for (row, row_keys) in chunk.rows {
        let mut r = RowResult {
            row,
            gone: true,
            deleted: 0,
            already_gone: 0,
            failed: Vec::new(),
            bytes: 0,
        };
        for key in row_keys {
            match &outcomes[i] {
                DeleteOutcome::Deleted if sizes[i].is_some() => {
                    r.deleted += 1;
                    r.bytes += sizes[i].unwrap_or(0);
                }
                // Deleted but not listed a moment ago: it was not there (S3 answers
                // success for missing keys).
                DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone => r.already_gone += 1,
                DeleteOutcome::Failed(e) => {
                    r.gone = false;
                    r.failed.push((key, e.clone()));
                }
            }
            i += 1;
        }
        out.push(r);
    }
    match lock_lost {
        None => Ok(out),
        Some(e) => Err(Failed {
            partial: Some(out),
            error: PassError::Db(e),
        }),
    }
}

/// Sizes the `keys` of `chunk` (in order): the sizes [`PassOptions::known_sizes`] holds for
/// a row with the same keys, the sizes its window's range listings covered
/// (`Chunk::covered`) and [`Store::stat_many`] with its retries (`sized_with_retries`)
/// for every other key.
async fn chunk_sizes<S: Store + ?Sized>(
    store: &S,
    chunk: &Chunk,
    keys: &[ObjectKey],
    opts: &PassOptions,
) -> Vec<Result<Option<u64>, StoreError>> {
    let covered = &chunk.covered;
    let Some(known) = &opts.known_sizes else {
        return sized_with_retries(store, keys, opts, covered).await;
    };
    let mut out: Vec<Option<Result<Option<u64>, StoreError>>> = Vec::with_capacity(keys.len());
    let (mut unknown, mut slots) = (Vec::new(), Vec::new());
    for (row, row_keys) in &chunk.rows {
        match known.get(row, row_keys) {
            Some(sizes) => out.extend(sizes.iter().map(|s| Some(Ok(*s)))),
            None => {
                for k in row_keys {
                    slots.push(out.len());
                    unknown.push(k.clone());
                    out.push(None);
                }
            }
        }
    }
    if !unknown.is_empty() {
        for (i, r) in slots
            .into_iter()
            .zip(sized_with_retries(store, &unknown, opts, covered).await)
        {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Transport("no size answer for a key".into()))))
        .collect()
}

/// Sizes `keys` (range listings, then [`Store::stat_many`]: `first_sizes`), then sizes again the keys whose sizing failed
/// with a retryable error (their listing kept failing after the request-level retries),
/// `key_attempts` tries in all with full-jitter backoff from `retry_base`: the item-level
/// retry of listings. Returns one answer per key, in order.
async fn stat_with_retries<S: Store + ?Sized>(
    store: &S,
    keys: &[ObjectKey],
    opts: &PassOptions,
) -> Vec<Result<Option<u64>, StoreError>> {
    let covered = listed_sizes(store, keys).await;
    sized_with_retries(store, keys, opts, &covered).await
}

/// [`stat_with_retries`] with the range listings' answers given as `covered` (a window's
/// listings, or the listings of `keys` themselves).
async fn sized_with_retries<S: Store + ?Sized>(
    store: &S,
    keys: &[ObjectKey],
    opts: &PassOptions,
    covered: &Covered,
) -> Vec<Result<Option<u64>, StoreError>> {
    let mut sized = first_sizes(store, keys, covered).await;
    for attempt in 1..opts.key_attempts {
        let again: Vec<usize> = (0..keys.len())
            .filter(|&i| matches!(&sized[i], Err(e) if e.is_retryable()))
            .collect();
        if again.is_empty() {
            break;
        }
        let cap = opts.retry_base.saturating_mul(1 << (attempt - 1).min(6));
        tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
        let retry_keys: Vec<ObjectKey> = again.iter().map(|&i| keys[i].clone()).collect();
        let prefixes = stat_prefixes(&retry_keys);
        for (i, r) in again
            .into_iter()
            .zip(store.stat_many(&retry_keys, &prefixes).await)
        {
            sized[i] = r;
        }
    }
    sized
}

/// The range listings' answers for `keys` ([`range_sizes`]) on a store that
/// [`Store::sizes_by_listing`]; none on another (the filesystem `stat`s each key).
async fn listed_sizes<'k, S: Store + ?Sized>(
    store: &S,
    keys: impl IntoIterator<Item = &'k ObjectKey>,
) -> Covered {
    if store.sizes_by_listing() {
        range_sizes(store, keys).await
    } else {
        Covered::new()
    }
}

/// The first sizing of `keys`, one answer per key in order: the keys a range listing
/// covered (`covered`, from [`listed_sizes`]) are answered by it, then
/// [`Store::stat_many`] sizes every key no range covered (per-partition listings on S3, a
/// `stat` per key on the filesystem).
async fn first_sizes<S: Store + ?Sized>(
    store: &S,
    keys: &[ObjectKey],
    covered: &Covered,
) -> Vec<Result<Option<u64>, StoreError>> {
    let rest: Vec<ObjectKey> = keys
        .iter()
        .filter(|k| !covered.contains_key(k.as_str()))
        .cloned()
        .collect();
    let rest_sized = if rest.is_empty() {
        Vec::new()
    } else {
        store.stat_many(&rest, &stat_prefixes(&rest)).await
    };
    let mut rest_sized = rest_sized.into_iter();
    keys.iter()
        .map(|k| match covered.get(k.as_str()) {
            Some(size) => Ok(*size),
            None => rest_sized
                .next()
                .unwrap_or_else(|| Err(StoreError::Transport("no size answer for a key".into()))),
        })
        .collect()
}

/// Sizes of the keys the range listings of `keys` cover (`plan::ranges`): per range, pages
/// from just before its first key until past its last, merged with its sorted keys,
/// stopped early when the range proves sparse. A failed page ends its range: the keys it
/// would have covered stay unanswered (sized per partition by the caller), never guessed.
/// Four ranges at a time.
async fn range_sizes<'k, S: Store + ?Sized>(
    store: &S,
    keys: impl IntoIterator<Item = &'k ObjectKey>,
) -> Covered {
    use crate::plan::ranges::{RangeMerge, Step, plan_ranges};
    use futures::StreamExt as _;
    let plans = plan_ranges(
        keys.into_iter()
            .filter(|k| validate_key(k).is_ok())
            .map(ObjectKey::as_str),
    );
    let futs = plans.into_iter().map(|plan| async move {
        let answers = {
            let mut merge = RangeMerge::new(&plan);
            let mut pages = crate::store::pages(Some(plan.start_after.as_str()), |after, token| {
                store.list_page(&plan.prefix, false, after, token)
            });
            while let Some(page) = pages.next().await {
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!("range listing of {} failed: {e}", plan.prefix);
                        break;
                    }
                };
                let more = page.next.is_some();
                let step = merge.feed(page.objects.iter().map(|o| (o.key.as_str(), o.size)), more);
                if !(more && matches!(step, Step::NextPage)) {
                    break;
                }
            }
            merge.into_answers()
        };
        // The plan's own copies of the keys become the covered map's (not copied again).
        plan.keys
            .into_iter()
            .zip(answers)
            .filter_map(|(k, a)| a.map(|a| (k, a)))
            .collect::<Vec<_>>()
    });
    futures::stream::iter(futs)
        .buffer_unordered(4)
        .flat_map(futures::stream::iter)
        .collect()
        .await
}

/// The listings that size `keys` on S3 ([`Store::stat_many`]): Mastodon's partition
/// folders of the keys [`validate_key`] accepts (`plan::partition`).
fn stat_prefixes(keys: &[ObjectKey]) -> Vec<String> {
    crate::plan::partition::listing_prefixes(
        keys.iter()
            .filter(|k| validate_key(k).is_ok())
            .map(ObjectKey::as_str),
    )
}

/// Splits off the rows of `chunk` with a key [`validate_key`] refuses, as failed results
/// (the refused keys listed with their reason; the row's other keys are not touched).
fn split_refused(chunk: Chunk) -> (Chunk, Vec<RowResult>) {
    let Chunk { rows, covered } = chunk;
    let mut kept = Vec::with_capacity(rows.len());
    let mut refused = Vec::new();
    for (row, keys) in rows {
        let failed: Vec<(ObjectKey, StoreError)> = keys
            .iter()
            .filter_map(|k| validate_key(k).err().map(|e| (k.clone(), e)))
            .collect();
        if failed.is_empty() {
            kept.push((row, keys));
        } else {
            refused.push(RowResult {
                row,
                gone: false,
                deleted: 0,
                already_gone: 0,
                failed,
                bytes: 0,
            });
        }
    }
    (
        Chunk {
            rows: kept,
            covered,
        },
        refused,
    )
}

#[cfg(test)]
mod tests {
    use crate::mastodon::advisory_key;
    use crate::model::{JobKey, Shard};

    /// Without a shard the advisory lock keys are those every release took so far, so
    /// runs of an older and of this version exclude each other.
    #[test]
    fn job_keys_lock_as_before_without_a_shard() {
        for job in ["prune", "orphans", "migrate"] {
            let k = JobKey::new(job, "s3://media@host");
            assert_eq!(advisory_key(&k.lock_name()), advisory_key(job));
            let sharded = k.with_shard(Shard::new(1, 2).unwrap());
            assert_ne!(advisory_key(&sharded.lock_name()), advisory_key(job));
        }
    }
}
