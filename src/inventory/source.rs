//! Read-only enumeration of a migration source: a `public/system` tree on disk, or the
//! objects of another bucket. Keys are byte-exact paths relative to the root with `/`
//! separators (spaces, `+`, `%`, unicode kept as they are).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use crate::plan::layout::KeyPrefix;
use crate::store::s3::S3Store;
use crate::store::{Store, StoreError};

/// Where `migrate` copies from: a `public/system` folder (canonical path), or another
/// provider's bucket with its own `S3_KEY_PREFIX`.
pub enum Source {
    /// A folder on disk.
    Dir(PathBuf),
    /// A bucket, and the key prefix its objects live below.
    Bucket(Box<S3Store>, KeyPrefix),
}

/// Why the source could not be enumerated.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The folder walk failed at its root (a usage error: wrong `--from`).
    #[error("source: {0}")]
    Walk(StoreError),
    /// The blocking walk task died.
    #[error("walking the source: {0}")]
    Task(String),
    /// Listing the source bucket failed.
    #[error("listing the source bucket: {0}")]
    Listing(StoreError),
    /// The source came out of key byte order (a copy pass merges it with the journal in
    /// that order, so it stops rather than misread the journal).
    #[error("the source listing is not in key order: {key} came after {previous}")]
    Order {
        /// The key before.
        previous: String,
        /// The key that came after it.
        key: String,
    },
}

impl Source {
    /// `file:///…` or the bucket's description, for the summary.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(d) => format!("file://{}", d.display()),
            Source::Bucket(s, _) => s.describe(),
        }
    }

    /// Every file to copy, sorted by key (folders: [`walk_dir`] on a blocking thread;
    /// buckets: [`list_bucket`]), and what a folder walk skipped (buckets skip nothing).
    /// Holds the whole listing: `--verify` only; the copy pass reads [`Source::stream`].
    /// Errors: [`SourceError`].
    pub async fn files(&self) -> Result<(Vec<SourceFile>, Vec<SkippedFile>), SourceError> {
        match self {
            Source::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || walk_dir(&dir))
                    .await
                    .map_err(|e| SourceError::Task(e.to_string()))?
                    .map_err(SourceError::Walk)
            }
            Source::Bucket(store, prefix) => list_bucket(store.as_ref(), prefix)
                .await
                .map(|files| (files, Vec::new()))
                .map_err(SourceError::Listing),
        }
    }

    /// The source as a stream in key byte order, holding a bounded part of it at a time:
    /// a folder is walked ([`walk_dir_each`]) on a blocking thread that hands batches of
    /// [`WALK_BATCH`] entries over a channel of [`WALK_CHANNEL`] batches (the walk waits
    /// while it is full); a bucket is listed one `ListObjectsV2` page at a time, each
    /// requested when the stream reaches it. Dropping the stream stops the walk or the
    /// listing.
    pub fn stream(&self) -> SourceStream<'_> {
        let inner = match self {
            Source::Dir(dir) => {
                let (tx, rx) = tokio::sync::mpsc::channel(WALK_CHANNEL);
                let dir = dir.clone();
                let walk = tokio::task::spawn_blocking(move || {
                    let mut batch = Vec::with_capacity(WALK_BATCH);
                    let walked = walk_dir_each(&dir, &mut |item| {
                        batch.push(item);
                        if batch.len() < WALK_BATCH {
                            return true;
                        }
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(WALK_BATCH));
                        tx.blocking_send(Ok(full)).is_ok()
                    });
                    let last = match walked {
                        Ok(()) => Ok(batch),
                        Err(e) => Err(e),
                    };
                    let _ = tx.blocking_send(last);
                });
                Listing::Dir {
                    rx,
                    walk: Some(walk),
                }
            }
            Source::Bucket(store, prefix) => Listing::Bucket {
                store: store.as_ref(),
                list_prefix: prefix
                    .as_deref()
                    .map(|p| format!("{p}/"))
                    .unwrap_or_default(),
                next: Some(None),
            },
        };
        SourceStream {
            inner,
            buf: std::collections::VecDeque::new(),
        }
    }

    /// Whether the source of `f` is public: a world-readable file, or an object whose ACL
    /// grants READ to everyone. `Ok((public, unreadable))`; an ACL that cannot be read
    /// counts as private (with a warning). Errors: the object vanished (`NotFound`).
    pub async fn is_public(&self, f: &SourceFile) -> Result<(bool, bool), StoreError> {
        match (self, &f.source_key) {
            (Source::Bucket(store, _), Some(src_key)) => match store.is_public(src_key).await {
                Ok(public) => Ok((public, false)),
                Err(StoreError::NotFound) => Err(StoreError::NotFound),
                Err(e) => {
                    tracing::warn!(
                        "{}: the source ACL cannot be read ({e}); copied private",
                        f.key
                    );
                    Ok((false, true))
                }
            },
            _ => Ok((f.world_readable.unwrap_or(false), false)),
        }
    }

    /// The local file of a journalled `key` (folder sources), for an MD5 check.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        match self {
            Source::Dir(root) => Some(root.join(key)),
            Source::Bucket(..) => None,
        }
    }
}

