//! `mastomedia doctor`: checks the whole setup and prints one line per check (ok / warn /
//! fail) with the fix in one sentence; exit 1 when any check fails. Read-only, except the
//! probe object of `--write-test` (written and deleted through [`Gate::mutate`]).
//!
//! Order: env file → database (Mastodon version, columns, retention setting) → bucket
//! (credentials, ACL, checksum headers, dotted names) → Linode API (when LINODE_TOKEN is
//! set) → alias host (path, DNS, CNAME target, CAA, TLS, an object read anonymously) →
//! write test. A check whose prerequisite failed is reported as not checked.

use std::path::Path;

use chrono::Utc;
use serde::Serialize;

use super::CommandError;
use crate::cert::caa::{self, CaaVerdict};
use crate::cert::dns::Dns;
use crate::cert::linode::{Bucket, Linode};
use crate::cert::net::{Trust, describe_http_error, http_client};
use crate::cert::{normalize_name, split_alias_host, tls};
use crate::cli::doctor::Args;
use crate::config::{Config, DeleteChecksum, LinodeConfig, S3Config, StorageConfig, Vars};
use crate::mastodon::{Db, DbError, Pooling};
use crate::plan::layout::ObjectKey;
use crate::pool::Gate;
use crate::report::ExitCode;
use crate::store::s3::{ObjectHeaders, S3Store};
use crate::store::{Limiter, Store, StoreError};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but something deserves attention (or could not be checked).
    Warn,
    /// Broken: the fix says what to do.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name (`database`, `cname`, `tls`, ...).
    pub check: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, in one sentence (for warn and fail).
    pub fix: Option<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn ok(&mut self, check: &'static str, detail: impl Into<String>) {
        self.push(check, Status::Ok, detail.into(), None);
    }
    fn warn(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(check, Status::Warn, detail.into(), Some(fix.into()));
    }
    fn fail(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(check, Status::Fail, detail.into(), Some(fix.into()));
    }
    fn skip(&mut self, check: &'static str, why: &str) {
        self.push(check, Status::Warn, format!("not checked: {why}"), None);
    }
    fn push(&mut self, check: &'static str, status: Status, detail: String, fix: Option<String>) {
        self.checks.push(Check {
            check,
            status,
            detail,
            fix,
        });
    }
}

/// Runs `doctor`; prints the report (stdout) and returns 0, or 1 when a check failed.
pub async fn run(env_file: &Path, args: Args, _quiet: bool) -> Result<ExitCode, CommandError> {
    let mut r = Report::default();
    diagnose(env_file, &args, &mut r).await;
    let failed = r.checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        let v = serde_json::json!({ "ok": !failed, "checks": r.checks });
        crate::outln!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    } else {
        for c in &r.checks {
            let status = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            match &c.fix {
                Some(f) => crate::outln!("{status}  {:<12} {} → {f}", c.check, c.detail),
                None => crate::outln!("{status}  {:<12} {}", c.check, c.detail),
            }
        }
        let fails = r.checks.iter().filter(|c| c.status == Status::Fail).count();
        let warns = r.checks.iter().filter(|c| c.status == Status::Warn).count();
        crate::outln!(
            "{} checks: {} failed, {warns} warnings",
            r.checks.len(),
            fails
        );
    }
    Ok(if failed {
        ExitCode::ItemsFailed
    } else {
        ExitCode::Success
    })
}

