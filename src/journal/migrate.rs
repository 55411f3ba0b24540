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

/// Rows read from the journal per query when loading a target's records (keyset pages in
/// key order, so neither journal builds one result set of every row).
pub const READ_PAGE: i64 = 5_000;

/// A forward cursor over one target's journal records in key byte order, one keyset page
/// of [`READ_PAGE`] rows held at a time ([`super::Journal::migrate_files_page`]): the
/// journal side of a copy pass that merges it with the source listing (in the same
/// order) instead of loading it. A record journalled after the cursor passed its key is
/// not seen (a copy pass journals only keys it has passed).
pub struct FileCursor<'j, J: ?Sized> {
    journal: &'j J,
    target: &'j str,
    page: std::collections::VecDeque<FileRecord>,
    /// The last key read; the next page starts after it.
    after: Option<String>,
    /// The last page was short: nothing more to read.
    exhausted: bool,
}

impl<'j, J: super::Journal + ?Sized> FileCursor<'j, J> {
    /// A cursor before the first record of `target`.
    pub fn new(journal: &'j J, target: &'j str) -> Self {
        Self {
            journal,
            target,
            page: std::collections::VecDeque::new(),
            after: None,
            exhausted: false,
        }
    }

    /// The next record without taking it (`None` after the last), reading the next page
    /// when this one is used up. Errors: the page query failed.
    pub async fn peek(&mut self) -> Result<Option<&FileRecord>, super::JournalError> {
        if self.page.is_empty() && !self.exhausted {
            let rows = self
                .journal
                .migrate_files_page(self.target, self.after.as_deref(), READ_PAGE)
                .await?;
            self.exhausted = (rows.len() as i64) < READ_PAGE;
            if let Some(last) = rows.last() {
                self.after = Some(last.key.clone());
            }
            self.page.extend(rows);
        }
        Ok(self.page.front())
    }

    /// Takes the record [`FileCursor::peek`] showed.
    pub fn take(&mut self) -> Option<FileRecord> {
        self.page.pop_front()
    }
}

/// Every file the journal records for one target, held once each and sorted by key (byte
/// order), looked up by binary search: the compact form of the journal a copy, verify or
/// repair pass reads at its start (a map by key held every key twice).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JournalFiles {
    records: Vec<FileRecord>,
}

impl JournalFiles {
    /// The records, sorted by key; of two records of one key the later one stays.
    pub fn from_records(mut records: Vec<FileRecord>) -> Self {
        records.reverse();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        records.dedup_by(|a, b| a.key == b.key);
        records.shrink_to_fit();
        Self { records }
    }

    /// How many files are recorded.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The index of `key`'s record in key order, if recorded.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.records
            .binary_search_by(|r| r.key.as_str().cmp(key))
            .ok()
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&FileRecord> {
        self.position(key).map(|i| &self.records[i])
    }

    /// Whether `key` is recorded.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// The recorded keys, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.records.iter().map(|r| r.key.as_str())
    }

    /// The records, in key order.
    pub fn values(&self) -> std::slice::Iter<'_, FileRecord> {
        self.records.iter()
    }

    /// The records, in key order, by value.
    pub fn into_values(self) -> std::vec::IntoIter<FileRecord> {
        self.records.into_iter()
    }
}

impl std::ops::Index<&str> for JournalFiles {
    type Output = FileRecord;

    /// The record of `key`. Panics when it is not recorded (as a map's index does).
    fn index(&self, key: &str) -> &FileRecord {
        self.get(key)
            .unwrap_or_else(|| panic!("{key} is not in the journal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_sorted_and_the_later_of_one_key_stays() {
        let rec = |key: &str, size| FileRecord {
            key: key.into(),
            size,
            version: "1".into(),
            state: FileState::Uploaded,
            source_private: None,
        };
        let j = JournalFiles::from_records(vec![rec("b", 1), rec("a/x", 2), rec("b", 3)]);
        assert_eq!(j.keys().collect::<Vec<_>>(), ["a/x", "b"]);
        assert_eq!(j["b"].size, 3);
        assert_eq!(j.position("a/x"), Some(0));
        assert!(j.get("a").is_none() && !j.contains_key("c"));
        assert_eq!(j.len(), 2);
        assert!(JournalFiles::default().is_empty());
    }
}
