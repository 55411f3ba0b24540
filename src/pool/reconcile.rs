//! A whole `mastomedia reconcile` run (issue 14, item 3): rows whose stored file is missing
//! from the storage.
//!
//! 1. The store check and the ownership checks prune runs (`inventory::owners`): against
//!    the wrong bucket every row looks missing, so a storage that holds none of the
//!    database's newest files, or files newer than it knows, is refused (exit 3).
//! 2. The check: every row naming a stored file (`inventory::reconcile`, remote and local),
//!    its keys sized exactly as prune sizes them (`pool::stat_with_retries`: range listings,
//!    per-partition listings, `stat` on the filesystem), counted per category.
//! 3. With more than half of the rows missing a file (`plan::reconcile::too_much_missing`)
//!    `--apply` refuses (exit 3) unless `--force-missing`.
//! 4. The remote rows with a missing file go through prune's own pass ([`super::run_pass`]:
//!    their remaining objects deleted by exact key, then the columns cleared as prune
//!    clears them, guarded by the names read) behind the one dry-run gate: without
//!    `--apply` nothing is sent that changes anything. The pass reuses the sizes the check
//!    listed ([`super::budget::KnownSizes`]). Local rows are only listed.
//!
//! Resuming: naturally idempotent, no journal. A cleared row names no file any more, so
//! it is not checked again; a run killed at any point is finished by running it again
//! (rows already cleared are skipped, the others checked and cleared as before).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::budget::KnownSizes;
use super::{LockedDb, PassError, PassOptions, Rows, run_pass};
use crate::inventory::CandidateRow;
use crate::inventory::owners::{OwnerCheckError, OwnershipError, check_database_owns};
use crate::inventory::reconcile::{CheckedRow, reconcile_selections};
use crate::mastodon::{Db, DbError, RunLock};
use crate::plan::layout::ObjectKey;
use crate::plan::reconcile::{Category, expected_keys, missing, too_much_missing};
use crate::report::reconcile::{CategoryReport, LostRow, ReconcileReport};
use crate::report::{PassReport, Progress, ProgressMode};
use crate::store::{Store, StoreError};

/// Local rows listed in the report, at most.
const MAX_LOST_LISTED: usize = 100;

/// Everything one run needs besides the store.
#[derive(Debug)]
pub struct ReconcileRun<'a> {
    /// Mastodon's database.
    pub db: &'a Db,
    /// prune's advisory lock (the two never overlap); `None` without `--apply`.
    pub lock: Option<Arc<RunLock>>,
    /// Concurrency, key prefix, and the gate: dry unless `--apply`.
    pub opts: PassOptions,
    /// `--force-missing`: clear even when most rows look missing.
    pub force_missing: bool,
    /// `now - --min-age`: rows changed since (`updated_at`) are not checked, their file may
    /// still be on its way to the storage.
    pub settled_before: chrono::DateTime<Utc>,
    /// Progress bar or cron status line.
    pub progress: ProgressMode,
    /// Stops the run (Ctrl-C, SIGTERM).
    pub cancel: CancellationToken,
}

/// Why a run stopped before changing anything.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The storage check, or a fatal storage error while checking (credentials, bucket).
    #[error("checking the storage: {0}")]
    Store(StoreError),
    /// The database cannot own this storage ([`check_database_owns`]).
    #[error(transparent)]
    NotOwner(#[from] OwnershipError),
    /// Most rows miss a file: refused without `--force-missing`. Nothing was changed.
    #[error(
        "{missing} of {checked} checked rows miss a file: this looks like the wrong storage (S3_BUCKET, S3_KEY_PREFIX, PAPERCLIP_ROOT_PATH) or an unfinished migration, not lost files. Nothing was changed. Check with `mastomedia reconcile` (report only) and `mastomedia du`; if the files really are gone, run again with --force-missing"
    )]
    TooMuchMissing {
        /// Rows checked.
        checked: u64,
        /// Rows missing a file.
        missing: u64,
    },
    /// The database.
    #[error(transparent)]
    Db(DbError),
}

/// The rows of a clearing pass, from memory, one page of up to 1000.
struct VecRows(std::vec::IntoIter<CandidateRow>);

