//! `mastomedia cert renew` and `cert status`: wiring of [`crate::cert`].
//!
//! Order of `renew`: config (S3 storage, LINODE_TOKEN, bucket = domain) → state directory
//! and its lock → the bucket through the Linode API → timing (ARI or a third of the
//! lifetime; exit 0 "not due") → preflight (CNAME to the bucket host, CAA) → `--dry-run`
//! stops here → account, new key (kept in `pending/` first), order with the challenge
//! object in the bucket → chain checked and kept → delete + upload through the Linode API,
//! retried, the previous certificate re-uploaded if the new one cannot be installed →
//! `pending/` becomes `current/` → TLS probe of the domain.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{CommandError, load_config};
use crate::cert::acme::Acme;
use crate::cert::caa::{self, CaaVerdict};
use crate::cert::challenge::BucketResponder;
use crate::cert::dns::Dns;
use crate::cert::keys::{self, CertKey, KeyType};
use crate::cert::linode::{Bucket, Linode};
use crate::cert::net::{Trust, http_client};
use crate::cert::state::{AriState, Installed, Meta, Slot, StateDir};
use crate::cert::timing::{self, Decision, Facts};
use crate::cert::tls::{self, Probe};
use crate::cert::{
    CertError, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, normalize_name, split_alias_host,
};
use crate::cli::cert::{Args, CertCommand, KeyTypeArg, NetArgs, RenewArgs, StatusArgs};
use crate::config::{Config, LinodeConfig, S3Config, StorageConfig};
use crate::pool::Gate;
use crate::report::ExitCode;
use crate::store::Limiter;
use crate::store::s3::S3Store;

/// The bucket as a dry run without `LINODE_TOKEN` assumes it: named `S3_BUCKET`, served at
/// `<bucket>.<S3_ENDPOINT host>` (Linode's `https://<cluster>.linodeobjects.com` gives
/// `<bucket>.<cluster>.linodeobjects.com`). `None` without `S3_ENDPOINT`.
fn bucket_from_endpoint(s3: &S3Config) -> Option<Bucket> {
    let endpoint = s3.endpoint.as_deref()?;
    let host = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .filter(|h| !h.is_empty())?;
    Some(Bucket {
        label: s3.bucket.clone(),
        region: None,
        cluster: host.split('.').next().map(str::to_owned),
        hostname: format!("{}.{host}", s3.bucket),
    })
}

/// Upload attempts of a new certificate before the previous one is restored.
const UPLOAD_ATTEMPTS: u32 = 3;
/// TLS probes after an install (2 s apart) before reporting that the host still serves
/// another certificate.
const PROBE_ATTEMPTS: u32 = 6;

/// Runs `cert renew` or `cert status`; returns the exit code.
pub async fn run(env_file: &Path, args: Args, quiet: bool) -> Result<ExitCode, CommandError> {
    match args.command {
        CertCommand::Renew(a) => renew(env_file, a, quiet).await,
        CertCommand::Status(a) => status(env_file, a).await,
    }
}

/// The exit code a certificate error maps to: 2 for what the admin must fix first, 3 when
/// something needed is unreachable or refuses us, 1 for a failed attempt.
pub fn exit_code(e: &CertError) -> ExitCode {
    match e {
        CertError::Setup(_) => ExitCode::Usage,
        CertError::Network(_)
        | CertError::Dns(_)
        | CertError::LinodeAuth(_)
        | CertError::Locked(_)
        | CertError::File { .. } => ExitCode::Fatal,
        CertError::Acme(_)
        | CertError::Invalid(_)
        | CertError::Linode { .. }
        | CertError::Install(_) => ExitCode::ItemsFailed,
    }
}

fn fail(e: CertError) -> CommandError {
    CommandError {
        code: exit_code(&e),
        error: anyhow!(e),
    }
}

fn s3_config(cfg: &Config) -> Result<S3Config, CommandError> {
    match &cfg.storage {
        StorageConfig::S3(s) => Ok(s.clone()),
        StorageConfig::Filesystem(_) => Err(CommandError::usage(anyhow!(
            "cert needs object storage (S3_ENABLED=true): the certificate is installed on the bucket that serves S3_ALIAS_HOST"
        ))),
    }
}

