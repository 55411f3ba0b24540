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
    Body, DeleteOutcome, Existing, HeadMeta, INVALID_KEY, Limiter, ListPage, ObjectHeaders,
    ObjectMeta, Store, StoreError, TARGET_DIFFERS, validate_key,
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

    /// The root folder (normalised, symlinks resolved).
    pub fn root(&self) -> &Path {
        &self.root
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
    create_folders(parent)?;
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

/// Creates `dir` and the folders above it that are missing, each 0755 whatever the umask
/// (as Paperclip leaves them: the web server must be able to enter them). Errors: I/O.
fn create_folders(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut missing = Vec::new();
    let mut up = Some(dir);
    while let Some(d) = up {
        match std::fs::symlink_metadata(d) {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                missing.push(d);
                up = d.parent();
            }
            Err(e) => return Err(io_error(d, &e)),
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io_error(d, &e))?,
            // Created meanwhile by a concurrent write of a sibling key.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(d, &e)),
        }
    }
    Ok(())
}

/// Temporary files of writes in flight get unique names: `.<name>.mastomedia-<pid>-<n>`.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary name of a write of `name` in flight in this process.
fn temp_name(name: &std::ffi::OsStr) -> String {
    format!(
        ".{}.mastomedia-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the temporary files of writes of `name` in `dir` that another process left
/// (a run killed mid-write: `.<name>.mastomedia-<pid>-<n>` with a pid not ours). Only
/// regular files with exactly that pattern are removed; errors are only logged.
fn sweep_stale_temps(dir: &Path, name: &std::ffi::OsStr) {
    let start = format!(".{}.mastomedia-", name.to_string_lossy());
    let ours = format!("{start}{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(n) = entry.file_name().into_string() else {
            continue;
        };
        let Some(rest) = n.strip_prefix(&start) else {
            continue;
        };
        let pattern = rest.split_once('-').is_some_and(|(pid, k)| {
            pid.bytes().all(|b| b.is_ascii_digit()) && k.bytes().all(|b| b.is_ascii_digit())
        });
        if !pattern || n.starts_with(&ours) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    "removed {}, left by a run killed while writing it",
                    entry.path().display()
                ),
                Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// The mode of a file [`Store::upload`] writes: 0644 as Paperclip writes media (the web
/// server serves it), 0600 for an object whose ACL is `private` (Mastodon chmods the
/// files of suspended accounts to 0600; backups and imports are never served).
fn file_mode(headers: &ObjectHeaders) -> u32 {
    if headers.acl.as_deref() == Some("private") {
        0o600
    } else {
        0o644
    }
}

/// A temporary file of an upload in flight, in the key's folder.
struct Staged {
    dir: PathBuf,
    name: std::ffi::OsString,
    tmp: PathBuf,
    file: std::fs::File,
}

impl Staged {
    /// Resolves `key`'s folder as [`write_target`] does (created 0755 where missing),
    /// sweeps the temporary files of a killed run and opens a fresh temporary file.
    fn create(root: &Path, key: &ObjectKey) -> Result<Self, StoreError> {
        let (dir, name) = write_target(root, key)?;
        sweep_stale_temps(&dir, &name);
        let tmp = dir.join(temp_name(&name));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, &e))?;
        Ok(Self {
            dir,
            name,
            tmp,
            file,
        })
    }

    /// Makes the written file the key's: checks that `written` bytes are the `size`
    /// expected, fsyncs, sets `mode`, then renames it over the key ([`Existing::Replace`])
    /// or links it to the key's name ([`Existing::Keep`], which fails when the name is
    /// taken: identical bytes count as written, different ones are refused), and fsyncs
    /// the folder. The temporary file is gone afterwards, whatever happened.
    fn finish(
        self,
        key: &ObjectKey,
        written: u64,
        size: u64,
        mode: u32,
        existing: Existing,
    ) -> Result<(), StoreError> {
        let tmp = self.tmp.clone();
        let result = self.place(key, written, size, mode, existing);
        if result.is_err() || existing == Existing::Keep {
            // After a rename there is nothing left at `tmp`; after a link it is the
            // second name of the key's file.
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn place(
        self,
        key: &ObjectKey,
        written: u64,
        size: u64,
        mode: u32,
        existing: Existing,
    ) -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt;
        if written != size {
            return Err(StoreError::Other {
                code: "SizeChanged".into(),
                message: format!(
                    "{}: the source gave {written} bytes, {size} were listed (it changed during the copy); nothing written",
                    key.as_str()
                ),
            });
        }
        let io = |e: std::io::Error| io_error(&self.tmp, &e);
        let mut file = self.file;
        file.flush().map_err(io)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        let target = self.dir.join(&self.name);
        match existing {
            Existing::Replace => std::fs::rename(&self.tmp, &target).map_err(io)?,
            Existing::Keep => match std::fs::hard_link(&self.tmp, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return same_bytes(&target, &self.tmp, key);
                }
                // A filesystem without hard links: check, then rename (not atomic).
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Unsupported | ErrorKind::PermissionDenied
                    ) =>
                {
                    if std::fs::symlink_metadata(&target).is_ok() {
                        return same_bytes(&target, &self.tmp, key);
                    }
                    std::fs::rename(&self.tmp, &target).map_err(io)?;
                }
                Err(e) => return Err(io(e)),
            },
        }
        // The new name survives a crash only once the folder is on disk too.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// `Ok` when the file at `target` holds the same bytes as `new`, else the
/// [`TARGET_DIFFERS`] refusal of [`Existing::Keep`].
fn same_bytes(target: &Path, new: &Path, key: &ObjectKey) -> Result<(), StoreError> {
    let differs = || StoreError::Other {
        code: TARGET_DIFFERS.into(),
        message: format!(
            "{} already exists with other bytes, and the journal does not say migrate wrote it: not overwritten (move it away and run again to copy the source's)",
            target.display()
        ),
    };
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(differs()),
        Err(e) => return Err(io_error(target, &e)),
    }
    let a = std::fs::read(target).map_err(|e| io_error(target, &e))?;
    let b = std::fs::read(new).map_err(|e| io_error(new, &e))?;
    if a == b {
        tracing::debug!("{}: already there with the same bytes", key.as_str());
        Ok(())
    } else {
        Err(differs())
    }
}

