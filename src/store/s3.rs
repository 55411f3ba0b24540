//! The S3 backend on aws-sdk-s3 (the only module that imports it).
//!
//! Set up for S3-compatible providers, not only AWS (`docs/reference/provider-quirks.md`): custom endpoint,
//! path-style addressing, checksums only when required (`docs/reference/provider-quirks.md#h1`, `docs/reference/provider-quirks.md#h2`), `Content-MD5` on
//! `DeleteObjects` (`docs/reference/provider-quirks.md#d4`), connect and per-attempt timeouts, and a fallback to single
//! `DeleteObject` requests where the provider has no multi-object delete (`docs/reference/provider-quirks.md#d4`).
//!
//! Retries are ours, not the SDK's (its retry is disabled): every request goes through
//! `S3Store::send` (or `send_with`), the only code that can reach the SDK client (it is
//! `Gated` behind a limiter [`Permit`](super::limited::Permit)), so each HTTP attempt
//! takes a `--rate` permit and is counted, and
//! throttles, 500/503, timeouts and connection resets are retried with full-jitter
//! exponential backoff, honouring `Retry-After` ([`RetryPolicy`], `docs/reference/provider-quirks.md#t1`). Listings ask for
//! `EncodingType=url` and decode keys exactly once, so a key with a character XML 1.0
//! cannot carry (`\x01`, U+FFFE) does not break the listing of its neighbours; such keys
//! are deleted with `DeleteObject` (the key goes in the path), never in a
//! `DeleteObjects` body.

mod settings;
mod transfer;
mod versioning;

pub use settings::{DeleteChecksum, S3Config};

pub use super::{HeadMeta, ObjectHeaders};
pub use transfer::{Body, encode_copy_source, part_size};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{Delete, EncodingType, ObjectIdentifier};
use aws_smithy_http_client::tls;
use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use super::limited::Gated;
use super::{
    AttemptError, DeleteOutcome, Existing, Limiter, ListMarker, ListPage, ObjectMeta, RetryPolicy,
    S3Ext, Store, StoreError, UploadPage, VersionPage, is_md5_etag, validate_key,
};
use crate::model::ObjectKey;

