//! HTTP-01 through the bucket: the key authorization is written as the object
//! `.well-known/acme-challenge/<token>` (ACL `public-read` unless `S3_PERMISSION` is empty,
//! `Content-Type: text/plain`) with the S3 credentials Mastodon already has, fetched back
//! over plain HTTP through the domain the way the CA will, and deleted afterwards. Writes
//! and deletes pass [`Gate::mutate`].

use std::time::Duration;

use super::acme::Responder;
use super::net::describe_http_error;
use super::{CHALLENGE_PREFIX, CertError};
use crate::pool::Gate;
use crate::store::s3::{ObjectHeaders, S3Store};

/// Self-check attempts (one second apart) before giving up: providers may take a moment
/// to serve a new object through the custom domain.
const SELF_CHECK_ATTEMPTS: u32 = 5;

/// Answers challenges by writing objects into the bucket that serves `domain`.
#[derive(Debug)]
pub struct BucketResponder<'a> {
    /// The bucket (named like the domain).
    pub store: &'a S3Store,
    /// The dry-run gate.
    pub gate: Gate,
    /// Canned ACL for the object (`None`: send none, the bucket policy must make it public).
    pub acl: Option<String>,
    /// HTTP client for the self-check (follows up to 10 redirects, like the CA).
    pub http: reqwest::Client,
    /// The domain.
    pub domain: String,
    /// Port of plain HTTP on the domain (80 in production).
    pub http_port: u16,
}

impl BucketResponder<'_> {
    fn key(token: &str) -> String {
        format!("{CHALLENGE_PREFIX}{token}")
    }

    /// The URL the CA fetches.
    pub fn url(&self, token: &str) -> String {
        if self.http_port == 80 {
            format!("http://{}/{}", self.domain, Self::key(token))
        } else {
            format!(
                "http://{}:{}/{}",
                self.domain,
                self.http_port,
                Self::key(token)
            )
        }
    }
}

impl Responder for BucketResponder<'_> {
    async fn publish(&self, token: &str, key_auth: &str) -> Result<(), CertError> {
        let headers = ObjectHeaders {
            content_type: "text/plain".to_owned(),
            cache_control: "no-store".to_owned(),
            acl: self.acl.clone(),
        };
        let key = Self::key(token);
        self.gate
            .mutate(
                self.store
                    .put_bytes(&key, key_auth.as_bytes().to_vec(), &headers),
                || Ok(()),
            )
            .await
            .map_err(|e| {
                CertError::Network(format!(
                    "cannot write the challenge object {key} into the bucket: {e}"
                ))
            })
    }

    async fn self_check(&self, token: &str, key_auth: &str) -> Result<(), CertError> {
        let url = self.url(token);
        let mut last = String::new();
        for attempt in 1..=SELF_CHECK_ATTEMPTS {
            match self.http.get(&url).send().await {
                Ok(rsp) => {
                    let status = rsp.status();
                    let body = rsp.text().await.unwrap_or_default();
                    if status.is_success() && body.trim_end() == key_auth {
                        return Ok(());
                    }
                    last = if status.is_success() {
                        format!(
                            "it answered other content ({:?}…): is {} a CNAME to this bucket?",
                            body.chars().take(60).collect::<String>(),
                            self.domain
                        )
                    } else if status == reqwest::StatusCode::FORBIDDEN {
                        "it answered 403: the object is not public (ACL, or a bucket policy missing where S3_PERMISSION is empty)".to_owned()
                    } else {
                        format!(
                            "it answered HTTP {status}: is {} a CNAME to this bucket?",
                            self.domain
                        )
                    };
                }
                Err(e) => last = describe_http_error(&e),
            }
            if attempt < SELF_CHECK_ATTEMPTS {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Err(CertError::Setup(format!(
            "self-check failed: GET {url} did not return the challenge ({last}); nothing was asked of the CA"
        )))
    }

    async fn remove(&self, token: &str) -> Result<(), CertError> {
        let key = Self::key(token);
        self.gate
            .mutate(self.store.delete_written(&key), || Ok(()))
            .await
            .map_err(|e| CertError::Network(format!("cannot delete {key}: {e}")))
    }
}
