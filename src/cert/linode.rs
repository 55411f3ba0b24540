//! The Linode (Akamai) Object Storage API, the calls `cert` needs (`certificates.md` §2.3):
//! list buckets (all pages), read one bucket, and read, upload and delete its TLS
//! certificate. The token travels only in the `Authorization` header (marked sensitive)
//! and is never printed.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};

use super::CertError;
use super::net::describe_http_error;
use crate::model::Secret;

/// The default API base.
pub const DEFAULT_API: &str = "https://api.linode.com/v4";

/// A bucket as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The bucket name.
    pub label: String,
    /// Region id (`us-east`); empty on legacy answers.
    #[serde(default)]
    pub region: Option<String>,
    /// Deprecated cluster id (`us-east-1`).
    #[serde(default)]
    pub cluster: Option<String>,
    /// The bucket's S3 host name (`<label>.<cluster>.linodeobjects.com`, or the E2/E3 form).
    #[serde(default)]
    pub hostname: String,
}

impl Bucket {
    /// The id to use in API paths: the region, else the legacy cluster.
    pub fn region_id(&self) -> &str {
        self.region
            .as_deref()
            .filter(|r| !r.is_empty())
            .or(self.cluster.as_deref())
            .unwrap_or("")
    }

    /// Host names a CNAME for this bucket may point at: its `hostname`, and the static-site
    /// form `<label>.website-<cluster>.linodeobjects.com`.
    pub fn cname_targets(&self) -> Vec<String> {
        let host = super::normalize_name(&self.hostname);
        let mut out = vec![host.clone()];
        let label = format!("{}.", self.label.to_ascii_lowercase());
        if let Some(rest) = host.strip_prefix(&label)
            && !rest.starts_with("website-")
        {
            out.push(format!("{label}website-{rest}"));
        }
        out
    }
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Bucket>,
    #[serde(default)]
    page: u32,
    #[serde(default)]
    pages: u32,
}

#[derive(Deserialize)]
struct SslStatus {
    ssl: bool,
}

#[derive(Deserialize)]
struct ApiErrors {
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    reason: String,
}

/// Checks `LINODE_API_URL` before the Bearer token is ever attached to a request to it.
///
/// The value is parsed as a URL (WHATWG rules, as reqwest sends it) and its host compared
/// exactly, never by string prefix: `https://` with any host is accepted; plain `http://`
/// only when the host is exactly `localhost`, `127.0.0.1` or `[::1]` (the test doubles),
/// so `http://127.0.0.10`, `http://127.0.0.1.example.net`, `http://localhost.example.net`
/// and `http://localhost@example.net` are refused. A user name or password, a query or a
/// fragment is refused too (paths are appended to the base). Errors:
/// [`CertError::Setup`] naming the variable; the message never repeats a password.
pub fn check_api_url(base: &str) -> Result<(), CertError> {
    let refuse = |why: &str| {
        let shown = match reqwest::Url::parse(base) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("[redacted]"));
                }
                u.as_str().trim_end_matches('/').to_owned()
            }
            Err(_) if base.contains('@') => "[not shown: it contains '@']".to_owned(),
            Err(_) => base.to_owned(),
        };
        Err(CertError::Setup(format!("LINODE_API_URL={shown} {why}")))
    };
    let url = match reqwest::Url::parse(base) {
        Ok(u) => u,
        Err(e) => {
            return refuse(&format!(
                "is not a URL ({e}): set it to https://api.linode.com/v4 or remove it"
            ));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("must not contain a user name or password (the API takes LINODE_TOKEN)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return refuse("must not have a query or fragment (API paths are appended to it)");
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" => {
            // `host_str` is the parsed, serialised host: an IPv4 address in dotted
            // decimal (`127.1` and `0x7f.0.0.1` become `127.0.0.1`), an IPv6 address in
            // brackets, a domain lower-cased. A domain can never serialise as an address.
            let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if loopback {
                Ok(())
            } else {
                refuse(
                    "must be an https:// URL: plain http:// is accepted only for exactly localhost, 127.0.0.1 or [::1] (the token would travel in clear text)",
                )
            }
        }
        _ => refuse("must be an https:// URL (the token would travel in clear text otherwise)"),
    }
}

/// A client of the API.
#[derive(Debug, Clone)]
pub struct Linode {
    http: reqwest::Client,
    base: String,
    token: Secret<String>,
}

impl Linode {
    /// A client for `base` (e.g. `https://api.linode.com/v4`) with `token`. Errors:
    /// [`CertError::Setup`] when [`check_api_url`] refuses `base`, so the token is never
    /// sent over plain http to anything but this machine's loopback.
    pub fn new(
        http: reqwest::Client,
        base: &str,
        token: Secret<String>,
    ) -> Result<Self, CertError> {
        let base = base.trim_end_matches('/').to_owned();
        check_api_url(&base)?;
        Ok(Self { http, base, token })
    }

