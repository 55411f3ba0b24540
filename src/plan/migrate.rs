//! The pure decisions of `migrate`: the journal diff (what a catch-up pass does with one
//! source file given its journal record), the empty-journal refusal sample, the files gone
//! from the source, which unfinished multipart uploads are stale, the upload ACL, the
//! verify classification and the `--repair` decision table. The I/O that gathers the facts
//! lives in `pool/copy.rs`, `pool/verify.rs` and `pool/repair.rs`; the rules are those of
//! docs/ARCHITECTURE.md, invariants 10 and 11. No tokio, sqlx or AWS types here.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::headers::{CACHE_CONTROL, acl_for, decide_acl};
use super::orphans::{Class, Kept};
use crate::model::Standing;

/// State of a journalled file (stored as text by `journal/migrate.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Uploaded with the right headers.
    Uploaded,
    /// Uploaded and checked by `--verify` (size, and MD5 where the ETag is one).
    Verified,
    /// `--verify` found a difference: uploaded again on the next run.
    Mismatch,
    /// Copied, unchanged at the source, and gone from the bucket: deleted there on purpose
    /// after the copy (Mastodon deleted the media, or an admin the object). Never uploaded
    /// again by a catch-up pass; only `--reupload-missing` puts it back.
    DeletedInBucket,
}

/// What the source says of one file now (`inventory::source::SourceFile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFacts<'a> {
    /// Size in bytes.
    pub size: u64,
    /// Change-detection version: mtime in nanoseconds, or `size:last_modified`.
    pub version: &'a str,
    /// Folder sources: whether the file is world-readable; `None` for bucket sources.
    pub world_readable: Option<bool>,
}

/// What the journal says of one file (`journal::migrate::FileRecord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Journalled<'a> {
    /// Size in bytes as copied.
    pub size: u64,
    /// Source version as copied.
    pub version: &'a str,
    /// State.
    pub state: FileState,
    /// Whether the source was private when copied; `None` for rows older than that column.
    pub source_private: Option<bool>,
}

/// What a catch-up pass does with one source file ([`diff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diff {
    /// Copied before, unchanged at the source (size, version and privacy): skipped.
    Unchanged,
    /// Journalled as deleted in the bucket and unchanged at the source: never uploaded
    /// again, unless `--reupload-missing` (and, with `--database`, a row still names it).
    DeletedInBucket,
    /// Never copied, journalled as a mismatch, or journalled in a state that proves
    /// nothing about the bucket: uploaded.
    Upload,
    /// Copied before (uploaded or verified, or journalled as deleted in the bucket) but
    /// changed at the source since (a new mtime or size, or its privacy): uploaded again
    /// only over an object still in the bucket (one HEAD), since gone from the bucket
    /// means deleted there on purpose. With `--reupload-missing` uploaded without the check.
    UploadIfPresent,
}

/// The journal diff of one source file `f` against its journal record `rec` (`None`: never
/// journalled for this target). See [`Diff`] for the rules (invariant 11).
pub fn diff(rec: Option<&Journalled<'_>>, f: &SourceFacts<'_>) -> Diff {
    let Some(r) = rec else {
        return Diff::Upload;
    };
    let same = r.size == f.size && r.version == f.version;
    if same && r.state == FileState::DeletedInBucket {
        return Diff::DeletedInBucket;
    }
    if same && r.state != FileState::Mismatch && !privacy_changed(r.source_private, f) {
        return Diff::Unchanged;
    }
    // Deleted in the bucket and changed at the source since (a restored backup or a
    // `touch` gives every file a new mtime): still only over an object that is there, so
    // what Mastodon or an admin deleted stays deleted.
    if matches!(
        r.state,
        FileState::Uploaded | FileState::Verified | FileState::DeletedInBucket
    ) {
        Diff::UploadIfPresent
    } else {
        Diff::Upload
    }
}

/// Whether a journalled, otherwise unchanged file changed its privacy at the source since
/// the copy (a folder source only: Mastodon chmods the files of a suspended account to
/// 0600 and back on unsuspension, leaving the mtime alone). A row journalled before the
/// privacy was recorded (`source_private` `None`) counts as copied public, what migrate
/// then did.
pub fn privacy_changed(source_private: Option<bool>, f: &SourceFacts<'_>) -> bool {
    match f.world_readable {
        Some(readable) => source_private.unwrap_or(false) == readable,
        None => false,
    }
}

/// Whether `--skip-cache` leaves `key` (relative to the source root) out: `cache/…`.
pub fn skipped_by_cache(key: &str, skip_cache: bool) -> bool {
    skip_cache && key.starts_with("cache/")
}

/// Mastodon's `S3_MULTIPART_THRESHOLD` when unset: `15.megabytes`, 15,728,640 bytes
/// (`docs/reference/env-file.md`).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 15 * 1024 * 1024;