/// The domain: `--domain`, else S3_ALIAS_HOST's host (which must have no path or port).
fn domain_of(net: &NetArgs, s3: &S3Config) -> Result<String, CommandError> {
    if let Some(d) = &net.domain {
        return Ok(normalize_name(d));
    }
    let alias = s3.alias_host.as_deref().ok_or_else(|| {
        CommandError::usage(anyhow!(
            "S3_ALIAS_HOST is not set: set it to the media domain (e.g. files.example.social), or pass --domain"
        ))
    })?;
    let (host, path) = split_alias_host(alias);
    if !path.is_empty() || host.contains(':') {
        return Err(CommandError::usage(anyhow!(
            "S3_ALIAS_HOST={alias} has a path or a port; a bucket certificate is for a bare host name: pass --domain"
        )));
    }
    Ok(normalize_name(host))
}

fn directory_of(a: &RenewArgs) -> String {
    match (&a.directory, a.staging) {
        (Some(d), _) => d.clone(),
        (None, true) => LETS_ENCRYPT_STAGING.to_owned(),
        (None, false) => LETS_ENCRYPT.to_owned(),
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Checks that must pass before anything is changed: the domain is a CNAME to the bucket's
/// host (or, flattened, resolves to the same addresses) and CAA allows the CA.
async fn preflight(
    dns: &Dns,
    domain: &str,
    bucket: &Bucket,
    caa_identity: &str,
    account: Option<&str>,
) -> Result<Vec<String>, CertError> {
    let mut notes = Vec::new();
    let targets = bucket.cname_targets();
    let chain = dns.cname_chain(domain).await?;
    if chain.is_empty() {
        let mine = dns.addresses(domain).await?;
        let theirs = dns.addresses(&bucket.hostname).await?;
        if mine.is_empty() || mine.iter().any(|ip| !theirs.contains(ip)) {
            return Err(CertError::Setup(format!(
                "{domain} is not a CNAME to the bucket's host {}: add `{domain}. IN CNAME {}.` (and remove its A/AAAA records)",
                bucket.hostname, bucket.hostname
            )));
        }
        notes.push(format!(
            "{domain} has no CNAME but resolves to the bucket's addresses (flattened CNAME)"
        ));
    } else if !targets.contains(&chain[0]) && !chain.iter().any(|h| targets.contains(h)) {
        return Err(CertError::Setup(format!(
            "{domain} is a CNAME to {} but the bucket is served at {}: change the record to `{domain}. IN CNAME {}.`",
            chain.join(" → "),
            bucket.hostname,
            bucket.hostname
        )));
    } else {
        notes.push(format!("CNAME {domain} → {}", chain.join(" → ")));
    }
    let set = dns.relevant_caa(domain).await.map_err(|e| {
        CertError::Setup(format!(
            "{e}. A CA refuses to issue while CAA lookups fail (often broken DNSSEC): fix the zone's name servers"
        ))
    })?;
    match caa::evaluate(set.as_ref(), caa_identity, "http-01", account) {
        CaaVerdict::NoPolicy => notes.push("CAA: no records, any CA may issue".to_owned()),
        CaaVerdict::Allowed { at } => notes.push(format!("CAA at {at} allows {caa_identity}")),
        CaaVerdict::Forbidden { at, reason, record } => {
            return Err(CertError::Setup(format!(
                "CAA records at {at} do not allow {caa_identity} to issue for {domain}: {reason}. Add this record beside them:\n    {record}"
            )));
        }
    }
    Ok(notes)
}

/// What `renew` learned about the installed certificate.
struct Current {
    pair: Installed,
    leaf: keys::CertInfo,
    leaf_der: Vec<u8>,
}

fn read_current(state: &StateDir) -> Result<Option<Current>, CertError> {
    let Some(pair) = state.read(Slot::Current)? else {
        return Ok(None);
    };
    match keys::parse_chain(&pair.cert_pem).and_then(|c| {
        let der = c[0].to_vec();
        keys::info(&der).map(|i| (i, der))
    }) {
        Ok((leaf, leaf_der)) => Ok(Some(Current {
            pair,
            leaf,
            leaf_der,
        })),
        Err(e) => {
            tracing::warn!("the kept certificate does not parse ({e}); treating it as absent");
            Ok(None)
        }
    }
}

async fn renew(env_file: &Path, a: RenewArgs, quiet: bool) -> Result<ExitCode, CommandError> {
    let (cfg, vars) = Config::load_with_vars(env_file)?;
    let s3 = s3_config(&cfg)?;
    let domain = domain_of(&a.net, &s3)?;
    let lcfg = LinodeConfig::from_vars(&vars);
    // A dry run without a token still checks what it can (timing, CNAME, CAA) and says
    // what it skipped; a real run needs the token.
    let token = match lcfg.token.clone() {
        Some(t) => Some(t),
        None if a.dry_run => None,
        None => {
            return Err(CommandError::usage(anyhow!(
                "LINODE_TOKEN is not set: add a Linode personal access token with Object Storage read/write scope to the env file or the environment (never a flag)"
            )));
        }
    };
    if s3.bucket != domain {
        return Err(CommandError::usage(anyhow!(
            "S3_BUCKET={} but the domain is {domain}: Linode serves a custom domain with its own certificate only from a bucket named exactly like the domain",
            s3.bucket
        )));
    }
    let directory = directory_of(&a);
    let key_type = match a.key_type {
        KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
        KeyTypeArg::Rsa2048 => KeyType::Rsa2048,
    };
    let gate = Gate::new(a.dry_run);
    let trust = Trust::load(&a.net.ca_file).map_err(fail)?;
    let dns = Dns::new(a.net.resolver).map_err(fail)?;
    let probe_dns = a.net.resolver.map(|_| &dns);
    let api_http = http_client(&trust, None, 0).map_err(fail)?;
    let probe_http = http_client(&trust, probe_dns, 10).map_err(fail)?;
    let state = StateDir::open(a.net.state_dir.as_deref(), &domain).map_err(fail)?;
    let _lock = state.lock().map_err(fail)?;
    let now = Utc::now();
    let (linode, bucket, has_ssl) = match token {
        Some(token) => {
            let linode = Linode::new(api_http.clone(), &lcfg.api_url, token).map_err(fail)?;
            let bucket = linode
                .find_bucket(&domain, lcfg.region.as_deref())
                .await
                .map_err(fail)?;
            let has_ssl = linode.ssl(&bucket).await.map_err(fail)?;
            (Some(linode), bucket, Some(has_ssl))
        }
        None => {
            let bucket = bucket_from_endpoint(&s3).ok_or_else(|| {
                CommandError::usage(anyhow!(
                    "without LINODE_TOKEN the bucket's host is derived from S3_ENDPOINT, which is not set: set S3_ENDPOINT (e.g. https://us-east-1.linodeobjects.com) or LINODE_TOKEN"
                ))
            })?;
            eprintln!(
                "dry run without LINODE_TOKEN: skipped the bucket lookup and the installed-certificate check through the Linode API; the CNAME target {} is derived from S3_ENDPOINT",
                bucket.hostname
            );
            (None, bucket, None)
        }
    };
    let mut meta = state.meta().map_err(fail)?;
    let meta_before = meta.clone();
    let current = read_current(&state).map_err(fail)?;
    let account_path = state.account_path(&directory);
    let same_ca = meta.directory.as_deref() == Some(directory.as_str());

    // ARI: ask at most when the CA's Retry-After (capped at 12 h) has passed.
    let mut acme: Option<Acme> = None;
    let mut ari_time = None;
    if let Some(c) = current.as_ref().filter(|_| same_ca) {
        let fresh = meta
            .ari
            .as_ref()
            .filter(|x| x.serial == c.leaf.serial && x.next_check > now);
        if let Some(x) = fresh {
            ari_time = Some(x.chosen);
        } else if let Some(acc) = Acme::load(api_http.clone(), &directory, &account_path)
            .await
            .map_err(fail)?
        {
            match acc.renewal_window(&c.leaf_der).await {
                Ok(Some((window, retry, explanation_url))) => {
                    let chosen = match &meta.ari {
                        Some(old) if old.serial == c.leaf.serial && old.window == window => {
                            old.chosen
                        }
                        _ => window.pick(fastrand::f64()),
                    };
                    let wait = chrono::Duration::from_std(retry)
                        .unwrap_or_default()
                        .clamp(chrono::Duration::hours(1), chrono::Duration::hours(12));
                    meta.ari = Some(AriState {
                        serial: c.leaf.serial.clone(),
                        window,
                        chosen,
                        next_check: now + wait,
                        explanation_url,
                    });
                    ari_time = Some(chosen);
                }
                Ok(None) => meta.ari = None,
                Err(e) => tracing::warn!("could not fetch the CA's renewal information: {e}"),
            }
            acme = Some(acc);
        }
    }
    let facts = Facts {
        validity: current
            .as_ref()
            .map(|c| (c.leaf.not_before, c.leaf.not_after)),
        ari_time,
        bucket_has_cert: has_ssl,
        failures: meta
            .last_failure_at
            .filter(|_| meta.failures > 0)
            .map(|at| (meta.failures, at)),
        force: a.force,
    };
    let reason = match timing::decide(now, &facts) {
        Decision::Wait { at, why } => {
            if meta != meta_before {
                state.write_meta(&meta).map_err(fail)?;
            }
            match &current {
                Some(c) => crate::outln!(
                    "not due: the certificate for {domain} expires {} ({} days left); renewal at {} ({why}). Nothing changed.",
                    fmt_time(c.leaf.not_after),
                    c.leaf.days_left(now),
                    fmt_time(at)
                ),
                None => crate::outln!(
                    "not due: next attempt at {} ({why}). Nothing changed.",
                    fmt_time(at)
                ),
            }
            return Ok(ExitCode::Success);
        }
        Decision::Renew(reason) => reason,
    };
    if !quiet {
        let verb = if a.dry_run { "would renew" } else { "renewing" };
        eprintln!("{verb} the certificate for {domain}: {reason}");
    }

    if acme.is_none() {
        acme = Acme::load(api_http.clone(), &directory, &account_path)
            .await
            .map_err(fail)?;
    }
    let notes = preflight(
        &dns,
        &domain,
        &bucket,
        &a.caa_identity,
        acme.as_ref().map(Acme::account_uri),
    )
    .await
    .map_err(fail)?;
    for n in &notes {
        tracing::info!("preflight: {n}");
    }
    if gate.is_dry_run() {
        crate::outln!(
            "dry run: preflight passed ({}).\nWould {}order a certificate ({key_type}) for {domain} from {directory}, write the challenge into bucket {} ({}), {} through the Linode API and probe https://{domain}:{}. Nothing changed.",
            notes.join("; "),
            if acme.is_none() {
                "create an ACME account, "
            } else {
                ""
            },
            bucket.label,
            bucket.region_id(),
            if has_ssl == Some(true) {
                "replace the bucket's certificate"
            } else {
                "install it"
            },
            a.net.https_port
        );
        return Ok(ExitCode::Success);
    }
    let (Some(linode), Some(has_ssl)) = (linode, has_ssl) else {
        // Unreachable: only a dry run goes on without a token, and it stopped above.
        return Err(CommandError::usage(anyhow!("LINODE_TOKEN is not set")));
    };

    let outcome = issue_and_install(IssueJob {
        a: &a,
        s3: &s3,
        domain: &domain,
        directory: &directory,
        key_type,
        gate,
        acme,
        api_http: &api_http,
        probe_http: &probe_http,
        account_path: &account_path,
        state: &state,
        linode: &linode,
        bucket: &bucket,
        has_ssl,
        current: current.as_ref(),
    })
    .await;
    match outcome {
        Ok(leaf) => {
            meta = Meta {
                directory: Some(directory.clone()),
                key_type: Some(key_type),
                installed_at: Some(Utc::now()),
                ari: None,
                failures: 0,
                last_failure_at: None,
                last_failure: None,
            };
            state.write_meta(&meta).map_err(fail)?;
            let next = timing::lifetime_renewal(leaf.not_before, leaf.not_after);
            let probe = confirm_served(&domain, &a.net, &trust, probe_dns, &leaf).await;
            crate::outln!(
                "renewed {domain}: {key_type} certificate from {}, valid until {}, installed on bucket {} ({}); next renewal around {}.",
                leaf.issuer,
                fmt_time(leaf.not_after),
                bucket.label,
                bucket.region_id(),
                fmt_time(next)
            );
            match probe {
                Ok(line) => {
                    crate::outln!("{line}");
                    Ok(ExitCode::Success)
                }
                Err(line) => {
                    crate::outln!("{line}");
                    Ok(ExitCode::ItemsFailed)
                }
            }
        }
        Err(e) => {
            meta.failures += 1;
            meta.last_failure_at = Some(Utc::now());
            meta.last_failure = Some(e.to_string());
            if let Err(w) = state.write_meta(&meta) {
                tracing::warn!("could not record the failure: {w}");
            }
            Err(fail(e))
        }
    }
}

struct IssueJob<'a> {
    a: &'a RenewArgs,
    s3: &'a S3Config,
    domain: &'a str,
    directory: &'a str,
    key_type: KeyType,
    gate: Gate,
    acme: Option<Acme>,
    api_http: &'a reqwest::Client,
    probe_http: &'a reqwest::Client,
    account_path: &'a Path,
    state: &'a StateDir,
    linode: &'a Linode,
    bucket: &'a Bucket,
    has_ssl: bool,
    current: Option<&'a Current>,
}

/// Account → key → order → checks → install. Returns the new leaf.
async fn issue_and_install(j: IssueJob<'_>) -> Result<keys::CertInfo, CertError> {
    let acme = match j.acme {
        Some(a) => a,
        None => {
            j.gate
                .mutate(
                    Acme::create(
                        j.api_http.clone(),
                        j.directory,
                        j.account_path,
                        j.a.email.as_deref(),
                    ),
                    || Err(CertError::Setup("dry run".to_owned())),
                )
                .await?
        }
    };
    let key = CertKey::generate(j.key_type)?;
    j.state.write_key(Slot::Pending, key.pem())?;
    let csr = key.csr_der(j.domain)?;
    let store = S3Store::new(j.s3, Limiter::new(None, 4));
    let responder = BucketResponder {
        store: &store,
        gate: j.gate,
        acl: j.s3.permission.as_ref().map(|_| "public-read".to_owned()),
        http: j.probe_http.clone(),
        domain: j.domain.to_owned(),
        http_port: j.a.http_port,
    };
    let replaces = match (j.current, j.state.meta()?.ari) {
        (Some(c), Some(_)) => Acme::cert_id(&c.leaf_der).ok(),
        _ => None,
    };
    let chain = acme
        .issue(j.domain, &csr, replaces.as_deref(), &responder)
        .await?;
    let leaf = keys::validate_new(&chain, &key, j.domain, Utc::now())?;
    let new = Installed {
        cert_pem: chain,
        key_pem: key.pem().to_owned(),
    };
    j.state.write(Slot::Pending, &new)?;
    install(
        j.linode,
        j.bucket,
        &new,
        j.current.map(|c| &c.pair),
        j.has_ssl,
        j.gate,
    )
    .await?;
    j.state.promote_pending()?;
    Ok(leaf)
}

/// Replaces the bucket's certificate with `new`. Linode wants a delete before an upload, so
/// the new chain and key are already on disk; the upload is tried [`UPLOAD_ATTEMPTS`]
/// times, then `previous` (what was installed) is uploaded again so the bucket never stays
/// without a certificate.
async fn install(
    linode: &Linode,
    bucket: &Bucket,
    new: &Installed,
    previous: Option<&Installed>,
    had_ssl: bool,
    gate: Gate,
) -> Result<(), CertError> {
    if had_ssl {
        if previous.is_none() {
            tracing::warn!(
                "the bucket has a certificate mastomedia did not install; it cannot be restored if the upload fails"
            );
        }
        gate.mutate(linode.delete_ssl(bucket), || Ok(())).await?;
    }
    let mut last: Option<CertError> = None;
    for attempt in 1..=UPLOAD_ATTEMPTS {
        match gate
            .mutate(
                linode.upload_ssl(bucket, &new.cert_pem, &new.key_pem),
                || Ok(()),
            )
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!("upload attempt {attempt}/{UPLOAD_ATTEMPTS} failed: {e}");
                let stop = matches!(e, CertError::LinodeAuth(_));
                last = Some(e);
                if stop {
                    break;
                }
                if attempt < UPLOAD_ATTEMPTS {
                    tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                }
            }
        }
    }
    let err = last.expect("at least one attempt");
    let Some(prev) = previous.filter(|_| had_ssl) else {
        let before = if had_ssl {
            "the certificate it had was not installed by mastomedia, so it could not be restored: THE BUCKET HAS NO CERTIFICATE NOW"
        } else {
            "the bucket had none before"
        };
        return Err(CertError::Install(format!(
            "the new certificate could not be installed ({err}); {before}. The new chain and key are kept in the state directory (pending/); run again, or upload them in the Linode Cloud Manager"
        )));
    };
    for attempt in 1..=UPLOAD_ATTEMPTS {
        match gate
            .mutate(
                linode.upload_ssl(bucket, &prev.cert_pem, &prev.key_pem),
                || Ok(()),
            )
            .await
        {
            Ok(()) => {
                return Err(CertError::Install(format!(
                    "the new certificate could not be installed ({err}); the previous certificate was restored and is served again. The new chain and key are kept in the state directory (pending/); the next run tries again"
                )));
            }
            Err(e) => {
                tracing::warn!("restore attempt {attempt}/{UPLOAD_ATTEMPTS} failed: {e}");
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
        }
    }
    Err(CertError::Install(format!(
        "the new certificate could not be installed ({err}) and the previous one could not be restored: THE BUCKET HAS NO CERTIFICATE NOW. Upload pending/cert.pem and pending/key.pem from the state directory in the Linode Cloud Manager, or run again"
    )))
}

