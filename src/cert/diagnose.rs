//! `doctor`'s checks of the Linode API and the alias host (`S3_ALIAS_HOST`): `linode`,
//! `alias host`, `protocol`, `dns`, `cname` (the rule of [`super::alias`], shared with
//! `cert renew`), `caa`, `tls`, and the anonymous GETs `public read` / `probe read` (with
//! `alias redirect` when the alias host sends browsers elsewhere). Returns
//! [`Check`](crate::model::check::Check)s; the report's wording is `report::doctor`'s.
//!
//! Must not: change anything (GET, HEAD and DNS queries only), or print the Linode token.

use chrono::Utc;

use super::alias::{self, AliasFacts, AliasVerdict};
use super::caa::{self, CaaVerdict};
use super::dns::Dns;
use super::linode::{Bucket, Linode};
use super::net::{Trust, describe_http_error, http_client};
use super::{CertError, normalize_name, split_alias_host, tls};
use crate::model::check::Checks;
use crate::store::s3::S3Store;

/// The setup the alias-host checks look at, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct AliasSetup<'a> {
    /// `S3_ALIAS_HOST`.
    pub alias_host: Option<&'a str>,
    /// `S3_PROTOCOL`.
    pub protocol: &'a str,
    /// `S3_BUCKET`.
    pub bucket: &'a str,
    /// `S3_ENDPOINT`.
    pub endpoint: Option<&'a str>,
    /// `--resolver` was given (probes then resolve through it too).
    pub resolver: bool,
    /// `--https-port`.
    pub https_port: u16,
    /// `--caa-identity`.
    pub caa_identity: &'a str,
}

/// The alias host as far as it works: host, path prefix, and a client to reach it.
#[derive(Debug, Clone)]
pub struct Alias {
    host: String,
    path: String,
    http: reqwest::Client,
    port: u16,
    /// Whether it serves a valid certificate (the probe read needs it).
    pub tls_ok: bool,
}

impl Alias {
    /// `https://<host>[:port]<path>/<key>`.
    pub fn url(&self, key: &str) -> String {
        alias_url(&self.host, self.port, &self.path, key)
    }
}

/// `https://<host>[:port]<path>/<key>`, the port left out when it is 443; `path` is `""`
/// or starts with `/` ([`split_alias_host`]).
pub fn alias_url(host: &str, port: u16, path: &str, key: &str) -> String {
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    format!("https://{host}{port}{path}/{key}")
}

/// The `linode` check, when a client could be built (`linode` is `None` without
/// `LINODE_TOKEN`: no line). Returns the bucket `label` as the API knows it.
pub async fn linode(
    linode: Option<Result<Linode, CertError>>,
    label: &str,
    region: Option<&str>,
    c: &mut Checks,
) -> Option<Bucket> {
    let linode = match linode? {
        Ok(l) => l,
        Err(e) => {
            c.fail("linode", e.to_string(), "fix LINODE_API_URL");
            return None;
        }
    };
    match linode.find_bucket(label, region).await {
        Ok(b) => {
            let ssl = match linode.ssl(&b).await {
                Ok(true) => "a certificate is installed",
                Ok(false) => "no certificate is installed",
                Err(_) => "certificate state unknown",
            };
            c.ok(
                "linode",
                format!(
                    "LINODE_TOKEN works; bucket {} in {} at {}; {ssl}",
                    b.label,
                    b.region_id(),
                    b.hostname
                ),
            );
            Some(b)
        }
        Err(e) => {
            c.fail(
                "linode",
                e.to_string(),
                "fix LINODE_TOKEN (Object Storage read/write scope) or LINODE_REGION",
            );
            None
        }
    }
}

/// The host names a CNAME to the bucket may point at: the Linode bucket's, else
/// `<bucket>.<endpoint host>` (none for an IP address, `localhost` or no endpoint).
pub fn expected_hosts(bucket: Option<&Bucket>, label: &str, endpoint: Option<&str>) -> Vec<String> {
    if let Some(b) = bucket {
        return b.cname_targets();
    }
    match endpoint.map(|e| {
        let h = e.split("://").nth(1).unwrap_or(e);
        normalize_name(h.split([':', '/']).next().unwrap_or(h))
    }) {
        Some(h) if h.parse::<std::net::IpAddr>().is_err() && h != "localhost" => {
            vec![format!("{label}.{h}")]
        }
        _ => Vec::new(),
    }
}

