//! Object storage: the object-safe [`Store`] trait (`Arc<dyn Store>`) and its two
//! backends, S3 ([`s3::S3Store`], the only file that imports aws-sdk-s3) and the local
//! filesystem ([`fs::FsStore`]); the S3-only calls in [`S3Ext`]; and the request limiter
//! ([`limited::Limiter`]) every request of both runs through.
//!
//! Owns: requests, their classification into semantic errors, request counting.
//! Must not: know about Mastodon (rows, attachments), decide what to delete, or bypass the
//! pool's dry-run gate (only `pool` calls [`Store::delete_many`]).

pub mod diagnose;
pub mod fs;
pub mod limited;
pub mod s3;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::model::ObjectKey;

pub use limited::{AttemptError, Limiter, RequestCounts, RequestStats, RetryPolicy};
pub use s3::Body;

/// A storage failure, classified so callers can decide: retry, count as failed, or stop.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The bucket (or storage root) does not exist.
    #[error(
        "bucket or storage root {0} does not exist: check S3_BUCKET / S3_ENDPOINT (or PAPERCLIP_ROOT_PATH)"
    )]
    NoSuchBucket(String),
    /// The credentials were rejected (unknown key id, bad signature).
    #[error(
        "credentials rejected ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({detail})"
    )]
    InvalidCredentials {
        /// Provider error code.
        code: String,
        /// Where and how.
        detail: String,
    },
    /// The request was understood but not allowed.
    #[error("access denied ({code}): {detail}")]
    AccessDenied {
        /// Provider error code.
        code: String,
        /// Where and how.
        detail: String,
    },
    /// The provider asks us to slow down (503 SlowDown, 429) and retries ran out.
    #[error("throttled by the provider ({code}): {detail}")]
    Throttled {
        /// Provider error code.
        code: String,
        /// Where and how.
        detail: String,
    },
    /// The provider does not implement the operation (e.g. multi-object delete).
    #[error("not supported by the provider ({code}): {detail}")]
    Unsupported {
        /// Provider error code.
        code: String,
        /// Where and how.
        detail: String,
    },
    /// The object does not exist.
    #[error("no such object")]
    NotFound,
    /// Network trouble: connect failure, timeout, broken response.
    #[error("cannot reach the storage: {0}")]
    Transport(String),
    /// Any other provider or filesystem error.
    #[error("{code}: {message}")]
    Other {
        /// Provider error code or I/O error kind.
        code: String,
        /// Message.
        message: String,
    },
}

impl StoreError {
    /// A short machine-readable code (`AccessDenied`, `SlowDown`, `ENOENT`-style kinds).
    pub fn code(&self) -> &str {
        match self {
            StoreError::NoSuchBucket(_) => "NoSuchBucket",
            StoreError::InvalidCredentials { code, .. }
            | StoreError::AccessDenied { code, .. }
            | StoreError::Throttled { code, .. }
            | StoreError::Unsupported { code, .. }
            | StoreError::Other { code, .. } => code,
            StoreError::NotFound => "NoSuchKey",
            StoreError::Transport(_) => "Transport",
        }
    }

    /// Whether trying the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Throttled { .. } | StoreError::Transport(_) => true,
            StoreError::Other { code, .. } => matches!(
                code.as_str(),
                "InternalError"
                    | "ServiceUnavailable"
                    | "SlowDown"
                    | "RequestTimeout"
                    | "OperationAborted"
            ),
            _ => false,
        }
    }

    /// Whether the provider asked us to slow down (503 `SlowDown`/`ServiceUnavailable`,
    /// 429): counted as a throttled answer, the sign that `--rate` is too high.
    pub fn is_throttle(&self) -> bool {
        match self {
            StoreError::Throttled { .. } => true,
            StoreError::Other { code, .. } => code == "ServiceUnavailable",
            _ => false,
        }
    }

    /// Whether the whole run must stop (nothing else can work either).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StoreError::NoSuchBucket(_) | StoreError::InvalidCredentials { .. }
        )
    }

    /// Builds the semantic variant for a provider error code.
    pub fn from_code(code: &str, detail: String) -> Self {
        let code_s = code.to_owned();
        match code {
            "NoSuchKey" | "NotFound" => StoreError::NotFound,
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken" => {
                StoreError::InvalidCredentials {
                    code: code_s,
                    detail,
                }
            }
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => StoreError::AccessDenied {
                code: code_s,
                detail,
            },
            "SlowDown" | "TooManyRequests" | "Throttling" | "RequestLimitExceeded" => {
                StoreError::Throttled {
                    code: code_s,
                    detail,
                }
            }
            "NotImplemented" | "XNotImplemented" => StoreError::Unsupported {
                code: code_s,
                detail,
            },
            _ => StoreError::Other {
                code: code_s,
                message: detail,
            },
        }
    }
}

