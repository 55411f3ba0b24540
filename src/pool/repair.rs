//! `migrate --repair`: every object below the target's key prefix, listed with
//! `Store::list` as the producer of the pipeline engine (`pool/engine.rs`) and checked
//! `concurrency` at a time: one HEAD (and, for a missing or generic Content-Type, a GET
//! of its first 64 bytes), its ACL when `S3_PERMISSION` is set, the database's standing
//! with `--repair-acl`; the decision is `plan::migrate` (`repair_acl`, `repair_verdict`),
//! the rewrite one COPY in place through the dry-run [`Gate`]. Fills the repair fields of
//! a [`MigrateReport`].

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Gate;
use super::copy::MigrateError;
use super::engine::{self, AfterFatal, Commit, EngineOptions, Failed, FlushPolicy, Intake};
use crate::inventory::standing::standing_or_hidden;
use crate::mastodon::Db;
use crate::model::KeyPrefix;
use crate::plan::headers::{CACHE_CONTROL, content_type};
use crate::plan::migrate::{RepairVerdict, is_generic_content_type, repair_acl, repair_verdict};
use crate::plan::parse::parse_key;
use crate::report::migrate::MigrateReport;
use crate::report::{Progress, ProgressMode};
use crate::store::s3::{ObjectHeaders, S3Store};
use crate::store::{Store as _, StoreError};

/// One `--repair` run.
pub struct Repair<'a> {
    /// The bucket repaired in place.
    pub target: &'a S3Store,
    /// Its `S3_KEY_PREFIX`: only objects below it are listed.
    pub key_prefix: &'a KeyPrefix,
    /// Its `S3_PERMISSION` (`None`: set but empty, ACLs are left alone).
    pub permission: Option<&'a str>,
    /// The dry-run gate every rewrite passes.
    pub gate: Gate,
    /// Objects checked at once.
    pub concurrency: usize,
    /// `--repair-acl`: ask the database before publishing or hiding.
    pub repair_acl: bool,
    /// Mastodon's database (with `--repair-acl`).
    pub db: Option<&'a Db>,
    /// `--shard K/N`: only the listed objects whose key (below the key prefix) this shard
    /// owns ([`crate::model::Shard::owns_key`]).
    pub shard: Option<crate::model::Shard>,
}

/// What was done with one object.
enum Repaired {
    Fine,
    Fixed,
    FixedLeftPrivate,
    LeftPrivate,
    Vanished,
}

/// Every object below the key prefix gets Mastodon's Content-Type (when it is missing or
/// generic) and Cache-Control, and its ACL (`plan::headers::decide_acl`): backups and
/// imports private; keys outside Mastodon's layout keep their ACL; otherwise public objects
/// stay public and private ones private, unless `--repair-acl`, which asks the database:
/// media of suspended accounts and moderated posts become private, and a private object
/// becomes public only when its row exists in good standing (`docs/reference/provider-quirks.md#a3`). One COPY per object
/// that needs it, none otherwise. Per-object failures are listed in `report`. Errors: a
/// listing page failed ([`MigrateError::Listing`]).
pub async fn repair(
    job: &Repair<'_>,
    cancel: &CancellationToken,
    mode: ProgressMode,
    report: &mut MigrateReport,
) -> Result<(), MigrateError> {
    let prefix = job
        .key_prefix
        .as_deref()
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    let progress = Progress::start_unit("repair", 0, "objects", "checked", mode);
    let engine = EngineOptions {
        concurrency: job.concurrency,
        // Nothing is journalled: the counts are the report's.
        flush: FlushPolicy {
            every: usize::MAX,
            interval: None,
        },
        after_fatal: AfterFatal::CommitFinished,
    };
    let producer = |mut intake: Intake<String>| {
        let prefix = prefix.as_str();
        async move {
            // One listing page after the other, each requested when the stream reaches it.
            let mut listing = job.target.list(prefix, None);
            loop {
                if intake.is_stopped() {
                    return Ok(false);
                }
                let Some(object) = listing.next().await else {
                    return Ok(true);
                };
                let object = object.map_err(MigrateError::Listing)?;
                if let Some(s) = job.shard
                    && !s.owns_key(job.key_prefix.strip(object.key.as_str()))
                {
                    continue;
                }
                if !intake.send(object.key.as_str().to_owned()).await {
                    return Ok(false);
                }
            }
        }
    };
    let mut commit = RepairCommit {
        progress: &progress,
        report: &mut *report,
    };
    let prefix_len = prefix.len();
    let outcome = engine::run(
        &engine,
        cancel,
        producer,
        |key: String, _| async move {
            let out = repair_one(job, &key, &key[prefix_len..]).await;
            Ok::<_, Failed<_, MigrateError>>((key, out))
        },
        &mut commit,
    )
    .await;
    outcome.produced?;
    progress.finish();
    Ok(())
}

/// The commit stage of a repair: counts each checked object, in listing order.
struct RepairCommit<'a> {
    progress: &'a Progress,
    report: &'a mut MigrateReport,
}

impl Commit<(String, Result<Repaired, StoreError>), MigrateError> for RepairCommit<'_> {
    async fn commit(
        &mut self,
        (key, out): (String, Result<Repaired, StoreError>),
    ) -> Result<(), MigrateError> {
        let report = &mut *self.report;
        report.repair_checked += 1;
        self.progress.add(1, u64::from(out.is_err()), 0);
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
        Ok(())
    }
}

/// Reads the facts of one object (`full_key` with the prefix, `key` without) and rewrites
/// it when [`repair_verdict`] says so. An object deleted since the listing is not an error
/// (`docs/reference/provider-quirks.md#l3`).
async fn repair_one(job: &Repair<'_>, full_key: &str, key: &str) -> Result<Repaired, StoreError> {
    let Some(head) = job.target.head(full_key).await? else {
        return Ok(Repaired::Vanished);
    };
    let want_ct = match head.content_type.as_deref() {
        Some(ct) if !is_generic_content_type(ct) => ct.to_owned(),
        _ => {
            let bytes = match job
                .target
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
    let acl = match job.permission {
        None => repair_acl(key, false, None, false, None),
        Some(p) => {
            let public = match job.target.is_public(full_key).await {
                Ok(public) => public,
                Err(StoreError::NotFound) => return Ok(Repaired::Vanished),
                Err(e) => return Err(e),
            };
            let parsed = parse_key(key, &KeyPrefix::default()).ok();
            let standing = match (job.repair_acl, &parsed) {
                (true, Some(parsed)) => Some(standing_or_hidden(job.db, key, parsed).await),
                _ => None,
            };
            repair_acl(key, parsed.is_some(), Some(p), public, standing)
        }
    };
    let left_private = match repair_verdict(
        head.content_type.as_deref(),
        head.cache_control.as_deref(),
        &want_ct,
        &acl,
    ) {
        RepairVerdict::Fine => return Ok(Repaired::Fine),
        RepairVerdict::LeftPrivate => return Ok(Repaired::LeftPrivate),
        RepairVerdict::Rewrite { left_private } => left_private,
    };
    let headers = ObjectHeaders {
        content_type: want_ct,
        cache_control: CACHE_CONTROL.to_owned(),
        acl: acl.acl,
    };
    match job
        .gate
        .mutate(job.target.repair_in_place(full_key, &headers), || Ok(()))
        .await
    {
        Ok(()) if left_private => Ok(Repaired::FixedLeftPrivate),
        Ok(()) => Ok(Repaired::Fixed),
        Err(StoreError::NotFound) => Ok(Repaired::Vanished),
        Err(e) => Err(e),
    }
}