/// An S3 bucket reached through aws-sdk-s3.
pub struct S3Store {
    /// Reachable only with a limiter permit: through [`S3Store::send`] / `send_with`.
    client: Gated<Client>,
    bucket: String,
    endpoint: String,
    path_style: bool,
    batch_limit: usize,
    limiter: Limiter,
    /// The retry policy of every request (attempts: `S3_RETRY_LIMIT` + 1, at least 8).
    policy: RetryPolicy,
    multi_delete_unsupported: AtomicBool,
    /// Connect timeout and the long attempt timeout ([`S3Config::long_timeout`]).
    long_timeouts: (Duration, Duration),
    /// `DeleteObjects` sends the SDK's CRC32 headers too ([`DeleteChecksum::Crc32`]);
    /// flipped for the rest of the run when the provider refuses the current choice.
    delete_crc32: AtomicBool,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl S3Store {
    /// Builds the client from the validated configuration. No request is sent.
    pub fn new(cfg: &S3Config, limiter: Limiter) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let creds = Credentials::new(
            cfg.access_key_id.clone(),
            cfg.secret_access_key.expose().clone(),
            None,
            None,
            "mastomedia-env-file",
        );
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(creds)
            .force_path_style(cfg.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // No SDK retries: they happen inside `send()`, invisible to the limiter (they
            // bypassed `--rate` and were not counted), and the standard mode's retry quota
            // runs dry in a long storm (every retry costs tokens, a success refunds one),
            // after which nothing is retried at all. `S3Store::send` retries instead.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.open_timeout)
                    .operation_attempt_timeout(cfg.read_timeout)
                    .build(),
            );
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e.clone());
        }
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", cfg.region));
        Self {
            client: Gated::new(Client::from_conf(b.build())),
            bucket: cfg.bucket.clone(),
            endpoint,
            path_style: cfg.force_path_style,
            batch_limit: cfg.batch_delete_limit,
            limiter,
            policy: RetryPolicy {
                max_attempts: cfg.max_attempts.max(RetryPolicy::DEFAULT.max_attempts),
                ..RetryPolicy::DEFAULT
            },
            multi_delete_unsupported: AtomicBool::new(false),
            long_timeouts: (cfg.open_timeout, cfg.long_timeout),
            delete_crc32: AtomicBool::new(cfg.delete_checksum == DeleteChecksum::Crc32),
        }
    }

    /// Runs one `op` request: `attempt(client)` builds and sends it once per HTTP attempt,
    /// each under its own limiter permit (the client is handed out against it), retried on
    /// retryable errors by the store's [`RetryPolicy`] (`Retry-After` honoured). Counts
    /// the operation, every attempt and every throttled answer. Errors: the classified
    /// last error.
    async fn send<T, E, F, Fut>(&self, op: &'static str, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(&Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.limiter
            .retrying(op, &self.policy, |permit| {
                let fut = attempt(self.client.get(permit));
                async move {
                    fut.await.map_err(|e| {
                        let retry_after = retry_after(&e);
                        AttemptError {
                            error: self.classify(op, e),
                            retry_after,
                        }
                    })
                }
            })
            .await
    }

    /// [`S3Store::send`] for attempts that can fail before the request is sent (a body
    /// to open) or after its answer (a body to read): `attempt(client)` returns the error
    /// already classified.
    async fn send_with<T, F, Fut>(&self, op: &'static str, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(&Client) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        self.limiter
            .retrying(op, &self.policy, |permit| attempt(self.client.get(permit)))
            .await
    }

    /// An SDK error as an [`AttemptError`] (classified, with `Retry-After`).
    fn attempt_error<E>(
        &self,
        op: &str,
        err: SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> AttemptError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let retry_after = retry_after(&err);
        AttemptError {
            error: self.classify(op, err),
            retry_after,
        }
    }

    fn classify<E, R>(&self, op: &str, err: SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let status = err.raw_response().map(HttpStatus::status);
        let code = err.code().map(str::to_owned);
        let detail = format!(
            "{op} on {} (HTTP {}): {}",
            self.describe(),
            status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            err.message().unwrap_or("no message")
        );
        match (&err, code.as_deref(), status) {
            (SdkError::TimeoutError(_), _, _) => StoreError::Transport(format!("{op}: timed out")),
            (SdkError::DispatchFailure(d), _, _) => {
                StoreError::Transport(format!("{op} to {}: {}", self.endpoint, transport_cause(d)))
            }
            (_, Some("NoSuchBucket"), _) => StoreError::NoSuchBucket(self.bucket.clone()),
            (_, Some(c), _) => StoreError::from_code(c, detail),
            // HEAD responses carry no body, so no code: map the status.
            (_, None, Some(404)) => StoreError::NotFound,
            (_, None, Some(403)) => StoreError::AccessDenied {
                code: "AccessDenied".into(),
                detail,
            },
            (_, None, Some(503)) | (_, None, Some(429)) => StoreError::Throttled {
                code: "SlowDown".into(),
                detail,
            },
            (_, None, Some(501)) => StoreError::Unsupported {
                code: "NotImplemented".into(),
                detail,
            },
            // A 5xx without a body (HEAD): a server error, retryable like InternalError.
            (_, None, Some(500..=599)) => StoreError::Other {
                code: "InternalError".into(),
                message: detail,
            },
            (SdkError::ResponseError(_), _, _) => {
                StoreError::Transport(format!("{op}: malformed response: {detail}"))
            }
            _ => StoreError::Other {
                code: "Unknown".into(),
                message: format!("{detail}: {}", aws_sdk_s3::error::DisplayErrorContext(&err)),
            },
        }
    }

    /// A per-request configuration with the long attempt timeout, for `DeleteObjects` and
    /// requests that carry or copy a body: `S3_READ_TIMEOUT` raised to at least 120 s, as
    /// Mastodon's batch delete does (every other request keeps `S3_READ_TIMEOUT`).
    fn long_timeout(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.long_timeouts.0)
                .operation_attempt_timeout(self.long_timeouts.1)
                .build(),
        )
    }

    /// The integrity headers `DeleteObjects` sends now.
    pub fn delete_checksum(&self) -> DeleteChecksum {
        if self.delete_crc32.load(Ordering::Relaxed) {
            DeleteChecksum::Crc32
        } else {
            DeleteChecksum::Md5
        }
    }

    /// One `DeleteObjects` with the current checksum headers; when the provider refuses
    /// them ("Unsupported header", or a demand for a flexible checksum), once more with
    /// the other choice, which is then kept for the rest of the run (`docs/reference/provider-quirks.md#d4`, `docs/reference/provider-quirks.md#h1`).
    async fn delete_batch(&self, keys: &[ObjectKey]) -> Result<Vec<DeleteOutcome>, StoreError> {
        let mode = self.delete_checksum();
        match self.delete_batch_with(keys, mode).await {
            Err(e) if refuses_checksum_headers(&e) => {
                let other = match mode {
                    DeleteChecksum::Md5 => DeleteChecksum::Crc32,
                    DeleteChecksum::Crc32 => DeleteChecksum::Md5,
                };
                tracing::warn!(
                    "{} refused the DeleteObjects checksum headers ({e}); using {} for the rest of the run (set MASTOMEDIA_DELETE_CHECKSUM={} to start with it)",
                    self.describe(),
                    match other {
                        DeleteChecksum::Md5 => "Content-MD5 only",
                        DeleteChecksum::Crc32 => "the SDK's CRC32 headers and Content-MD5",
                    },
                    match other {
                        DeleteChecksum::Md5 => "md5",
                        DeleteChecksum::Crc32 => "crc32",
                    }
                );
                self.delete_crc32
                    .store(other == DeleteChecksum::Crc32, Ordering::Relaxed);
                self.delete_batch_with(keys, other).await
            }
            other => other,
        }
    }

    /// Deletes objects this tool itself just wrote (`doctor --write-test`'s probes) with one
    /// `DeleteObjects`, exactly as prune deletes: the checksum headers in force, and the
    /// fallback. Returns the headers that were accepted. Errors: the request failed, or a
    /// key was not deleted.
    pub async fn delete_written_batch(
        &self,
        keys: &[ObjectKey],
    ) -> Result<DeleteChecksum, StoreError> {
        for o in self.delete_batch(keys).await? {
            if let DeleteOutcome::Failed(e) = o {
                return Err(e);
            }
        }
        Ok(self.delete_checksum())
    }

    async fn delete_batch_with(
        &self,
        keys: &[ObjectKey],
        mode: DeleteChecksum,
    ) -> Result<Vec<DeleteOutcome>, StoreError> {
        let objects = keys
            .iter()
            .map(|k| {
                ObjectIdentifier::builder()
                    .key(k.as_str())
                    .build()
                    .expect("key is set")
            })
            .collect();
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .expect("objects are set");
        let out = self
            .send("DeleteObjects", |c| {
                c.delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete.clone())
                    .customize()
                    .config_override(self.long_timeout())
                    .mutate_request(move |req| delete_headers(req, mode))
                    .send()
            })
            .await?;
        // Quiet mode lists only failures; everything not listed was deleted (docs/reference/provider-quirks.md#d1).
        let mut failed: HashMap<&str, StoreError> = HashMap::new();
        for e in out.errors() {
            let Some(key) = e.key() else { continue };
            let code = e.code().unwrap_or("InternalError");
            let err = StoreError::from_code(
                code,
                format!("DeleteObjects: {}", e.message().unwrap_or("no message")),
            );
            failed.insert(key, err);
        }
        Ok(keys
            .iter()
            .map(|k| match failed.remove(k.as_str()) {
                None => DeleteOutcome::Deleted,
                Some(StoreError::NotFound) => DeleteOutcome::AlreadyGone,
                Some(err) => DeleteOutcome::Failed(err),
            })
            .collect())
    }

    /// One `DeleteObject`: the key goes into the request path, so it is checked here too.
    async fn delete_one(&self, key: &ObjectKey) -> DeleteOutcome {
        if let Err(e) = validate_key(key) {
            return DeleteOutcome::Failed(e);
        }
        match self
            .send("DeleteObject", |c| {
                c.delete_object()
                    .bucket(&self.bucket)
                    .key(key.as_str())
                    .send()
            })
            .await
        {
            Ok(_) => DeleteOutcome::Deleted,
            Err(StoreError::NotFound) => DeleteOutcome::AlreadyGone,
            Err(err) => DeleteOutcome::Failed(err),
        }
    }

    /// `delete_many` for keys [`validate_key`] accepted: one `DeleteObjects`, or one
    /// `DeleteObject` per key where the provider lacks multi-object delete (`docs/reference/provider-quirks.md#d4`). The SDK
    /// percent-encodes the key in the fallback's request path (reserved characters such as
    /// `+`, `%`, `?`, `#`, `;`, spaces and non-ASCII; `/` stays a separator), so the server
    /// reads the same key; dot segments are not encodable, hence [`validate_key`].
    async fn delete_valid(&self, keys: &[ObjectKey]) -> Vec<DeleteOutcome> {
        if keys.is_empty() {
            return Vec::new();
        }
        if keys.iter().any(|k| !xml_safe(k.as_str())) {
            // Keys XML 1.0 cannot carry go one by one (`DeleteObject`, key in the path); the
            // rest in `DeleteObjects` as usual. Outcomes keep the order of `keys`.
            let (safe, unsafe_): (Vec<_>, Vec<_>) =
                keys.iter().cloned().partition(|k| xml_safe(k.as_str()));
            let mut batch = Box::pin(self.delete_valid(&safe)).await.into_iter();
            let single: Vec<_> = unsafe_.iter().map(|k| self.delete_one(k)).collect();
            let mut single = stream::iter(single)
                .buffered(8)
                .collect::<Vec<_>>()
                .await
                .into_iter();
            return keys
                .iter()
                .map(|k| {
                    let next = if xml_safe(k.as_str()) {
                        batch.next()
                    } else {
                        single.next()
                    };
                    next.unwrap_or_else(|| {
                        DeleteOutcome::Failed(StoreError::Transport("no outcome for a key".into()))
                    })
                })
                .collect();
        }
        if !self.multi_delete_unsupported.load(Ordering::Relaxed) {
            match self.delete_batch(keys).await {
                Ok(outcomes) => return outcomes,
                Err(StoreError::Unsupported { .. }) => {
                    // Concurrent batches may all learn it at once: the swap lets exactly
                    // one of them warn.
                    if !self.multi_delete_unsupported.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "{} does not support DeleteObjects (multi-object delete); falling back to one DeleteObject per key",
                            self.describe()
                        );
                    }
                }
                Err(err) => {
                    return keys
                        .iter()
                        .map(|_| DeleteOutcome::Failed(err.clone()))
                        .collect();
                }
            }
        }
        let futs: Vec<_> = keys.iter().map(|k| self.delete_one(k)).collect();
        stream::iter(futs).buffered(8).collect().await
    }

    /// Every `(key, size)` below `prefix`, all pages ([`Store::list`]).
    async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.list(prefix, None)
            .map_ok(|o| (o.key.as_str().to_owned(), o.size))
            .try_collect()
            .await
    }
}