/// The one key rule every backend applies before any request or filesystem operation on a
/// key (stat, delete): the key is not empty, does not start with `/`, and none of its
/// `/`-separated segments is empty, `.` or `..`. Mastodon never writes such keys (a
/// Paperclip file name is one segment; partitions, styles and prefixes are fixed words),
/// but keys are built from `*_file_name` columns: a hostile `../../accounts/…` must not
/// reach a server that normalises dot segments (RFC 3986 §5.2.4) nor a path join.
/// Errors: `StoreError::Other` with code `InvalidKey`, a per-key failure, never retried.
pub fn validate_key(key: &ObjectKey) -> Result<(), StoreError> {
    let k = key.as_str();
    let why = if k.is_empty() {
        Some("it is empty")
    } else {
        path_problem(k, "it has an empty segment ('//' or a trailing '/')", false)
    };
    refuse(why, |why| {
        format!(
            "refusing key {k:?}: {why}, which Mastodon never writes (it could address another object or leave the storage root); the row is left as it is"
        )
    })
}

/// What [`validate_key`] and [`validate_prefix`] both refuse in `path`: a leading `/`, an
/// empty segment (the last one too unless `last_may_be_empty`; `empty` is the reason
/// given), a `.` or `..` segment. `None` when none of these.
fn path_problem(path: &str, empty: &'static str, last_may_be_empty: bool) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    // The last piece is what follows the last '/': empty for a path ending with '/'.
    let (last, complete) = segments.split_last().expect("split yields one piece");
    if path.starts_with('/') {
        Some("it starts with '/'")
    } else if complete.iter().any(|s| s.is_empty()) || (!last_may_be_empty && last.is_empty()) {
        Some(empty)
    } else if segments.iter().any(|s| *s == "." || *s == "..") {
        Some("it has a '.' or '..' segment")
    } else {
        None
    }
}

/// `Ok` when there is no reason, else the `InvalidKey` error with `message(why)`.
fn refuse(why: Option<&str>, message: impl FnOnce(&str) -> String) -> Result<(), StoreError> {
    match why {
        None => Ok(()),
        Some(why) => Err(StoreError::Other {
            code: INVALID_KEY.into(),
            message: message(why),
        }),
    }
}

/// The rule for a listing prefix (`du --prefix`, `orphans --prefix`): empty, or relative
/// (no leading `/`) with no empty, `.` or `..` segment; it may end with `/` or inside a
/// file name. A `../` prefix would make the filesystem backend list (and `orphans
/// --delete` consider) files outside the storage root; on S3 it names nothing Mastodon
/// writes. Errors: `StoreError::Other` with code `InvalidKey` and the reason.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    let why = path_problem(prefix, "it has an empty segment ('//')", true);
    refuse(why, |why| {
        format!(
            "refusing prefix {prefix:?}: {why}; give a prefix relative to the bucket or storage root (and S3_KEY_PREFIX), such as cache/ or media_attachments/files/"
        )
    })
}

/// The [`StoreError::code`] of a key refused by [`validate_key`] (or by the filesystem
/// backend because a symlink leads outside the root).
pub const INVALID_KEY: &str = "InvalidKey";

/// One object as a listing returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key, decoded (never percent-encoded).
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time (S3 `LastModified`, file mtime).
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// One page of a listing below a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects of this page, in key order.
    pub objects: Vec<ObjectMeta>,
    /// With a `/` delimiter: the "sub-folders" (each ending with `/`), in order.
    pub common_prefixes: Vec<String>,
    /// Continuation token for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// An old version or delete marker of a versioned bucket (S3 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    /// The key.
    pub key: ObjectKey,
    /// Size in bytes (0 for delete markers).
    pub size: u64,
    /// Whether this is the current version.
    pub is_latest: bool,
    /// Whether this is a delete marker.
    pub delete_marker: bool,
}