/// The alias-host checks. `linode_bucket` is what the `linode` check found, `sample` a key
/// to read anonymously, `bucket_ok` whether the bucket answered. Returns the alias host
/// for the write test's probe read (`None` when it is not set or no client can be built).
#[allow(clippy::too_many_arguments)]
pub async fn alias_host(
    s: &AliasSetup<'_>,
    dns: &Dns,
    trust: &Trust,
    linode_bucket: Option<&Bucket>,
    store: &S3Store,
    sample: Option<&str>,
    bucket_ok: bool,
    c: &mut Checks,
) -> Option<Alias> {
    let Some(alias) = s.alias_host else {
        c.warn(
            "alias host",
            "S3_ALIAS_HOST is not set: media URLs point at the provider's host",
            "set S3_ALIAS_HOST to a domain of yours (a CNAME to the bucket) so you can change providers without breaking URLs",
        );
        return None;
    };
    let (host_port, path) = split_alias_host(alias);
    let host = normalize_name(host_port.split(':').next().unwrap_or(host_port));
    if path.is_empty() {
        c.ok("alias host", format!("S3_ALIAS_HOST={alias}"));
    } else {
        c.ok(
            "alias host",
            format!(
                "S3_ALIAS_HOST={alias} has the path {path}: media URLs and these probes keep it"
            ),
        );
    }
    if s.protocol != "https" {
        c.warn(
            "protocol",
            format!("S3_PROTOCOL={}: media URLs are plain http and browsers block them as mixed content", s.protocol),
            "set S3_PROTOCOL=https",
        );
    }
    let mut dns_ok = true;
    match dns.addresses(&host).await {
        Ok(a) if !a.is_empty() => c.ok(
            "dns",
            format!(
                "{host} resolves to {}",
                a.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Ok(_) => {
            dns_ok = false;
            c.fail(
                "dns",
                format!("{host} has no A or AAAA record via {}", dns.describe()),
                format!("add a CNAME from {host} to the bucket's host"),
            );
        }
        Err(e) => {
            dns_ok = false;
            c.fail(
                "dns",
                e.to_string(),
                "fix the zone's name servers (SERVFAIL often means broken DNSSEC)",
            );
        }
    }
    let expected = expected_hosts(linode_bucket, s.bucket, s.endpoint);
    cname(&host, s.bucket, dns, expected, c).await;
    let linode =
        linode_bucket.is_some() || s.endpoint.is_some_and(|e| e.contains("linodeobjects.com"));
    caa_check(&host, s.caa_identity, linode, dns, c).await;
    let http = match http_client(trust, Some(dns).filter(|_| s.resolver), 10) {
        Ok(h) => h,
        Err(e) => {
            c.fail("tls", e.to_string(), "see the error");
            return None;
        }
    };
    let mut alias = Alias {
        host: host.clone(),
        path: path.to_owned(),
        http,
        port: s.https_port,
        tls_ok: false,
    };
    if !dns_ok {
        c.skip("tls", "the alias host does not resolve");
        c.skip("public read", "the alias host does not resolve");
        return Some(alias);
    }
    alias.tls_ok = tls_check(
        &host,
        s.https_port,
        trust,
        s.resolver.then_some(dns),
        linode,
        c,
    )
    .await;
    if !alias.tls_ok {
        c.skip("public read", "TLS on the alias host failed");
    } else if !bucket_ok {
        c.skip("public read", "the bucket is not reachable");
    } else if let Some(key) = sample {
        public_read(&alias, store, key, "public read", c).await;
    } else {
        c.warn(
            "public read",
            "the bucket holds no object to read",
            "run again with --write-test to check with a probe object",
        );
    }
    Some(alias)
}

/// The `cname` check: [`alias::decide`] over the facts of `host` against `expected`.
async fn cname(host: &str, label: &str, dns: &Dns, expected: Vec<String>, c: &mut Checks) {
    let record = match expected.first() {
        Some(t) => format!("`{host}. IN CNAME {t}.`"),
        None => "a CNAME to the bucket's host".to_owned(),
    };
    let known = !expected.is_empty();
    let facts = match AliasFacts::resolve(dns, host, expected).await {
        Ok(f) => f,
        Err(e) => return c.fail("cname", e.to_string(), "fix the zone's name servers"),
    };
    match alias::decide(&facts) {
        AliasVerdict::Cname { chain } => c.ok("cname", format!("{host} → {chain}: the bucket's host")),
        AliasVerdict::Unverified { chain } => c.ok(
            "cname",
            format!("{host} → {chain} (the bucket's host is unknown here; set LINODE_TOKEN to compare)"),
        ),
        AliasVerdict::Flattened => c.ok(
            "cname",
            format!(
                "{host} has no CNAME but resolves to the bucket's addresses (flattened CNAME to {})",
                facts.expected.first().map_or("the bucket's host", String::as_str)
            ),
        ),
        AliasVerdict::WrongTarget { chain, expected } => c.fail(
            "cname",
            format!("{host} is a CNAME to {chain}, but bucket {label} is served at {expected}"),
            format!("change the record to `{host}. IN CNAME {expected}.`"),
        ),
        // No CNAME and no address: the name does not exist (NXDOMAIN) or has no records at
        // all; calling it "not a CNAME" hid that.
        AliasVerdict::Missing => c.fail(
            "cname",
            format!("{host} does not resolve: no CNAME and no A/AAAA record (NXDOMAIN or an empty name) via {}", dns.describe()),
            format!("add {record} to the zone"),
        ),
        AliasVerdict::NotCname if known => c.warn(
            "cname",
            format!("{host} is not a CNAME and does not resolve to the bucket's addresses (an A record, a CDN, or a flattened CNAME to another host)"),
            format!("make it {record} unless a CDN serves it"),
        ),
        AliasVerdict::NotCname => c.warn(
            "cname",
            format!("{host} is not a CNAME (an A record or a flattened CNAME)"),
            format!("make it {record} unless a CDN serves it"),
        ),
    }
}

/// The `caa` check; a refusal fails only for Linode buckets, where `cert renew` needs it.
async fn caa_check(host: &str, identity: &str, linode: bool, dns: &Dns, c: &mut Checks) {
    match dns.relevant_caa(host).await {
        Err(e) => c.fail(
            "caa",
            format!("{e}: CAs refuse to issue while CAA lookups fail"),
            "fix the zone's name servers (SERVFAIL often means broken DNSSEC)",
        ),
        Ok(set) => match caa::evaluate(set.as_ref(), identity, "http-01", None) {
            CaaVerdict::NoPolicy => c.ok(
                "caa",
                "no CAA records above the alias host: any CA may issue",
            ),
            CaaVerdict::Allowed { at } => {
                c.ok("caa", format!("CAA records at {at} allow {identity}"))
            }
            CaaVerdict::Forbidden { at, reason, record } => {
                let detail = format!("CAA records at {at} forbid {identity}: {reason}");
                let fix = format!("add `{record}` beside the existing CAA records");
                if linode {
                    c.fail("caa", detail, fix);
                } else {
                    c.warn(
                        "caa",
                        format!("{detail} (matters only if you obtain the certificate yourself)"),
                        fix,
                    );
                }
            }
        },
    }
}

/// The `tls` check of `host:port`; returns whether the certificate is valid.
async fn tls_check(
    host: &str,
    port: u16,
    trust: &Trust,
    dns: Option<&Dns>,
    linode: bool,
    c: &mut Checks,
) -> bool {
    let now = Utc::now();
    match tls::probe(host, port, trust, dns).await {
        Ok(p) => match &p.fault {
            None => {
                if p.leaf.days_left(now) < 7 {
                    c.warn(
                        "tls",
                        format!("valid but expires soon: {}", p.describe(host, now)),
                        "renew it (mastomedia cert renew for Linode buckets)",
                    );
                } else {
                    c.ok("tls", format!("valid: {}", p.describe(host, now)));
                }
                true
            }
            Some(fault) => {
                let fix = match fault {
                    tls::TlsFault::Expired => {
                        "renew and install a new certificate: mastomedia cert renew (Linode), or your provider's console"
                    }
                    tls::TlsFault::WrongName if linode => {
                        "install a certificate for the alias host on the bucket: mastomedia cert renew"
                    }
                    tls::TlsFault::WrongName => {
                        "install a certificate for the alias host, or check that its CNAME points at the right service"
                    }
                    tls::TlsFault::UnknownIssuer => {
                        "serve the full chain (leaf + intermediates) from a public CA"
                    }
                    _ => "install a valid certificate for the alias host",
                };
                c.fail("tls", p.describe(host, now), fix);
                false
            }
        },
        Err(e) => {
            c.fail(
                "tls",
                format!("cannot get a certificate from {host}:{port}: {e}"),
                "check that the alias host serves HTTPS (a CDN or the bucket's custom-domain certificate)",
            );
            false
        }
    }
}

/// GETs `key` anonymously through the alias host and compares its Content-Type with the
/// bucket's (HEAD through `store`). Appends `check` (`public read` or `probe read`), and
/// `alias redirect` when the GET was redirected to another host.
pub async fn public_read(
    alias: &Alias,
    store: &S3Store,
    key: &str,
    check: &'static str,
    c: &mut Checks,
) {
    let url = alias.url(key);
    let stored = store
        .head(key)
        .await
        .ok()
        .flatten()
        .and_then(|h| h.content_type);
    match alias.http.get(&url).send().await {
        Err(e) => c.fail(
            check,
            format!("GET {url}: {}", describe_http_error(&e)),
            "check that the alias host forwards to the bucket",
        ),
        Ok(rsp) => {
            // Followed redirects: the browser loads media from that host too (`docs/reference/provider-quirks.md#p2`).
            let asked = reqwest::Url::parse(&url).ok();
            let landed = rsp.url().clone();
            if let Some(asked) = asked
                && asked.host_str() != landed.host_str()
            {
                let to = landed.host_str().unwrap_or("?").to_owned();
                c.warn(
                    "alias redirect",
                    format!("GET {url} is redirected to {landed}: browsers load the media from {to} too, and remote servers store URLs of {}", asked.host_str().unwrap_or("?")),
                    format!("serve the bucket at the alias host itself, or add {to} to EXTRA_MEDIA_HOSTS (Content-Security-Policy) if the redirect is meant"),
                );
            }
            let status = rsp.status();
            let served = rsp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if status == reqwest::StatusCode::FORBIDDEN {
                c.fail(
                    check,
                    format!("GET {url} → 403: objects are not public"),
                    "upload with S3_PERMISSION=public-read, or add a public-read bucket policy where ACLs are unsupported (mastomedia migrate --repair fixes existing objects)",
                );
            } else if !status.is_success() {
                c.fail(
                    check,
                    format!("GET {url} → HTTP {status}"),
                    "check that the alias host points at this bucket (and keeps the path, if any)",
                );
            } else if served.is_empty() || served == "binary/octet-stream" {
                c.warn(
                    check,
                    format!("GET {url} → 200 but Content-Type is {served:?}: browsers download instead of display"),
                    "fix the stored Content-Type (mastomedia migrate --repair)",
                );
            } else if let Some(s) = stored.filter(|s| !served.starts_with(s.as_str())) {
                c.warn(
                    check,
                    format!("GET {url} → 200 served as {served}, stored as {s}"),
                    "check a CDN or proxy rewriting Content-Type",
                );
            } else {
                c.ok(check, format!("GET {url} → 200, Content-Type {served}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_hosts_a_cname_may_name() {
        let b = Bucket {
            label: "m.example".into(),
            region: Some("us-east".into()),
            cluster: Some("us-east-1".into()),
            hostname: "m.example.us-east-1.linodeobjects.com".into(),
        };
        assert_eq!(
            expected_hosts(Some(&b), "ignored", None),
            [
                "m.example.us-east-1.linodeobjects.com",
                "m.example.website-us-east-1.linodeobjects.com"
            ]
        );
        let cases = [
            (
                Some("https://us-east-1.linodeobjects.com"),
                vec!["m.us-east-1.linodeobjects.com"],
            ),
            (
                Some("https://S3.Example.NET:8443/x"),
                vec!["m.s3.example.net"],
            ),
            (Some("http://127.0.0.1:9000"), vec![]),
            (Some("http://localhost:9000"), vec![]),
            (None, vec![]),
        ];
        for (endpoint, want) in cases {
            assert_eq!(expected_hosts(None, "m", endpoint), want, "{endpoint:?}");
        }
    }

    #[test]
    fn alias_urls_keep_the_path_and_a_port() {
        assert_eq!(
            alias_url("files.example", 443, "/media", "k/a.png"),
            "https://files.example/media/k/a.png"
        );
        assert_eq!(
            alias_url("files.example", 8443, "", "k"),
            "https://files.example:8443/k"
        );
    }
}
