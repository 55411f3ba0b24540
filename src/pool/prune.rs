//! A whole prune run: the passes to run ([`PrunePlan`]: media, then profiles, then preview
//! cards, each a [`Selection`] with its cutoff) and their execution in order on the
//! pipeline engine ([`run_prune`], one [`super::run_pass`] each), with the store checked
//! first and every fatal error turned into the summary's `fatal` line, so the report always
//! says what was deleted and cleared before it. `commands/prune.rs` only wires config,
//! database, lock and store to it.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use super::budget::Budget;
use super::{LockedDb, PassError, PassOptions, run_pass};
use crate::inventory::Selection;
use crate::inventory::owners::{OwnerCheckError, OwnershipError, check_database_owns};
use crate::mastodon::{Db, DbError, RunLock};
use crate::model::Shard;
use crate::plan::domain::DomainFilter;
use crate::plan::prune::{DaysSource, cutoff};
use crate::report::{PassReport, Progress, ProgressMode, PruneReport};
use crate::store::{RetryPolicy, Store, StoreError};

/// What the admin asked to prune (prune's flags, as plain values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneScope {
    /// Media attachments (not `--no-media`).
    pub media: bool,
    /// `--keep-interacted`.
    pub keep_interacted: bool,
    /// Remote avatars and headers (`--prune-profiles`, or headers only).
    pub profiles: bool,
    /// `--remove-headers`: headers only.
    pub headers_only: bool,
    /// `--include-follows`.
    pub include_follows: bool,
    /// `--preview-cards`: their retention in days (`--preview-cards-days`).
    pub preview_card_days: Option<u32>,
    /// `--domain` / `--exclude-domain`, applied to every pass.
    pub domains: DomainFilter,
}

/// The passes of one run, in order, with their cutoffs.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunePlan {
    /// Media, then profiles, then preview cards (those asked for).
    pub selections: Vec<Selection>,
    /// The media (and profiles) cutoff: `now − days`.
    pub media_cutoff: DateTime<Utc>,
    /// The preview card cutoff, when that pass runs.
    pub card_cutoff: Option<DateTime<Utc>>,
    /// `--shard K/N`: every pass selects only the rows with `id mod N = K`
    /// ([`crate::model::Shard::sql_filter`]); `None`: all rows.
    pub shard: Option<Shard>,
}

impl PrunePlan {
    /// The passes `scope` asks for, with `days` of retention for media and profiles,
    /// counted back from `now` (tootctl's order: media, profiles, cards).
    pub fn new(scope: PruneScope, days: u32, now: DateTime<Utc>) -> Self {
        let media_cutoff = cutoff(now, days);
        let mut selections = Vec::new();
        if scope.media {
            selections.push(Selection::Media {
                cutoff: media_cutoff,
                keep_interacted: scope.keep_interacted,
                domains: scope.domains.clone(),
            });
        }
        if scope.profiles {
            selections.push(Selection::Profiles {
                cutoff: media_cutoff,
                headers_only: scope.headers_only,
                include_follows: scope.include_follows,
                domains: scope.domains.clone(),
            });
        }
        let card_cutoff = scope.preview_card_days.map(|d| cutoff(now, d));
        if let Some(c) = card_cutoff {
            selections.push(Selection::PreviewCards {
                cutoff: c,
                domains: scope.domains.clone(),
            });
        }
        Self {
            selections,
            media_cutoff,
            card_cutoff,
            shard: None,
        }
    }
}

/// Everything one run needs besides the store.
#[derive(Debug)]
pub struct PruneRun<'a> {
    /// Mastodon's database.
    pub db: &'a Db,
    /// The run's advisory lock, proved held before every delete batch (`None`: dry run
    /// without a lock).
    pub lock: Option<Arc<RunLock>>,
    /// The passes.
    pub plan: &'a PrunePlan,
    /// Retention in days, and where it came from.
    pub days: (u32, DaysSource),
    /// Concurrency, key prefix, gate and retry settings of every pass.
    pub opts: PassOptions,
    /// Progress bar or cron status line.
    pub progress: ProgressMode,
    /// Stops intake (Ctrl-C, SIGTERM).
    pub cancel: CancellationToken,
    /// `--max-cache-size`: measure the cache first and prune oldest first until it fits
    /// ([`super::budget::measure`]); the plan's cutoffs become floors (see [`Budget`]).
    pub budget: Option<Budget>,
}