/// Probes the domain until it serves `leaf` (Linode may take a moment). `Ok(line)` when it
/// does, `Err(line)` when it still serves something else.
async fn confirm_served(
    domain: &str,
    net: &NetArgs,
    trust: &Trust,
    dns: Option<&Dns>,
    leaf: &keys::CertInfo,
) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 1..=PROBE_ATTEMPTS {
        match tls::probe(domain, net.https_port, trust, dns).await {
            Ok(p) if p.leaf.serial == leaf.serial => {
                let note = match &p.fault {
                    None => String::new(),
                    Some(f) => format!(" (not trusted here: {f:?}; expected for --staging)"),
                };
                return Ok(format!(
                    "https://{domain}:{} serves the new certificate{note}.",
                    net.https_port
                ));
            }
            Ok(p) => {
                last = format!(
                    "it still serves serial {} from {}",
                    p.leaf.serial, p.leaf.issuer
                )
            }
            Err(e) => last = e.to_string(),
        }
        if attempt < PROBE_ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    Err(format!(
        "warning: Linode accepted the certificate but https://{domain}:{} does not serve it yet ({last}); check again with `mastomedia cert status` in a few minutes",
        net.https_port
    ))
}

/// `cert status --json`.
#[derive(Debug, Serialize)]
struct StatusReport {
    domain: String,
    live: Option<Probe>,
    live_error: Option<String>,
    kept: Option<keys::CertInfo>,
    state_dir: Option<String>,
    installed_at: Option<DateTime<Utc>>,
    key_type: Option<KeyType>,
    directory: Option<String>,
    next_renewal: Option<DateTime<Utc>>,
    next_renewal_basis: Option<String>,
    last_failure: Option<String>,
}