/// The first 64 bytes of the file at `path` (fewer if it is shorter), for content-type
/// sniffing. Errors: open or read failures as [`StoreError::Other`] (`EACCES`, …).
///
/// Open and reads run in one blocking call (one hop through tokio's blocking pool, not one
/// per system call: docs/benchmarks.md's analysis).
pub async fn read_head(path: &Path) -> Result<Vec<u8>, StoreError> {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut file = std::fs::File::open(&owned)?;
        let mut buf = vec![0u8; 64];
        let mut n = 0;
        while n < buf.len() {
            let read = file.read(&mut buf[n..])?;
            if read == 0 {
                break;
            }
            n += read;
        }
        buf.truncate(n);
        Ok(buf)
    })
    .await
    .map_err(|e| StoreError::Other {
        code: "ReadFailed".into(),
        message: format!("{}: {e}", path.display()),
    })?;
    read.map_err(|e| io_failure(path, &e))
}

fn io_failure(path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Other {
        code: if e.kind() == ErrorKind::PermissionDenied {
            "EACCES".into()
        } else {
            format!("{:?}", e.kind())
        },
        message: format!("{}: {e}", path.display()),
    }
}

/// The MD5 of the file at `path` as 32 lowercase hex digits (what S3 gives as the ETag of
/// a single-part upload), read in 256 KiB blocks. Errors: open or read failures.
pub async fn md5_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
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

/// One file to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Key relative to the source root (no `S3_KEY_PREFIX`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Version for change detection: mtime in nanoseconds (files) or ETag-less listing
    /// fingerprint `size:last_modified` (objects).
    pub version: String,
    /// The file on disk (filesystem sources).
    pub path: Option<PathBuf>,
    /// The full source key, with the source's own `S3_KEY_PREFIX` (bucket sources).
    pub source_key: Option<String>,
    /// Filesystem sources: whether the file is world-readable (mode & 0o004), i.e. served
    /// by the web server. Mastodon chmods the files of suspended accounts to 0600, so a
    /// file that is not is copied private. `None` for bucket sources (their ACL is read
    /// at copy time).
    pub world_readable: Option<bool>,
}

/// A file that could not be enumerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// Key relative to the root.
    pub key: String,
    /// Why (`symlink`, `unreadable: ...`, `not UTF-8`).
    pub reason: String,
    /// Whether this counts as a failure (unreadable) or only a warning (symlink).
    pub failed: bool,
}

/// One entry of a source listing, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceItem {
    /// A file to copy.
    File(SourceFile),
    /// An entry the walk skipped (symlink, unreadable, name not UTF-8).
    Skipped(SkippedFile),
}

/// Entries a folder walk hands over at once ([`Source::stream`]).
pub const WALK_BATCH: usize = 512;
/// Batches waiting between the walk thread and the copy pass at most.
pub const WALK_CHANNEL: usize = 8;

