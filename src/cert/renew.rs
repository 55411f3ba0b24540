//! The renewal flow of `cert renew`, below its wiring in `commands/cert.rs`:
//!
//! ```text
//! standing (current/ and renewal.json of the state directory; ARI, at most when the CA's
//!   Retry-After has passed; else a third of the lifetime; timing::decide)
//!   → preflight (alias rule, CAA) → issue_and_install (account, key kept in pending/,
//!   order with the challenge in the bucket, chain checked, install::install,
//!   pending/ → current/) → confirm_served (TLS probe until the new leaf is served)
//! ```
//!
//! The pure steps ([`ari_choice`], [`ari_wait`], [`facts`], [`installed_meta`],
//! [`failed_meta`], [`bucket_from_endpoint`], [`directory_url`]) are table-tested here; timing itself is
//! [`super::timing`], the alias rule [`super::alias`].
//!
//! Must not: read `Config` (callers pass plain values), or change anything except through
//! [`Gate::mutate`] (account creation, challenge objects, the Linode certificate).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::acme::Acme;
use super::alias::{self, AliasFacts, AliasVerdict};
use super::caa::{self, CaaVerdict};
use super::challenge::BucketResponder;
use super::dns::Dns;
use super::keys::{self, CertInfo, CertKey, KeyType};
use super::linode::{Bucket, Linode};
use super::net::Trust;
use super::state::{AriState, Installed, Meta, Slot, StateDir};
use super::timing::{self, Decision, Facts, Window};
use super::tls;
use super::{CertError, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, install};
use crate::pool::Gate;
use crate::store::s3::S3Store;

/// TLS probes after an install (2 s apart) before reporting that the host still serves
/// another certificate.
pub const PROBE_ATTEMPTS: u32 = 6;

/// The bucket as a dry run without `LINODE_TOKEN` assumes it: named `bucket`, served at
/// `<bucket>.<endpoint host>` (Linode's `https://<cluster>.linodeobjects.com` gives
/// `<bucket>.<cluster>.linodeobjects.com`). `None` without an endpoint or with an empty host.
pub fn bucket_from_endpoint(endpoint: Option<&str>, bucket: &str) -> Option<Bucket> {
    let endpoint = endpoint?;
    let host = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .filter(|h| !h.is_empty())?;
    Some(Bucket {
        label: bucket.to_owned(),
        region: None,
        cluster: host.split('.').next().map(str::to_owned),
        hostname: format!("{bucket}.{host}"),
    })
}