async fn status(env_file: &Path, a: StatusArgs) -> Result<ExitCode, CommandError> {
    let cfg = load_config(env_file)?;
    let s3 = s3_config(&cfg)?;
    let domain = domain_of(&a.net, &s3)?;
    let trust = Trust::load(&a.net.ca_file).map_err(fail)?;
    let dns = match a.net.resolver {
        Some(_) => Some(Dns::new(a.net.resolver).map_err(fail)?),
        None => None,
    };
    let now = Utc::now();
    let (live, live_error) = match tls::probe(&domain, a.net.https_port, &trust, dns.as_ref()).await
    {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut report = StatusReport {
        domain: domain.clone(),
        live,
        live_error,
        kept: None,
        state_dir: None,
        installed_at: None,
        key_type: None,
        directory: None,
        next_renewal: None,
        next_renewal_basis: None,
        last_failure: None,
    };
    if let Some(state) = StateDir::existing(a.net.state_dir.as_deref(), &domain) {
        report.state_dir = Some(state.path().display().to_string());
        let meta = state.meta().map_err(fail)?;
        if let Some(c) = read_current(&state).map_err(fail)? {
            let facts = Facts {
                validity: Some((c.leaf.not_before, c.leaf.not_after)),
                ari_time: meta
                    .ari
                    .as_ref()
                    .filter(|x| x.serial == c.leaf.serial)
                    .map(|x| x.chosen),
                failures: meta
                    .last_failure_at
                    .filter(|_| meta.failures > 0)
                    .map(|at| (meta.failures, at)),
                ..Facts::default()
            };
            match timing::decide(now, &facts) {
                Decision::Wait { at, why } => {
                    report.next_renewal = Some(at);
                    report.next_renewal_basis = Some(why);
                }
                Decision::Renew(why) => {
                    report.next_renewal = Some(now);
                    report.next_renewal_basis = Some(format!("due now: {why}"));
                }
            }
            report.kept = Some(c.leaf);
        }
        report.installed_at = meta.installed_at;
        report.key_type = meta.key_type;
        report.directory = meta.directory;
        report.last_failure = meta.last_failure;
    }
    let healthy = report.live.as_ref().is_some_and(|p| p.fault.is_none());
    if a.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        crate::out!("{}", human_status(&report, a.net.https_port, now));
    }
    Ok(if healthy {
        ExitCode::Success
    } else {
        ExitCode::ItemsFailed
    })
}

