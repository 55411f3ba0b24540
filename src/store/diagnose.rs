//! `doctor`'s bucket checks: `bucket` (reachable with these credentials), `acl` (what
//! uploads carry), `checksums` (the provider quirk list of `DeleteObjects` checksum
//! headers, `docs/reference/` and `shared/docs/provider-quirks.md` in the workspace),
//! `dotted name`, and the verdicts of `--write-test` (`write test`, `batch delete`).
//! Returns [`Check`]s; the write test's requests are sent by `commands/doctor.rs` through
//! the dry-run gate, which this layer may not name.
//!
//! Must not: write or delete anything itself.

use super::s3::{DeleteChecksum, HeadMeta, ObjectHeaders, S3Store};
use super::{Store, StoreError};
use crate::model::check::{Check, Checks};

/// Hosts of providers that refuse the SDK's `x-amz-checksum-*` headers on
/// `DeleteObjects` (Backblaze B2, Cloudflare R2, OVHcloud).
pub const STRICT_CHECKSUM_HOSTS: &[&str] = &[
    "backblazeb2.com",
    "r2.cloudflarestorage.com",
    "ovh.net",
    "ovh.us",
];

/// The strict provider an endpoint belongs to (`None`: AWS when unset, or another).
pub fn strict_checksum_provider(endpoint: Option<&str>) -> Option<&'static str> {
    let host = endpoint.unwrap_or("amazonaws.com");
    STRICT_CHECKSUM_HOSTS
        .iter()
        .copied()
        .find(|p| host.contains(p))
}

/// How `doctor` names a checksum-header choice.
pub fn checksum_name(c: DeleteChecksum) -> &'static str {
    match c {
        DeleteChecksum::Md5 => "Content-MD5 only",
        DeleteChecksum::Crc32 => "the SDK's CRC32 headers with Content-MD5",
    }
}

/// The bucket as `doctor` sees it.
#[derive(Debug, Clone, Copy)]
pub struct BucketSetup<'a> {
    /// `S3_BUCKET`.
    pub bucket: &'a str,
    /// `S3_ENDPOINT` (`None`: AWS).
    pub endpoint: Option<&'a str>,
    /// `S3_PERMISSION` (`None`: no ACL sent).
    pub permission: Option<&'a str>,
    /// `MASTOMEDIA_DELETE_CHECKSUM`.
    pub delete_checksum: DeleteChecksum,
    /// `S3_OVERRIDE_PATH_STYLE=true` (virtual-host requests).
    pub virtual_host: bool,
    /// Whether `S3_ALIAS_HOST` is set.
    pub alias_host: bool,
}

/// Appends `bucket`, `acl` and `checksums` (only `bucket` and a skipped `acl` when the
/// bucket does not answer). Returns whether it answered.
pub async fn bucket(store: &S3Store, b: &BucketSetup<'_>, c: &mut Checks) -> bool {
    match store.check().await {
        Ok(()) => c.ok(
            "bucket",
            format!("{} answers with these credentials", store.describe()),
        ),
        Err(e) => {
            let fix = match &e {
                StoreError::NoSuchBucket(_) => {
                    "create the bucket, or set S3_BUCKET (and S3_ENDPOINT/S3_REGION) to the existing one"
                }
                StoreError::InvalidCredentials { .. } => {
                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to a valid key pair for this bucket"
                }
                StoreError::AccessDenied { .. } => {
                    "give these credentials list/read/write access to the bucket"
                }
                StoreError::Transport(_) => "check S3_ENDPOINT and the network",
                _ => "check S3_ENDPOINT, S3_REGION and S3_BUCKET",
            };
            c.fail("bucket", e.to_string(), fix);
            c.skip("acl", "the bucket is not reachable");
            return false;
        }
    }
    match b.permission {
        None => c.ok(
            "acl",
            "S3_PERMISSION is empty: no ACLs are sent, so a bucket policy must make objects public",
        ),
        Some(p) => c.ok(
            "acl",
            format!("uploads carry ACL {p} (--write-test checks that the provider accepts ACLs)"),
        ),
    }
    c.push(checksums(b.endpoint, b.delete_checksum));
    true
}