/// Checks that must pass before anything is changed: the domain is served by the bucket
/// ([`alias::decide`]: a CNAME to the bucket's host, or flattened) and CAA allows the CA
/// (`caa_identity`, for `http-01` and the ACME `account` if known). Returns the notes to log.
/// Errors: [`CertError::Setup`] naming the record to add or change; [`CertError::Dns`]
/// when a lookup fails.
pub async fn preflight(
    dns: &Dns,
    domain: &str,
    bucket: &Bucket,
    caa_identity: &str,
    account: Option<&str>,
) -> Result<Vec<String>, CertError> {
    let mut notes = Vec::new();
    let facts = AliasFacts::resolve(dns, domain, bucket.cname_targets()).await?;
    let host = &bucket.hostname;
    match alias::decide(&facts) {
        AliasVerdict::Cname { chain } | AliasVerdict::Unverified { chain } => {
            notes.push(format!("CNAME {domain} → {chain}"));
        }
        AliasVerdict::Flattened => notes.push(format!(
            "{domain} has no CNAME but resolves to the bucket's addresses (flattened CNAME)"
        )),
        AliasVerdict::WrongTarget { chain, .. } => {
            return Err(CertError::Setup(format!(
                "{domain} is a CNAME to {chain} but the bucket is served at {host}: change the record to `{domain}. IN CNAME {host}.`"
            )));
        }
        AliasVerdict::NotCname | AliasVerdict::Missing => {
            return Err(CertError::Setup(format!(
                "{domain} is not a CNAME to the bucket's host {host}: add `{domain}. IN CNAME {host}.` (and remove its A/AAAA records)"
            )));
        }
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

/// The certificate mastomedia installed last, as kept in `current/`.
#[derive(Debug, Clone)]
pub struct Current {
    /// Chain and key.
    pub pair: Installed,
    /// The leaf, parsed.
    pub leaf: CertInfo,
    /// The leaf's DER (for the ARI id).
    pub leaf_der: Vec<u8>,
}

/// Reads `current/`; `None` when nothing is kept or the chain does not parse (logged).
/// Errors: the files cannot be read.
pub fn read_current(state: &StateDir) -> Result<Option<Current>, CertError> {
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

/// The renewal time to keep for certificate `serial` given the CA's `window`: the earlier
/// pick when it was for the same serial and window (so daily runs agree), else the point at
/// `fraction` (0..1, random) of the window (RFC 9773 §4.2).
pub fn ari_choice(
    old: Option<&AriState>,
    serial: &str,
    window: &Window,
    fraction: f64,
) -> DateTime<Utc> {
    match old {
        Some(o) if o.serial == serial && o.window == *window => o.chosen,
        _ => window.pick(fraction),
    }
}

/// How long to wait before asking the CA again: its `Retry-After`, kept between 1 and 12 h.
pub fn ari_wait(retry: Duration) -> chrono::Duration {
    chrono::Duration::from_std(retry)
        .unwrap_or_default()
        .clamp(chrono::Duration::hours(1), chrono::Duration::hours(12))
}

/// The timing facts of a kept certificate `current` with state `meta`: its validity, the
/// ARI time, and the failures counted since the last success.
pub fn facts(
    current: Option<&Current>,
    meta: &Meta,
    ari_time: Option<DateTime<Utc>>,
    bucket_has_cert: Option<bool>,
    force: bool,
) -> Facts {
    Facts {
        validity: current.map(|c| (c.leaf.not_before, c.leaf.not_after)),
        ari_time,
        bucket_has_cert,
        failures: meta
            .last_failure_at
            .filter(|_| meta.failures > 0)
            .map(|at| (meta.failures, at)),
        force,
    }
}

/// Where a run stands: the kept certificate, `renewal.json` (with the CA's latest ARI
/// answer) and the decision.
#[derive(Debug)]
pub struct Standing {
    /// The kept certificate.
    pub current: Option<Current>,
    /// `renewal.json` as this run sees it (written back only when not due).
    pub meta: Meta,
    /// Where this directory's account is kept.
    pub account_path: PathBuf,
    /// Renew now, or wait.
    pub decision: Decision,
}

/// Reads the state of `directory`'s certificate and decides whether to renew at `now`.
/// Asks the CA for ARI (RFC 9773) only when the kept certificate came from the same
/// directory, an account exists and the last answer's `Retry-After` has passed; a failed
/// ARI request is logged and ignored. When not due, a changed `renewal.json` is written.
/// Returns the standing and the account if one was loaded. Errors: state files or the
/// account cannot be read, or the CA is unreachable.
pub async fn standing(
    state: &StateDir,
    directory: &str,
    http: &reqwest::Client,
    bucket_has_cert: Option<bool>,
    force: bool,
    now: DateTime<Utc>,
) -> Result<(Standing, Option<Acme>), CertError> {
    let mut meta = state.meta()?;
    let before = meta.clone();
    let current = read_current(state)?;
    let account_path = state.account_path(directory);
    let same_ca = meta.directory.as_deref() == Some(directory);
    let mut acme = None;
    let mut ari_time = None;
    if let Some(c) = current.as_ref().filter(|_| same_ca) {
        let fresh = meta
            .ari
            .as_ref()
            .filter(|x| x.serial == c.leaf.serial && x.next_check > now);
        if let Some(x) = fresh {
            ari_time = Some(x.chosen);
        } else if let Some(acc) = Acme::load(http.clone(), directory, &account_path).await? {
            match acc.renewal_window(&c.leaf_der).await {
                Ok(Some((window, retry, explanation_url))) => {
                    let chosen =
                        ari_choice(meta.ari.as_ref(), &c.leaf.serial, &window, fastrand::f64());
                    meta.ari = Some(AriState {
                        serial: c.leaf.serial.clone(),
                        window,
                        chosen,
                        next_check: now + ari_wait(retry),
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
    let f = facts(current.as_ref(), &meta, ari_time, bucket_has_cert, force);
    let decision = timing::decide(now, &f);
    if matches!(decision, Decision::Wait { .. }) && meta != before {
        state.write_meta(&meta)?;
    }
    let standing = Standing {
        current,
        meta,
        account_path,
        decision,
    };
    Ok((standing, acme))
}

/// The ACME directory URL: `--directory`, else Let's Encrypt's staging or production one.
pub fn directory_url(explicit: Option<&str>, staging: bool) -> String {
    match (explicit, staging) {
        (Some(d), _) => d.to_owned(),
        (None, true) => LETS_ENCRYPT_STAGING.to_owned(),
        (None, false) => LETS_ENCRYPT.to_owned(),
    }
}

/// The bucket `label` through the Linode API (in `region` when given) and whether it has
/// a certificate now. Errors: the API's, or no such bucket.
pub async fn linode_bucket(
    linode: &Linode,
    label: &str,
    region: Option<&str>,
) -> Result<(Bucket, bool), CertError> {
    let bucket = linode.find_bucket(label, region).await?;
    let has_ssl = linode.ssl(&bucket).await?;
    Ok((bucket, has_ssl))
}

/// `renewal.json` after a successful install at `at`: the failure count and ARI state reset.
pub fn installed_meta(directory: &str, key_type: KeyType, at: DateTime<Utc>) -> Meta {
    Meta {
        directory: Some(directory.to_owned()),
        key_type: Some(key_type),
        installed_at: Some(at),
        ari: None,
        failures: 0,
        last_failure_at: None,
        last_failure: None,
    }
}

/// `meta` after a failed attempt at `at` with message `why` (one more failure, for the
/// backoff of [`timing::backoff`]).
pub fn failed_meta(mut meta: Meta, at: DateTime<Utc>, why: String) -> Meta {
    meta.failures += 1;
    meta.last_failure_at = Some(at);
    meta.last_failure = Some(why);
    meta
}

/// Records a run's `outcome` in `renewal.json`: after a success [`installed_meta`] (its
/// write error is returned), after a failure [`failed_meta`] of `meta` (a write error is
/// only logged, the failure itself matters more).
pub fn record(
    state: &StateDir,
    meta: Meta,
    outcome: &Result<CertInfo, CertError>,
    directory: &str,
    key_type: KeyType,
) -> Result<(), CertError> {
    match outcome {
        Ok(_) => state.write_meta(&installed_meta(directory, key_type, Utc::now())),
        Err(e) => {
            if let Err(w) = state.write_meta(&failed_meta(meta, Utc::now(), e.to_string())) {
                tracing::warn!("could not record the failure: {w}");
            }
            Ok(())
        }
    }
}

/// The inputs of [`issue_and_install`].
pub struct IssueJob<'a> {
    /// The domain (= bucket name).
    pub domain: &'a str,
    /// The ACME directory URL.
    pub directory: &'a str,
    /// `--email`, for a new account.
    pub email: Option<&'a str>,
    /// Key type of the new certificate.
    pub key_type: KeyType,
    /// The dry-run gate.
    pub gate: Gate,
    /// The account, when [`standing`] loaded one.
    pub acme: Option<Acme>,
    /// The client for the CA and the Linode API.
    pub api_http: &'a reqwest::Client,
    /// The client for the challenge self-check.
    pub probe_http: &'a reqwest::Client,
    /// Where the account is kept.
    pub account_path: &'a Path,
    /// The state directory (locked by the caller).
    pub state: &'a StateDir,
    /// The bucket's store, for the challenge object.
    pub store: &'a S3Store,
    /// The ACL of challenge objects (`public-read` when uploads carry ACLs).
    pub acl: Option<String>,
    /// The plain-HTTP port the challenge self-check uses.
    pub http_port: u16,
    /// The Linode API client.
    pub linode: &'a Linode,
    /// The bucket.
    pub bucket: &'a Bucket,
    /// Whether the bucket has a certificate now.
    pub has_ssl: bool,
    /// The kept certificate.
    pub current: Option<&'a Current>,
}

/// Account → key (kept in `pending/`) → order → checks → chain kept → install →
/// `pending/` becomes `current/`. Returns the new leaf. Errors: any step's; a failed
/// install is [`CertError::Install`] saying what the bucket serves now.
pub async fn issue_and_install(j: IssueJob<'_>) -> Result<CertInfo, CertError> {
    let acme = match j.acme {
        Some(a) => a,
        None => {
            j.gate
                .mutate(
                    Acme::create(j.api_http.clone(), j.directory, j.account_path, j.email),
                    || Err(CertError::Setup("dry run".to_owned())),
                )
                .await?
        }
    };
    let key = CertKey::generate(j.key_type)?;
    j.state.write_key(Slot::Pending, key.pem())?;
    let csr = key.csr_der(j.domain)?;
    let responder = BucketResponder {
        store: j.store,
        gate: j.gate,
        acl: j.acl,
        http: j.probe_http.clone(),
        domain: j.domain.to_owned(),
        http_port: j.http_port,
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
    install::install(
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

/// Probes `domain:port` until it serves `leaf` ([`PROBE_ATTEMPTS`], 2 s apart; Linode may
/// take a moment). `Ok(line)` when it does, `Err(line)` (a warning) when it still serves
/// something else.
pub async fn confirm_served(
    domain: &str,
    port: u16,
    trust: &Trust,
    dns: Option<&Dns>,
    leaf: &CertInfo,
) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 1..=PROBE_ATTEMPTS {
        match tls::probe(domain, port, trust, dns).await {
            Ok(p) if p.leaf.serial == leaf.serial => {
                let note = match &p.fault {
                    None => String::new(),
                    Some(f) => format!(" (not trusted here: {f:?}; expected for --staging)"),
                };
                return Ok(format!(
                    "https://{domain}:{port} serves the new certificate{note}."
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
        "warning: Linode accepted the certificate but https://{domain}:{port} does not serve it yet ({last}); check again with `mastomedia cert status` in a few minutes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap()
    }

    #[test]
    fn bucket_hosts_from_the_endpoint() {
        let b =
            bucket_from_endpoint(Some("https://us-east-1.linodeobjects.com"), "m.example").unwrap();
        assert_eq!(b.hostname, "m.example.us-east-1.linodeobjects.com");
        assert_eq!(b.cluster.as_deref(), Some("us-east-1"));
        let b = bucket_from_endpoint(Some("http://127.0.0.1:9000/x"), "m").unwrap();
        assert_eq!(b.hostname, "m.127.0.0.1");
        assert!(bucket_from_endpoint(None, "m").is_none());
        assert!(bucket_from_endpoint(Some("https://"), "m").is_none());
    }

    #[test]
    fn the_ari_pick_is_kept_for_the_same_window_and_serial() {
        let w = Window {
            start: t(0),
            end: t(10),
        };
        let old = AriState {
            serial: "01".into(),
            window: w,
            chosen: t(3),
            next_check: t(1),
            explanation_url: None,
        };
        let other = Window {
            start: t(2),
            end: t(12),
        };
        let cases = [
            (Some(&old), "01", w, 0.5, t(3)),
            (Some(&old), "02", w, 0.5, t(5)),
            (Some(&old), "01", other, 0.0, t(2)),
            (None, "01", w, 1.0, t(10)),
        ];
        for (o, serial, window, fraction, want) in cases {
            assert_eq!(
                ari_choice(o, serial, &window, fraction),
                want,
                "{serial} {window:?}"
            );
        }
        let hours = |s: u64| ari_wait(Duration::from_secs(s)).num_hours();
        assert_eq!([hours(0), hours(3 * 3600), hours(48 * 3600)], [1, 3, 12]);
    }

    #[test]
    fn the_acme_directory() {
        assert_eq!(
            directory_url(Some("https://ca/dir"), true),
            "https://ca/dir"
        );
        assert_eq!(directory_url(None, true), LETS_ENCRYPT_STAGING);
        assert_eq!(directory_url(None, false), LETS_ENCRYPT);
    }

    #[test]
    fn failures_count_until_an_install() {
        let m = failed_meta(Meta::default(), t(1), "boom".into());
        let m = failed_meta(m, t(2), "again".into());
        assert_eq!(m.failures, 2);
        assert_eq!(m.last_failure_at, Some(t(2)));
        let f = facts(None, &m, None, Some(false), false);
        assert_eq!(f.failures, Some((2, t(2))));
        assert_eq!(f.bucket_has_cert, Some(false));
        let ok = installed_meta("https://ca/dir", KeyType::EcdsaP256, t(3));
        assert_eq!((ok.failures, ok.last_failure.as_deref()), (0, None));
        assert_eq!(facts(None, &ok, None, None, true).failures, None);
    }
}
