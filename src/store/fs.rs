//! The filesystem backend: keys are paths below `PAPERCLIP_ROOT_PATH`.
//!
//! Deletes remove the file, count `ENOENT` as already gone (`docs/reference/provider-quirks.md#d2`), then remove parent folders
//! that became empty, never the root itself and never a folder that still holds anything
//! (`docs/reference/provider-quirks.md#d5`). Keys [`validate_key`] refuses (`.`, `..` or empty segments, a leading slash) get
//! no filesystem call. Folders are resolved before any stat or unlink: a symlinked folder
//! leading outside the root, or a file that is itself a symlink, is refused, and only
//! folders inside the root are ever removed. (Not proof against a concurrent swap of a
//! folder for a symlink between the check and the unlink; Mastodon never makes either.)
//!
//! Reads and writes (`get`, `head`, `put`, `copy`) resolve the key the same way; a write
//! goes to a temporary file in the target folder (created inside the root if missing)
//! and is renamed over the key, so a reader never sees half a file. Every filesystem call
//! takes one limiter permit (`stat`, `read`, `write`, `copy`, `unlink`, `rmdir`,
//! `readdir`), counted like S3 requests.

use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};

use super::{
    DeleteOutcome, HeadMeta, INVALID_KEY, Limiter, ListPage, ObjectHeaders, ObjectMeta, Store,
    StoreError, validate_key,
};
use crate::model::ObjectKey;

/// Media stored as files below a root folder.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    limiter: Limiter,
}

impl FsStore {
    /// `root` must be the normalised `PAPERCLIP_ROOT_PATH` (symlinks resolved).
    pub fn new(root: PathBuf, limiter: Limiter) -> Self {
        Self { root, limiter }
    }

    /// The lexical path of `key` below the root. Errors: `InvalidKey` for a key
    /// [`validate_key`] refuses (it would leave the root, or is not a Mastodon key).
    pub fn path_of(&self, key: &ObjectKey) -> Result<PathBuf, StoreError> {
        lexical_path(&self.root, key)
    }

    async fn resolve(&self, key: &ObjectKey) -> Result<Option<Resolved>, StoreError> {
        // Cheap lexical refusal first: no filesystem call at all for a refused key.
        let k = key.clone();
        self.blocking("stat", key, move |root| resolve_blocking(root, &k))
            .await
    }

