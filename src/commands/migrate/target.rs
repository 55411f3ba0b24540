//! migrate's target, from the env file's storage: its bucket (`S3_ENABLED=true`), or, for
//! admins leaving a provider, its local folder (`PAPERCLIP_ROOT_PATH`, else
//! `public/system` beside the env file, the root prune and du use), with the journal's
//! name of it and the flags a disk target refuses. Split from `mod.rs` to keep each file
//! of `commands/` wiring-sized.

use std::path::Path;

use anyhow::anyhow;

use super::super::CommandError;
use crate::cli::migrate::Args;
use crate::config::{S3Config, StorageConfig};
use crate::model::KeyPrefix;
use crate::plan::migrate::{disk_target_id, remove_command, remove_file_command, target_id};
use crate::store::fs::FsStore;
use crate::store::s3::S3Store;
use crate::store::{Limiter, Store};

/// What a disk target's copy decides ACLs against: a private decision becomes a 0600
/// file, any other a 0644 one (`store::Store::upload`).
const DISK_PERMISSION: &str = "public-read";

/// The store migrate writes into, and how the journal and the summary name it.
pub(super) enum Target<'c> {
    /// A bucket, with its settings.
    Bucket(S3Store, &'c S3Config),
    /// A folder on the local disk.
    Disk(FsStore, KeyPrefix),
}

impl<'c> Target<'c> {
    /// The target of `storage` (the env file's), checked: the bucket lists, the folder
    /// exists. Refuses (exit 2) what a disk target cannot do: `--from DIR` (a folder to
    /// folder copy is cp's or rsync's), no `--from-env` (the default source would be that
    /// folder itself), `--repair`/`--repair-acl` (a file has no ACL or headers).
    pub(super) async fn open(
        env_file: &Path,
        storage: &'c StorageConfig,
        args: &Args,
        limiter: Limiter,
    ) -> Result<Self, CommandError> {
        let target = match storage {
            StorageConfig::S3(cfg) => Target::Bucket(S3Store::new(cfg, limiter), cfg),
            StorageConfig::Filesystem(fs) => {
                let root = fs.root.display();
                let env = env_file.display();
                if args.repair || args.repair_acl {
                    return Err(CommandError::usage(anyhow!(
                        "--repair fixes the ACLs and headers of objects in a bucket, but {env} keeps media on the local disk ({root}), where files have neither; nothing to repair"
                    )));
                }
                if let Some(dir) = &args.from {
                    return Err(CommandError::usage(anyhow!(
                        "--from {} copies local files into a bucket, but {env} keeps media on the local disk ({root}): for a folder to folder copy use `cp -a` or `rsync -a`",
                        dir.display()
                    )));
                }
                if args.from_env.is_none() {
                    return Err(CommandError::usage(anyhow!(
                        "{env} keeps media on the local disk ({root}): to copy the old provider's bucket into it, pass --from-env OLD_ENV; to copy local files into a bucket, set S3_ENABLED=true, S3_BUCKET, S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the env file of the target"
                    )));
                }
                Target::Disk(FsStore::new(fs.root.clone(), limiter), KeyPrefix::default())
            }
        };
        target.store().check().await.map_err(|e| {
            CommandError::fatal(anyhow!("target (--env-file {}): {e}", env_file.display()))
        })?;
        Ok(target)
    }

    /// The store, as the pipelines take it.
    pub(super) fn store(&self) -> &dyn Store {
        match self {
            Target::Bucket(s, _) => s,
            Target::Disk(s, _) => s,
        }
    }

    /// The bucket's settings (`None` on the local disk).
    pub(super) fn bucket(&self) -> Option<&'c S3Config> {
        match self {
            Target::Bucket(_, cfg) => Some(cfg),
            Target::Disk(..) => None,
        }
    }

    /// The key prefix objects are written below (`S3_KEY_PREFIX`; none on the disk).
    pub(super) fn key_prefix(&self) -> &KeyPrefix {
        match self {
            Target::Bucket(_, cfg) => &cfg.key_prefix,
            Target::Disk(_, none) => none,
        }
    }

    /// The ACL every public object gets (`S3_PERMISSION`; see [`DISK_PERMISSION`]).
    pub(super) fn permission(&self) -> Option<&str> {
        match self {
            Target::Bucket(_, cfg) => cfg.permission.as_deref(),
            Target::Disk(..) => Some(DISK_PERMISSION),
        }
    }

    /// The journal's name of the target (`plan::migrate::target_id`, `disk_target_id`).
    pub(super) fn id(&self) -> String {
        match self {
            Target::Bucket(_, cfg) => target_id(
                cfg.endpoint.as_deref(),
                &cfg.bucket,
                cfg.key_prefix.as_deref(),
            ),
            Target::Disk(s, _) => disk_target_id(s.root()),
        }
    }

    /// The shell command that deletes one key of the target (`{}` for the key).
    pub(super) fn remove_command(&self) -> String {
        match self {
            Target::Bucket(_, cfg) => remove_command(
                cfg.endpoint.as_deref(),
                &cfg.bucket,
                cfg.key_prefix.as_deref(),
            ),
            Target::Disk(s, _) => remove_file_command(s.root()),
        }
    }
}
