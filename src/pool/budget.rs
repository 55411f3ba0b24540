//! `prune --max-cache-size` (issue 14, item 1): the sizing pass and the passes it implies.
//!
//! [`measure`] reads every row of the run's kinds that holds room in the cache
//! (`inventory::budget`), sizes its keys exactly as a prune pass does (the range listings
//! of `plan::ranges`, then per-partition listings; a `stat` per key on the filesystem:
//! `pool::stat_with_retries`), decides the cutoff ([`crate::plan::budget::plan_budget`])
//! and returns the passes to run with their cutoffs, plus the sizes it listed for the rows
//! those passes will take ([`KnownSizes`]): the delete pass uses them instead of listing
//! again, so the whole run lists the cache once. A row that changed in between (another
//! file name, so other keys) is sized again by its pass, as without a budget.
//!
//! Memory: one small record per measured row (id, age, byte count and one size per key),
//! about 100 bytes; a cache of a million rows takes about 100 MB during the run.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::PassOptions;
use super::prune::{PruneError, PrunePlan};
use crate::inventory::Selection;
use crate::inventory::budget::MeasuredRow;
use crate::mastodon::Db;
use crate::model::{CandidateRow, RowTable};
use crate::plan::budget::{BudgetRow, plan_budget};
use crate::plan::layout::ObjectKey;
use crate::plan::prune::row_keys;
use crate::report::{BudgetReport, Progress, ProgressMode};
use crate::store::{Store, StoreError};

/// `--max-cache-size` and how it combines with the retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The most bytes the cache may hold after the run.
    pub max_bytes: u64,
    /// `--days` was given: media and profiles older than it go whatever the budget says
    /// (whichever removes more wins). Without it the budget alone decides for them.
    /// Preview cards always keep their own `--preview-cards-days` floor.
    pub days_floor: bool,
    /// Card images updated at or after this moment are never taken by the budget (`None`:
    /// `--force`): `now − 14 days` ([`crate::plan::prune::MIN_PREVIEW_CARD_DAYS`]), the
    /// same guard as `--preview-cards-days` below 14 without `--force`, since Mastodon
    /// fetches a card's image again only when its link is shared after two weeks
    /// (`docs/reference/prune-filters.md#budget`). Such cards still count toward the size.
    pub card_ceiling: Option<DateTime<Utc>>,
    /// Media and profiles fetched at or after this moment are never taken by the budget:
    /// `now − 1 day` ([`MIN_BUDGET_AGE_DAYS`]), so a small budget does not delete what a
    /// timeline is showing right now (Mastodon would fetch it again at once). They still
    /// count toward the size.
    pub settled_before: DateTime<Utc>,
}

/// The youngest media and profiles the budget may take, in days ([`Budget::settled_before`]).
pub const MIN_BUDGET_AGE_DAYS: i64 = 1;

/// Sizes the sizing pass listed, per row, for the rows the passes will take: the delete
/// pass's sizing of those rows (one answer per key, in [`row_keys`] order).
#[derive(Debug, Default)]
pub struct KnownSizes {
    rows: HashMap<(RowTable, i64), RowSizes>,
}

/// A measured row's key fingerprint and one size per key (`None`: not in the storage).
type RowSizes = (u64, Vec<Option<u64>>);

impl KnownSizes {
    /// Records the listed `sizes` of `row`'s `keys` (one per key, in order).
    pub fn insert(&mut self, row: &CandidateRow, keys: &[ObjectKey], sizes: Vec<Option<u64>>) {
        self.rows
            .insert((row.table, row.id), (fingerprint(keys), sizes));
    }

    /// The listed sizes of `row`'s `keys`, when the row still has the keys it had when
    /// measured (`None`: unknown or changed since; size it again).
    pub fn get(&self, row: &CandidateRow, keys: &[ObjectKey]) -> Option<&[Option<u64>]> {
        match self.rows.get(&(row.table, row.id)) {
            Some((fp, sizes)) if *fp == fingerprint(keys) && sizes.len() == keys.len() => {
                Some(sizes)
            }
            _ => None,
        }
    }
}

fn fingerprint(keys: &[ObjectKey]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for k in keys {
        k.as_str().hash(&mut h);
    }
    h.finish()
}