/// The `checksums` check: a warning when a strict provider gets the CRC32 headers.
pub fn checksums(endpoint: Option<&str>, configured: DeleteChecksum) -> Check {
    let headers = match configured {
        DeleteChecksum::Md5 => "DeleteObjects carries Content-MD5 only",
        DeleteChecksum::Crc32 => {
            "DeleteObjects carries the SDK's CRC32 headers and Content-MD5 (MASTOMEDIA_DELETE_CHECKSUM=crc32)"
        }
    };
    match (strict_checksum_provider(endpoint), configured) {
        (Some(p), DeleteChecksum::Crc32) => Check::warn(
            "checksums",
            format!("{p} rejects x-amz-checksum headers, but {headers}"),
            "remove MASTOMEDIA_DELETE_CHECKSUM (the run falls back after the first refusal)",
        ),
        _ => Check::ok(
            "checksums",
            format!(
                "{headers}; other requests send checksums only when the operation requires them (--write-test sends a real two-key DeleteObjects)"
            ),
        ),
    }
}

/// The `dotted name` check; `None` for a bucket name without dots. Virtual-host requests
/// to `https://<a.b>.<provider>` fail TLS, the provider's wildcard covering one label.
pub fn dotted_name(b: &BucketSetup<'_>) -> Option<Check> {
    let name = b.bucket;
    if !name.contains('.') {
        return None;
    }
    let https = b.endpoint.is_none_or(|e| e.starts_with("https://"));
    Some(if https && b.virtual_host {
        Check::warn(
            "dotted name",
            format!(
                "bucket {name} has dots and S3_OVERRIDE_PATH_STYLE=true asks for virtual-host requests (https://{name}.…), which no provider certificate covers"
            ),
            "remove S3_OVERRIDE_PATH_STYLE so requests use path-style, or rename the bucket without dots",
        )
    } else if !https {
        Check::ok(
            "dotted name",
            format!("bucket {name} has dots; the endpoint is plain HTTP"),
        )
    } else if !b.alias_host {
        Check::warn(
            "dotted name",
            format!(
                "bucket {name} has dots: public URLs https://{name}.… fail TLS (the provider's wildcard covers one label)"
            ),
            "serve media through S3_ALIAS_HOST (a CNAME with its own certificate)",
        )
    } else {
        Check::ok(
            "dotted name",
            format!(
                "bucket {name} has dots: mastomedia uses path-style requests, and public URLs go through S3_ALIAS_HOST"
            ),
        )
    })
}

/// A key of the bucket to read anonymously: the first object under `media_attachments/`,
/// `accounts/` or anywhere, except challenge and probe objects and folder markers.
pub async fn sample_object(store: &S3Store) -> Option<String> {
    for prefix in ["media_attachments/", "accounts/", ""] {
        let page = store.list_page(prefix, false, None, None).await.ok()?;
        if let Some(o) = page.objects.iter().find(|o| {
            let k = o.key.as_str();
            !k.starts_with(".well-known/")
                && !k.starts_with("mastomedia-doctor/")
                && !k.ends_with('/')
        }) {
            return Some(o.key.as_str().to_owned());
        }
    }
    None
}

/// The write test's probe: a fresh key under `mastomedia-doctor/`, its headers (ACL
/// `permission`) and body.
pub fn probe(permission: Option<&str>) -> (String, ObjectHeaders, Vec<u8>) {
    let key = format!(
        "mastomedia-doctor/probe-{}-{}.txt",
        std::process::id(),
        fastrand::u32(..)
    );
    let headers = ObjectHeaders {
        content_type: "text/plain".to_owned(),
        cache_control: "no-store".to_owned(),
        acl: permission.map(str::to_owned),
    };
    (key, headers, b"mastomedia doctor probe\n".to_vec())
}

/// The `write test` verdict of a PUT of `key` that failed with `e`.
pub fn put_failed(key: &str, e: &StoreError) -> Check {
    if e.code() == "AccessControlListNotSupported" {
        Check::fail(
            "write test",
            format!("the provider refuses ACLs ({e})"),
            "set S3_PERMISSION= (empty) and make the bucket public with a bucket policy",
        )
    } else {
        Check::fail(
            "write test",
            format!("PUT {key}: {e}"),
            "give these credentials write access to the bucket",
        )
    }
}

/// The `write test` verdict of the HEAD of `key` after writing `len` bytes.
pub fn read_back(key: &str, len: usize, head: &Result<Option<HeadMeta>, StoreError>) -> Check {
    match head {
        Ok(Some(h)) if h.size == len as u64 => Check::ok(
            "write test",
            format!("wrote and read back {key} ({} bytes)", h.size),
        ),
        Ok(other) => Check::fail(
            "write test",
            format!("{key} was written but reads back as {other:?}"),
            "check the provider's consistency",
        ),
        Err(e) => Check::fail(
            "write test",
            format!("HEAD {key}: {e}"),
            "check read access",
        ),
    }
}