    async fn delete_one(&self, key: &ObjectKey) -> DeleteOutcome {
        let path = match self.resolve(key).await {
            Ok(Some(r)) if r.exists => r.path,
            Ok(Some(r)) => {
                // Already gone, perhaps by a run killed before it removed the emptied
                // folders: remove them now (inside the root only, as after a delete).
                self.remove_empty_parents(&r.path).await;
                return DeleteOutcome::AlreadyGone;
            }
            Ok(None) => return DeleteOutcome::AlreadyGone,
            Err(e) => return DeleteOutcome::Failed(e),
        };
        let outcome = {
            let _permit = self.limiter.acquire("unlink").await;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => DeleteOutcome::Deleted,
                Err(e) if e.kind() == ErrorKind::NotFound => DeleteOutcome::AlreadyGone,
                Err(e) => return DeleteOutcome::Failed(io_error(&path, &e)),
            }
        };
        self.remove_empty_parents(&path).await;
        outcome
    }

    /// The size of `key`'s regular file. A key [`validate_key`] refuses is answered `None`
    /// without touching the disk, and so is one behind a symlink leading outside the root
    /// (or a symlinked file): nothing there is ours to size. Their delete then fails per
    /// key, so only that row is left untouched, not its whole batch.
    async fn stat_one(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        match self.resolve(key).await {
            Ok(r) => Ok(r.and_then(|r| r.size)),
            Err(e) if e.code() == INVALID_KEY => {
                tracing::debug!("{e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the resolved `path`'s parent folders while they are empty, stopping below
    /// the root; a folder outside the root, or one that has become a symlink, is never
    /// removed.
    async fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) {
                break;
            }
            match tokio::fs::symlink_metadata(d).await {
                Ok(m) if m.is_dir() => {}
                _ => break,
            }
            let _permit = self.limiter.acquire("rmdir").await;
            // remove_dir fails on a folder that is not empty: that is where we stop.
            if tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

/// `root` joined with `key` after [`validate_key`]. Errors: `InvalidKey`.
fn lexical_path(root: &Path, key: &ObjectKey) -> Result<PathBuf, StoreError> {
    validate_key(key)?;
    let rel = Path::new(key.as_str());
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(escape(key, "it is not a plain relative path"));
    }
    Ok(root.join(rel))
}

/// Where `key` really is: its folder with every symlink resolved, which must lie inside
/// the root, and its file name. `Ok(None)` when the file (or a folder above it) does
/// not exist. Errors: `InvalidKey` when a symlinked folder leads outside the root, or
/// the file itself is a symlink (Mastodon writes neither; deleting through them could
/// remove another instance's or the system's files); I/O errors.
fn resolve_blocking(root: &Path, key: &ObjectKey) -> Result<Option<Resolved>, StoreError> {
    let lexical = lexical_path(root, key)?;
    let (Some(parent), Some(name)) = (lexical.parent(), lexical.file_name()) else {
        return Err(escape(key, "it names no file"));
    };
    let dir = match std::fs::canonicalize(parent) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            // Missing: fine, unless the part that exists already leads outside.
            let mut up = parent.parent();
            while let Some(a) = up {
                if let Ok(c) = std::fs::canonicalize(a) {
                    if !c.starts_with(root) {
                        return Err(outside(key, &c));
                    }
                    break;
                }
                up = a.parent();
            }
            return Ok(None);
        }
        Err(e) => return Err(io_error(parent, &e)),
    };
    if !dir.starts_with(root) {
        return Err(outside(key, &dir));
    }
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => Err(escape(
            key,
            &format!(
                "{} is a symlink, which Mastodon never writes; remove or replace it by hand",
                path.display()
            ),
        )),
        Ok(m) => Ok(Some(Resolved {
            size: m.is_file().then_some(m.len()),
            exists: true,
            path,
        })),
        // The folder is there (inside the root) but the file is not: the delete still
        // tidies the folder, which a run killed between unlink and rmdir left empty.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Some(Resolved {
            size: None,
            exists: false,
            path,
        })),
        Err(e) => Err(io_error(&path, &e)),
    }
}

/// A key's file as found on disk.
struct Resolved {
    /// The file's path with every folder symlink resolved (inside the root).
    path: PathBuf,
    /// Whether anything is at `path` (false: the folder exists, the file does not).
    exists: bool,
    /// Its size when it is a regular file.
    size: Option<u64>,
}

/// Where `key` will be written: its folder, created below the root where missing, with
/// every symlink resolved, which must lie inside the root, and its file name. Errors:
/// `InvalidKey` when a folder on the way leads outside the root or the file itself is a
/// symlink (writing through it would replace a file elsewhere); I/O errors.
fn write_target(root: &Path, key: &ObjectKey) -> Result<(PathBuf, std::ffi::OsString), StoreError> {
    let lexical = lexical_path(root, key)?;
    let (Some(parent), Some(name)) = (lexical.parent(), lexical.file_name()) else {
        return Err(escape(key, "it names no file"));
    };
    // The part that exists must already be inside the root before anything is created.
    let mut up = Some(parent);
    while let Some(a) = up {
        match std::fs::canonicalize(a) {
            Ok(c) if !c.starts_with(root) => return Err(outside(key, &c)),
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => up = a.parent(),
            Err(e) => return Err(io_error(a, &e)),
        }
    }
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, &e))?;
    let dir = std::fs::canonicalize(parent).map_err(|e| io_error(parent, &e))?;
    if !dir.starts_with(root) {
        return Err(outside(key, &dir));
    }
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => Err(escape(
            key,
            &format!(
                "{} is a symlink, which Mastodon never writes; remove or replace it by hand",
                path.display()
            ),
        )),
        Ok(m) if m.is_dir() => Err(escape(key, &format!("{} is a folder", path.display()))),
        _ => Ok((dir, name.to_owned())),
    }
}