/// The source listed as a stream in key byte order ([`Source::stream`]).
pub struct SourceStream<'a> {
    inner: Listing<'a>,
    /// Entries received and not yet taken.
    buf: std::collections::VecDeque<SourceItem>,
}

enum Listing<'a> {
    Dir {
        rx: tokio::sync::mpsc::Receiver<Result<Vec<SourceItem>, StoreError>>,
        /// The walk thread, awaited once its channel closes (a panic is an error, not the
        /// end of the tree).
        walk: Option<tokio::task::JoinHandle<()>>,
    },
    Bucket {
        store: &'a S3Store,
        list_prefix: String,
        /// The continuation of the next page: `Some(None)` the first, `None` after the
        /// last.
        next: Option<Option<String>>,
    },
}

impl SourceStream<'_> {
    /// The next entry in key order, `None` after the last. Errors: the walk's root is
    /// missing or not a folder ([`SourceError::Walk`]), the walk thread died, a listing
    /// page failed ([`SourceError::Listing`]); the stream ends after an error.
    pub async fn next(&mut self) -> Result<Option<SourceItem>, SourceError> {
        loop {
            if let Some(item) = self.buf.pop_front() {
                return Ok(Some(item));
            }
            match &mut self.inner {
                Listing::Dir { rx, walk } => match rx.recv().await {
                    Some(Ok(batch)) => self.buf.extend(batch),
                    Some(Err(e)) => {
                        rx.close();
                        return Err(SourceError::Walk(e));
                    }
                    None => {
                        if let Some(w) = walk.take() {
                            w.await.map_err(|e| SourceError::Task(e.to_string()))?;
                        }
                        return Ok(None);
                    }
                },
                Listing::Bucket {
                    store,
                    list_prefix,
                    next,
                } => {
                    let Some(token) = next.take() else {
                        return Ok(None);
                    };
                    let page = store
                        .list_page(list_prefix, false, None, token)
                        .await
                        .map_err(SourceError::Listing)?;
                    *next = page.next.map(Some);
                    self.buf.extend(
                        page.objects
                            .into_iter()
                            .filter_map(|o| bucket_file(list_prefix, o))
                            .map(SourceItem::File),
                    );
                }
            }
        }
    }
}

/// The source file of a listed object `o` below `list_prefix` (`S3_KEY_PREFIX/` or
/// empty), its key made relative to it; `None` for a directory marker.
fn bucket_file(list_prefix: &str, o: crate::store::ObjectMeta) -> Option<SourceFile> {
    let full = o.key.as_str().to_owned();
    let key = full[list_prefix.len()..].to_owned();
    if key.is_empty() || key.ends_with('/') {
        return None; // directory markers
    }
    Some(SourceFile {
        key,
        size: o.size,
        version: format!(
            "{}:{}",
            o.size,
            o.last_modified
                .map_or(0, |t| t.timestamp_nanos_opt().unwrap_or(0))
        ),
        path: None,
        source_key: Some(full),
        world_readable: None,
    })
}

/// Everything below `root`: regular files (sorted by key), and what was skipped. Symlinks
/// are skipped with a warning; unreadable folders and files are reported as failed.
/// Errors: the root itself is missing or not a folder.
///
/// The walk is depth first with each folder's entries sorted by name, a folder's name
/// compared as `name/`: that order is the byte order of the keys themselves (a sibling
/// `a.png` sorts before the folder `a`'s keys `a/…`, a sibling `a0` after them), so the
/// files come out in key order without a sort of the whole list (whose merge buffer, half
/// the list, was part of the peak memory of a large tree).
pub fn walk_dir(root: &Path) -> Result<(Vec<SourceFile>, Vec<SkippedFile>), StoreError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    walk_dir_each(root, &mut |item| {
        match item {
            SourceItem::File(f) => files.push(f),
            SourceItem::Skipped(s) => skipped.push(s),
        }
        true
    })?;
    debug_assert!(files.is_sorted_by(|a, b| a.key < b.key));
    Ok((files, skipped))
}