/// The `batch delete` verdict of the two-probe `DeleteObjects`: `used` is the header
/// choice the store ended with, `configured` the one in force.
pub fn batch_delete(
    keys: [&str; 2],
    configured: DeleteChecksum,
    used: &Result<DeleteChecksum, StoreError>,
) -> Check {
    match used {
        Ok(u) if *u == configured => Check::ok(
            "batch delete",
            format!(
                "one DeleteObjects removed both probes ({})",
                checksum_name(*u)
            ),
        ),
        Ok(u) => Check::warn(
            "batch delete",
            format!(
                "the provider refused {} and accepted {}: every run falls back after its first refusal",
                checksum_name(configured),
                checksum_name(*u)
            ),
            match u {
                DeleteChecksum::Md5 => "set MASTOMEDIA_DELETE_CHECKSUM=md5 (or remove it)",
                DeleteChecksum::Crc32 => "set MASTOMEDIA_DELETE_CHECKSUM=crc32",
            },
        ),
        Err(e) => Check::fail(
            "batch delete",
            format!("DeleteObjects of {} and {}: {e}", keys[0], keys[1]),
            "give these credentials delete access; if the error names a header, try MASTOMEDIA_DELETE_CHECKSUM=crc32 or md5",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::check::Status;

    fn setup(bucket: &str, endpoint: Option<&'static str>) -> BucketSetup<'static> {
        BucketSetup {
            bucket: Box::leak(bucket.to_owned().into_boxed_str()),
            endpoint,
            permission: None,
            delete_checksum: DeleteChecksum::Md5,
            virtual_host: false,
            alias_host: false,
        }
    }

    #[test]
    fn strict_providers_and_the_checksum_check() {
        let cases = [
            (None, None),
            (
                Some("https://s3.us-west-000.backblazeb2.com"),
                Some("backblazeb2.com"),
            ),
            (
                Some("https://acc.r2.cloudflarestorage.com"),
                Some("r2.cloudflarestorage.com"),
            ),
            (Some("https://s3.gra.io.cloud.ovh.net"), Some("ovh.net")),
            (Some("https://us-east-1.linodeobjects.com"), None),
        ];
        for (endpoint, want) in cases {
            assert_eq!(strict_checksum_provider(endpoint), want, "{endpoint:?}");
        }
        let r2 = Some("https://acc.r2.cloudflarestorage.com");
        assert_eq!(checksums(r2, DeleteChecksum::Crc32).status, Status::Warn);
        assert_eq!(checksums(r2, DeleteChecksum::Md5).status, Status::Ok);
        assert_eq!(checksums(None, DeleteChecksum::Crc32).status, Status::Ok);
    }

    #[test]
    fn dotted_bucket_names() {
        assert_eq!(dotted_name(&setup("plain", None)), None);
        let mut b = setup("media.example", Some("https://us-east-1.linodeobjects.com"));
        assert_eq!(dotted_name(&b).map(|c| c.status), Some(Status::Warn));
        b.alias_host = true;
        assert_eq!(dotted_name(&b).map(|c| c.status), Some(Status::Ok));
        b.virtual_host = true;
        let c = dotted_name(&b).unwrap();
        assert!(
            c.status == Status::Warn && c.detail.contains("virtual-host"),
            "{c:?}"
        );
        b.endpoint = Some("http://127.0.0.1:9000");
        let c = dotted_name(&b).unwrap();
        assert!(
            c.status == Status::Ok && c.detail.contains("plain HTTP"),
            "{c:?}"
        );
    }

    #[test]
    fn write_test_verdicts() {
        let e = StoreError::NotFound;
        assert_eq!(put_failed("k", &e).status, Status::Fail);
        let head = |size| {
            Ok(Some(HeadMeta {
                size,
                etag: None,
                content_type: None,
                cache_control: None,
            }))
        };
        assert_eq!(read_back("k", 24, &head(24)).status, Status::Ok);
        assert_eq!(read_back("k", 24, &head(3)).status, Status::Fail);
        assert_eq!(read_back("k", 24, &Ok(None)).status, Status::Fail);
        let md5 = DeleteChecksum::Md5;
        let crc = DeleteChecksum::Crc32;
        assert_eq!(batch_delete(["a", "b"], md5, &Ok(md5)).status, Status::Ok);
        let fell_back = batch_delete(["a", "b"], crc, &Ok(md5));
        assert!(
            fell_back.status == Status::Warn
                && fell_back.fix.as_deref()
                    == Some("set MASTOMEDIA_DELETE_CHECKSUM=md5 (or remove it)"),
            "{fell_back:?}"
        );
        let failed = batch_delete(["a", "b"], md5, &Err(StoreError::NotFound));
        assert!(failed.status == Status::Fail && failed.detail.contains("a and b"));
    }
}