/// A key (or prefix, marker) of a listing requested with `EncodingType=url`, decoded
/// exactly once: `+` is a space (AWS form-encodes spaces; a literal `+` arrives as `%2B`),
/// then `%XX` escapes. `None` (with a warning) when the bytes are not UTF-8, which no S3
/// key can be.
fn url_decoded(raw: &str, op: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(k) => Some(k),
        Err(_) => {
            tracing::warn!("{op}: skipping a listed key that is not UTF-8 once decoded: {raw:?}");
            None
        }
    }
}

/// Whether XML 1.0 can carry `key` in a `DeleteObjects` body: every character is `\t`,
/// `\n`, `\r` or in `U+0020..=U+D7FF`, `U+E000..=U+FFFD`, `U+10000..` (XML 1.0 §2.2
/// `Char`). A key outside it (`\x01`, U+FFFE) makes the whole body unparsable, so it is
/// deleted with `DeleteObject` instead, as AWS documents.
fn xml_safe(key: &str) -> bool {
    key.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

/// Sets the integrity headers of a `DeleteObjects` request (before it is signed): always
/// `Content-MD5` (MinIO and others insist on it, `docs/reference/provider-quirks.md#d4`); with [`DeleteChecksum::Md5`] the
/// SDK's `x-amz-checksum-*` and `x-amz-sdk-checksum-algorithm` are removed (`docs/reference/provider-quirks.md#h1`).
fn delete_headers(req: &mut aws_smithy_runtime_api::http::Request, mode: DeleteChecksum) {
    if let Some(body) = req.body().bytes() {
        let digest = Md5::digest(body);
        let value = base64::engine::general_purpose::STANDARD.encode(digest);
        req.headers_mut().insert("Content-MD5", value);
    }
    if mode == DeleteChecksum::Md5 {
        let sdk: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .filter(|k| k.starts_with("x-amz-checksum-") || k == "x-amz-sdk-checksum-algorithm")
            .collect();
        for k in sdk {
            req.headers_mut().remove(k);
        }
    }
}

/// Whether a failed `DeleteObjects` says the provider refuses its checksum headers, or
/// wants other ones: a 400-class error (not `NotImplemented`, which means no multi-object
/// delete at all) whose message names a header or a checksum.
fn refuses_checksum_headers(e: &StoreError) -> bool {
    let StoreError::Other { code, message } = e else {
        return false;
    };
    let m = message.to_ascii_lowercase();
    matches!(
        code.as_str(),
        "InvalidArgument" | "InvalidRequest" | "BadRequest" | "InvalidHeader" | "MissingContentMD5"
    ) && (m.contains("unsupported header") || m.contains("checksum") || m.contains("content-md5"))
}

/// One line for a request that never got an answer: what kind of failure (cannot connect,
/// timed out, TLS) and the innermost cause, each message once, instead of the SDK's nested
/// `Debug` dump (`DispatchFailure { source: ConnectorError { … } }`).
fn transport_cause(d: &aws_smithy_runtime_api::client::result::DispatchFailure) -> String {
    let kind = if d.is_timeout() {
        "timed out"
    } else if d.is_io() {
        "cannot connect"
    } else if d.is_user() {
        "the request could not be built"
    } else {
        "no answer"
    };
    let mut causes: Vec<String> = Vec::new();
    let mut err: Option<&(dyn std::error::Error + 'static)> = d
        .as_connector_error()
        .map(|c| c as &(dyn std::error::Error + 'static));
    while let Some(e) = err {
        let msg = e.to_string();
        if !msg.is_empty()
            && !causes
                .iter()
                .any(|c| c.contains(&msg) || msg.contains(c.as_str()))
        {
            causes.push(msg);
        } else if let Some(last) = causes.last_mut()
            && msg.len() > last.len()
            && msg.contains(last.as_str())
        {
            *last = msg;
        }
        err = e.source();
    }
    // The innermost cause says most ("Connection refused (os error 111)", "dns error").
    match causes.last() {
        Some(c) => format!("{kind} ({c})"),
        None => kind.to_owned(),
    }
}

/// The `Retry-After` of a failed attempt's response, in whole seconds (RFC 9110 §10.2.3;
/// the HTTP-date form is not used by S3 providers and is ignored).
fn retry_after<E>(err: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> Option<Duration> {
    let v = err.raw_response()?.headers().get("retry-after")?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Status of a raw HTTP response, whatever the SDK's response type.
pub trait HttpStatus {
    /// The HTTP status code.
    fn status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Keys [`validate_key`] refuses are answered without a request and are never part of a
/// listing prefix. The listings of S3 `stat_many`: each given prefix that covers a valid
/// key (the longest one that does, per key), and each valid key no prefix covers (listed
/// by itself). In key order, without repeats.
fn covering_prefixes(keys: &[ObjectKey], prefixes: &[String]) -> Vec<String> {
    let mut out: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for k in keys.iter().filter(|k| validate_key(k).is_ok()) {
        let k = k.as_str();
        let best = prefixes
            .iter()
            .filter(|p| k.starts_with(p.as_str()))
            .max_by_key(|p| p.len());
        out.insert(best.map_or_else(|| k.to_owned(), String::clone));
    }
    out.into_iter().collect()
}

/// The object-level calls (the [`Store`] trait, boxed for `dyn Store`).
impl S3Store {
    async fn check_bucket(&self) -> Result<(), StoreError> {
        // `EncodingType=url`: the bucket's first key may hold a character XML 1.0 cannot
        // carry, which would make the answer unparsable.
        self.send("ListObjectsV2", |c| {
            c.list_objects_v2()
                .bucket(&self.bucket)
                .max_keys(1)
                .encoding_type(EncodingType::Url)
                .send()
        })
        .await
        .map(|_| ())
    }

    /// Keys [`validate_key`] refuses are answered `None` without a request (and are never
    /// part of a listing prefix); their delete is refused by [`Store::delete_many`]. A
    /// listing that fails (after the retry policy) fails only the keys it would have sized.
    async fn stat_keys(
        &self,
        keys: &[ObjectKey],
        prefixes: &[String],
    ) -> Vec<Result<Option<u64>, StoreError>> {
        let prefixes = covering_prefixes(keys, prefixes);
        let futs: Vec<_> = prefixes
            .iter()
            .map(|p| async move { (p.as_str(), self.list_prefix(p).await) })
            .collect();
        let listings: BTreeMap<&str, Result<HashMap<String, u64>, StoreError>> = stream::iter(futs)
            .buffer_unordered(4)
            .map(|(p, l)| (p, l.map(|objs| objs.into_iter().collect())))
            .collect()
            .await;
        keys.iter()
            .map(|k| {
                validate_key(k).ok().map_or(Ok(None), |()| {
                    // The listing covering this key: the longest listed prefix of it.
                    let listing = listings
                        .range(..=k.as_str())
                        .rev()
                        .find(|(p, _)| k.as_str().starts_with(**p))
                        .map(|(_, l)| l);
                    match listing {
                        Some(Ok(sizes)) => Ok(sizes.get(k.as_str()).copied()),
                        Some(Err(e)) => Err(e.clone()),
                        None => Ok(None),
                    }
                })
            })
            .collect()
    }

    async fn list_objects_page(
        &self,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        continuation: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let page = self
            .send("ListObjectsV2", |c| {
                let mut req = c
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .encoding_type(EncodingType::Url)
                    .set_continuation_token(continuation.clone());
                if delimiter {
                    req = req.delimiter("/");
                }
                if let (None, Some(s)) = (&continuation, start_after) {
                    req = req.start_after(s);
                }
                req.send()
            })
            .await?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: ObjectKey::new(url_decoded(o.key()?, "ListObjectsV2")?),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                })
            })
            .collect();
        let common_prefixes = page
            .common_prefixes()
            .iter()
            .filter_map(|p| url_decoded(p.prefix()?, "ListObjectsV2"))
            .collect();
        let next = match (page.is_truncated(), page.next_continuation_token()) {
            (Some(true), Some(t)) => Some(t.to_owned()),
            // Taking such a page for the end would make the rest of the listing look
            // empty: du would undercount, prune call existing objects already gone.
            (Some(true), None) => {
                return Err(StoreError::Other {
                    code: "TruncatedWithoutToken".into(),
                    message: format!(
                        "{}: ListObjectsV2 of {prefix:?} answered a truncated page without a continuation token; the listing cannot go on (a proxy or provider bug)",
                        self.describe()
                    ),
                });
            }
            _ => None,
        };
        Ok(ListPage {
            objects,
            common_prefixes,
            next,
        })
    }

    /// Keys [`validate_key`] refuses fail (`InvalidKey`) without being sent, in
    /// `DeleteObjects` or in the single-`DeleteObject` fallback: the latter puts the key on
    /// the request line, where a server normalising dot segments would address another
    /// object. The others are deleted as usual; outcomes keep the order of `keys`.
    async fn delete_keys(&self, keys: &[ObjectKey]) -> Vec<DeleteOutcome> {
        let refused: Vec<Option<StoreError>> = keys.iter().map(|k| validate_key(k).err()).collect();
        if refused.iter().any(Option::is_some) {
            let valid: Vec<ObjectKey> = keys
                .iter()
                .zip(&refused)
                .filter(|(_, r)| r.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            let mut sent = self.delete_valid(&valid).await.into_iter();
            return refused
                .into_iter()
                .map(|r| match r {
                    Some(e) => DeleteOutcome::Failed(e),
                    None => sent.next().unwrap_or_else(|| {
                        DeleteOutcome::Failed(StoreError::Transport("no outcome for a key".into()))
                    }),
                })
                .collect();
        }
        self.delete_valid(keys).await
    }

    /// `GetObject`, the whole body read inside the attempt (a body cut off midway is
    /// retried like a failed request).
    async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        self.send_with("GetObject", |c| {
            let req = c
                .get_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .customize()
                .config_override(self.long_timeout());
            async move {
                let out = req
                    .send()
                    .await
                    .map_err(|e| self.attempt_error("GetObject", e))?;
                out.body
                    .collect()
                    .await
                    .map(|b| b.into_bytes())
                    .map_err(|e| {
                        AttemptError::from(StoreError::Transport(format!(
                            "GetObject {key}: the body was cut off: {e}"
                        )))
                    })
            }
        })
        .await
    }

    /// `CopyObject` from `from` to `to` in this bucket (`MetadataDirective=COPY`).
    async fn copy_object(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StoreError> {
        validate_key(from)?;
        validate_key(to)?;
        let source = format!("{}/{}", self.bucket, encode_copy_source(from.as_str()));
        self.send("CopyObject", |c| {
            c.copy_object()
                .bucket(&self.bucket)
                .key(to.as_str())
                .copy_source(&source)
                .customize()
                .config_override(self.long_timeout())
                .send()
        })
        .await
        .map(|_| ())
    }
}

impl Store for S3Store {
    fn describe(&self) -> String {
        format!(
            "s3://{} at {} ({} addressing)",
            self.bucket,
            self.endpoint,
            if self.path_style {
                "path-style"
            } else {
                "virtual-host"
            }
        )
    }

    fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    fn as_s3ext(&self) -> Option<&dyn S3Ext> {
        Some(self)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.check_bucket())
    }

    fn stat_many<'a>(
        &'a self,
        keys: &'a [ObjectKey],
        prefixes: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Option<u64>, StoreError>>> {
        Box::pin(self.stat_keys(keys, prefixes))
    }

    fn sizes_by_listing(&self) -> bool {
        true
    }

    fn list_page<'a>(
        &'a self,
        prefix: &'a str,
        delimiter: bool,
        start_after: Option<&'a str>,
        continuation: Option<String>,
    ) -> BoxFuture<'a, Result<ListPage, StoreError>> {
        Box::pin(self.list_objects_page(prefix, delimiter, start_after, continuation))
    }

    fn delete_many<'a>(&'a self, keys: &'a [ObjectKey]) -> BoxFuture<'a, Vec<DeleteOutcome>> {
        Box::pin(self.delete_keys(keys))
    }

    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Bytes, StoreError>> {
        Box::pin(self.get_bytes(key))
    }

    fn put<'a>(
        &'a self,
        key: &'a ObjectKey,
        bytes: Bytes,
        headers: &'a ObjectHeaders,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            validate_key(key)?;
            self.put_bytes(key.as_str(), bytes, headers).await
        })
    }

    fn head<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<HeadMeta>, StoreError>> {
        Box::pin(async move {
            validate_key(key)?;
            S3Store::head(self, key.as_str()).await
        })
    }

    fn copy<'a>(
        &'a self,
        from: &'a ObjectKey,
        to: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.copy_object(from, to))
    }

    /// [`S3Store::upload`]; `existing` is not checked: S3 replaces (see [`Existing::Keep`]).
    fn upload<'a>(
        &'a self,
        key: &'a ObjectKey,
        body: Body<'a>,
        headers: &'a ObjectHeaders,
        existing: Existing,
        multipart_threshold: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = existing;
        Box::pin(async move {
            validate_key(key)?;
            S3Store::upload(self, key.as_str(), body, headers, multipart_threshold).await
        })
    }

    fn md5<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            validate_key(key)?;
            Ok(S3Store::head(self, key.as_str())
                .await?
                .and_then(|h| h.etag)
                .filter(|e| is_md5_etag(e))
                .map(|e| e.to_ascii_lowercase()))
        })
    }
}