/// The MD5 of the file at `path`, 32 lowercase hex digits, read in 256 KiB blocks.
fn md5_of(path: &Path) -> std::io::Result<String> {
    use md5::{Digest, Md5};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes `key` atomically: `fill` writes the bytes into a fresh temporary file in the
/// key's folder, which is then flushed to disk and renamed over the key. The temporary
/// file is removed when anything fails.
fn write_atomic(
    root: &Path,
    key: &ObjectKey,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let (dir, name) = write_target(root, key)?;
    let tmp = dir.join(temp_name(&name));
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

/// Streams the object `src_key` of the source bucket `src` into the staged file: the
/// staged file back, with `(bytes written, size expected)` or the error that stopped it.
async fn fill_from(
    staged: Staged,
    src: &super::s3::S3Store,
    src_key: &str,
    size: u64,
) -> (Staged, Result<(u64, u64), StoreError>) {
    use futures::TryStreamExt;
    use tokio::io::AsyncWriteExt;
    let Staged {
        dir,
        name,
        tmp,
        file,
    } = staged;
    let mut out = tokio::fs::File::from_std(file);
    let result = async {
        let mut chunks = src.get_chunks(src_key).await?;
        let mut written = 0u64;
        while let Some(chunk) = chunks.try_next().await? {
            out.write_all(&chunk)
                .await
                .map_err(|e| io_error(&tmp, &e))?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(|e| io_error(&tmp, &e))?;
        Ok((written, size))
    }
    .await;
    let file = out.into_std().await;
    (
        Staged {
            dir,
            name,
            tmp,
            file,
        },
        result,
    )
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

    /// [`Store::upload`] on the filesystem: stage a temporary file (one `write` call),
    /// fill it from the file or the source bucket's GET stream, then place it (one
    /// `rename` call).
    async fn upload_body(
        &self,
        key: &ObjectKey,
        body: Body<'_>,
        headers: &ObjectHeaders,
        existing: Existing,
    ) -> Result<(), StoreError> {
        let mode = file_mode(headers);
        let k = key.clone();
        let staged = self
            .blocking("write", key, move |root| Staged::create(root, &k))
            .await?;
        let tmp = staged.tmp.clone();
        let filled = match body {
            Body::File(path, size) => {
                let path = path.to_owned();
                tokio::task::spawn_blocking(move || {
                    let mut staged = staged;
                    let copied = std::fs::File::open(&path)
                        .and_then(|mut input| std::io::copy(&mut input, &mut staged.file))
                        .map_err(|e| StoreError::Other {
                            code: "ReadFailed".into(),
                            message: format!("{}: {e}", path.display()),
                        });
                    (staged, copied.map(|n| (n, size)))
                })
                .await
                .map_err(|e| StoreError::Transport(format!("write task failed: {e}")))
            }
            Body::Object(src, src_key, size) => Ok(fill_from(staged, src, src_key, size).await),
        };
        let (staged, copied) = match filled {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let (written, size) = match copied {
            Ok(n) => n,
            Err(e) => {
                drop(staged);
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let k = key.clone();
        let _permit = self.limiter.acquire("rename").await;
        tokio::task::spawn_blocking(move || staged.finish(&k, written, size, mode, existing))
            .await
            .map_err(|e| StoreError::Transport(format!("write task failed: {e}")))?
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

    /// The headers are not kept, except the ACL as the file's mode (`private`: 0600, else
    /// 0644); `multipart_threshold` does not apply.
    fn upload<'a>(
        &'a self,
        key: &'a ObjectKey,
        body: Body<'a>,
        headers: &'a ObjectHeaders,
        existing: Existing,
        multipart_threshold: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = multipart_threshold;
        Box::pin(self.upload_body(key, body, headers, existing))
    }

    fn md5<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let k = key.clone();
        Box::pin(
            self.blocking("read", key, move |root| match resolve_blocking(root, &k)? {
                Some(r) if r.size.is_some() => {
                    md5_of(&r.path).map(Some).map_err(|e| io_error(&r.path, &e))
                }
                _ => Ok(None),
            }),
        )
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