/// The walk of [`walk_dir`], each entry handed to `emit` as it is found (files in key
/// byte order, a skipped entry where the walk met it); `emit` returning `false` stops the
/// walk. Holds only the sorted entry lists of the open folders. Errors: the root itself
/// is missing or not a folder (before anything is emitted).
pub fn walk_dir_each(
    root: &Path,
    emit: &mut dyn FnMut(SourceItem) -> bool,
) -> Result<(), StoreError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StoreError::NoSuchBucket(format!(
                "{} (not a folder)",
                root.display()
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(StoreError::NoSuchBucket(root.display().to_string()));
        }
        Err(e) => {
            return Err(StoreError::AccessDenied {
                code: "EACCES".into(),
                detail: format!("{}: {e}", root.display()),
            });
        }
    }
    let mut skipped = Vec::new();
    // One sorted entry list per open folder, innermost last.
    let mut stack = vec![read_sorted(root, "", &mut skipped)];
    loop {
        for s in skipped.drain(..) {
            if !emit(SourceItem::Skipped(s)) {
                return Ok(());
            }
        }
        let Some(top) = stack.last_mut() else { break };
        let Some(entry) = top.pop() else {
            stack.pop();
            continue;
        };
        let Some(ft) = entry.file_type else { continue };
        let item = if ft.is_symlink() {
            SourceItem::Skipped(SkippedFile {
                key: entry.key,
                reason: "symlink (not followed)".into(),
                failed: false,
            })
        } else if ft.is_dir() {
            let rel = format!("{}/", entry.key);
            let inner = read_sorted(&entry.path, &rel, &mut skipped);
            stack.push(inner);
            continue;
        } else if ft.is_file() {
            match std::fs::symlink_metadata(&entry.path) {
                Ok(m) => {
                    let mtime = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos());
                    SourceItem::File(SourceFile {
                        key: entry.key,
                        size: m.len(),
                        version: mtime.to_string(),
                        path: Some(entry.path),
                        source_key: None,
                        world_readable: Some(
                            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o004 != 0,
                        ),
                    })
                }
                Err(e) => SourceItem::Skipped(SkippedFile {
                    key: entry.key,
                    reason: format!("unreadable: {e}"),
                    failed: true,
                }),
            }
        } else {
            continue;
        };
        if !emit(item) {
            return Ok(());
        }
    }
    Ok(())
}

/// One entry of a folder being walked.
struct WalkEntry {
    key: String,
    path: PathBuf,
    /// `None`: the type could not be read (the entry is left out, as `read_dir` does).
    file_type: Option<std::fs::FileType>,
}

/// The entries of `dir` (keys below `rel`), sorted so that popping from the end yields
/// them in key order: by name, a folder's name as `name/` ([`walk_dir`]). Names that are
/// not UTF-8 and an unreadable folder go to `skipped`.
fn read_sorted(dir: &Path, rel: &str, skipped: &mut Vec<SkippedFile>) -> Vec<WalkEntry> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            skipped.push(SkippedFile {
                key: rel.to_owned(),
                reason: format!("unreadable folder: {e}"),
                failed: true,
            });
            return Vec::new();
        }
    };
    let mut out: Vec<(String, WalkEntry)> = Vec::new();
    for entry in entries.flatten() {
        let name = match entry.file_name().into_string() {
            Ok(n) => n,
            Err(raw) => {
                skipped.push(SkippedFile {
                    key: format!("{rel}{}", raw.to_string_lossy()),
                    reason: "file name is not UTF-8".into(),
                    failed: true,
                });
                continue;
            }
        };
        let file_type = entry.file_type().ok();
        let order = if file_type.is_some_and(|t| t.is_dir()) {
            format!("{name}/")
        } else {
            name.clone()
        };
        out.push((
            order,
            WalkEntry {
                key: format!("{rel}{name}"),
                path: entry.path(),
                file_type,
            },
        ));
    }
    // Descending, so that `pop` takes the smallest; names in one folder are unique.
    out.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    out.into_iter().map(|(_, e)| e).collect()
}

