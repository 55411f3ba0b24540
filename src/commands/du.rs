//! `mastomedia du`: what is in the bucket, beside what the database thinks (`docs/reference/provider-quirks.md#u1`, `docs/reference/provider-quirks.md#u2`).
//!
//! Order of work: config → database (schema) → store check → the listing (parallel over
//! prefixes, [`crate::inventory::listing`]) and the database sums (one scan per table) at
//! the same time → with `--versions`, unfinished multipart uploads → report on stdout.
//! Read-only: nothing here deletes or writes.

use std::time::Instant;

use anyhow::anyhow;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{CommandError, interrupt_token, load_config, open_store};
use crate::cli::du::Args;
use crate::config::StorageConfig;
use crate::inventory::listing::{Objects, RangePlan, Versions, walk, walk_ranges};
use crate::inventory::usage::{Usage, database_sums};
use crate::mastodon::Db;
use crate::pool::bounded;
use crate::report::Summary as _;
use crate::report::usage::{DuReport, Multipart};
use crate::report::{ExitCode, Progress, ProgressMode};
use crate::store::{Limiter, ObjectMeta, S3Ext, StoreError, VersionMeta};

/// Runs `du` and returns the exit code (0, or 130 when interrupted). Prints the report
/// (stdout) itself. Errors: configuration (2); database, credentials, bucket or a listing
/// that keeps failing after the retry policy and the item-level retries (3).
pub async fn run(
    env_file: &std::path::Path,
    args: Args,
    quiet: bool,
) -> Result<ExitCode, CommandError> {
    let shard = super::shard(&args.shard)?;
    let cfg = load_config(env_file)?;
    if args.versions && matches!(cfg.storage, StorageConfig::Filesystem(_)) {
        return Err(CommandError::usage(anyhow!(
            "--versions needs S3 storage: a filesystem has no object versions or multipart uploads"
        )));
    }
    let db = Db::connect(&cfg.database, 2)
        .await
        .map_err(CommandError::fatal)?;
    let store = open_store(
        &cfg,
        Limiter::new(
            super::shard_rate(args.rate, shard),
            args.concurrency as usize,
        ),
    );
    let cancel = interrupt_token();
    let started = Instant::now();
    store
        .check()
        .await
        .map_err(store_error("checking the storage"))?;
    let key_prefix = cfg.key_prefix();
    // A shard counts the listed keys it owns (hash of the key below S3_KEY_PREFIX); every
    // shard lists the whole bucket, the listing is the cheap part.
    let mine = |key: &str| shard.is_none_or(|s| s.owns_key(key_prefix.strip(key)));
    let base = key_prefix
        .as_deref()
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    let root = format!("{base}{}", args.prefix);
    let concurrency = args.concurrency as usize;
    let progress = Progress::start_unit("du", 0, "objects", "listed", ProgressMode::detect(quiet));
    // S3 (a listing page is ~1000 keys): key ranges split while listing, no delimiter
    // discovery, so the requests stay near one chain's ceil(objects / 1000); `--versions`
    // and the filesystem: the folder walk (one page per folder, memory bounded by a folder).
    let ranged = store.sizes_by_listing();
    let plan = RangePlan::new(&root, base.len(), concurrency);
    let listing = async {
        let store = store.as_ref();
        let on_version = |u: &mut Usage, v: &VersionMeta| {
            if !mine(v.key.as_str()) {
                return;
            }
            progress.add(1, 0, v.size);
            u.add_version(v, &key_prefix);
        };
        let on_object = |u: &mut Usage, o: &ObjectMeta| {
            if !mine(o.key.as_str()) {
                return;
            }
            progress.add(1, 0, o.size);
            u.add_object(o.key.as_str(), o.size, &key_prefix);
        };
        // `--versions` keeps the folder walk (per-prefix chains listed to their end): a
        // key's versions and delete markers can span pages, and the key-range chains lost
        // some at a split (du_orphans::du_versions_counts_every_version_and_marker_at_any_concurrency).
        match (args.versions, ranged) {
            (false, true) => walk_ranges(store, &Objects, &plan, &cancel, on_object).await,
            (true, _) => {
                walk(
                    store,
                    &Versions,
                    &root,
                    base.len(),
                    concurrency,
                    &cancel,
                    on_version,
                )
                .await
            }
            (false, false) => {
                walk(
                    store,
                    &Objects,
                    &root,
                    base.len(),
                    concurrency,
                    &cancel,
                    on_object,
                )
                .await
            }
        }
    };
    let (walked, sums) = tokio::join!(listing, database_sums(&db));
    progress.finish();
    let walked = walked.map_err(store_error("listing the storage"))?;
    let sums = sums.map_err(CommandError::fatal)?;
    let mut report = DuReport {
        storage: store.describe(),
        shard: shard.map(|s| s.to_string()),
        prefix: root.clone(),
        complete: walked.complete,
        ..DuReport::default()
    };
    report.fill(&walked.acc, &sums, &args.prefix);
    if args.by == Some(crate::cli::du::DuBy::Month) || args.html.is_some() {
        report.fill_months(&walked.acc);
    }
    if args.versions {
        report.noncurrent = Some(walked.acc.noncurrent);
        if !cancel.is_cancelled() {
            let ext = store
                .as_s3ext()
                .ok_or_else(|| StoreError::s3_only("ListMultipartUploads", &store.describe()))
                .map_err(store_error("listing unfinished multipart uploads"))?;
            let m = multipart(ext, &root, concurrency, &cancel)
                .await
                .map_err(store_error("listing unfinished multipart uploads"))?;
            report.incomplete_multipart = Some(m);
        }
    }
    report.complete = walked.complete && !cancel.is_cancelled();
    tracing::info!(listings = walked.prefixes, ranged, "listing finished");
    report.requests = store.limiter().stats();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.html {
        let generated = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        crate::report::write_atomically(
            path,
            &crate::report::usage_html::render(&report, &generated),
        )
        .map_err(|e| {
            CommandError::fatal(anyhow!(
                "cannot write the HTML report {}: {e}",
                path.display()
            ))
        })?;
    }
    report.print(args.json);
    Ok(report.exit_code())
}

fn store_error(what: &'static str) -> impl FnOnce(StoreError) -> CommandError {
    move |e| CommandError {
        code: ExitCode::Fatal,
        error: anyhow!(e).context(what),
    }
}

/// Unfinished multipart uploads below `prefix` and the parts they already hold.
async fn multipart(
    store: &dyn S3Ext,
    prefix: &str,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Result<Multipart, StoreError> {
    let mut uploads = Vec::new();
    let mut marker = None;
    loop {
        let page = store.list_uploads_page(prefix, marker).await?;
        uploads.extend(page.uploads);
        match page.next {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    let mut m = Multipart {
        uploads: uploads.len() as u64,
        ..Multipart::default()
    };
    let mut parts = std::pin::pin!(bounded(
        futures::stream::iter(uploads),
        concurrency,
        cancel.child_token(),
        |u| async move { store.upload_parts(u.key.as_str(), &u.upload_id).await },
    ));
    while let Some(r) = parts.next().await {
        match r {
            Ok((n, bytes)) => {
                m.parts += n;
                m.bytes += bytes;
            }
            // Completed or aborted since it was listed.
            Err(StoreError::NotFound) => m.uploads -= 1,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                if m.unsized_uploads == 0 {
                    tracing::warn!("cannot size unfinished multipart uploads: {e}");
                }
                m.unsized_uploads += 1;
            }
        }
    }
    Ok(m)
}