/// S3's smallest part (all but the last): 5 MiB.
pub const MIN_MULTIPART_THRESHOLD: u64 = 5 * 1024 * 1024;

/// migrate's multipart threshold (bytes; files above it go up in parts): `--multipart-threshold`
/// (`flag`), else the env file's `S3_MULTIPART_THRESHOLD` (`env`), as Mastodon uploads,
/// else Mastodon's default [`DEFAULT_MULTIPART_THRESHOLD`]. An env value below S3's
/// smallest part is raised to [`MIN_MULTIPART_THRESHOLD`] (the flag cannot be lower).
pub fn multipart_threshold(flag: Option<u64>, env: Option<u64>) -> u64 {
    flag.or(env)
        .unwrap_or(DEFAULT_MULTIPART_THRESHOLD)
        .max(MIN_MULTIPART_THRESHOLD)
}

/// Source files sampled in the target when the journal is empty.
pub const SAMPLE: usize = 16;

/// Items a [`SpreadSample`] keeps at most: twice [`SAMPLE`], so that after the last
/// halving at least [`SAMPLE`] are left to pick from.
pub const SAMPLE_KEPT: usize = 2 * SAMPLE;

/// The empty-journal sample of a stream whose length is not known in advance
/// (an even spread of at most [`SAMPLE`] files over all of it, in O(1) memory): systematic sampling with
/// doubling. Item `i` (from 0) is kept while `i` is a multiple of the step; when
/// [`SAMPLE_KEPT`] are kept, every other one is dropped and the step doubles. The kept
/// items are then every `step`-th of what was offered, from the first, covering all of
/// it; [`SpreadSample::finish`] picks [`SAMPLE`] evenly among them. Offered items are
/// kept or dropped at once, never buffered.
#[derive(Debug, Clone)]
pub struct SpreadSample<T> {
    kept: Vec<T>,
    step: usize,
    offered: usize,
}

impl<T> Default for SpreadSample<T> {
    fn default() -> Self {
        Self {
            kept: Vec::with_capacity(SAMPLE_KEPT),
            step: 1,
            offered: 0,
        }
    }
}

impl<T> SpreadSample<T> {
    /// Whether the next offered item would be kept (so a caller builds it only then).
    pub fn wants_next(&self) -> bool {
        self.offered.is_multiple_of(self.step)
    }

    /// Offers the next item of the stream; `make` builds it only when it is kept.
    pub fn offer_with(&mut self, make: impl FnOnce() -> T) {
        if self.wants_next() {
            if self.kept.len() == SAMPLE_KEPT {
                let mut i = 0;
                self.kept.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.step *= 2;
            }
            // After a halving the item may no longer fall on the step.
            if self.wants_next() {
                self.kept.push(make());
            }
        }
        self.offered += 1;
    }

    /// How many items were offered.
    pub fn offered(&self) -> usize {
        self.offered
    }

    /// At most [`SAMPLE`] of the kept items, spread evenly over them (so over everything
    /// offered), in stream order, the first always among them.
    pub fn finish(self) -> Vec<T> {
        let n = self.kept.len();
        if n <= SAMPLE {
            return self.kept;
        }
        let mut pick = (0..SAMPLE).map(|j| j * n / SAMPLE).peekable();
        self.kept
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                if pick.peek() == Some(&i) {
                    pick.next();
                    Some(t)
                } else {
                    None
                }
            })
            .collect()
    }
}

/// Top-level folders whose first and last files join the empty-journal sample (beside the
/// [`SpreadSample`]): at most this many, in source order.
pub const SAMPLE_FOLDERS: usize = 32;

/// The top-level folder of a source key (relative to the source root) for the
/// empty-journal sample's strata: its first segment, or `cache/<class>` below `cache/`;
/// `None` for a file at the root. An even spread alone can miss a small folder that sorts
/// last (`media_attachments/` after 500 `accounts/` files: the spread's last pick lies at
/// about 94 % of the stream), and that folder is the one a lost journal would resurrect.
pub fn sample_folder(key: &str) -> Option<&str> {
    let first = key.find('/')?;
    if &key[..first] != "cache" {
        return Some(&key[..first]);
    }
    let rest = &key[first + 1..];
    Some(match rest.find('/') {
        Some(j) => &key[..first + 1 + j],
        None => &key[..first],
    })
}

/// Whether the run refuses (exit 2) after sampling: some sampled source files are already
/// in the bucket (`present`), so the journal is not the one of the earlier copy and
/// uploading what is missing would bring back what Mastodon deleted there since.
pub fn refuses_empty_journal(present: &[&str]) -> bool {
    !present.is_empty()
}

