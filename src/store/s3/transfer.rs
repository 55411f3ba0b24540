//! Uploads, downloads and metadata of single objects on S3, for `migrate`: PUT with
//! Mastodon's headers, multipart with equal part sizes and abort on failure (`docs/reference/provider-quirks.md#m1`), HEAD,
//! ACL reads and writes, and in-place metadata repair (one COPY per object, only when it
//! is needed: `docs/reference/provider-quirks.md#t2`).

use std::future::Future;
use std::path::Path;

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, MetadataDirective, ObjectCannedAcl, Permission,
    Type as GranteeType,
};

use super::S3Store;
use crate::store::{HeadMeta, ObjectHeaders, StoreError};

/// Bytes read from a source file at a time while uploading it.
const READ_BUFFER: usize = 256 * 1024;
/// Files up to this size are read whole, in one blocking call, and sent from memory: a
/// streamed body costs a hop through tokio's blocking pool for its open, its metadata and
/// every read (about 40 futex calls and 4 opens per file in the profile of
/// docs/benchmarks.md's analysis), for files that are mostly thumbnails and images of a
/// few KiB to 500 KiB. At most `--concurrency` such buffers are held at once.
const READ_WHOLE: u64 = 1024 * 1024;

/// S3's limit on parts per multipart upload.
const MAX_PARTS: u64 = 10_000;
/// Smallest part S3 accepts (except the last).
const MIN_PART: u64 = 5 * 1024 * 1024;
/// The AllUsers group, whose READ grant makes an object public.
const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";

/// Where the bytes of an upload come from.
pub enum Body<'a> {
    /// A local file of the given size.
    File(&'a Path, u64),
    /// An object of another bucket of the given size (streamed, never written to disk).
    Object(&'a S3Store, &'a str, u64),
}

impl Body<'_> {
    fn size(&self) -> u64 {
        match self {
            Body::File(_, n) | Body::Object(_, _, n) => *n,
        }
    }

    async fn range(&self, offset: u64, len: u64) -> Result<ByteStream, StoreError> {
        match self {
            // 256 KiB reads instead of the SDK's 4 KiB: each read is a hop through
            // tokio's blocking pool, and at 4 KiB those hops (futex wake-ups) took most of
            // migrate's CPU (docs/benchmarks.md, "Where mastomedia loses").
            Body::File(path, size) if offset == 0 && len == *size && len <= READ_WHOLE => {
                let owned = path.to_path_buf();
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(owned))
                    .await
                    .map_err(|e| StoreError::Other {
                        code: "ReadFailed".into(),
                        message: format!("{}: {e}", path.display()),
                    })?
                    .map_err(|e| StoreError::Other {
                        code: "ReadFailed".into(),
                        message: format!("{}: {e}", path.display()),
                    })?;
                if bytes.len() as u64 != len {
                    // Changed since the walk: the declared Content-Length would be wrong.
                    return Err(StoreError::Other {
                        code: "ReadFailed".into(),
                        message: format!(
                            "{}: {} bytes, {len} when the source was walked",
                            path.display(),
                            bytes.len()
                        ),
                    });
                }
                Ok(ByteStream::from(bytes))
            }
            Body::File(path, _) => ByteStream::read_from()
                .path(path)
                .buffer_size(READ_BUFFER)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| StoreError::Other {
                    code: "ReadFailed".into(),
                    message: format!("{}: {e}", path.display()),
                }),
            Body::Object(src, key, size) => {
                let whole = offset == 0 && len == *size;
                let (body, sent) = src
                    .get_stream_sized(key, (!whole).then_some((offset, len)))
                    .await?;
                if sent != Some(len) {
                    // Changed since it was listed (or a provider that answers a range with
                    // other bytes): the declared Content-Length would be wrong, and the
                    // target would wait for bytes that never come until the attempt's timeout.
                    return Err(StoreError::Other {
                        code: "ReadFailed".into(),
                        message: format!(
                            "{key}: the source sent {} bytes, {len} expected from its listing",
                            sent.map_or_else(
                                || "an unknown number of".to_owned(),
                                |n| n.to_string()
                            )
                        ),
                    });
                }
                Ok(body)
            }
        }
    }
}

/// The part size for an object of `size` bytes: `threshold` (at least 5 MiB), grown so the
/// upload needs at most 10,000 parts. All parts but the last have this size (R2 requires it).
pub fn part_size(size: u64, threshold: u64) -> u64 {
    let base = threshold.max(MIN_PART);
    base.max(size.div_ceil(MAX_PARTS))
}

fn acl(value: &str) -> ObjectCannedAcl {
    ObjectCannedAcl::from(value)
}