/// Streamed reads for a filesystem target of `migrate` (`store/fs.rs`), which must not
/// see the SDK's body type.
impl S3Store {
    /// The whole object as a stream of byte chunks: one GetObject (retried by the retry
    /// policy until its answer starts), then the body as it arrives. Errors: the GET
    /// failed ([`StoreError::NotFound`] for a missing object); a broken body ends the
    /// stream with [`StoreError::Transport`].
    pub async fn get_chunks(
        &self,
        key: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let body = self.get_stream(key, None).await?;
        Ok(stream::unfold(body, |mut body| async move {
            let chunk = body.next().await?;
            Some((
                chunk.map_err(|e| StoreError::Transport(format!("reading the object: {e}"))),
                body,
            ))
        })
        .boxed())
    }
}

impl S3Ext for S3Store {
    fn versioning(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(self.versioning_status())
    }

    fn list_versions_page<'a>(
        &'a self,
        prefix: &'a str,
        delimiter: bool,
        marker: Option<ListMarker>,
    ) -> BoxFuture<'a, Result<VersionPage, StoreError>> {
        Box::pin(S3Store::list_versions_page(self, prefix, delimiter, marker))
    }

    fn list_uploads_page<'a>(
        &'a self,
        prefix: &'a str,
        marker: Option<ListMarker>,
    ) -> BoxFuture<'a, Result<UploadPage, StoreError>> {
        Box::pin(S3Store::list_uploads_page(self, prefix, marker))
    }

    fn upload_parts<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFuture<'a, Result<(u64, u64), StoreError>> {
        Box::pin(self.parts_of(key, upload_id))
    }

    fn abort_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.abort_stale_upload(key, upload_id))
    }

    fn is_public<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(S3Store::is_public(self, key))
    }

    fn repair_in_place<'a>(
        &'a self,
        key: &'a str,
        headers: &'a ObjectHeaders,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(S3Store::repair_in_place(self, key, headers))
    }
}