/// Journalled keys no longer at the source (`seen`: the keys enumerated this run), sorted;
/// keys `--skip-cache` leaves out do not count. migrate never deletes them in the target.
pub fn deleted_at_source<'a>(
    journalled: impl IntoIterator<Item = &'a str>,
    seen: &HashSet<&str>,
    skip_cache: bool,
) -> Vec<&'a str> {
    let mut gone: Vec<&str> = journalled
        .into_iter()
        .filter(|k| !(seen.contains(k) || skipped_by_cache(k, skip_cache)))
        .collect();
    gone.sort_unstable();
    gone
}

/// Whether a file the journal holds as deleted in the bucket is uploaded by
/// `--reupload-missing`: always without a database (`named` `None`), else only when a row
/// still names its key.
pub fn owed(key: &str, named: Option<&HashSet<String>>) -> bool {
    named.is_none_or(|n| n.contains(key))
}

/// Whether an `orphans` classification of a missing key means a row still names it (the
/// row's exact key, a variant, or a shared partition or table the database cannot answer
/// for): then the object is owed.
pub fn still_named(class: &Class) -> bool {
    matches!(
        class,
        Class::Referenced(Kept::Owned | Kept::Variant | Kept::Uncertain)
    )
}

/// Whether an unfinished multipart upload of `key` (a full target key) is a killed run's
/// leftover to abort: its key is one this run uploads in parts (`big`: full target keys,
/// with the target's `S3_KEY_PREFIX`) and it was initiated before this run `started` (an upload without a
/// start time is never touched).
pub fn is_stale_upload(
    key: &str,
    initiated: Option<DateTime<Utc>>,
    big: &HashSet<String>,
    started: DateTime<Utc>,
) -> bool {
    big.contains(key) && initiated.is_some_and(|t| t < started)
}

/// The database's standing of a key's partition narrowed to this very file:
/// [`Standing::Good`] only when a row names the file (`names_file`,
/// `plan::orphans::row_names`), since a neighbour row in the same folder never vouches for
/// publishing a private object; a good partition without such a row is [`Standing::NoRow`].
pub fn vouched(partition: Standing, names_file: bool) -> Standing {
    match partition {
        Standing::Good if !names_file => Standing::NoRow,
        s => s,
    }
}

/// How one file is (or would be) uploaded: the ACL decision of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadAcl {
    /// The source was private (file not world-readable, private or unreadable ACL).
    pub source_private: bool,
    /// The source ACL could not be read (taken as private).
    pub acl_unreadable: bool,
    /// The canned ACL to send (`None`: no ACL header).
    pub acl: Option<String>,
}

/// The ACL of a copy of `key` ([`decide_acl`]): `public` and `acl_unreadable` describe the
/// source (an unreadable ACL comes in as not public), `standing` the database's
/// ([`vouched`]; `None` without `--database` or for keys outside the layout).
pub fn upload_acl(
    key: &str,
    in_layout: bool,
    permission: Option<&str>,
    public: bool,
    acl_unreadable: bool,
    standing: Option<Standing>,
) -> UploadAcl {
    UploadAcl {
        source_private: !public,
        acl_unreadable,
        acl: decide_acl(key, in_layout, permission, public, standing),
    }
}

/// Whether a stored `Content-Type` says nothing (empty or a generic binary type), so
/// `--repair` sniffs the object's first bytes instead.
pub fn is_generic_content_type(ct: &str) -> bool {
    ct.is_empty() || ct == "binary/octet-stream" || ct == "application/octet-stream"
}

/// The ACL side of a `--repair` of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRepair {
    /// The canned ACL the object must carry (`None`: send none).
    pub acl: Option<String>,
    /// Whether that differs from what it carries (public or not).
    pub changes: bool,
    /// A private object this run could have published (not a backup or import, and the
    /// permission is a public one) but does not.
    pub left_private: bool,
}

/// The ACL `--repair` gives the object at `key` (without `S3_KEY_PREFIX`), public now or
/// not, with `permission` (`S3_PERMISSION`, `None`: no ACL is sent, nothing changes) and
/// the database's `standing` (`--repair-acl`), by [`decide_acl`].
pub fn repair_acl(
    key: &str,
    in_layout: bool,
    permission: Option<&str>,
    public: bool,
    standing: Option<Standing>,
) -> AclRepair {
    let Some(p) = permission else {
        return AclRepair {
            acl: None,
            changes: false,
            left_private: false,
        };
    };
    let want = decide_acl(key, in_layout, Some(p), public, standing);
    let want_public = want.as_deref() != Some("private");
    let left_private =
        !want_public && !public && acl_for(key, Some(p)).as_deref() != Some("private");
    AclRepair {
        acl: want,
        changes: want_public != public,
        left_private,
    }
}

/// What `--repair` does with one object it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairVerdict {
    /// Headers and ACL are right: nothing sent.
    Fine,
    /// Headers and ACL are right, and the object stays private ([`AclRepair::left_private`]).
    LeftPrivate,
    /// Rewritten in place (one COPY) with the wanted headers and ACL.
    Rewrite {
        /// The object stays private ([`AclRepair::left_private`]).
        left_private: bool,
    },
}