/// The outcome of [`measure`].
#[derive(Debug)]
pub struct Measured {
    /// The passes to run, with the cutoffs the budget (and floors) imply; kinds with
    /// nothing to remove are left out.
    pub plan: PrunePlan,
    /// The sizes the passes reuse.
    pub known: Arc<KnownSizes>,
    /// The budget's part of the summary (`left_bytes` filled in after the passes).
    pub report: BudgetReport,
}

struct Sized {
    kind: usize,
    row: MeasuredRow,
    fingerprint: u64,
    sizes: Vec<Option<u64>>,
}

fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Measures the cache of `plan`'s kinds in `store`, decides the cutoff `budget` implies
/// and returns the passes to run. Errors: the database ([`PruneError::Db`]) or a fatal
/// storage error (credentials, missing bucket: [`PruneError::Store`]). A row whose keys
/// could not be sized after the retries is left out of the measure (counted in
/// `rows_unsized`: the cache is then measured low, so the budget removes less, never
/// more). Cancelling stops the measure: no pass runs.
pub async fn measure(
    db: &Db,
    store: &dyn Store,
    plan: &PrunePlan,
    budget: Budget,
    opts: &PassOptions,
    mode: ProgressMode,
    cancel: &CancellationToken,
) -> Result<Measured, PruneError> {
    let batch_limit = store.batch_limit().max(1);
    let progress = Progress::start_unit("measure cache", 0, "rows", "measured", mode);
    let mut sized: Vec<Sized> = Vec::new();
    let mut report = BudgetReport {
        max_cache_size: budget.max_bytes,
        ..BudgetReport::default()
    };
    'kinds: for (kind, sel) in plan.selections.iter().enumerate() {
        let mut cursor = sel.budget_cursor(db, opts.page_size);
        loop {
            if cancel.is_cancelled() {
                break 'kinds;
            }
            let page = cursor.next_page().await.map_err(PruneError::Db)?;
            if page.is_empty() {
                break;
            }
            // Chunks of at most one delete batch of keys, as the prune pass cuts them, so
            // the range listings are the same.
            let mut chunks: Vec<Vec<(MeasuredRow, Vec<ObjectKey>)>> = vec![Vec::new()];
            let mut in_chunk = 0;
            for m in page {
                let keys = row_keys(&m.row, &opts.key_prefix);
                if in_chunk + keys.len() > batch_limit && in_chunk > 0 {
                    chunks.push(Vec::new());
                    in_chunk = 0;
                }
                in_chunk += keys.len();
                if let Some(c) = chunks.last_mut() {
                    c.push((m, keys));
                }
            }
            let mut results = futures::stream::iter(chunks.into_iter().map(|chunk| async move {
                let keys: Vec<ObjectKey> =
                    chunk.iter().flat_map(|(_, k)| k.iter().cloned()).collect();
                let answers = super::stat_with_retries(store, &keys, opts).await;
                (chunk, answers)
            }))
            .buffered(opts.concurrency.max(1));
            while let Some((chunk, answers)) = results.next().await {
                if let Some(Err(e)) = answers.iter().find(|r| matches!(r, Err(e) if e.is_fatal())) {
                    progress.finish();
                    return Err(PruneError::Store(e.clone()));
                }
                let mut answers = answers.into_iter();
                let (mut rows, mut bytes) = (0, 0);
                for (m, keys) in chunk {
                    let row_answers: Vec<Result<Option<u64>, StoreError>> =
                        answers.by_ref().take(keys.len()).collect();
                    rows += 1;
                    if row_answers.iter().any(Result::is_err) {
                        report.rows_unsized += 1;
                        continue;
                    }
                    let sizes: Vec<Option<u64>> =
                        row_answers.into_iter().map(|r| r.unwrap_or(None)).collect();
                    bytes += sizes.iter().flatten().sum::<u64>();
                    sized.push(Sized {
                        kind,
                        row: m,
                        fingerprint: fingerprint(&keys),
                        sizes,
                    });
                }
                progress.add(rows, 0, bytes);
            }
        }
    }
    progress.finish();
    // Floors: the kinds' own retention cutoffs, inclusive.
    let floors: Vec<Option<NaiveDateTime>> = plan
        .selections
        .iter()
        .map(|s| match s {
            Selection::Media { .. } | Selection::Profiles { .. } => {
                budget.days_floor.then(|| plan.media_cutoff.naive_utc())
            }
            // Strict `updated_at < cutoff` is `<= cutoff − 1 µs`.
            Selection::PreviewCards { cutoff, .. } => {
                Some(cutoff.naive_utc() - Duration::microseconds(1))
            }
        })
        .collect();
    // Ceilings: the latest inclusive cutoff a kind may reach (cards: younger than two
    // weeks stay without --force; media and profiles: younger than a day stay; strict
    // `updated_at < ceiling` is `<= ceiling − 1 µs`).
    let ceilings: Vec<Option<NaiveDateTime>> = plan
        .selections
        .iter()
        .map(|s| match s {
            Selection::PreviewCards { .. } => budget
                .card_ceiling
                .map(|c| c.naive_utc() - Duration::microseconds(1)),
            Selection::Media { .. } | Selection::Profiles { .. } => {
                Some(budget.settled_before.naive_utc() - Duration::microseconds(1))
            }
        })
        .collect();
    let below_ceiling = |kind: usize, age: NaiveDateTime| ceilings[kind].is_none_or(|c| age <= c);
    let rows: Vec<BudgetRow> = sized
        .iter()
        .map(|s| BudgetRow {
            kind: s.kind,
            age: s.row.age,
            // A row above its kind's ceiling is kept, like a row the filters keep.
            prunable: s.row.prunable && below_ceiling(s.kind, s.row.age),
            bytes: s.sizes.iter().flatten().sum(),
        })
        .collect();
    let decision = plan_budget(&rows, budget.max_bytes, &floors);
    report.measured_bytes = decision.total_bytes;
    report.measured_rows = rows.len() as u64;
    report.measured_objects = sized
        .iter()
        .map(|s| s.sizes.iter().flatten().count() as u64)
        .sum();
    report.kept_bytes = decision.kept_bytes;
    report.cutoff = decision.cutoff.map(rfc3339);
    report.planned_rows = decision.rows_removed;
    report.planned_bytes = decision.bytes_removed;
    report.fits = decision.rows_removed == 0;
    report.met = decision.met;
    report.interrupted = cancel.is_cancelled();
    // The passes: each kind with its cutoff, none when nothing of it goes (or when the
    // measure was interrupted).
    let mut selections = Vec::new();
    let mut kind_cutoffs = Vec::new();
    for (kind, sel) in plan.selections.iter().enumerate() {
        let Some(c) = decision
            .kind_cutoff(floors[kind])
            .map(|c| ceilings[kind].map_or(c, |ceiling| c.min(ceiling)))
            .filter(|_| !report.interrupted)
        else {
            kind_cutoffs.push(None);
            continue;
        };
        kind_cutoffs.push(Some(c));
        let cutoff: DateTime<Utc> = match sel {
            Selection::PreviewCards { .. } => (c + Duration::microseconds(1)).and_utc(),
            _ => c.and_utc(),
        };
        selections.push(sel.with_cutoff(cutoff));
    }
    let mut known = KnownSizes::default();
    for s in sized {
        if s.row.prunable && kind_cutoffs[s.kind].is_some_and(|c| s.row.age <= c) {
            known
                .rows
                .insert((s.row.row.table, s.row.row.id), (s.fingerprint, s.sizes));
        }
    }
    let media_cutoff = selections
        .iter()
        .find_map(|s| match s {
            Selection::Media { cutoff, .. } | Selection::Profiles { cutoff, .. } => Some(*cutoff),
            Selection::PreviewCards { .. } => None,
        })
        .unwrap_or(plan.media_cutoff);
    let card_cutoff = selections.iter().find_map(|s| match s {
        Selection::PreviewCards { cutoff, .. } => Some(*cutoff),
        _ => None,
    });
    Ok(Measured {
        plan: PrunePlan {
            selections,
            media_cutoff,
            card_cutoff,
            shard: plan.shard,
        },
        known: Arc::new(known),
        report,
    })
}
