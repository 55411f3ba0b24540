//! [`ObjectKey`] and [`KeyPrefix`]: the key of one object in the bucket (or one file below
//! `PAPERCLIP_ROOT_PATH`) and the `S3_KEY_PREFIX` of Mastodon 4.3+
//! (`docs/reference/key-layout.md`, `src/plan/layout.rs` builds keys from rows).

use std::fmt;

/// An object key in the bucket, or a path relative to the storage root on the filesystem.
/// Never has a leading slash. Keys are compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Wraps a key as listed by a store. The caller guarantees it has no leading slash.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `S3_KEY_PREFIX`, normalised: no leading or trailing slash, never empty (an empty
/// value means "no prefix"). Joined to the usual key with one `/` (Mastodon 4.3+).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPrefix(Option<String>);

impl KeyPrefix {
    /// Normalises a raw `S3_KEY_PREFIX` value; `None` or a value of only slashes means no prefix.
    pub fn new(raw: Option<&str>) -> Self {
        let trimmed = raw.map(|r| r.trim().trim_matches('/')).unwrap_or("");
        if trimmed.is_empty() {
            Self(None)
        } else {
            Self(Some(trimmed.to_owned()))
        }
    }

    /// The normalised prefix without a trailing slash, if any.
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The inverse of [`KeyPrefix::apply`]: `key` without the prefix and its `/` (the key
    /// as Mastodon names it, what the shard partition hashes); a key not below the prefix
    /// is returned whole.
    pub fn strip<'a>(&self, key: &'a str) -> &'a str {
        match &self.0 {
            Some(p) => key
                .strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(key),
            None => key,
        }
    }

    /// Prepends the prefix (and one `/`) to a key path.
    pub fn apply(&self, path: String) -> ObjectKey {
        match &self.0 {
            Some(p) => ObjectKey(format!("{p}/{path}")),
            None => ObjectKey(path),
        }
    }
}