/// The `--repair` decision for one object from what its HEAD said (`content_type`,
/// `cache_control`), the wanted `Content-Type` (`want_ct`) and the [`AclRepair`]: a
/// rewrite when any of the three differs (Cache-Control must be Mastodon's
/// [`CACHE_CONTROL`]).
pub fn repair_verdict(
    content_type: Option<&str>,
    cache_control: Option<&str>,
    want_ct: &str,
    acl: &AclRepair,
) -> RepairVerdict {
    let ct_changes = content_type != Some(want_ct);
    let cc_changes = cache_control != Some(CACHE_CONTROL);
    if ct_changes || cc_changes || acl.changes {
        RepairVerdict::Rewrite {
            left_private: acl.left_private,
        }
    } else if acl.left_private {
        RepairVerdict::LeftPrivate
    } else {
        RepairVerdict::Fine
    }
}

/// Whether an ETag is a plain MD5 hex digest (a single-part upload), which `--verify` can
/// compare with the file's MD5; a multipart ETag (`…-N`) cannot be.
pub fn is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What `--verify` learns from the HEAD of one journalled object ([`check_head`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadCheck {
    /// Not in the bucket (classified by [`missing_verdict`]).
    Missing,
    /// The bucket's size differs from the journal's.
    SizeMismatch {
        /// Bytes in the bucket.
        bucket: u64,
        /// Bytes in the journal.
        journal: u64,
    },
    /// The size matches and the ETag is an MD5 to compare with the local file's.
    CompareMd5(String),
    /// The size matches and nothing more can be compared: verified.
    Matches,
}

/// The check of one object from its HEAD (`head`: size and ETag, `None` when missing),
/// the journal's size and whether the source is a local file (only then is an MD5
/// compared).
pub fn check_head(head: Option<(u64, Option<&str>)>, journal_size: u64, local: bool) -> HeadCheck {
    match head {
        None => HeadCheck::Missing,
        Some((size, _)) if size != journal_size => HeadCheck::SizeMismatch {
            bucket: size,
            journal: journal_size,
        },
        Some((_, Some(etag))) if local && is_md5(etag) => HeadCheck::CompareMd5(etag.to_owned()),
        Some(_) => HeadCheck::Matches,
    }
}

/// The `(code, message)` of a failed check, `None` when it passed (or cannot fail:
/// [`HeadCheck::Missing`] is classified apart). `local_md5` is the file's MD5 for
/// [`HeadCheck::CompareMd5`], `None` when the file is gone or unreadable now (the size
/// check then stands).
pub fn check_failure(check: &HeadCheck, local_md5: Option<&str>) -> Option<(String, String)> {
    match check {
        HeadCheck::SizeMismatch { bucket, journal } => Some((
            "SizeMismatch".to_owned(),
            format!("bucket has {bucket} bytes, journal {journal}"),
        )),
        HeadCheck::CompareMd5(etag) => match local_md5 {
            Some(local) if local != etag => Some((
                "Md5Mismatch".to_owned(),
                format!("bucket {etag}, file {local}"),
            )),
            _ => None,
        },
        HeadCheck::Missing | HeadCheck::Matches => None,
    }
}

/// Whether the source still holds a journalled file as copied: `current` is its size and
/// version at the source now, `None` when it is gone there too (which counts as unchanged).
pub fn unchanged_at_source(rec: &Journalled<'_>, current: Option<(u64, &str)>) -> bool {
    current.is_none_or(|(size, version)| size == rec.size && version == rec.version)
}

/// What a journalled object missing from the bucket means ([`missing_verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingVerdict {
    /// Deleted in the bucket since the copy, not owed: journalled
    /// [`FileState::DeletedInBucket`], listed, not a failure.
    DeletedInBucket,
    /// Copied and unchanged, but a row still names it: a failure that
    /// `--reupload-missing --database` repairs (journalled deleted in the bucket).
    StillNamed,
    /// Changed at the source since the copy (or journalled a mismatch): a failure,
    /// journalled a mismatch so the next run uploads it.
    ChangedAtSource,
}

impl MissingVerdict {
    /// The state journalled for the object.
    pub fn state(self) -> FileState {
        match self {
            MissingVerdict::DeletedInBucket | MissingVerdict::StillNamed => {
                FileState::DeletedInBucket
            }
            MissingVerdict::ChangedAtSource => FileState::Mismatch,
        }
    }

    /// The failure message, `None` when it is not a failure.
    pub fn failure(self) -> Option<&'static str> {
        match self {
            MissingVerdict::DeletedInBucket => None,
            MissingVerdict::StillNamed => Some(
                "not in the bucket, but a row of the database still names it: `migrate --reupload-missing --database` puts it back",
            ),
            MissingVerdict::ChangedAtSource => Some(
                "not in the bucket (changed at the source since the copy: the next run uploads it)",
            ),
        }
    }
}