async fn diagnose(env_file: &Path, args: &Args, r: &mut Report) {
    let (cfg, vars) = match Config::load_with_vars(env_file) {
        Ok(x) => x,
        Err(e) => {
            r.fail(
                "env",
                e.to_string(),
                "fix the env file (or the variable named), then run doctor again",
            );
            return;
        }
    };
    r.ok(
        "env",
        format!(
            "{} parses; required variables are set ({})",
            env_file.display(),
            match &cfg.storage {
                StorageConfig::S3(s) => format!("S3 bucket {}", s.bucket),
                StorageConfig::Filesystem(f) => format!("local files in {}", f.root.display()),
            }
        ),
    );
    check_database(&cfg, r).await;
    let StorageConfig::S3(s3) = &cfg.storage else {
        r.ok(
            "storage",
            "local filesystem storage: bucket, alias host and TLS checks do not apply",
        );
        return;
    };
    let store = S3Store::new(s3, Limiter::new(None, 4));
    let bucket_ok = check_bucket(&store, s3, r).await;
    check_dotted(s3, &vars, r);
    let trust = match Trust::load(&args.ca_file) {
        Ok(t) => t,
        Err(e) => {
            r.fail(
                "trust",
                e.to_string(),
                "pass a readable PEM file to --ca-file",
            );
            return;
        }
    };
    let linode_bucket = check_linode(&vars, &trust, s3, r).await;
    let dns = match Dns::new(args.resolver) {
        Ok(d) => d,
        Err(e) => {
            r.fail("dns", e.to_string(), "pass --resolver IP:PORT");
            return;
        }
    };
    let sample = if bucket_ok {
        sample_object(&store).await
    } else {
        None
    };
    let alias = check_alias_host(AliasCtx {
        args,
        s3,
        dns: &dns,
        trust: &trust,
        linode_bucket: linode_bucket.as_ref(),
        store: &store,
        sample: sample.as_deref(),
        bucket_ok,
        r: &mut *r,
    })
    .await;
    if args.write_test {
        if bucket_ok {
            write_test(&store, s3, alias.as_ref(), r).await;
        } else {
            r.skip("write test", "the bucket is not reachable");
        }
    }
}

async fn check_database(cfg: &Config, r: &mut Report) {
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        Db::connect(&cfg.database, 2),
    )
    .await;
    let db = match connect {
        Err(_) => {
            r.fail(
                "database",
                format!("no answer from {} within 20 s", cfg.database.display),
                "check DB_HOST/DB_PORT (or DATABASE_URL) and that PostgreSQL is running",
            );
            r.skip("locking", "the database is not reachable");
            r.skip("retention", "the database is not reachable");
            return;
        }
        Ok(Err(e)) => {
            r.fail(
                "database",
                e.to_string(),
                "check DB_HOST/DB_PORT/DB_USER/DB_PASS/DB_NAME (or DATABASE_URL) and that PostgreSQL is running",
            );
            r.skip("locking", "the database is not reachable");
            r.skip("retention", "the database is not reachable");
            return;
        }
        Ok(Ok(db)) => db,
    };
    let s = db.schema();
    let version = if s.thumbnail_schema_version() {
        "4.6 or later"
    } else if s.quotes() {
        "4.5"
    } else if !s.settings_thing_type() {
        "4.4"
    } else {
        "4.2 or 4.3"
    };
    r.ok(
        "database",
        format!(
            "{} reachable ({}); Mastodon {version} (schema_migrations {}); the media columns mastomedia needs are present",
            cfg.database.display,
            db.pooling().describe(),
            s.migration_version.as_deref().unwrap_or("?")
        ),
    );
    check_locking(&db, r).await;
    match db.media_retention_days().await {
        Ok(Some(d)) => r.ok("retention", format!("media cache retention period: {d} days")),
        Ok(None) => r.warn(
            "retention",
            "no media cache retention period is set: Mastodon keeps remote media forever (mastomedia prune defaults to 7 days)",
            "set it under Administration → Server settings → Content retention, or pass prune --days",
        ),
        Err(e) => r.warn("retention", e.to_string(), "check the database user's SELECT on settings"),
    }
}

