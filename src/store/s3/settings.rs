//! [`S3Config`]: the settings the S3 backend is built from. `src/config/mod.rs` fills them
//! from `.env.production` with Mastodon's defaults applied; the store never reads the
//! environment itself.

use std::time::Duration;

use crate::model::{KeyPrefix, Secret};

/// The S3 settings of `.env.production` (`docs/reference/env-file.md#s3`), with Mastodon's defaults applied.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `S3_BUCKET`.
    pub bucket: String,
    /// `S3_REGION` (default `us-east-1`): the signing region.
    pub region: String,
    /// `S3_ENDPOINT`: the API endpoint URL; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Path-style addressing: on whenever `S3_ENDPOINT` is set unless
    /// `S3_OVERRIDE_PATH_STYLE=true`; forced on for dotted bucket names over HTTPS.
    pub force_path_style: bool,
    /// `S3_PROTOCOL` (default `https`): scheme of public URLs only.
    pub protocol: String,
    /// `S3_HOSTNAME` (default `s3-<region>.amazonaws.com`): host of public URLs only.
    pub hostname: String,
    /// `S3_ALIAS_HOST` (or legacy `S3_CLOUDFRONT_HOST`): public host, possibly with a path.
    pub alias_host: Option<String>,
    /// `S3_PERMISSION` (default `public-read`); `None` when set but empty (send no ACL).
    pub permission: Option<String>,
    /// `S3_BATCH_DELETE_LIMIT` (default 1000, at most 1000): keys per `DeleteObjects`.
    pub batch_delete_limit: usize,
    /// `S3_KEY_PREFIX` (4.3+), normalised.
    pub key_prefix: KeyPrefix,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret<String>,
    /// `S3_OPEN_TIMEOUT` (default 5 s): connect timeout.
    pub open_timeout: Duration,
    /// `S3_READ_TIMEOUT` (default 5 s): the time one attempt of a short request (listing,
    /// HEAD, ACL read, single delete) may take.
    pub read_timeout: Duration,
    /// The same, raised to at least 120 s as Mastodon's batch delete does: the attempt
    /// timeout of `DeleteObjects` and of requests that carry or copy a body (PutObject,
    /// UploadPart, CopyObject, CompleteMultipartUpload, GetObject).
    pub long_timeout: Duration,
    /// `S3_RETRY_LIMIT`: SDK attempts per request (we use at least 3).
    pub max_attempts: u32,
    /// `MASTOMEDIA_DELETE_CHECKSUM` (`md5`, the default, or `crc32`): the integrity
    /// headers of `DeleteObjects`. The store switches to the other one for the rest of the
    /// run when the provider refuses them.
    pub delete_checksum: DeleteChecksum,
    /// `S3_MULTIPART_THRESHOLD` (bytes): above it Mastodon uploads in parts; `None` when
    /// unset (Mastodon's default is 15 MiB). migrate's default `--multipart-threshold`
    /// ([`crate::plan::migrate::multipart_threshold`]).
    pub multipart_threshold: Option<u64>,
}

/// Which integrity headers a `DeleteObjects` request carries (`docs/reference/provider-quirks.md#d4`, `docs/reference/provider-quirks.md#h1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteChecksum {
    /// `Content-MD5` only: what S3 has always accepted, and what Backblaze B2, OVH,
    /// Cloudflare R2 and older MinIO need (they refuse `x-amz-checksum-*` headers).
    Md5,
    /// The SDK's `x-amz-checksum-crc32` and `x-amz-sdk-checksum-algorithm`, plus
    /// `Content-MD5`: for a provider that insists on a flexible checksum.
    Crc32,
}