impl S3Store {
    /// Uploads `body` to `key` with `headers`: one PUT up to `multipart_threshold` bytes,
    /// else a multipart upload with equal parts that is aborted if any part fails.
    /// Errors: `AccessControlListNotSupported` surfaces as [`StoreError::Unsupported`]
    /// with code `AccessControlListNotSupported` (the caller stops and explains `docs/reference/provider-quirks.md#a1`).
    pub async fn upload(
        &self,
        key: &str,
        body: Body<'_>,
        headers: &ObjectHeaders,
        multipart_threshold: u64,
    ) -> Result<(), StoreError> {
        let size = body.size();
        if size <= multipart_threshold.max(1) {
            let body = &body;
            return self
                .put_stream(key, || body.range(0, size), size, headers)
                .await;
        }
        self.upload_multipart(key, body, headers, multipart_threshold)
            .await
    }

    /// One PutObject of `size` bytes with `headers`; `stream()` opens the body afresh for
    /// every attempt.
    async fn put_stream<F, Fut>(
        &self,
        key: &str,
        stream: F,
        size: u64,
        headers: &ObjectHeaders,
    ) -> Result<(), StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<ByteStream, StoreError>>,
    {
        let request = |c: &aws_sdk_s3::Client| {
            let req = c
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(size as i64)
                .content_type(&headers.content_type)
                .cache_control(&headers.cache_control);
            match &headers.acl {
                Some(a) => req.acl(acl(a)),
                None => req,
            }
        };
        self.send_with("PutObject", |c| {
            let (req, body) = (request(c), stream());
            async move {
                req.body(body.await?)
                    .customize()
                    .config_override(self.long_timeout())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.attempt_error("PutObject", e))
            }
        })
        .await
    }

    async fn upload_multipart(
        &self,
        key: &str,
        body: Body<'_>,
        headers: &ObjectHeaders,
        threshold: u64,
    ) -> Result<(), StoreError> {
        let size = body.size();
        let part = part_size(size, threshold);
        let upload_id = {
            self.send("CreateMultipartUpload", |c| {
                let mut req = c
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_type(&headers.content_type)
                    .cache_control(&headers.cache_control);
                if let Some(a) = &headers.acl {
                    req = req.acl(acl(a));
                }
                req.send()
            })
            .await?
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Other {
                code: "NoUploadId".into(),
                message: "CreateMultipartUpload returned no upload id".into(),
            })?
        };
        let result = self.upload_parts(key, &upload_id, &body, size, part).await;
        match result {
            Ok(parts) => {
                let upload = CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build();
                let done = self
                    .send("CompleteMultipartUpload", |c| {
                        c.complete_multipart_upload()
                            .bucket(&self.bucket)
                            .key(key)
                            .upload_id(&upload_id)
                            .multipart_upload(upload.clone())
                            .customize()
                            .config_override(self.long_timeout())
                            .send()
                    })
                    .await
                    .map(|_| ());
                if done.is_err() {
                    self.abort_upload(key, &upload_id).await;
                }
                done
            }
            Err(e) => {
                self.abort_upload(key, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        body: &Body<'_>,
        size: u64,
        part: u64,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let len = part.min(size - offset);
            let out = self
                .send_with("UploadPart", |c| {
                    let req = c
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_length(len as i64);
                    async move {
                        let stream = body.range(offset, len).await?;
                        req.body(stream)
                            .customize()
                            .config_override(self.long_timeout())
                            .send()
                            .await
                            .map_err(|e| self.attempt_error("UploadPart", e))
                    }
                })
                .await?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        Ok(parts)
    }

    /// Aborts an unfinished multipart upload (`AbortMultipartUpload`) so its parts are not
    /// billed; an upload already gone counts as aborted. Errors: the request failed.
    pub async fn abort_stale_upload(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let sent = self
            .send("AbortMultipartUpload", |c| {
                c.abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
            })
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound) => Ok(()),
            Err(StoreError::Other { code, .. }) if code == "NoSuchUpload" => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// [`S3Store::abort_stale_upload`] after a failed upload of ours: errors only logged.
    async fn abort_upload(&self, key: &str, upload_id: &str) {
        if let Err(e) = self.abort_stale_upload(key, upload_id).await {
            tracing::warn!(
                "could not abort the multipart upload of {key} ({e}): list and abort it with `du --versions`"
            );
        }
    }

    /// The object's bytes, whole or `(offset, len)`, as a stream.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream, StoreError> {
        self.get_stream_sized(key, range)
            .await
            .map(|(body, _)| body)
    }

    /// [`Self::get_stream`] with the response's Content-Length (bytes; `None` when the
    /// provider sent none), which a copy checks against the size it declares to the target.
    pub async fn get_stream_sized(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(ByteStream, Option<u64>), StoreError> {
        self.send("GetObject", |c| {
            let mut req = c.get_object().bucket(&self.bucket).key(key);
            if let Some((off, len)) = range {
                req = req.range(format!("bytes={}-{}", off, off + len - 1));
            }
            req.customize().config_override(self.long_timeout()).send()
        })
        .await
        .map(|o| {
            let sent = o.content_length().and_then(|n| u64::try_from(n).ok());
            (o.body, sent)
        })
    }

    /// HEAD: `None` when the object does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<HeadMeta>, StoreError> {
        match self
            .send("HeadObject", |c| {
                c.head_object().bucket(&self.bucket).key(key).send()
            })
            .await
        {
            Ok(o) => Ok(Some(HeadMeta {
                size: o.content_length().unwrap_or(0).max(0) as u64,
                etag: o.e_tag().map(|t| t.trim_matches('"').to_owned()),
                content_type: o.content_type().map(str::to_owned),
                cache_control: o.cache_control().map(str::to_owned),
            })),
            Err(StoreError::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Whether the object grants READ to everyone (public-read).
    pub async fn is_public(&self, key: &str) -> Result<bool, StoreError> {
        let out = self
            .send("GetObjectAcl", |c| {
                c.get_object_acl().bucket(&self.bucket).key(key).send()
            })
            .await?;
        Ok(out.grants().iter().any(|g| {
            matches!(
                g.permission(),
                Some(Permission::Read) | Some(Permission::FullControl)
            ) && g
                .grantee()
                .is_some_and(|gr| gr.r#type() == &GranteeType::Group && gr.uri() == Some(ALL_USERS))
        }))
    }

    /// Rewrites the object's Content-Type, Cache-Control and ACL in place (one
    /// `CopyObject` onto itself with `MetadataDirective=REPLACE`). Call only when a HEAD
    /// showed something to fix.
    pub async fn repair_in_place(
        &self,
        key: &str,
        headers: &ObjectHeaders,
    ) -> Result<(), StoreError> {
        let source = format!("{}/{}", self.bucket, encode_copy_source(key));
        self.send("CopyObject", |c| {
            let mut req = c
                .copy_object()
                .bucket(&self.bucket)
                .key(key)
                .copy_source(&source)
                .metadata_directive(MetadataDirective::Replace)
                .content_type(&headers.content_type)
                .cache_control(&headers.cache_control);
            if let Some(a) = &headers.acl {
                req = req.acl(acl(a));
            }
            req.customize().config_override(self.long_timeout()).send()
        })
        .await
        .map(|_| ())
    }
}

/// Small single objects for `cert` and `doctor`: an ACME challenge or a probe object.
impl S3Store {
    /// Puts `bytes` at `key` with `headers` in one PUT (for small objects such as an ACME
    /// HTTP-01 key authorization). Errors as for [`S3Store::upload`].
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: impl Into<bytes::Bytes>,
        headers: &ObjectHeaders,
    ) -> Result<(), StoreError> {
        let bytes: bytes::Bytes = bytes.into();
        let size = bytes.len() as u64;
        self.put_stream(
            key,
            || std::future::ready(Ok(ByteStream::from(bytes.clone()))),
            size,
            headers,
        )
        .await
    }

    /// Deletes the one object `key` that the caller itself wrote (a challenge or probe
    /// object; never a key derived from a listing). A missing object counts as deleted.
    pub async fn delete_written(&self, key: &str) -> Result<(), StoreError> {
        match self
            .send("DeleteObject", |c| {
                c.delete_object().bucket(&self.bucket).key(key).send()
            })
            .await
        {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// Percent-encodes a key for `x-amz-copy-source`: every byte except `A-Za-z0-9-._~/`.
pub fn encode_copy_source(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_equal_and_at_most_ten_thousand() {
        let mib = 1024 * 1024;
        assert_eq!(part_size(20 * mib, 8 * mib), 8 * mib);
        assert_eq!(part_size(20 * mib, mib), 5 * mib, "S3's 5 MiB minimum");
        let huge = 200 * 1024 * mib; // 200 GiB
        let p = part_size(huge, 8 * mib);
        assert!(huge.div_ceil(p) <= 10_000);
    }

    #[test]
    fn copy_source_encoding() {
        assert_eq!(
            encode_copy_source("a b/c+d%e~ü.png"),
            "a%20b/c%2Bd%25e~%C3%BC.png"
        );
    }
}