fn human_status(r: &StatusReport, port: u16, now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "domain:        {}", r.domain);
    match (&r.live, &r.live_error) {
        (Some(p), _) => {
            let verdict = if p.fault.is_some() {
                "NOT VALID"
            } else {
                "valid"
            };
            let _ = writeln!(
                s,
                "served (:{port}): {verdict}: {}",
                p.describe(&r.domain, now)
            );
        }
        (None, Some(e)) => {
            let _ = writeln!(s, "served (:{port}): unreachable: {e}");
        }
        (None, None) => {}
    }
    match &r.kept {
        Some(k) => {
            let _ = writeln!(
                s,
                "installed:     {} by mastomedia ({}), names {}, issuer {}, expires {} ({} days left)",
                r.installed_at.map(fmt_time).unwrap_or_else(|| "?".into()),
                r.key_type.map(|k| k.to_string()).unwrap_or_default(),
                k.names.join(", "),
                k.issuer,
                fmt_time(k.not_after),
                k.days_left(now)
            );
            if let Some(live) = &r.live
                && live.leaf.serial != k.serial
            {
                let _ = writeln!(
                    s,
                    "note:          the served certificate is not the one mastomedia installed last"
                );
            }
        }
        None => {
            let _ = writeln!(
                s,
                "installed:     nothing recorded in {}",
                r.state_dir
                    .as_deref()
                    .unwrap_or("the state directory (none yet)")
            );
        }
    }
    if let (Some(at), Some(why)) = (r.next_renewal, &r.next_renewal_basis) {
        let _ = writeln!(s, "next renewal:  {} ({why})", fmt_time(at));
    }
    if let Some(f) = &r.last_failure {
        let _ = writeln!(s, "last failure:  {f}");
    }
    s
}