/// The verdict on a journalled object missing from the bucket, in state `state`,
/// [`unchanged_at_source`] or not, and, with `--database`, whether a row still names its
/// key (`named`). Without a database a copied, unchanged file is deleted in the bucket on
/// purpose; with one, the database decides whether it is owed.
pub fn missing_verdict(state: FileState, unchanged: bool, named: Option<bool>) -> MissingVerdict {
    let copied = state != FileState::Mismatch && unchanged;
    let owed = named.unwrap_or(!copied);
    if !owed {
        MissingVerdict::DeletedInBucket
    } else if copied {
        MissingVerdict::StillNamed
    } else {
        MissingVerdict::ChangedAtSource
    }
}

/// The journal's name for a target: `<endpoint or "aws">/<bucket>[/<S3_KEY_PREFIX>]`. The
/// key prefix is part of it: journal rows hold keys without it, so after a change of
/// `S3_KEY_PREFIX` they must not claim the objects are already there.
pub fn target_id(endpoint: Option<&str>, bucket: &str, key_prefix: Option<&str>) -> String {
    let id = format!("{}/{bucket}", endpoint.unwrap_or("aws"));
    match key_prefix {
        Some(prefix) => format!("{id}/{prefix}"),
        None => id,
    }
}

/// The AWS CLI command that deletes one key of the target bucket, `{}` standing for the
/// key below `S3_KEY_PREFIX` (`report::migrate::MigrateReport::remove_command_for`).
pub fn remove_command(endpoint: Option<&str>, bucket: &str, key_prefix: Option<&str>) -> String {
    let endpoint = endpoint
        .map(|e| format!(" --endpoint-url {e}"))
        .unwrap_or_default();
    let prefix = key_prefix.map(|p| format!("{p}/")).unwrap_or_default();
    format!("aws{endpoint} s3 rm 's3://{bucket}/{prefix}{{}}'")
}

/// The journal's name of a folder on the local disk as a migrate target: `file://` and
/// its path, never equal to a bucket's [`target_id`] (whose endpoint is `aws` or an
/// `http(s)://` URL).
pub fn disk_target_id(root: &std::path::Path) -> String {
    format!("file://{}", root.display())
}