/// Versions and unfinished uploads, for `du --versions` and `migrate` (`docs/reference/provider-quirks.md#u2`): read-only
/// listings. Also reachable as [`S3Ext`].
impl S3Store {
    /// One page of `ListObjectVersions` below `prefix`, resuming at `marker`
    /// ([`S3Ext::list_versions_page`]).
    pub async fn list_versions_page(
        &self,
        prefix: &str,
        delimiter: bool,
        marker: Option<ListMarker>,
    ) -> Result<VersionPage, StoreError> {
        let (key_marker, id_marker) = marker.map_or((None, None), |m| (Some(m.key), m.id));
        let page = self
            .send("ListObjectVersions", |c| {
                let mut req = c
                    .list_object_versions()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .encoding_type(EncodingType::Url)
                    .set_key_marker(key_marker.clone())
                    .set_version_id_marker(id_marker.clone());
                if delimiter {
                    req = req.delimiter("/");
                }
                req.send()
            })
            .await?;
        let decoded = |k: Option<&str>| url_decoded(k?, "ListObjectVersions");
        let mut versions: Vec<super::VersionMeta> = page
            .versions()
            .iter()
            .filter_map(|v| {
                Some(super::VersionMeta {
                    key: ObjectKey::new(decoded(v.key())?),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    is_latest: v.is_latest().unwrap_or(false),
                    delete_marker: false,
                })
            })
            .collect();
        versions.extend(page.delete_markers().iter().filter_map(|d| {
            Some(super::VersionMeta {
                key: ObjectKey::new(decoded(d.key())?),
                size: 0,
                is_latest: d.is_latest().unwrap_or(false),
                delete_marker: true,
            })
        }));
        // S3 sends a page's versions and its delete markers as two lists; merged into key
        // order (stable: a key's entries keep their order), as a key-range chain of `du`
        // needs (src/inventory/listing.rs cuts a page at its bound and resumes after its
        // last key: markers left after the versions were cut off or mispositioned).
        versions.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        let common_prefixes = page
            .common_prefixes()
            .iter()
            .filter_map(|p| decoded(p.prefix()))
            .collect();
        let next = match (page.is_truncated(), decoded(page.next_key_marker())) {
            (Some(true), Some(k)) => Some(ListMarker {
                key: k,
                id: page.next_version_id_marker().map(str::to_owned),
            }),
            _ => None,
        };
        Ok(VersionPage {
            versions,
            common_prefixes,
            next,
        })
    }