impl Rows for VecRows {
    async fn next_page(&mut self) -> Result<Vec<CandidateRow>, DbError> {
        Ok(self.0.by_ref().take(1000).collect())
    }
}

/// Runs reconcile against `store`: checks, reports, and (through the gate) clears the
/// remote rows with a missing file. Errors: see [`ReconcileError`]; a database or store
/// error during the clearing passes ends up in [`ReconcileReport::fatal`] instead.
pub async fn run_reconcile(
    run: ReconcileRun<'_>,
    store: Arc<dyn Store>,
) -> Result<ReconcileReport, ReconcileError> {
    let started = Instant::now();
    let ReconcileRun {
        db,
        lock,
        mut opts,
        force_missing,
        settled_before,
        progress: mode,
        cancel,
    } = run;
    super::prune::check_store(store.as_ref(), &opts)
        .await
        .map_err(ReconcileError::Store)?;
    check_database_owns(db, store.as_ref(), &opts.key_prefix)
        .await
        .map_err(|e| match e {
            OwnerCheckError::Db(e) => ReconcileError::Db(e),
            OwnerCheckError::NotOwner(e) => ReconcileError::NotOwner(e),
        })?;
    let apply = !opts.gate.is_dry_run();
    let mut report = ReconcileReport {
        apply,
        storage: store.describe(),
        ..ReconcileReport::default()
    };
    let mut categories: BTreeMap<(Category, bool), CategoryReport> = BTreeMap::new();
    for c in [
        Category::MediaAttachments,
        Category::Avatars,
        Category::Headers,
        Category::PreviewCards,
    ] {
        for remote in [true, false] {
            if c == Category::PreviewCards && !remote {
                continue;
            }
            categories.insert(
                (c, remote),
                CategoryReport {
                    category: c.name(),
                    ..CategoryReport::default()
                },
            );
        }
    }
    let selections = reconcile_selections(settled_before);
    let mut broken: Vec<Vec<CandidateRow>> = vec![Vec::new(); selections.len()];
    let mut known = KnownSizes::default();
    let batch_limit = store.batch_limit().max(1);
    let progress = Progress::start_unit("reconcile check", 0, "rows", "listed", mode);
    'kinds: for (kind, sel) in selections.iter().enumerate() {
        let mut cursor = sel.reconcile_cursor(db, opts.page_size);
        loop {
            if cancel.is_cancelled() {
                break 'kinds;
            }
            let page = match cursor.next_page().await {
                Ok(p) => p,
                Err(e) => {
                    progress.finish();
                    return Err(ReconcileError::Db(e));
                }
            };
            if page.is_empty() {
                break;
            }
            let mut chunks: Vec<Vec<(CheckedRow, Vec<ObjectKey>)>> = vec![Vec::new()];
            let mut in_chunk = 0;
            for c in page {
                let keys: Vec<ObjectKey> = expected_keys(&c.row, c.remote, &opts.key_prefix)
                    .into_iter()
                    .map(|k| k.key)
                    .collect();
                if in_chunk + keys.len() > batch_limit && in_chunk > 0 {
                    chunks.push(Vec::new());
                    in_chunk = 0;
                }
                in_chunk += keys.len();
                if let Some(last) = chunks.last_mut() {
                    last.push((c, keys));
                }
            }
            let opts_ref = &opts;
            let store_ref = store.as_ref();
            let mut results = futures::stream::iter(chunks.into_iter().map(|chunk| async move {
                let keys: Vec<ObjectKey> =
                    chunk.iter().flat_map(|(_, k)| k.iter().cloned()).collect();
                let answers = super::stat_with_retries(store_ref, &keys, opts_ref).await;
                (chunk, answers)
            }))
            .buffered(opts.concurrency.max(1));
            while let Some((chunk, answers)) = results.next().await {
                if let Some(Err(e)) = answers.iter().find(|r| matches!(r, Err(e) if e.is_fatal())) {
                    progress.finish();
                    return Err(ReconcileError::Store(e.clone()));
                }
                let mut answers = answers.into_iter();
                let (mut rows, mut bytes) = (0, 0);
                for (c, keys) in chunk {
                    rows += 1;
                    let row_answers: Vec<_> = answers.by_ref().take(keys.len()).collect();
                    if row_answers.iter().any(Result::is_err) {
                        report.rows_unchecked += 1;
                        continue;
                    }
                    let sizes: Vec<Option<u64>> =
                        row_answers.into_iter().map(|r| r.unwrap_or(None)).collect();
                    bytes += sizes.iter().flatten().sum::<u64>();
                    let expected = expected_keys(&c.row, c.remote, &opts.key_prefix);
                    let present: Vec<bool> = sizes.iter().map(Option::is_some).collect();
                    let m = missing(&expected, &present);
                    report.rows_checked += 1;
                    let mut seen: Vec<Category> = Vec::new();
                    for e in &expected {
                        if !seen.contains(&e.category) {
                            seen.push(e.category);
                            if let Some(r) = categories.get_mut(&(e.category, c.remote)) {
                                r.rows_checked += 1;
                            }
                        }
                    }
                    if m.is_empty() {
                        continue;
                    }
                    report.rows_missing += 1;
                    for cat in &m.categories {
                        if let Some(r) = categories.get_mut(&(*cat, c.remote)) {
                            r.rows_missing += 1;
                            r.keys_missing += expected
                                .iter()
                                .zip(&present)
                                .filter(|(e, p)| e.category == *cat && !**p)
                                .count() as u64;
                            // The role counts go to the row's main category.
                            if *cat == m.categories[0] {
                                r.missing_original += u64::from(m.original);
                                r.missing_styles_only += u64::from(m.style_only);
                                r.missing_thumbnail += u64::from(m.thumbnail);
                            }
                        }
                    }
                    if c.remote {
                        known.insert(&c.row, &keys, sizes);
                        broken[kind].push(c.row);
                    } else if report.lost_local.len() < MAX_LOST_LISTED {
                        report.lost_local.push(LostRow {
                            table: c.row.table,
                            id: c.row.id,
                            keys: m.keys.iter().map(ToString::to_string).collect(),
                        });
                    } else {
                        report.lost_local_unlisted += 1;
                    }
                }
                progress.add(rows, 0, bytes);
            }
        }
    }
    progress.finish();
    for ((_, remote), c) in categories {
        if remote {
            report.remote.push(c);
        } else {
            report.local.push(c);
        }
    }
    report.too_much_missing = too_much_missing(report.rows_checked, report.rows_missing);
    report.interrupted = cancel.is_cancelled();
    if report.too_much_missing && apply && !force_missing {
        return Err(ReconcileError::TooMuchMissing {
            checked: report.rows_checked,
            missing: report.rows_missing,
        });
    }
    opts.known_sizes = Some(Arc::new(known));
    let names = ["media_attachments", "accounts", "preview_cards"];
    for ((sel, rows), name) in selections.iter().zip(broken).zip(names) {
        if rows.is_empty() || cancel.is_cancelled() {
            continue;
        }
        let verb = if apply { "freed" } else { "would be freed" };
        let progress = Progress::start_unit(
            &format!("reconcile {name}"),
            rows.len() as u64,
            "rows",
            verb,
            mode,
        );
        let pass = PassReport {
            pass: name,
            rows_selected: rows.len() as u64,
            ..PassReport::default()
        };
        let sink = LockedDb {
            db,
            lock: lock.as_deref(),
        };
        let result = run_pass(
            VecRows(rows.into_iter()),
            &sink,
            store.clone(),
            sel,
            &opts,
            &progress,
            &cancel,
            pass,
        )
        .await;
        progress.finish();
        match result {
            Ok(p) => report.passes.push(p),
            Err(failure) => {
                let (p, e) = *failure;
                report.passes.push(p);
                report.fatal = Some(match e {
                    PassError::Db(e) => e.to_string(),
                    PassError::Store(e) => {
                        format!("{e} (the rows of the failed batch were left untouched)")
                    }
                });
                break;
            }
        }
    }
    report.interrupted = cancel.is_cancelled();
    report.requests = store.limiter().stats();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
