//! Read-only enumeration of a migration source: a `public/system` tree on disk, or the
//! objects of another bucket. Keys are byte-exact paths relative to the root with `/`
//! separators (spaces, `+`, `%`, unicode kept as they are).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;

use crate::plan::layout::KeyPrefix;
use crate::store::{Store, StoreError};

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

/// Everything below `root`: regular files (sorted by key), and what was skipped. Symlinks
/// are skipped with a warning; unreadable folders and files are reported as failed.
/// Errors: the root itself is missing or not a folder.
pub fn walk_dir(root: &Path) -> Result<(Vec<SourceFile>, Vec<SkippedFile>), StoreError> {
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
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                skipped.push(SkippedFile {
                    key: rel.clone(),
                    reason: format!("unreadable folder: {e}"),
                    failed: true,
                });
                continue;
            }
        };
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
            let key = format!("{rel}{name}");
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_symlink() {
                skipped.push(SkippedFile {
                    key,
                    reason: "symlink (not followed)".into(),
                    failed: false,
                });
            } else if ft.is_dir() {
                stack.push((entry.path(), format!("{key}/")));
            } else if ft.is_file() {
                match entry.metadata() {
                    Ok(m) => {
                        let mtime = m
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_nanos());
                        files.push(SourceFile {
                            key,
                            size: m.len(),
                            version: mtime.to_string(),
                            path: Some(entry.path()),
                            source_key: None,
                            world_readable: Some(
                                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o004
                                    != 0,
                            ),
                        });
                    }
                    Err(e) => skipped.push(SkippedFile {
                        key,
                        reason: format!("unreadable: {e}"),
                        failed: true,
                    }),
                }
            }
        }
    }
    files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((files, skipped))
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
        let full = o.key.as_str().to_owned();
        let key = full[list_prefix.len()..].to_owned();
        if key.is_empty() || key.ends_with('/') {
            continue; // directory markers
        }
        out.push(SourceFile {
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
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let _ = std::fs::remove_dir_all(&root);
    }
}