/// Temporary files of writes in flight get unique names: `.<name>.mastomedia-<pid>-<n>`.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `key` atomically: `fill` writes the bytes into a fresh temporary file in the
/// key's folder, which is then flushed to disk and renamed over the key. The temporary
/// file is removed when anything fails.
fn write_atomic(
    root: &Path,
    key: &ObjectKey,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let (dir, name) = write_target(root, key)?;
    let tmp = dir.join(format!(
        ".{}.mastomedia-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            fill(&mut f)?;
            f.flush()?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, dir.join(&name)));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(&tmp, &e)
    })
}

/// The resolved regular file of `key`. Errors: [`StoreError::NotFound`] when it does not
/// exist (or is not a regular file), the refusals of [`resolve_blocking`].
fn existing_file(root: &Path, key: &ObjectKey) -> Result<Resolved, StoreError> {
    match resolve_blocking(root, key)? {
        Some(r) if r.size.is_some() => Ok(r),
        _ => Err(StoreError::NotFound),
    }
}

fn escape(key: &ObjectKey, why: &str) -> StoreError {
    StoreError::Other {
        code: INVALID_KEY.into(),
        message: format!("refusing key {:?}: {why}", key.as_str()),
    }
}

fn outside(key: &ObjectKey, dir: &Path) -> StoreError {
    escape(
        key,
        &format!(
            "its folder is a symlink to {}, outside the storage root; nothing there is deleted",
            dir.display()
        ),
    )
}

/// Lists below `prefix` on disk, S3-style: the prefix is a key prefix (it may end inside a
/// file name); keys use `/`; results are sorted bytewise like S3. Symlinks are not followed.
fn list_blocking(
    root: &Path,
    prefix: &str,
    delimiter: bool,
    start_after: Option<&str>,
) -> Result<ListPage, StoreError> {
    // Never a folder outside the root (`../`), whatever the caller passed.
    super::validate_prefix(prefix)?;
    // Start at the deepest folder the prefix names completely.
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let start = root.join(dir_part);
    let mut page = ListPage::default();
    let mut stack = vec![(start, dir_part.to_owned())];
    let mut prefixes = std::collections::BTreeSet::new();
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&dir, &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&dir, &e))?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(
                    "skipping a file name that is not UTF-8 in {}",
                    dir.display()
                );
                continue;
            };
            let key = format!("{rel}{name}");
            let ft = entry.file_type().map_err(|e| io_error(&entry.path(), &e))?;
            if ft.is_dir() {
                let sub = format!("{key}/");
                if !(sub.starts_with(prefix) || prefix.starts_with(&sub)) {
                    continue;
                }
                if delimiter && sub.starts_with(prefix) {
                    prefixes.insert(sub);
                } else {
                    stack.push((entry.path(), sub));
                }
            } else if ft.is_file() && key.starts_with(prefix) {
                if start_after.is_some_and(|s| key.as_str() <= s) {
                    continue;
                }
                let meta = entry.metadata().map_err(|e| io_error(&entry.path(), &e))?;
                page.objects.push(ObjectMeta {
                    key: ObjectKey::new(key),
                    size: meta.len(),
                    last_modified: meta
                        .modified()
                        .ok()
                        .map(chrono::DateTime::<chrono::Utc>::from),
                });
            }
        }
    }
    page.objects.sort_by(|a, b| a.key.cmp(&b.key));
    page.common_prefixes = prefixes
        .into_iter()
        .filter(|p| start_after.is_none_or(|s| p.as_str() > s))
        .collect();
    Ok(page)
}

fn io_error(path: &Path, e: &std::io::Error) -> StoreError {
    match e.kind() {
        ErrorKind::PermissionDenied => StoreError::AccessDenied {
            code: "EACCES".into(),
            detail: format!("{}: {e}", path.display()),
        },
        ErrorKind::NotFound => StoreError::NotFound,
        kind => StoreError::Other {
            code: format!("{kind:?}"),
            message: format!("{}: {e}", path.display()),
        },
    }
}