/// Whether the advisory lock that keeps two prunes (or orphan deletions) apart can be
/// taken and proved held: on `MASTOMEDIA_LOCK_DATABASE_URL` when set, else on the main
/// connection unless it is transaction-pooled (issue 9.1). Takes and releases the lock of
/// the job `doctor`, which no other run uses.
async fn check_locking(db: &Db, r: &mut Report) {
    let pooled = db.pooling() == Pooling::Transaction;
    match db.lock("doctor").await {
        Ok(lock) => {
            let detail = match (lock.via(), pooled) {
                (Some(via), true) => format!(
                    "DATABASE_URL / DB_HOST is behind transaction pooling; the advisory lock is taken and held on MASTOMEDIA_LOCK_DATABASE_URL ({via})"
                ),
                (Some(via), false) => format!(
                    "the advisory lock is taken and held on MASTOMEDIA_LOCK_DATABASE_URL ({via})"
                ),
                (None, _) => "an advisory lock is taken and held on a session of its own (PostgreSQL directly or session pooling)".to_owned(),
            };
            r.ok("locking", detail);
        }
        Err(DbError::LockUnavailable { detail, .. }) => r.fail(
            "locking",
            format!("{detail}: prune and orphans --delete refuse to run (exit 3); du, orphans and prune --dry-run run with a warning"),
            "set MASTOMEDIA_LOCK_DATABASE_URL to a connection straight to PostgreSQL (bypassing PgBouncer), e.g. postgres://mastodon:PASSWORD@127.0.0.1:5432/mastodon_production, or use pool_mode = session",
        ),
        Err(e) => r.fail(
            "locking",
            e.to_string(),
            "check MASTOMEDIA_LOCK_DATABASE_URL, or point DATABASE_URL / DB_HOST at PostgreSQL itself",
        ),
    }
}

/// Bucket reachability and credentials, ACL setting, checksum headers. Returns whether the
/// bucket answered.
async fn check_bucket(store: &S3Store, s3: &S3Config, r: &mut Report) -> bool {
    match store.check().await {
        Ok(()) => r.ok(
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
            r.fail("bucket", e.to_string(), fix);
            r.skip("acl", "the bucket is not reachable");
            return false;
        }
    }
    match &s3.permission {
        None => r.ok(
            "acl",
            "S3_PERMISSION is empty: no ACLs are sent, so a bucket policy must make objects public",
        ),
        Some(p) => r.ok(
            "acl",
            format!("uploads carry ACL {p} (--write-test checks that the provider accepts ACLs)"),
        ),
    }
    let host = s3.endpoint.as_deref().unwrap_or("amazonaws.com");
    let strict = [
        "backblazeb2.com",
        "r2.cloudflarestorage.com",
        "ovh.net",
        "ovh.us",
    ]
    .iter()
    .find(|p| host.contains(*p));
    let headers = match s3.delete_checksum {
        DeleteChecksum::Md5 => "DeleteObjects carries Content-MD5 only",
        DeleteChecksum::Crc32 => {
            "DeleteObjects carries the SDK's CRC32 headers and Content-MD5 (MASTOMEDIA_DELETE_CHECKSUM=crc32)"
        }
    };
    match (strict, s3.delete_checksum) {
        (Some(p), DeleteChecksum::Crc32) => r.warn(
            "checksums",
            format!("{p} rejects x-amz-checksum headers, but {headers}"),
            "remove MASTOMEDIA_DELETE_CHECKSUM (the run falls back after the first refusal)",
        ),
        _ => r.ok(
            "checksums",
            format!(
                "{headers}; other requests send checksums only when the operation requires them (--write-test sends a real two-key DeleteObjects)"
            ),
        ),
    }
    true
}

fn check_dotted(s3: &S3Config, vars: &Vars, r: &mut Report) {
    if !s3.bucket.contains('.') {
        return;
    }
    let https = s3
        .endpoint
        .as_deref()
        .is_none_or(|e| e.starts_with("https://"));
    let virtual_host = vars.get("S3_OVERRIDE_PATH_STYLE") == Some("true");
    if https && virtual_host {
        r.warn(
            "dotted name",
            format!(
                "bucket {} has dots and S3_OVERRIDE_PATH_STYLE=true asks for virtual-host requests (https://{}.…), which no provider certificate covers",
                s3.bucket, s3.bucket
            ),
            "remove S3_OVERRIDE_PATH_STYLE so requests use path-style, or rename the bucket without dots",
        );
    } else if !https {
        r.ok(
            "dotted name",
            format!("bucket {} has dots; the endpoint is plain HTTP", s3.bucket),
        );
    } else if s3.alias_host.is_none() {
        r.warn(
            "dotted name",
            format!(
                "bucket {} has dots: public URLs https://{}.… fail TLS (the provider's wildcard covers one label)",
                s3.bucket, s3.bucket
            ),
            "serve media through S3_ALIAS_HOST (a CNAME with its own certificate)",
        );
    } else {
        r.ok(
            "dotted name",
            format!(
                "bucket {} has dots: mastomedia uses path-style requests, and public URLs go through S3_ALIAS_HOST",
                s3.bucket
            ),
        );
    }
}