/// An unfinished multipart upload (S3 only): billed until aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadMeta {
    /// The key being uploaded.
    pub key: ObjectKey,
    /// Upload id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a version or multipart-upload listing resumes (S3 `key-marker` plus
/// `version-id-marker` / `upload-id-marker`): after every entry of `key` when `id` is
/// `None`, else after that version (upload) of `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListMarker {
    /// The key marker.
    pub key: String,
    /// The version id (upload id) marker.
    pub id: Option<String>,
}

/// One page of `ListObjectVersions` below a prefix (S3 only): versions and delete markers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionPage {
    /// Versions and delete markers of this page, in key order.
    pub versions: Vec<VersionMeta>,
    /// With a `/` delimiter: the "sub-folders" (each ending with `/`), in order.
    pub common_prefixes: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ListMarker>,
}

/// One page of `ListMultipartUploads` below a prefix (S3 only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadPage {
    /// Unfinished uploads of this page.
    pub uploads: Vec<UploadMeta>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ListMarker>,
}

impl StoreError {
    /// The answer of a backend without an S3-only call (`du --versions` on a
    /// filesystem): [`StoreError::Unsupported`] naming the operation `what` and `store`.
    pub fn s3_only(what: &str, store: &str) -> Self {
        StoreError::Unsupported {
            code: "NotImplemented".into(),
            detail: format!(
                "{what} on {store}: only S3 buckets have object versions and multipart uploads"
            ),
        }
    }
}

/// What happened to one key of a delete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The store confirmed the delete.
    Deleted,
    /// The object was already missing (404, `NoSuchKey`, `ENOENT`): counts as gone (`docs/reference/provider-quirks.md#d2`).
    AlreadyGone,
    /// The delete failed; the object may still exist.
    Failed(StoreError),
}

/// The headers every uploaded object gets, as Mastodon writes them (`docs/reference/key-layout.md#upload-headers`). The filesystem
/// keeps none of them (a file has no headers; its mode is the folder's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHeaders {
    /// `Content-Type` (never empty).
    pub content_type: String,
    /// `Cache-Control`.
    pub cache_control: String,
    /// Canned ACL (`x-amz-acl`), `None` to send none (`S3_PERMISSION=` empty).
    pub acl: Option<String>,
}

/// One object's metadata (S3 `HeadObject`, a file's `stat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadMeta {
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes (an MD5 hex digest for single-part uploads); `None` on the
    /// filesystem.
    pub etag: Option<String>,
    /// `Content-Type`; `None` on the filesystem.
    pub content_type: Option<String>,
    /// `Cache-Control`; `None` on the filesystem.
    pub cache_control: Option<String>,
}

/// What [`Store::upload`] does with an object already stored at the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it: the caller knows it wrote that object (migrate's journal says so).
    Replace,
    /// Keep an object whose bytes differ (the upload fails with code [`TARGET_DIFFERS`]);
    /// one with the same bytes counts as written. The filesystem checks this atomically
    /// (the new file is hard-linked to its name, which fails when the name is taken);
    /// S3 has no check as cheap and replaces, as before (the bucket path is guarded by
    /// the journal and the empty-journal refusal, docs/ARCHITECTURE.md invariant 11).
    Keep,
}

/// The [`StoreError::code`] of an upload that [`Existing::Keep`] refused: a different
/// object is already at the key.
pub const TARGET_DIFFERS: &str = "TargetDiffers";