    /// One page of `ListMultipartUploads` below `prefix`, resuming at `marker`
    /// ([`S3Ext::list_uploads_page`]).
    pub async fn list_uploads_page(
        &self,
        prefix: &str,
        marker: Option<ListMarker>,
    ) -> Result<UploadPage, StoreError> {
        let (key_marker, id_marker) = marker.map_or((None, None), |m| (Some(m.key), m.id));
        let page = self
            .send("ListMultipartUploads", |c| {
                c.list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_key_marker(key_marker.clone())
                    .set_upload_id_marker(id_marker.clone())
                    .send()
            })
            .await?;
        let uploads = page
            .uploads()
            .iter()
            .filter_map(|u| {
                Some(super::UploadMeta {
                    key: ObjectKey::new(u.key()?),
                    upload_id: u.upload_id()?.to_owned(),
                    initiated: u
                        .initiated()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                })
            })
            .collect();
        let next = match (page.is_truncated(), page.next_key_marker()) {
            (Some(true), Some(k)) => Some(ListMarker {
                key: k.to_owned(),
                id: page.next_upload_id_marker().map(str::to_owned),
            }),
            _ => None,
        };
        Ok(UploadPage { uploads, next })
    }

    async fn parts_of(&self, key: &str, upload_id: &str) -> Result<(u64, u64), StoreError> {
        let (mut parts, mut bytes) = (0u64, 0u64);
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .send("ListParts", |c| {
                    c.list_parts()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .set_part_number_marker(marker.clone())
                        .send()
                })
                .await?;
            for p in page.parts() {
                parts += 1;
                bytes += p.size().unwrap_or(0).max(0) as u64;
            }
            match page.next_part_number_marker() {
                Some(m) if page.is_truncated() == Some(true) => marker = Some(m.to_owned()),
                _ => return Ok((parts, bytes)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_listed_under_its_longest_given_prefix_or_alone() {
        let k = |s: &str| ObjectKey::new(s);
        let keys = [
            k("a/b/1/original/x.png"),
            k("a/b/1/small/x.png"),
            k("a/b/2/original/y.png"),
            k("c/d/original/z.png"),
            k("a/b/../original/evil.png"),
        ];
        let given = ["a/".to_owned(), "a/b/".to_owned(), "a/b/../".to_owned()];
        assert_eq!(
            covering_prefixes(&keys, &given),
            ["a/b/".to_owned(), "c/d/original/z.png".to_owned()]
        );
        assert!(covering_prefixes(&keys[4..], &given).is_empty());
    }
}