/// Why a run could not start: the store check failed (after its retries), or counting the
/// first pass's rows failed. Later errors end up in [`PruneReport::fatal`] instead.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The storage check before any change.
    #[error("checking the storage before any change: {0}")]
    Store(StoreError),
    /// The database cannot be the owner of this storage: none of its newest stored files
    /// is there ([`crate::inventory::owners::check_owned`]). Nothing was changed.
    #[error(transparent)]
    NotOwner(#[from] OwnershipError),
    /// The database, before anything was done.
    #[error(transparent)]
    Db(DbError),
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Runs every pass of `run.plan` in order against `store` and returns the summary. A fatal
/// error in a pass (database, store, lost lock) stops the run with the passes so far and
/// the reason in `fatal`; Ctrl-C sets `interrupted`. Errors: see [`PruneError`].
pub async fn run_prune(
    run: PruneRun<'_>,
    store: Arc<dyn Store>,
) -> Result<PruneReport, PruneError> {
    let started = Instant::now();
    let PruneRun {
        db,
        lock,
        plan,
        days: (days, source),
        opts,
        progress: mode,
        cancel,
        budget,
    } = run;
    let mut opts = opts;
    check_store(store.as_ref(), &opts)
        .await
        .map_err(PruneError::Store)?;
    // A wrong DATABASE_URL or bucket makes every candidate look already gone, and prune
    // would clear rows whose files live elsewhere: the dry run refuses alike, so it shows
    // what the real run would do.
    check_database_owns(db, store.as_ref(), &opts.key_prefix)
        .await
        .map_err(|e| match e {
            OwnerCheckError::Db(e) => PruneError::Db(e),
            OwnerCheckError::NotOwner(e) => PruneError::NotOwner(e),
        })?;
    let dry_run = opts.gate.is_dry_run();
    let mut report = PruneReport {
        dry_run,
        days,
        days_source: serde_json::to_value(source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        cutoff: rfc3339(plan.media_cutoff),
        preview_cards_cutoff: plan.card_cutoff.map(rfc3339),
        // Every pass of a run has the same domain filters.
        domains: plan
            .selections
            .first()
            .map(|s| s.domains().include.clone())
            .unwrap_or_default(),
        exclude_domains: plan
            .selections
            .first()
            .map(|s| s.domains().exclude.clone())
            .unwrap_or_default(),
        storage: store.describe(),
        shard: plan.shard.map(|s| s.to_string()),
        ..PruneReport::default()
    };
    // A versioned bucket keeps what prune deletes (docs/reference/provider-quirks.md#u2):
    // say so instead of claiming freed space. A provider that cannot tell is not a reason
    // to stop.
    let versioning = match store.as_s3ext() {
        Some(s3) => s3.versioning().await,
        None => Ok(None),
    };
    report.bucket_versioning = versioning.unwrap_or_else(|e| {
        tracing::debug!("could not read the bucket's versioning: {e}");
        None
    });
    tracing::info!(
        days,
        source = %source,
        cutoff = %report.cutoff,
        storage = %report.storage,
        dry_run,
        "prune starting"
    );
    let budgeted;
    let plan = match budget {
        None => plan,
        Some(b) => {
            let m =
                super::budget::measure(db, store.as_ref(), plan, b, &opts, mode, &cancel).await?;
            opts.known_sizes = Some(m.known);
            report.budget = Some(m.report);
            if !b.days_floor {
                // No --days: the budget alone sets the media and profile cutoff.
                report.days = 0;
                report.days_source = "max_cache_size".to_owned();
            }
            let media_pass = m
                .plan
                .selections
                .iter()
                .any(|s| matches!(s, Selection::Media { .. } | Selection::Profiles { .. }));
            report.cutoff = if media_pass {
                rfc3339(m.plan.media_cutoff)
            } else {
                "none".to_owned()
            };
            report.preview_cards_cutoff = m.plan.card_cutoff.map(rfc3339);
            budgeted = m.plan;
            &budgeted
        }
    };
    for sel in &plan.selections {
        if cancel.is_cancelled() {
            break;
        }
        let name = match sel {
            Selection::Media { .. } => "media",
            Selection::Profiles { .. } => "profiles",
            Selection::PreviewCards { .. } => "preview_cards",
        };
        let total = match sel.count(db, plan.shard).await {
            Ok(t) => t,
            // Earlier passes may have deleted already: keep their summary.
            Err(e) if !report.passes.is_empty() => {
                report.fatal = Some(e.to_string());
                break;
            }
            Err(e) => return Err(PruneError::Db(e)),
        };
        let verb = if dry_run { "would be freed" } else { "freed" };
        let progress = Progress::start_unit(
            &format!("prune {name}"),
            total.max(0) as u64,
            "rows",
            verb,
            mode,
        );
        let pass = PassReport {
            pass: name,
            rows_selected: total.max(0) as u64,
            ..PassReport::default()
        };
        let rows = LockedDb {
            db,
            lock: lock.as_deref(),
        };
        let result = run_pass(
            sel.cursor(db, opts.page_size, plan.shard),
            &rows,
            store.clone(),
            sel,
            &opts,
            &progress,
            &cancel,
            pass,
        )
        .await;
        progress.finish();
        let (pass, error) = match result {
            Ok(p) => (p, None),
            Err(failure) => {
                let (p, e) = *failure;
                (p, Some(e))
            }
        };
        report.passes.push(pass);
        if let Some(e) = error {
            report.fatal = Some(fatal_line(e));
            break;
        }
    }
    if let Some(b) = &mut report.budget {
        let freed: u64 = report.passes.iter().map(|p| p.bytes_freed).sum();
        b.left_bytes = b.measured_bytes.saturating_sub(freed);
    }
    report.interrupted = cancel.is_cancelled();
    report.set_requests(store.limiter().stats());
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The summary's `fatal` line for the error that stopped a pass (also logged).
fn fatal_line(e: PassError) -> String {
    match e {
        // Stop with the summary of what was done; exit 3.
        PassError::Db(e @ DbError::LockLost { .. }) => {
            tracing::error!("{e}");
            e.to_string()
        }
        // Deletes may have been confirmed before the error: print what was done (the rows
        // of unfinished batches were left untouched), then exit 3.
        PassError::Db(e) => {
            tracing::error!("{e:#}");
            format!(
                "{e:#} (rows whose update did not commit keep their file names; the next run finds their objects already gone and clears them)"
            )
        }
        PassError::Store(e) => {
            format!("{e} (the rows of the failed batch were left untouched)")
        }
    }
}

/// Checks the store before any change. A retryable failure (SlowDown storm, network
/// trouble) that outlasts the store's retry policy is tried again on the pool's item-level
/// schedule (`key_attempts`, full jitter from `retry_base`, the store's one backoff rule
/// [`RetryPolicy::backoff`]) before the run gives up
/// (`docs/reference/provider-quirks.md#t1`); anything else (credentials, missing bucket)
/// fails at once.
pub(super) async fn check_store(store: &dyn Store, opts: &PassOptions) -> Result<(), StoreError> {
    let policy = RetryPolicy {
        max_attempts: opts.key_attempts,
        base: opts.retry_base,
        cap: opts.retry_base.saturating_mul(1 << 6),
    };
    let mut attempt = 1;
    loop {
        match store.check().await {
            Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                let wait = policy.backoff(attempt, None);
                tracing::warn!(error = %e, ?wait, "storage check failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> PruneScope {
        PruneScope {
            media: true,
            keep_interacted: false,
            profiles: false,
            headers_only: false,
            include_follows: false,
            preview_card_days: None,
            domains: DomainFilter::default(),
        }
    }

    #[test]
    fn passes_follow_tootctls_order_with_their_cutoffs() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cases = [
            (scope(), vec!["media"], None),
            (
                PruneScope {
                    profiles: true,
                    preview_card_days: Some(180),
                    ..scope()
                },
                vec!["media", "profiles", "cards"],
                Some(cutoff(now, 180)),
            ),
            (
                PruneScope {
                    media: false,
                    preview_card_days: Some(30),
                    ..scope()
                },
                vec!["cards"],
                Some(cutoff(now, 30)),
            ),
        ];
        for (scope, want, card) in cases {
            let plan = PrunePlan::new(scope.clone(), 7, now);
            let got: Vec<_> = plan
                .selections
                .iter()
                .map(|s| match s {
                    Selection::Media { cutoff: c, .. } => {
                        assert_eq!(*c, cutoff(now, 7));
                        "media"
                    }
                    Selection::Profiles { cutoff: c, .. } => {
                        assert_eq!(*c, cutoff(now, 7));
                        "profiles"
                    }
                    Selection::PreviewCards { .. } => "cards",
                })
                .collect();
            assert_eq!(got, want, "{scope:?}");
            assert_eq!(plan.card_cutoff, card);
            assert_eq!(plan.media_cutoff, cutoff(now, 7));
        }
    }

    #[test]
    fn the_store_check_backoff_is_the_old_schedule() {
        let opts = PassOptions::default();
        let policy = RetryPolicy {
            max_attempts: opts.key_attempts,
            base: opts.retry_base,
            cap: opts.retry_base.saturating_mul(1 << 6),
        };
        for attempt in 1..opts.key_attempts {
            let cap = opts.retry_base.saturating_mul(1 << (attempt - 1).min(6));
            assert!(policy.backoff(attempt, None) <= cap);
        }
    }
}
