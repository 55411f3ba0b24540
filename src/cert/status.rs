//! `cert status`: what the domain serves (a TLS probe) next to what mastomedia installed
//! last (the state directory) and when it renews next ([`super::timing::decide`]).
//! Read-only. The `--json` shape is [`StatusReport`]; the human lines are
//! `crate::report::cert::status`, fed by [`StatusReport::lines`].
//!
//! Must not: change anything (no lock, no state written).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::CertError;
use super::dns::Dns;
use super::keys::{CertInfo, KeyType};
use super::net::Trust;
use super::renew::{facts, read_current};
use super::state::StateDir;
use super::timing::{self, Decision};
use super::tls::{self, Probe};
use crate::report::cert::{CertLine, StatusLines};

/// `cert status --json`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The domain.
    pub domain: String,
    /// What the domain serves, when a certificate could be fetched.
    pub live: Option<Probe>,
    /// Why none could be fetched.
    pub live_error: Option<String>,
    /// The certificate mastomedia installed last.
    pub kept: Option<CertInfo>,
    /// The state directory, when it exists.
    pub state_dir: Option<String>,
    /// When `kept` was installed.
    pub installed_at: Option<DateTime<Utc>>,
    /// Its key type.
    pub key_type: Option<KeyType>,
    /// The ACME directory it came from.
    pub directory: Option<String>,
    /// The next renewal (now when due).
    pub next_renewal: Option<DateTime<Utc>>,
    /// What `next_renewal` is based on.
    pub next_renewal_basis: Option<String>,
    /// The last failure's message.
    pub last_failure: Option<String>,
}

impl StatusReport {
    /// Whether the domain serves a certificate that verifies (exit 0; else 1).
    pub fn healthy(&self) -> bool {
        self.live.as_ref().is_some_and(|p| p.fault.is_none())
    }

    /// The plain values of the human lines, for `port` at `now`.
    pub fn lines(&self, port: u16, now: DateTime<Utc>) -> StatusLines {
        StatusLines {
            domain: self.domain.clone(),
            port,
            served: self.live.as_ref().map(|p| {
                (
                    p.fault.is_none(),
                    p.describe(&self.domain, now),
                    p.leaf.serial.clone(),
                )
            }),
            served_error: self.live_error.clone(),
            kept: self.kept.as_ref().map(|k| cert_line(k, now)),
            state_dir: self.state_dir.clone(),
            installed_at: self.installed_at,
            key_type: self.key_type.map(|k| k.to_string()),
            next_renewal: self.next_renewal.zip(self.next_renewal_basis.clone()),
            last_failure: self.last_failure.clone(),
        }
    }
}

/// A certificate as the report lines show it, days counted from `now`.
pub fn cert_line(c: &CertInfo, now: DateTime<Utc>) -> CertLine {
    CertLine {
        names: c.names.clone(),
        issuer: c.issuer.clone(),
        not_after: c.not_after,
        days_left: c.days_left(now),
        serial: c.serial.clone(),
    }
}

/// Probes `domain:port` and reads the state directory under `state_base` (without
/// creating it). Errors: state files that exist but cannot be read.
pub async fn status(
    domain: &str,
    port: u16,
    trust: &Trust,
    dns: Option<&Dns>,
    state_base: Option<&Path>,
    now: DateTime<Utc>,
) -> Result<StatusReport, CertError> {
    let (live, live_error) = match tls::probe(domain, port, trust, dns).await {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut report = StatusReport {
        domain: domain.to_owned(),
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
    if let Some(state) = StateDir::existing(state_base, domain) {
        report.state_dir = Some(state.path().display().to_string());
        let meta = state.meta()?;
        if let Some(c) = read_current(&state)? {
            let ari_time = meta
                .ari
                .as_ref()
                .filter(|x| x.serial == c.leaf.serial)
                .map(|x| x.chosen);
            let f = facts(Some(&c), &meta, ari_time, None, false);
            match timing::decide(now, &f) {
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
    Ok(report)
}