/// The object-level calls (the [`Store`] trait, boxed for `dyn Store`).
impl FsStore {
    async fn check_root(&self) -> Result<(), StoreError> {
        let _permit = self.limiter.acquire("stat").await;
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::NoSuchBucket(format!(
                "{} (not a folder)",
                self.root.display()
            ))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(StoreError::NoSuchBucket(self.root.display().to_string()))
            }
            Err(e) => Err(io_error(&self.root, &e)),
        }
    }

    async fn list_dir(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        // The filesystem answers in one page; a continuation token means "done".
        if continuation.is_some() {
            return Ok(ListPage::default());
        }
        let _permit = self.limiter.acquire("readdir").await;
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            list_blocking(&root, &prefix, delimiter, start_after.as_deref())
        })
        .await
        .map_err(|e| StoreError::Transport(format!("listing task failed: {e}")))?
    }

    /// Runs the blocking `op` (one counted filesystem call, `what` for messages) on the
    /// blocking pool, after the cheap lexical refusal of `key` (no permit, no call).
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &ObjectKey,
        f: impl FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.path_of(key)?;
        let _permit = self.limiter.acquire(op).await;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| StoreError::Transport(format!("{op} task failed: {e}")))?
    }
}

impl Store for FsStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn batch_limit(&self) -> usize {
        1000
    }

    fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.check_root())
    }

    /// Stats each key (16 at a time); `prefixes` group listings only on S3.
    fn stat_many<'a>(
        &'a self,
        keys: &'a [ObjectKey],
        prefixes: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Option<u64>, StoreError>>> {
        let _ = prefixes;
        let futs: Vec<_> = keys.iter().map(|k| self.stat_one(k)).collect();
        Box::pin(stream::iter(futs).buffered(16).collect())
    }

    fn list_page<'a>(
        &'a self,
        prefix: &'a str,
        delimiter: bool,
        start_after: Option<&'a str>,
        continuation: Option<String>,
    ) -> BoxFuture<'a, Result<ListPage, StoreError>> {
        Box::pin(self.list_dir(prefix, delimiter, start_after, continuation))
    }

    fn delete_many<'a>(&'a self, keys: &'a [ObjectKey]) -> BoxFuture<'a, Vec<DeleteOutcome>> {
        let futs: Vec<_> = keys.iter().map(|k| self.delete_one(k)).collect();
        Box::pin(stream::iter(futs).buffered(16).collect())
    }

    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Bytes, StoreError>> {
        let k = key.clone();
        Box::pin(self.blocking("read", key, move |root| {
            let file = existing_file(root, &k)?;
            std::fs::read(&file.path)
                .map(Bytes::from)
                .map_err(|e| io_error(&file.path, &e))
        }))
    }

    /// The headers are not kept: a file has none.
    fn put<'a>(
        &'a self,
        key: &'a ObjectKey,
        bytes: Bytes,
        headers: &'a ObjectHeaders,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = headers;
        let k = key.clone();
        Box::pin(self.blocking("write", key, move |root| {
            write_atomic(root, &k, |f| f.write_all(&bytes))
        }))
    }

    fn head<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<HeadMeta>, StoreError>> {
        let k = key.clone();
        Box::pin(self.blocking("stat", key, move |root| {
            Ok(resolve_blocking(root, &k)?
                .and_then(|r| r.size)
                .map(|size| HeadMeta {
                    size,
                    etag: None,
                    content_type: None,
                    cache_control: None,
                }))
        }))
    }

    fn copy<'a>(
        &'a self,
        from: &'a ObjectKey,
        to: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (from_k, to_k) = (from.clone(), to.clone());
        Box::pin(async move {
            self.path_of(to)?;
            self.blocking("copy", from, move |root| {
                let src = existing_file(root, &from_k)?;
                let mut input =
                    std::fs::File::open(&src.path).map_err(|e| io_error(&src.path, &e))?;
                write_atomic(root, &to_k, |f| std::io::copy(&mut input, f).map(|_| ()))
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_keys_that_escape_the_root() {
        let s = FsStore::new(PathBuf::from("/srv/system"), Limiter::new(None, 1));
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", ""] {
            assert!(s.path_of(&ObjectKey::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            s.path_of(&ObjectKey::new("cache/a b/c+d.png")).unwrap(),
            PathBuf::from("/srv/system/cache/a b/c+d.png")
        );
    }
}