/// Every object of a source bucket below its `S3_KEY_PREFIX`, keys made relative to it.
pub async fn list_bucket<S: Store + ?Sized>(
    store: &S,
    prefix: &KeyPrefix,
) -> Result<Vec<SourceFile>, StoreError> {
    let list_prefix = prefix
        .as_deref()
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut objects = store.list(&list_prefix, None);
    while let Some(o) = objects.try_next().await? {
        out.extend(bucket_file(&list_prefix, o));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_in_key_byte_order_without_sorting_the_list() {
        let root = std::env::temp_dir().join(format!("mm-walk-order-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["a", "a/b", "a-", "ab", "é"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "a.png", "a/x", "a/b/y", "a/b.z", "a0", "a-/q", "ab/r", "A", "é/s", "z", "a/b0",
        ] {
            std::fs::write(root.join(f), b"").unwrap();
        }
        let (files, skipped) = walk_dir(&root).unwrap();
        assert!(skipped.is_empty());
        let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 11);
        assert_eq!(keys[..4], ["A", "a-/q", "a.png", "a/b.z"]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_streamed_walk_yields_what_the_walk_does_in_key_order() {
        let root = std::env::temp_dir().join(format!("mm-walk-stream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // More than a few batches, folders "a" and "a.x" side by side ("a.x" < "a/…").
        for i in 0..(3 * WALK_BATCH + 7) {
            let dir = root.join(format!("a/{:02}", i % 37));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{i}.png")), b"").unwrap();
        }
        std::fs::write(root.join("a.x"), b"").unwrap();
        std::os::unix::fs::symlink(root.join("a.x"), root.join("b")).unwrap();
        let (files, skipped) = walk_dir(&root).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let source = Source::Dir(root.clone());
        let (streamed, streamed_skipped) = rt.block_on(async {
            let mut stream = source.stream();
            let (mut f, mut s) = (Vec::new(), Vec::new());
            while let Some(item) = stream.next().await.unwrap() {
                match item {
                    SourceItem::File(x) => f.push(x),
                    SourceItem::Skipped(x) => s.push(x),
                }
            }
            (f, s)
        });
        assert_eq!(streamed, files);
        assert_eq!(streamed_skipped, skipped);
        assert_eq!(files.len(), 3 * WALK_BATCH + 8);
        assert_eq!(files[0].key, "a.x");
        assert!(files.is_sorted_by(|a, b| a.key < b.key));
        let missing = Source::Dir(root.join("missing"));
        let err = rt.block_on(async { missing.stream().next().await });
        assert!(matches!(err, Err(SourceError::Walk(_))));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn walks_byte_exact_keys_and_skips_symlinks() {
        let root = std::env::temp_dir().join(format!("mm-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("cache/a b")).unwrap();
        std::fs::write(root.join("cache/a b/x+y%z ü.png"), b"1").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::set_permissions(
            root.join("empty"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::fs::set_permissions(
            root.join("cache/a b/x+y%z ü.png"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("empty"), root.join("link")).unwrap();
        let (files, skipped) = walk_dir(&root).unwrap();
        let keys: Vec<&str> = files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["cache/a b/x+y%z ü.png", "empty"]);
        let readable: Vec<Option<bool>> = files.iter().map(|f| f.world_readable).collect();
        assert_eq!(readable, [Some(true), Some(false)]);
        assert_eq!(skipped.len(), 1);
        assert!(!skipped[0].failed);
        assert!(walk_dir(&root.join("missing")).is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let path = root.join("cache/a b/x+y%z ü.png");
        assert_eq!(rt.block_on(read_head(&path)).unwrap(), b"1");
        // MD5 of "1".
        assert_eq!(
            rt.block_on(md5_file(&path)).unwrap(),
            "c4ca4238a0b923820dcc509a6f75849b"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