/// The shell command that deletes one file of a disk target, `{}` standing for the key
/// (as [`remove_command`] for a bucket).
pub fn remove_file_command(root: &std::path::Path) -> String {
    format!("rm -- '{}/{{}}'", root.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_threshold_is_the_flag_then_the_env_then_mastodons_15_mib() {
        assert_eq!(multipart_threshold(None, None), 15_728_640);
        assert_eq!(multipart_threshold(None, Some(20_000_000)), 20_000_000);
        assert_eq!(
            multipart_threshold(Some(6_000_000), Some(20_000_000)),
            6_000_000
        );
        // Below S3's smallest part: raised to it.
        assert_eq!(multipart_threshold(None, Some(1_000)), 5_242_880);
    }
    use FileState::*;

    #[test]
    fn a_disk_target_is_never_named_like_a_bucket() {
        let root = std::path::Path::new("/home/mastodon/live/public/system");
        let id = disk_target_id(root);
        assert_eq!(id, "file:///home/mastodon/live/public/system");
        for endpoint in [
            None,
            Some("https://s3.example.com"),
            Some("http://127.0.0.1:9000"),
        ] {
            assert_ne!(id, target_id(endpoint, "system", None));
            assert_ne!(
                id,
                target_id(endpoint, "home", Some("mastodon/live/public/system"))
            );
        }
        assert_eq!(
            remove_file_command(root).replace("{}", "cache/a.png"),
            "rm -- '/home/mastodon/live/public/system/cache/a.png'"
        );
    }

    fn rec(size: u64, version: &str, state: FileState, private: Option<bool>) -> Journalled<'_> {
        Journalled {
            size,
            version,
            state,
            source_private: private,
        }
    }

    fn src(size: u64, version: &str, readable: Option<bool>) -> SourceFacts<'_> {
        SourceFacts {
            size,
            version,
            world_readable: readable,
        }
    }

    #[test]
    fn journal_diff() {
        type Case<'a> = (Option<Journalled<'a>>, SourceFacts<'a>, Diff);
        let cases: Vec<Case<'_>> = vec![
            // never journalled
            (None, src(5, "1", Some(true)), Diff::Upload),
            // copied, unchanged
            (
                Some(rec(5, "1", Uploaded, Some(false))),
                src(5, "1", Some(true)),
                Diff::Unchanged,
            ),
            (
                Some(rec(5, "1", Verified, None)),
                src(5, "1", None),
                Diff::Unchanged,
            ),
            // journalled before privacy was kept: copied public
            (
                Some(rec(5, "1", Uploaded, None)),
                src(5, "1", Some(true)),
                Diff::Unchanged,
            ),
            // new mtime or size: re-upload only over an existing object
            (
                Some(rec(5, "1", Uploaded, Some(false))),
                src(5, "2", Some(true)),
                Diff::UploadIfPresent,
            ),
            (
                Some(rec(5, "1", Verified, Some(false))),
                src(6, "1", Some(true)),
                Diff::UploadIfPresent,
            ),
            // privacy changed at the source (suspension chmod), mtime kept
            (
                Some(rec(5, "1", Uploaded, Some(false))),
                src(5, "1", Some(false)),
                Diff::UploadIfPresent,
            ),
            (
                Some(rec(5, "1", Uploaded, Some(true))),
                src(5, "1", Some(true)),
                Diff::UploadIfPresent,
            ),
            (
                Some(rec(5, "1", Uploaded, None)),
                src(5, "1", Some(false)),
                Diff::UploadIfPresent,
            ),
            // bucket sources: privacy is read at copy time, never a change here
            (
                Some(rec(5, "1", Uploaded, Some(true))),
                src(5, "1", None),
                Diff::Unchanged,
            ),
            // deleted in the bucket: never re-created while unchanged
            (
                Some(rec(5, "1", DeletedInBucket, Some(false))),
                src(5, "1", Some(true)),
                Diff::DeletedInBucket,
            ),
            (
                Some(rec(5, "1", DeletedInBucket, Some(false))),
                src(5, "1", Some(false)),
                Diff::DeletedInBucket,
            ),
            // ...nor after a new version at the source (a touch, a restored backup): only
            // over an object that is back in the bucket (hostile test F3; it was Upload,
            // which re-created what Mastodon had deleted)
            (
                Some(rec(5, "1", DeletedInBucket, Some(false))),
                src(5, "2", Some(true)),
                Diff::UploadIfPresent,
            ),
            // a mismatch is uploaded again, unconditionally
            (
                Some(rec(5, "1", Mismatch, Some(false))),
                src(5, "1", Some(true)),
                Diff::Upload,
            ),
            (
                Some(rec(5, "1", Mismatch, Some(false))),
                src(7, "3", Some(true)),
                Diff::Upload,
            ),
        ];
        for (r, f, want) in cases {
            assert_eq!(diff(r.as_ref(), &f), want, "{r:?} {f:?}");
        }
    }

    #[test]
    fn empty_journal_refusal() {
        assert!(refuses_empty_journal(&["a"]));
        assert!(!refuses_empty_journal(&[]));
    }

    #[test]
    fn sample_folders_are_the_class_or_the_cached_class() {
        assert_eq!(
            sample_folder("media_attachments/files/000/000/001/original/a.png"),
            Some("media_attachments")
        );
        assert_eq!(
            sample_folder("cache/accounts/avatars/000/original/a.png"),
            Some("cache/accounts")
        );
        assert_eq!(sample_folder("cache/x.png"), Some("cache"));
        assert_eq!(sample_folder("robots.txt"), None);
    }

    #[test]
    fn a_streamed_sample_is_spread_over_the_whole_stream() {
        for n in [
            0usize, 1, 3, 16, 17, 31, 32, 33, 100, 1_000, 10_007, 1_000_000,
        ] {
            let mut sampler = SpreadSample::default();
            let mut built = 0;
            for i in 0..n {
                sampler.offer_with(|| {
                    built += 1;
                    i
                });
            }
            assert_eq!(sampler.offered(), n);
            // Only kept items are built: the first 32, then 16 per doubling of the step.
            let doublings = n.max(1).ilog2() as usize;
            assert!(built <= SAMPLE_KEPT + SAMPLE * doublings, "{n}: {built}");
            let sample = sampler.finish();
            assert_eq!(sample.len(), n.min(SAMPLE), "{n}");
            assert!(sample.is_sorted() && sample.iter().all(|&i| i < n));
            if n >= SAMPLE {
                assert_eq!(sample[0], 0);
                // Spread: the gaps are even (within a factor of 2 of n / 16), so the last
                // sampled item lies in the last ~1/8 of the stream, never in its first half.
                let gap = n / SAMPLE;
                for w in sample.windows(2) {
                    assert!(w[1] - w[0] <= 2 * gap.max(1) + 1, "{n}: {sample:?}");
                    assert!(w[1] - w[0] >= gap / 2, "{n}: {sample:?}");
                }
                assert!(*sample.last().unwrap() >= n - n / 8 - 2, "{n}: {sample:?}");
            }
        }
    }

    #[test]
    fn gone_from_the_source() {
        let seen: HashSet<&str> = ["a", "cache/x"].into_iter().collect();
        let known = ["z", "a", "cache/y", "b"];
        assert_eq!(
            deleted_at_source(known, &seen, false),
            ["b", "cache/y", "z"]
        );
        assert_eq!(deleted_at_source(known, &seen, true), ["b", "z"]);
        assert!(skipped_by_cache("cache/a", true));
        assert!(!skipped_by_cache("cache/a", false));
        assert!(!skipped_by_cache("media_attachments/cache/a", true));
    }

    #[test]
    fn owed_with_and_without_database() {
        let named: HashSet<String> = ["a".to_owned()].into_iter().collect();
        assert!(owed("a", None));
        assert!(owed("b", None));
        assert!(owed("a", Some(&named)));
        assert!(!owed("b", Some(&named)));
        use crate::plan::orphans::OrphanReason;
        let cases = [
            (Class::Referenced(Kept::Owned), true),
            (Class::Referenced(Kept::Variant), true),
            (Class::Referenced(Kept::Uncertain), true),
            (Class::Referenced(Kept::LocalRow), false),
            (Class::Orphan(OrphanReason::RowGone), false),
            (Class::Stale, false),
        ];
        for (class, want) in cases {
            assert_eq!(still_named(&class), want, "{class:?}");
        }
    }

    #[test]
    fn stale_uploads() {
        let big: HashSet<String> = ["p/b".to_owned(), "p/c".to_owned()].into_iter().collect();
        let now = Utc::now();
        let before = now - chrono::Duration::seconds(1);
        assert!(is_stale_upload("p/b", Some(before), &big, now));
        assert!(!is_stale_upload("p/b", Some(now), &big, now));
        assert!(!is_stale_upload("p/b", None, &big, now));
        assert!(!is_stale_upload("p/a", Some(before), &big, now));
    }

    #[test]
    fn only_a_row_naming_the_file_vouches() {
        use Standing::*;
        let cases = [
            (Good, true, Good),
            (Good, false, NoRow),
            (Hidden, true, Hidden),
            (Hidden, false, Hidden),
            (NoRow, true, NoRow),
            (NoRow, false, NoRow),
        ];
        for (partition, named, want) in cases {
            assert_eq!(vouched(partition, named), want, "{partition:?} {named}");
        }
    }

    #[test]
    fn upload_acls() {
        let media = "media_attachments/files/000/000/005/original/a.png";
        let p = Some("public-read");
        let up = upload_acl(media, true, p, false, true, None);
        assert_eq!(
            up,
            UploadAcl {
                source_private: true,
                acl_unreadable: true,
                acl: Some("private".into())
            }
        );
        let up = upload_acl(media, true, p, false, false, Some(Standing::Good));
        assert_eq!(up.acl.as_deref(), Some("public-read"));
        assert!(up.source_private);
        let up = upload_acl(media, true, None, true, false, None);
        assert_eq!(up.acl, None);
        assert!(!up.source_private);
    }

    #[test]
    fn repair_table() {
        use Standing::*;
        let media = "media_attachments/files/000/000/005/original/a.png";
        let backup = "backups/dumps/000/000/001/original/a.zip";
        let p = Some("public-read");
        type Case<'a> = (
            &'a str,
            bool,
            Option<&'a str>,
            bool,
            Option<Standing>,
            AclRepair,
        );
        let r = |acl: Option<&str>, changes, left_private| AclRepair {
            acl: acl.map(str::to_owned),
            changes,
            left_private,
        };
        let cases: Vec<Case<'_>> = vec![
            // no ACL sent: nothing to change
            (media, true, None, false, Some(Good), r(None, false, false)),
            // public stays public
            (media, true, p, true, None, r(p, false, false)),
            // private without a database: left private
            (media, true, p, false, None, r(Some("private"), false, true)),
            // vouched for: published
            (media, true, p, false, Some(Good), r(p, true, false)),
            // hidden: made private
            (
                media,
                true,
                p,
                true,
                Some(Hidden),
                r(Some("private"), true, false),
            ),
            (
                media,
                true,
                p,
                false,
                Some(Hidden),
                r(Some("private"), false, true),
            ),
            // backups: private, never "left private"
            (
                backup,
                true,
                p,
                false,
                None,
                r(Some("private"), false, false),
            ),
            (backup, true, p, true, None, r(Some("private"), true, false)),
            // outside the layout: current privacy
            (
                "x/notes.txt",
                false,
                p,
                false,
                Some(Good),
                r(Some("private"), false, true),
            ),
        ];
        for (key, in_layout, perm, public, standing, want) in cases {
            assert_eq!(
                repair_acl(key, in_layout, perm, public, standing),
                want,
                "{key} {perm:?} public={public} {standing:?}"
            );
        }
        let ok = r(p, false, false);
        let left = r(Some("private"), false, true);
        let cc = Some(CACHE_CONTROL);
        let verdicts = [
            (Some("image/png"), cc, &ok, RepairVerdict::Fine),
            (Some("image/png"), cc, &left, RepairVerdict::LeftPrivate),
            (
                None,
                cc,
                &ok,
                RepairVerdict::Rewrite {
                    left_private: false,
                },
            ),
            (
                Some("image/png"),
                None,
                &left,
                RepairVerdict::Rewrite { left_private: true },
            ),
            (
                Some("image/png"),
                cc,
                &r(p, true, false),
                RepairVerdict::Rewrite {
                    left_private: false,
                },
            ),
        ];
        for (ct, cc, acl, want) in verdicts {
            assert_eq!(
                repair_verdict(ct, cc, "image/png", acl),
                want,
                "{ct:?} {cc:?}"
            );
        }
        for (ct, generic) in [
            ("", true),
            ("binary/octet-stream", true),
            ("application/octet-stream", true),
            ("image/png", false),
        ] {
            assert_eq!(is_generic_content_type(ct), generic, "{ct}");
        }
    }

    #[test]
    fn verify_classification() {
        let md5 = "0123456789abcdef0123456789ABCDEF";
        assert!(is_md5(md5));
        assert!(!is_md5("0123456789abcdef0123456789abcdef-2"));
        assert!(!is_md5("g123456789abcdef0123456789abcdef"));
        assert_eq!(check_head(None, 5, true), HeadCheck::Missing);
        assert_eq!(
            check_head(Some((4, Some(md5))), 5, true),
            HeadCheck::SizeMismatch {
                bucket: 4,
                journal: 5
            }
        );
        assert_eq!(
            check_head(Some((5, Some(md5))), 5, true),
            HeadCheck::CompareMd5(md5.to_owned())
        );
        assert_eq!(
            check_head(Some((5, Some(md5))), 5, false),
            HeadCheck::Matches
        );
        assert_eq!(
            check_head(Some((5, Some("ab-2"))), 5, true),
            HeadCheck::Matches
        );
        assert_eq!(check_head(Some((5, None)), 5, true), HeadCheck::Matches);
        let cmp = HeadCheck::CompareMd5("aa".into());
        assert_eq!(check_failure(&cmp, Some("aa")), None);
        assert_eq!(check_failure(&cmp, None), None);
        assert_eq!(
            check_failure(&cmp, Some("bb")),
            Some(("Md5Mismatch".into(), "bucket aa, file bb".into()))
        );
        assert_eq!(
            check_failure(
                &HeadCheck::SizeMismatch {
                    bucket: 4,
                    journal: 5
                },
                None
            ),
            Some((
                "SizeMismatch".into(),
                "bucket has 4 bytes, journal 5".into()
            ))
        );
        assert_eq!(check_failure(&HeadCheck::Matches, None), None);
    }

    #[test]
    fn missing_objects() {
        use MissingVerdict as V;
        let r = rec(5, "1", Uploaded, None);
        assert!(unchanged_at_source(&r, None));
        assert!(unchanged_at_source(&r, Some((5, "1"))));
        assert!(!unchanged_at_source(&r, Some((5, "2"))));
        assert!(!unchanged_at_source(&r, Some((6, "1"))));
        let cases = [
            // no database: copied and unchanged = deleted there on purpose
            (Uploaded, true, None, V::DeletedInBucket),
            (Verified, true, None, V::DeletedInBucket),
            (Uploaded, false, None, V::ChangedAtSource),
            (Mismatch, true, None, V::ChangedAtSource),
            // the database decides
            (Uploaded, true, Some(false), V::DeletedInBucket),
            (Uploaded, false, Some(false), V::DeletedInBucket),
            (Uploaded, true, Some(true), V::StillNamed),
            (Uploaded, false, Some(true), V::ChangedAtSource),
            (Mismatch, true, Some(true), V::ChangedAtSource),
        ];
        for (state, unchanged, named, want) in cases {
            assert_eq!(
                missing_verdict(state, unchanged, named),
                want,
                "{state:?} {unchanged} {named:?}"
            );
        }
        assert_eq!(V::DeletedInBucket.state(), DeletedInBucket);
        assert_eq!(V::StillNamed.state(), DeletedInBucket);
        assert_eq!(V::ChangedAtSource.state(), Mismatch);
        assert_eq!(V::DeletedInBucket.failure(), None);
        assert!(V::StillNamed.failure().is_some());
    }

    #[test]
    fn target_names_and_remove_commands() {
        assert_eq!(target_id(None, "b", None), "aws/b");
        assert_eq!(
            target_id(Some("https://s3.example"), "b", Some("p")),
            "https://s3.example/b/p"
        );
        assert_eq!(remove_command(None, "b", None), "aws s3 rm 's3://b/{}'");
        assert_eq!(
            remove_command(Some("https://s3.example"), "b", Some("p/q")),
            "aws --endpoint-url https://s3.example s3 rm 's3://b/p/q/{}'"
        );
    }
}
