//! The migration journal's records: per target bucket, the state of every source file
//! copied (size and version as copied, uploaded / verified / mismatch / deleted in the
//! bucket, and whether the source was private). Loaded once at start so a re-run skips
//! unchanged files without listing the target bucket; written in batches as uploads
//! finish, so a `kill -9` loses at most the last batch (those files are uploaded again,
//! which is harmless). Stored by a [`super::Journal`] ([`super::Journal::migrate_files`],
//! [`super::Journal::record_migrated`]).

/// State of a journalled file: a pure noun of the migrate decisions, kept in
/// `plan/migrate.rs` and re-exported here.
pub use crate::plan::migrate::FileState;

impl FileState {
    /// The stored name: `uploaded`, `verified`, `mismatch`, `deleted_in_bucket`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Uploaded => "uploaded",
            FileState::Verified => "verified",
            FileState::Mismatch => "mismatch",
            FileState::DeletedInBucket => "deleted_in_bucket",
        }
    }

    /// The state of a stored name; an unknown name reads as [`FileState::Uploaded`] (the
    /// file is checked again rather than trusted).
    pub fn parse(s: &str) -> Self {
        match s {
            "verified" => FileState::Verified,
            "mismatch" => FileState::Mismatch,
            "deleted_in_bucket" => FileState::DeletedInBucket,
            _ => FileState::Uploaded,
        }
    }
}

/// What the journal knows of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Key in the target bucket (without `S3_KEY_PREFIX`).
    pub key: String,
    /// Size in bytes as copied.
    pub size: u64,
    /// Source version as copied: file mtime in nanoseconds, or the source ETag.
    pub version: String,
    /// State.
    pub state: FileState,
    /// Whether the source object was private when copied (file not world-readable, or a
    /// private / unreadable source ACL); `None` for rows journalled before this was kept.
    pub source_private: Option<bool>,
}