/// When LINODE_TOKEN is set: the token works and the bucket exists there.
async fn check_linode(vars: &Vars, trust: &Trust, s3: &S3Config, r: &mut Report) -> Option<Bucket> {
    let lcfg = LinodeConfig::from_vars(vars);
    let token = lcfg.token.clone()?;
    let http = http_client(trust, None, 0).ok()?;
    let linode = match Linode::new(http, &lcfg.api_url, token) {
        Ok(l) => l,
        Err(e) => {
            r.fail("linode", e.to_string(), "fix LINODE_API_URL");
            return None;
        }
    };
    match linode.find_bucket(&s3.bucket, lcfg.region.as_deref()).await {
        Ok(b) => {
            let ssl = match linode.ssl(&b).await {
                Ok(true) => "a certificate is installed",
                Ok(false) => "no certificate is installed",
                Err(_) => "certificate state unknown",
            };
            r.ok(
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
            r.fail(
                "linode",
                e.to_string(),
                "fix LINODE_TOKEN (Object Storage read/write scope) or LINODE_REGION",
            );
            None
        }
    }
}

async fn sample_object(store: &S3Store) -> Option<String> {
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

struct AliasCtx<'a> {
    args: &'a Args,
    s3: &'a S3Config,
    dns: &'a Dns,
    trust: &'a Trust,
    linode_bucket: Option<&'a Bucket>,
    store: &'a S3Store,
    sample: Option<&'a str>,
    bucket_ok: bool,
    r: &'a mut Report,
}

/// The alias host as far as it works: host, path prefix, and a client to reach it.
struct Alias {
    host: String,
    path: String,
    http: reqwest::Client,
    port: u16,
    tls_ok: bool,
}

impl Alias {
    fn url(&self, key: &str) -> String {
        let port = if self.port == 443 {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!("https://{}{port}{}/{key}", self.host, self.path)
    }
}

async fn check_alias_host(c: AliasCtx<'_>) -> Option<Alias> {
    let r = c.r;
    let Some(alias) = c.s3.alias_host.as_deref() else {
        r.warn(
            "alias host",
            "S3_ALIAS_HOST is not set: media URLs point at the provider's host",
            "set S3_ALIAS_HOST to a domain of yours (a CNAME to the bucket) so you can change providers without breaking URLs",
        );
        return None;
    };
    let (host_port, path) = split_alias_host(alias);
    let host = normalize_name(host_port.split(':').next().unwrap_or(host_port));
    if path.is_empty() {
        r.ok("alias host", format!("S3_ALIAS_HOST={alias}"));
    } else {
        r.ok(
            "alias host",
            format!(
                "S3_ALIAS_HOST={alias} has the path {path}: media URLs and these probes keep it"
            ),
        );
    }
    if c.s3.protocol != "https" {
        r.warn(
            "protocol",
            format!("S3_PROTOCOL={}: media URLs are plain http and browsers block them as mixed content", c.s3.protocol),
            "set S3_PROTOCOL=https",
        );
    }
    let mut dns_ok = true;
    match c.dns.addresses(&host).await {
        Ok(a) if !a.is_empty() => r.ok(
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
            r.fail(
                "dns",
                format!("{host} has no A or AAAA record via {}", c.dns.describe()),
                format!("add a CNAME from {host} to the bucket's host"),
            );
        }
        Err(e) => {
            dns_ok = false;
            r.fail(
                "dns",
                e.to_string(),
                "fix the zone's name servers (SERVFAIL often means broken DNSSEC)",
            );
        }
    }
    check_cname(&host, c.s3, c.dns, c.linode_bucket, r).await;
    let linode = c.linode_bucket.is_some()
        || c.s3
            .endpoint
            .as_deref()
            .is_some_and(|e| e.contains("linodeobjects.com"));
    match c.dns.relevant_caa(&host).await {
        Err(e) => r.fail(
            "caa",
            format!("{e}: CAs refuse to issue while CAA lookups fail"),
            "fix the zone's name servers (SERVFAIL often means broken DNSSEC)",
        ),
        Ok(set) => match caa::evaluate(set.as_ref(), &c.args.caa_identity, "http-01", None) {
            CaaVerdict::NoPolicy => r.ok(
                "caa",
                "no CAA records above the alias host: any CA may issue",
            ),
            CaaVerdict::Allowed { at } => r.ok(
                "caa",
                format!("CAA records at {at} allow {}", c.args.caa_identity),
            ),
            CaaVerdict::Forbidden { at, reason, record } => {
                let detail = format!(
                    "CAA records at {at} forbid {}: {reason}",
                    c.args.caa_identity
                );
                let fix = format!("add `{record}` beside the existing CAA records");
                if linode {
                    r.fail("caa", detail, fix);
                } else {
                    r.warn(
                        "caa",
                        format!("{detail} (matters only if you obtain the certificate yourself)"),
                        fix,
                    );
                }
            }
        },
    }
    let http = match http_client(
        c.trust,
        Some(c.dns).filter(|_| c.args.resolver.is_some()),
        10,
    ) {
        Ok(h) => h,
        Err(e) => {
            r.fail("tls", e.to_string(), "see the error");
            return None;
        }
    };
    let mut alias = Alias {
        host: host.clone(),
        path: path.to_owned(),
        http,
        port: c.args.https_port,
        tls_ok: false,
    };
    if !dns_ok {
        r.skip("tls", "the alias host does not resolve");
        r.skip("public read", "the alias host does not resolve");
        return Some(alias);
    }
    let dns_override = c.args.resolver.map(|_| c.dns);
    let now = Utc::now();
    match tls::probe(&host, c.args.https_port, c.trust, dns_override).await {
        Ok(p) => match &p.fault {
            None => {
                let days = p.leaf.days_left(now);
                if days < 7 {
                    r.warn(
                        "tls",
                        format!("valid but expires soon: {}", p.describe(&host, now)),
                        "renew it (mastomedia cert renew for Linode buckets)",
                    );
                } else {
                    r.ok("tls", format!("valid: {}", p.describe(&host, now)));
                }
                alias.tls_ok = true;
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
                r.fail("tls", p.describe(&host, now), fix);
            }
        },
        Err(e) => r.fail(
            "tls",
            format!("cannot get a certificate from {host}:{}: {e}", c.args.https_port),
            "check that the alias host serves HTTPS (a CDN or the bucket's custom-domain certificate)",
        ),
    }
    if !alias.tls_ok {
        r.skip("public read", "TLS on the alias host failed");
    } else if !c.bucket_ok {
        r.skip("public read", "the bucket is not reachable");
    } else if let Some(key) = c.sample {
        public_read(&alias, c.store, key, "public read", r).await;
    } else {
        r.warn(
            "public read",
            "the bucket holds no object to read",
            "run again with --write-test to check with a probe object",
        );
    }
    Some(alias)
}

async fn check_cname(
    host: &str,
    s3: &S3Config,
    dns: &Dns,
    bucket: Option<&Bucket>,
    r: &mut Report,
) {
    let expected: Vec<String> = match bucket {
        Some(b) => b.cname_targets(),
        None => match s3.endpoint.as_deref().map(|e| {
            let h = e.split("://").nth(1).unwrap_or(e);
            normalize_name(h.split([':', '/']).next().unwrap_or(h))
        }) {
            Some(h) if h.parse::<std::net::IpAddr>().is_err() && h != "localhost" => {
                vec![format!("{}.{h}", s3.bucket)]
            }
            _ => Vec::new(),
        },
    };
    match dns.cname_chain(host).await {
        Err(e) => r.fail("cname", e.to_string(), "fix the zone's name servers"),
        Ok(chain) if chain.is_empty() => {
            let record = match expected.first() {
                Some(t) => format!("`{host}. IN CNAME {t}.`"),
                None => "a CNAME to the bucket's host".to_owned(),
            };
            match dns.addresses(host).await {
                // No CNAME and no address: the name does not exist (NXDOMAIN) or has no
                // records at all; calling it "not a CNAME" hid that.
                Ok(a) if a.is_empty() => r.fail(
                    "cname",
                    format!("{host} does not resolve: no CNAME and no A/AAAA record (NXDOMAIN or an empty name) via {}", dns.describe()),
                    format!("add {record} to the zone"),
                ),
                Err(e) => r.fail("cname", e.to_string(), "fix the zone's name servers"),
                Ok(_) => r.warn(
                    "cname",
                    format!("{host} is not a CNAME (an A record or a flattened CNAME)"),
                    format!("make it {record} unless a CDN serves it"),
                ),
            }
        }
        Ok(chain) => {
            let shown = chain.join(" → ");
            if expected.is_empty() {
                r.ok("cname", format!("{host} → {shown} (the bucket's host is unknown here; set LINODE_TOKEN to compare)"));
            } else if chain.iter().any(|h| expected.contains(h)) {
                r.ok("cname", format!("{host} → {shown}: the bucket's host"));
            } else {
                r.fail(
                    "cname",
                    format!(
                        "{host} is a CNAME to {shown}, but bucket {} is served at {}",
                        s3.bucket, expected[0]
                    ),
                    format!("change the record to `{host}. IN CNAME {}.`", expected[0]),
                );
            }
        }
    }
}

/// GETs `key` anonymously through the alias host and compares its Content-Type with the
/// bucket's.
async fn public_read(
    alias: &Alias,
    store: &S3Store,
    key: &str,
    check: &'static str,
    r: &mut Report,
) {
    let url = alias.url(key);
    let stored = store
        .head(key)
        .await
        .ok()
        .flatten()
        .and_then(|h| h.content_type);
    match alias.http.get(&url).send().await {
        Err(e) => r.fail(
            check,
            format!("GET {url}: {}", describe_http_error(&e)),
            "check that the alias host forwards to the bucket",
        ),
        Ok(rsp) => {
            // Followed redirects: the browser loads media from that host too (docs/reference/provider-quirks.md#p2).
            let asked = reqwest::Url::parse(&url).ok();
            let landed = rsp.url().clone();
            if let Some(asked) = asked
                && asked.host_str() != landed.host_str()
            {
                let to = landed.host_str().unwrap_or("?").to_owned();
                r.warn(
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
                r.fail(
                    check,
                    format!("GET {url} → 403: objects are not public"),
                    "upload with S3_PERMISSION=public-read, or add a public-read bucket policy where ACLs are unsupported (mastomedia migrate --repair fixes existing objects)",
                );
            } else if !status.is_success() {
                r.fail(
                    check,
                    format!("GET {url} → HTTP {status}"),
                    "check that the alias host points at this bucket (and keeps the path, if any)",
                );
            } else if served.is_empty() || served == "binary/octet-stream" {
                r.warn(
                    check,
                    format!("GET {url} → 200 but Content-Type is {:?}: browsers download instead of display", served),
                    "fix the stored Content-Type (mastomedia migrate --repair)",
                );
            } else if let Some(s) = stored.filter(|s| !served.starts_with(s.as_str())) {
                r.warn(
                    check,
                    format!("GET {url} → 200 served as {served}, stored as {s}"),
                    "check a CDN or proxy rewriting Content-Type",
                );
            } else {
                r.ok(check, format!("GET {url} → 200, Content-Type {served}"));
            }
        }
    }
}

async fn write_test(store: &S3Store, s3: &S3Config, alias: Option<&Alias>, r: &mut Report) {
    let gate = Gate::new(false);
    let key = format!(
        "mastomedia-doctor/probe-{}-{}.txt",
        std::process::id(),
        fastrand::u32(..)
    );
    let headers = ObjectHeaders {
        content_type: "text/plain".to_owned(),
        cache_control: "no-store".to_owned(),
        acl: s3.permission.clone(),
    };
    let body = b"mastomedia doctor probe\n".to_vec();
    if let Err(e) = gate
        .mutate(store.put_bytes(&key, body.clone(), &headers), || Ok(()))
        .await
    {
        if e.code() == "AccessControlListNotSupported" {
            r.fail(
                "write test",
                format!("the provider refuses ACLs ({e})"),
                "set S3_PERMISSION= (empty) and make the bucket public with a bucket policy",
            );
        } else {
            r.fail(
                "write test",
                format!("PUT {key}: {e}"),
                "give these credentials write access to the bucket",
            );
        }
        return;
    }
    let head = store.head(&key).await;
    match head {
        Ok(Some(h)) if h.size == body.len() as u64 => {
            r.ok(
                "write test",
                format!("wrote and read back {key} ({} bytes)", h.size),
            );
        }
        Ok(other) => r.fail(
            "write test",
            format!("{key} was written but reads back as {other:?}"),
            "check the provider's consistency",
        ),
        Err(e) => r.fail(
            "write test",
            format!("HEAD {key}: {e}"),
            "check read access",
        ),
    }
    if let Some(a) = alias.filter(|a| a.tls_ok) {
        public_read(a, store, &key, "probe read", r).await;
    }
    // A second probe, so the delete is a real multi-key DeleteObjects as prune sends it
    // (a single-key probe cannot show a provider that refuses its checksum headers).
    let second = format!("{key}.2");
    if let Err(e) = gate
        .mutate(store.put_bytes(&second, body.clone(), &headers), || Ok(()))
        .await
    {
        r.warn(
            "batch delete",
            format!("PUT {second}: {e}"),
            "check write access",
        );
    }
    let keys = [ObjectKey::new(key.clone()), ObjectKey::new(second.clone())];
    match gate
        .mutate(store.delete_written_batch(&keys), || Ok(s3.delete_checksum))
        .await
    {
        Ok(used) if used == s3.delete_checksum => r.ok(
            "batch delete",
            format!("one DeleteObjects removed both probes ({})", checksum_name(used)),
        ),
        Ok(used) => r.warn(
            "batch delete",
            format!(
                "the provider refused {} and accepted {}: every run falls back after its first refusal",
                checksum_name(s3.delete_checksum),
                checksum_name(used)
            ),
            match used {
                DeleteChecksum::Md5 => "set MASTOMEDIA_DELETE_CHECKSUM=md5 (or remove it)",
                DeleteChecksum::Crc32 => "set MASTOMEDIA_DELETE_CHECKSUM=crc32",
            },
        ),
        Err(e) => {
            r.fail(
                "batch delete",
                format!("DeleteObjects of {key} and {second}: {e}"),
                "give these credentials delete access; if the error names a header, try MASTOMEDIA_DELETE_CHECKSUM=crc32 or md5",
            );
            for k in [&key, &second] {
                if let Err(e) = gate.mutate(store.delete_written(k), || Ok(())).await {
                    r.warn(
                        "write test",
                        format!("could not delete {k}: {e}"),
                        "delete it by hand",
                    );
                }
            }
        }
    }
}

/// How `doctor` names a checksum-header choice.
fn checksum_name(c: DeleteChecksum) -> &'static str {
    match c {
        DeleteChecksum::Md5 => "Content-MD5 only",
        DeleteChecksum::Crc32 => "the SDK's CRC32 headers with Content-MD5",
    }
}