/// Whether an ETag is a plain MD5 hex digest (32 hex digits: a single-part upload; a
/// multipart ETag ends with `-<parts>`).
pub fn is_md5_etag(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A stream of listed objects, in key order, as [`Store::list`] returns it.
pub type ObjectStream<'a> = BoxStream<'a, Result<ObjectMeta, StoreError>>;

/// The storage interface every command uses, object-safe so a command holds one
/// `Arc<dyn Store>` whichever backend the configuration names (the shape of arrow-rs
/// `object_store`: byte-level get/put/head/copy, exact-key deletes and a listing stream;
/// provider-specific calls behind [`Store::as_s3ext`]).
///
/// Methods return boxed futures ([`BoxFuture`], from the `futures` crate the store already
/// uses) rather than `async fn`: a trait with `async fn` is not dyn-compatible, and the
/// `async-trait` crate would only generate the same boxing behind a macro and one more
/// dependency.
///
/// Every implementation sends each request (filesystem call) through its [`Limiter`]:
/// rate, concurrency, counts and the one [`RetryPolicy`]. Every method that takes a key
/// refuses, before any request, a key [`validate_key`] rejects.
pub trait Store: Send + Sync + 'static {
    /// `s3://bucket (endpoint, addressing)` or `file:///root`, for messages.
    fn describe(&self) -> String;

    /// Most keys one [`Store::delete_many`] call takes (`S3_BATCH_DELETE_LIMIT` on S3).
    fn batch_limit(&self) -> usize;

    /// The limiter (request counts, rate).
    fn limiter(&self) -> &Limiter;

    /// The S3-only calls (versions, multipart uploads, versioning, ACLs), `None` on a
    /// backend without them (the filesystem).
    fn as_s3ext(&self) -> Option<&dyn S3Ext> {
        None
    }

    /// Proves the bucket (or root) exists and the credentials can list it. Errors are
    /// fatal for a run: [`StoreError::NoSuchBucket`], [`StoreError::InvalidCredentials`],
    /// [`StoreError::AccessDenied`], [`StoreError::Transport`].
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Per key, in the order given: its size in bytes, `None` when the object does not
    /// exist (or [`validate_key`] refuses it: nothing is asked), or the error that kept it
    /// from being sized (the listing covering it failed after the retry policy's attempts,
    /// its stat failed). One key's error never fails another key's answer.
    ///
    /// `prefixes` says how to group the requests where a listing answers many keys at
    /// once (S3): each distinct prefix that covers a valid key is listed once, all pages,
    /// and a key is answered from the longest given prefix it starts with; a key no given
    /// prefix covers is listed by itself (prefix = the key). The caller picks them (for
    /// Mastodon's layout, `plan::partition::listing_prefixes`); the filesystem stats each
    /// key and ignores them.
    fn stat_many<'a>(
        &'a self,
        keys: &'a [ObjectKey],
        prefixes: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Option<u64>, StoreError>>>;

    /// Whether one listing page is cheap next to one request per key (S3: ~1000 objects
    /// per request), so prune sizes runs of keys by range listings (`plan::ranges`).
    /// `false` (the default, the filesystem): a listing walks folders, so each key is
    /// sized by itself ([`Store::stat_many`]).
    fn sizes_by_listing(&self) -> bool {
        false
    }

    /// One page of the objects below `prefix` (`""` = everything), in key order, starting
    /// after `start_after` when given (first page only) or from the `continuation` token of
    /// the previous page. With `delimiter`, keys containing a further `/` are rolled up
    /// into [`ListPage::common_prefixes`]. At most about 1000 objects per page.
    fn list_page<'a>(
        &'a self,
        prefix: &'a str,
        delimiter: bool,
        start_after: Option<&'a str>,
        continuation: Option<String>,
    ) -> BoxFuture<'a, Result<ListPage, StoreError>>;

    /// Every object below `prefix` (`""` = everything), in key order (bytewise), after
    /// `start_after` when given: [`Store::list_page`] page after page (no delimiter), each
    /// page requested when the stream reaches it. An error ends the stream (its last
    /// item); dropping the stream stops the listing.
    fn list<'a>(&'a self, prefix: &'a str, start_after: Option<&'a str>) -> ObjectStream<'a> {
        paginate(self, prefix, start_after)
    }

    /// Deletes exactly these keys (at most [`Store::batch_limit`]), one outcome per key in
    /// the order given; a missing object is [`DeleteOutcome::AlreadyGone`] (D2), a key
    /// [`validate_key`] refuses fails (`InvalidKey`) without being sent. Never deletes a
    /// prefix. Only the pool's dry-run gate calls this.
    fn delete_many<'a>(&'a self, keys: &'a [ObjectKey]) -> BoxFuture<'a, Vec<DeleteOutcome>>;

    /// The whole object. Errors: [`StoreError::NotFound`] when it does not exist,
    /// `InvalidKey` for a refused key; on the filesystem also a symlinked file or a
    /// folder symlink leading outside the root.
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Bytes, StoreError>>;

    /// Writes `bytes` at `key`, replacing what was there, with `headers` (S3: one
    /// `PutObject` with Content-Type, Cache-Control and ACL; filesystem: the headers are
    /// not kept). Atomic: readers see the old object or the new one, never a part
    /// (S3 by definition; the filesystem writes a temporary file in the target folder and
    /// renames it). Errors: `InvalidKey` (a refused key, a symlink on the way out of the
    /// root), the request failed.
    fn put<'a>(
        &'a self,
        key: &'a ObjectKey,
        bytes: Bytes,
        headers: &'a ObjectHeaders,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The object's metadata, `None` when it does not exist. Errors: `InvalidKey`, the
    /// request failed.
    fn head<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<HeadMeta>, StoreError>>;

    /// Writes `body` (a local file, or an object of a source bucket streamed from it,
    /// never held whole in memory) at `key`, for `migrate`. `existing` says what to do
    /// with an object already there ([`Existing`]). S3: one PutObject with `headers` up
    /// to `multipart_threshold` bytes, else a multipart upload with equal parts, aborted
    /// when a part fails (`docs/reference/provider-quirks.md#m1`). Filesystem: the bytes
    /// go to a temporary file in the key's folder (folders created 0755), which is
    /// fsynced, given mode 0644 (0600 when `headers.acl` is `private`, as Mastodon
    /// chmods the files of suspended accounts; `docs/reference/key-layout.md#files-on-disk`)
    /// and renamed (or linked) to the key: never a partial file under the final name;
    /// temporary files a killed run left beside the key are removed first. Errors:
    /// `InvalidKey`; the body's size is not the `u64` it names (`SizeChanged`, nothing
    /// written); [`TARGET_DIFFERS`]; `AccessControlListNotSupported` (S3,
    /// `docs/reference/provider-quirks.md#a1`); the request failed.
    fn upload<'a>(
        &'a self,
        key: &'a ObjectKey,
        body: Body<'a>,
        headers: &'a ObjectHeaders,
        existing: Existing,
        multipart_threshold: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The MD5 of the object's bytes, 32 lowercase hex digits, for `migrate --verify`:
    /// S3 answers with one HEAD, `Some` only when the ETag is a plain MD5 (a single-part
    /// upload); the filesystem reads the file. `None` also when the object does not
    /// exist. Errors: `InvalidKey`, the request (read) failed.
    fn md5<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Copies `from` to `to` inside this store, replacing `to` (S3: one `CopyObject`,
    /// Content-Type and Cache-Control kept, the ACL not: the copy gets the bucket's
    /// default; objects over 5 GiB are refused by S3; filesystem: an atomic write as
    /// [`Store::put`]). Errors: [`StoreError::NotFound`] when `from` does not exist,
    /// `InvalidKey` for either key, the request failed.
    fn copy<'a>(
        &'a self,
        from: &'a ObjectKey,
        to: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The objects of [`Store::list`]: [`pages`] over [`Store::list_page`], flattened.
fn paginate<'a, S: Store + ?Sized>(
    store: &'a S,
    prefix: &'a str,
    start_after: Option<&'a str>,
) -> ObjectStream<'a> {
    pages(start_after, move |after, token| {
        store.list_page(prefix, false, after, token)
    })
    .map_ok(|page| stream::iter(page.objects.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

/// The one `ListObjectsV2` pagination loop (continuation tokens, `start_after` on the
/// first page only) that [`Store::list`], orphans' scan and prune's range listings share:
/// `fetch(start_after, continuation)` is called for the first page with `start_after` and
/// no token, then with the previous page's [`ListPage::next`] until a page has none. Each
/// page is requested only when the stream is polled for it, so dropping the stream stops
/// the listing; an error is the stream's last item. `fetch` decides the prefix, the
/// delimiter and any retry around one page.
pub fn pages<'a, F, Fut>(
    start_after: Option<&'a str>,
    fetch: F,
) -> BoxStream<'a, Result<ListPage, StoreError>>
where
    F: FnMut(Option<&'a str>, Option<String>) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = Result<ListPage, StoreError>> + Send + 'a,
{
    enum Next {
        First,
        Token(String),
        Done,
    }
    stream::unfold((Next::First, fetch), move |(next, mut fetch)| async move {
        let (after, token) = match next {
            Next::Done => return None,
            Next::First => (start_after, None),
            Next::Token(t) => (None, Some(t)),
        };
        match fetch(after, token).await {
            Ok(page) => {
                let next = page.next.clone().map_or(Next::Done, Next::Token);
                Some((Ok(page), (next, fetch)))
            }
            Err(e) => Some((Err(e), (Next::Done, fetch))),
        }
    })
    .boxed()
}

/// The calls only S3 buckets have: object versions, multipart uploads, the bucket's
/// versioning state and object ACLs (`du --versions`, prune's freed-space note,
/// `migrate`). Reached through [`Store::as_s3ext`], or directly on
/// [`s3::S3Store`], which implements it. Every call runs through the store's limiter.
pub trait S3Ext: Send + Sync {
    /// The bucket's versioning state: `Some("Enabled")` or `Some("Suspended")` when deleted
    /// objects stay stored as noncurrent versions, `None` when versioning was never on.
    /// Errors: the provider could not say (`NotImplemented` where the API is missing).
    fn versioning(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// One page of object versions and delete markers below `prefix` (S3
    /// `ListObjectVersions`), resuming at `marker`; with `delimiter`, deeper keys are
    /// rolled up into [`VersionPage::common_prefixes`].
    fn list_versions_page<'a>(
        &'a self,
        prefix: &'a str,
        delimiter: bool,
        marker: Option<ListMarker>,
    ) -> BoxFuture<'a, Result<VersionPage, StoreError>>;

    /// One page of unfinished multipart uploads below `prefix` (S3
    /// `ListMultipartUploads`), resuming at `marker`.
    fn list_uploads_page<'a>(
        &'a self,
        prefix: &'a str,
        marker: Option<ListMarker>,
    ) -> BoxFuture<'a, Result<UploadPage, StoreError>>;

    /// `(parts, bytes)` already uploaded to an unfinished multipart upload (S3 `ListParts`,
    /// all pages): what the provider bills until the upload is aborted.
    fn upload_parts<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFuture<'a, Result<(u64, u64), StoreError>>;

    /// Aborts an unfinished multipart upload (`AbortMultipartUpload`); one already gone
    /// counts as aborted. Destructive: callers pass it through `pool::Gate::mutate`.
    fn abort_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether the object grants READ to everyone (`GetObjectAcl`: an AllUsers grant of
    /// READ or FULL_CONTROL).
    fn is_public<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Rewrites the object's Content-Type, Cache-Control and ACL in place (one
    /// `CopyObject` onto itself, `MetadataDirective=REPLACE`). Destructive: through
    /// `pool::Gate::mutate`.
    fn repair_in_place<'a>(
        &'a self,
        key: &'a str,
        headers: &'a ObjectHeaders,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_prefixes_stay_below_the_root() {
        for good in [
            "",
            "cache/",
            "cache/media_attachments/files/109/",
            "media_attachments/fi",
            "a.b/c..d",
        ] {
            assert!(validate_prefix(good).is_ok(), "{good:?}");
        }
        for bad in [
            "../x",
            "..",
            "cache/../../etc/",
            "./cache/",
            "/etc/",
            "cache//files/",
            "cache/.",
        ] {
            let e = validate_prefix(bad).expect_err(bad);
            assert_eq!(e.code(), INVALID_KEY, "{bad:?}");
        }
    }

    #[test]
    fn case5_validate_key_refuses_dot_and_empty_segments() {
        for bad in [
            "",
            "/media_attachments/files/000/000/001/original/a.png",
            "media_attachments/files/000/000/001/original/../../../../../../accounts/avatars/000/000/001/original/x.png",
            "media_attachments/files/000/000/001/original/..",
            "media_attachments/files/000/000/001/./original/a.png",
            "./a.png",
            "a//b.png",
            "a/b/",
            "..",
        ] {
            let err = validate_key(&ObjectKey::new(bad)).expect_err(bad);
            assert_eq!(err.code(), INVALID_KEY, "{bad}");
            assert!(!err.is_retryable() && !err.is_fatal(), "{bad}");
        }
        for ok in [
            "cache/media_attachments/files/109/345/678/901/234/567/original/8f3a2b1c4d5e6f70.png",
            "prefix/accounts/avatars/000/000/001/original/a..b.png",
            "a/.hidden/b...png",
            "cache/a b/c+d%20?#.png",
        ] {
            assert!(validate_key(&ObjectKey::new(ok)).is_ok(), "{ok}");
        }
    }
}