    fn auth(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
        v.set_sensitive(true);
        v
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, CertError> {
        let url = format!("{}{path}", self.base);
        let call = format!("{method} {path}");
        let mut req = self
            .http
            .request(method, &url)
            .header(AUTHORIZATION, self.auth())
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(b);
        }
        let rsp = req.send().await.map_err(|e| {
            CertError::Network(format!(
                "cannot reach the Linode API at {}: {}",
                self.base,
                describe_http_error(&e)
            ))
        })?;
        let status = rsp.status();
        let text = rsp.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| CertError::Linode {
                call,
                status: status.as_u16(),
                message: format!("unexpected answer ({e})"),
            });
        }
        let reasons = serde_json::from_str::<ApiErrors>(&text)
            .map(|e| {
                e.errors
                    .into_iter()
                    .map(|e| match e.field {
                        Some(f) => format!("{f}: {}", e.reason),
                        None => e.reason,
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let message = if reasons.is_empty() {
            text.chars().take(200).collect()
        } else {
            reasons
        };
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(CertError::LinodeAuth(format!(
                "HTTP {}: {message}",
                status.as_u16()
            )));
        }
        Err(CertError::Linode {
            call,
            status: status.as_u16(),
            message,
        })
    }

    /// Every bucket of the account, all pages.
    pub async fn buckets(&self) -> Result<Vec<Bucket>, CertError> {
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let p: Page = self
                .call(
                    reqwest::Method::GET,
                    &format!("/object-storage/buckets?page={page}&page_size=100"),
                    None,
                )
                .await?;
            out.extend(p.data);
            if p.page >= p.pages || p.pages == 0 {
                return Ok(out);
            }
            page = p.page + 1;
        }
    }

    /// The bucket named `label`: in `region` when given (one call), else found by listing
    /// every bucket. Errors: none or several buckets of that name.
    pub async fn find_bucket(
        &self,
        label: &str,
        region: Option<&str>,
    ) -> Result<Bucket, CertError> {
        if let Some(r) = region {
            return match self
                .call::<Bucket>(
                    reqwest::Method::GET,
                    &format!("/object-storage/buckets/{r}/{label}"),
                    None,
                )
                .await
            {
                Err(CertError::Linode { status: 404, .. }) => Err(CertError::Setup(format!(
                    "no bucket {label} in region {r} of this Linode account: check LINODE_REGION and S3_BUCKET"
                ))),
                other => other,
            };
        }
        let matching: Vec<Bucket> = self
            .buckets()
            .await?
            .into_iter()
            .filter(|b| b.label == label)
            .collect();
        match matching.len() {
            0 => Err(CertError::Setup(format!(
                "this Linode account has no bucket labelled {label}: the bucket name must equal the domain (create it, or check LINODE_TOKEN's account)"
            ))),
            1 => Ok(matching.into_iter().next().expect("one")),
            _ => Err(CertError::Setup(format!(
                "buckets labelled {label} exist in several regions ({}): set LINODE_REGION to the one the CNAME points at",
                matching
                    .iter()
                    .map(|b| b.region_id().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn ssl_path(b: &Bucket) -> String {
        format!("/object-storage/buckets/{}/{}/ssl", b.region_id(), b.label)
    }

    /// Whether the bucket has a certificate (the API cannot return the certificate itself).
    pub async fn ssl(&self, b: &Bucket) -> Result<bool, CertError> {
        let s: SslStatus = self
            .call(reqwest::Method::GET, &Self::ssl_path(b), None)
            .await?;
        Ok(s.ssl)
    }

    /// Uploads a certificate chain and its key.
    pub async fn upload_ssl(
        &self,
        b: &Bucket,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), CertError> {
        let body = serde_json::json!({ "certificate": chain_pem, "private_key": key_pem });
        let s: SslStatus = self
            .call(reqwest::Method::POST, &Self::ssl_path(b), Some(&body))
            .await?;
        if !s.ssl {
            return Err(CertError::Linode {
                call: format!("POST {}", Self::ssl_path(b)),
                status: 200,
                message: "the API answered ssl: false".to_owned(),
            });
        }
        Ok(())
    }

    /// Deletes the bucket's certificate.
    pub async fn delete_ssl(&self, b: &Bucket) -> Result<(), CertError> {
        let _: serde_json::Value = self
            .call(reqwest::Method::DELETE, &Self::ssl_path(b), None)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case6_plain_http_only_for_exact_loopback_hosts() {
        for ok in [
            "https://api.linode.com/v4",
            "https://10.0.0.1:8443/v4",
            "http://127.0.0.1:4000/v4",
            "http://127.0.0.1/v4",
            "http://localhost:4000/v4",
            "http://LOCALHOST:4000/v4",
            "http://[::1]:4000/v4",
        ] {
            assert!(check_api_url(ok).is_ok(), "{ok} was refused");
        }
        for bad in [
            "http://127.0.0.10:4000/v4",
            "http://127.0.0.1.example.net/v4",
            "http://localhost.example.net/v4",
            "http://localhost@example.net/v4",
            "http://127.0.0.1@example.net/v4",
            "http://127.0.0.1:4000@example.net/v4",
            "http://[::1].example.net/v4",
            "http://[::2]:4000/v4",
            "http://localhost./v4",
            "http://10.0.0.1/v4",
            "http://api.linode.com/v4",
            "ftp://localhost/v4",
            "api.linode.com/v4",
            "https://",
            "https://user:hunter2@api.linode.com/v4",
            "https://api.linode.com/v4?x=1",
            "https://api.linode.com/v4#f",
        ] {
            match check_api_url(bad) {
                Err(CertError::Setup(m)) => {
                    assert!(m.starts_with("LINODE_API_URL="), "{bad}: {m}");
                    assert!(!m.contains("hunter2"), "{bad}: the password leaked: {m}");
                }
                other => panic!("{bad} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn cname_targets_include_the_website_form() {
        let b = Bucket {
            label: "media.example.social".into(),
            region: Some("us-east".into()),
            cluster: Some("us-east-1".into()),
            hostname: "media.example.social.us-east-1.linodeobjects.com".into(),
        };
        assert_eq!(
            b.cname_targets(),
            vec![
                "media.example.social.us-east-1.linodeobjects.com",
                "media.example.social.website-us-east-1.linodeobjects.com"
            ]
        );
        assert_eq!(b.region_id(), "us-east");
    }
}
