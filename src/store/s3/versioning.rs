//! The bucket's versioning state (`GetBucketVersioning`), for prune's freed-space claim
//! (`docs/reference/provider-quirks.md#u2`): on a versioned bucket a delete only adds a delete marker and
//! keeps the bytes as a noncurrent version until a lifecycle rule expires it.

use super::S3Store;
use crate::store::StoreError;

impl S3Store {
    /// `Some("Enabled")` or `Some("Suspended")` when versioning was ever switched on for the
    /// bucket (suspended buckets keep their old versions), `None` when it never was.
    /// Errors: the request failed (a provider without the API answers `NotImplemented`).
    pub async fn versioning_status(&self) -> Result<Option<String>, StoreError> {
        let out = self
            .send("GetBucketVersioning", |c| {
                c.get_bucket_versioning().bucket(&self.bucket).send()
            })
            .await?;
        Ok(out.status().map(|s| s.as_str().to_owned()))
    }
}
