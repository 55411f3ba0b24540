//! migrate's source, from the flags: `--from-env OLD_ENV` (another provider's bucket,
//! checked, never the target itself) or `--from DIR` (default: the env file's
//! `PAPERCLIP_ROOT_PATH`/`public/system`), canonicalised. Split from `mod.rs` to keep each
//! file of `commands/` wiring-sized.

use std::path::Path;

use anyhow::anyhow;

use super::super::CommandError;
use crate::cli::migrate::Args;
use crate::config::{Config, S3Config, StorageConfig, media_root};
use crate::inventory::source::Source;
use crate::store::s3::S3Store;
use crate::store::{Limiter, Store as _};

/// The source: `--from-env OLD_ENV`'s bucket (checked, and refused when it is the target
/// bucket `target_cfg` itself; `None` for a disk target), else `--from DIR` or the env file's `public/system` folder (canonicalised).
/// Errors: usage (exit 2) for a wrong folder or env file, fatal for an unreachable bucket.
pub(super) async fn open_source(
    env_file: &Path,
    vars: &crate::config::Vars,
    args: &Args,
    rate: Option<std::num::NonZeroU32>,
    target_cfg: Option<&S3Config>,
) -> Result<Source, CommandError> {
    if let Some(old_env) = &args.from_env {
        let old = Config::load(old_env)?;
        let StorageConfig::S3(old_cfg) = old.storage else {
            return Err(CommandError::usage(anyhow!(
                "--from-env {}: that env file has no bucket (S3_ENABLED is not true); for local files use --from DIR",
                old_env.display()
            )));
        };
        // Copying a bucket onto itself rewrites every object for nothing.
        if let Some(target_cfg) = target_cfg
            && old_cfg.endpoint == target_cfg.endpoint
            && old_cfg.bucket == target_cfg.bucket
            && old_cfg.key_prefix == target_cfg.key_prefix
        {
            return Err(CommandError::usage(anyhow!(
                "--from-env {} names the target bucket itself ({}): pass the old provider's env file, or use --repair to fix the headers of objects already there",
                old_env.display(),
                target_cfg.bucket
            )));
        }
        let store = S3Store::new(&old_cfg, Limiter::new(rate, args.concurrency as usize * 2));
        store.check().await.map_err(|e| {
            CommandError::fatal(anyhow!(
                "source bucket (--from-env {}): {e}",
                old_env.display()
            ))
        })?;
        return Ok(Source::Bucket(Box::new(store), old_cfg.key_prefix));
    }
    let dir = args
        .from
        .clone()
        .unwrap_or_else(|| media_root(env_file, vars));
    let dir = dir.canonicalize().map_err(|e| {
        CommandError::usage(anyhow!(
            "source folder {} cannot be opened ({e}): pass --from with Mastodon's public/system folder",
            dir.display()
        ))
    })?;
    if !dir.is_dir() {
        return Err(CommandError::usage(anyhow!(
            "source {} is not a folder: pass --from DIR",
            dir.display()
        )));
    }
    Ok(Source::Dir(dir))
}
