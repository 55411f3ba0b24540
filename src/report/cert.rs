//! The human lines of `cert renew` and `cert status` (stdout). Takes plain values: the
//! certificate flow (`crate::cert`) builds them, this module only words them.
//!
//! Must not: look anything up, or print secrets (no key material reaches it).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// A time as every cert line shows it: `2026-03-01 04:05 UTC`.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A certificate as the lines describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertLine {
    /// DNS names.
    pub names: Vec<String>,
    /// Issuer, e.g. `R11 (Let's Encrypt)`.
    pub issuer: String,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Whole days from now to `not_after`.
    pub days_left: i64,
    /// Serial number, hex with colons.
    pub serial: String,
}

/// `renew` when nothing is due: `kept` is the installed certificate if one is kept, `at`
/// the next renewal time and `why` what it is based on. One line, no newline.
pub fn not_due(domain: &str, kept: Option<&CertLine>, at: DateTime<Utc>, why: &str) -> String {
    match kept {
        Some(c) => format!(
            "not due: the certificate for {domain} expires {} ({} days left); renewal at {} ({why}). Nothing changed.",
            fmt_time(c.not_after),
            c.days_left,
            fmt_time(at)
        ),
        None => format!(
            "not due: next attempt at {} ({why}). Nothing changed.",
            fmt_time(at)
        ),
    }
}

/// What a `renew --dry-run` would do, after its preflight passed.
#[derive(Debug, Clone)]
pub struct DryRun<'a> {
    /// The preflight notes (CNAME, CAA).
    pub notes: &'a [String],
    /// Whether an ACME account would be created first.
    pub new_account: bool,
    /// Key type, as shown (`ecdsa-p256`).
    pub key_type: String,
    /// The domain.
    pub domain: &'a str,
    /// ACME directory URL.
    pub directory: &'a str,
    /// Bucket label.
    pub bucket: &'a str,
    /// Bucket region id.
    pub region: &'a str,
    /// Whether the bucket already has a certificate (`None`: not known, no token).
    pub replaces: Option<bool>,
    /// HTTPS port probed afterwards.
    pub https_port: u16,
}

/// The dry run's two lines, no trailing newline.
pub fn dry_run(d: &DryRun<'_>) -> String {
    format!(
        "dry run: preflight passed ({}).\nWould {}order a certificate ({}) for {} from {}, write the challenge into bucket {} ({}), {} through the Linode API and probe https://{}:{}. Nothing changed.",
        d.notes.join("; "),
        if d.new_account {
            "create an ACME account, "
        } else {
            ""
        },
        d.key_type,
        d.domain,
        d.directory,
        d.bucket,
        d.region,
        if d.replaces == Some(true) {
            "replace the bucket's certificate"
        } else {
            "install it"
        },
        d.domain,
        d.https_port
    )
}

/// The line after a successful install, no newline.
pub fn renewed(
    domain: &str,
    key_type: &str,
    leaf: &CertLine,
    bucket: &str,
    region: &str,
    next: DateTime<Utc>,
) -> String {
    format!(
        "renewed {domain}: {key_type} certificate from {}, valid until {}, installed on bucket {bucket} ({region}); next renewal around {}.",
        leaf.issuer,
        fmt_time(leaf.not_after),
        fmt_time(next)
    )
}

/// What `cert status` found, as plain values.
#[derive(Debug, Clone, Default)]
pub struct StatusLines {
    /// The domain.
    pub domain: String,
    /// The HTTPS port probed.
    pub port: u16,
    /// The served certificate: whether it verified, its one-line description, its serial.
    pub served: Option<(bool, String, String)>,
    /// Why no certificate could be fetched.
    pub served_error: Option<String>,
    /// The certificate mastomedia installed last, if one is kept.
    pub kept: Option<CertLine>,
    /// The state directory, if it exists.
    pub state_dir: Option<String>,
    /// When the kept certificate was installed.
    pub installed_at: Option<DateTime<Utc>>,
    /// Its key type, as shown.
    pub key_type: Option<String>,
    /// Next renewal and what it is based on.
    pub next_renewal: Option<(DateTime<Utc>, String)>,
    /// The last failure's message.
    pub last_failure: Option<String>,
}

/// `cert status` as text, one `name: value` line each, ending with a newline.
pub fn status(r: &StatusLines) -> String {
    let mut s = String::new();
    let port = r.port;
    let _ = writeln!(s, "domain:        {}", r.domain);
    match (&r.served, &r.served_error) {
        (Some((valid, description, _)), _) => {
            let verdict = if *valid { "valid" } else { "NOT VALID" };
            let _ = writeln!(s, "served (:{port}): {verdict}: {description}");
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
                r.key_type.clone().unwrap_or_default(),
                k.names.join(", "),
                k.issuer,
                fmt_time(k.not_after),
                k.days_left
            );
            if let Some((_, _, serial)) = &r.served
                && *serial != k.serial
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
    if let Some((at, why)) = &r.next_renewal {
        let _ = writeln!(s, "next renewal:  {} ({why})", fmt_time(*at));
    }
    if let Some(f) = &r.last_failure {
        let _ = writeln!(s, "last failure:  {f}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 4, 5, 0).unwrap()
    }

    fn leaf(serial: &str) -> CertLine {
        CertLine {
            names: vec!["media.example".into()],
            issuer: "R11".into(),
            not_after: t(30),
            days_left: 20,
            serial: serial.into(),
        }
    }

    #[test]
    fn not_due_lines() {
        assert_eq!(
            not_due(
                "media.example",
                Some(&leaf("01")),
                t(20),
                "a third of the lifetime left"
            ),
            "not due: the certificate for media.example expires 2026-03-30 04:05 UTC (20 days left); renewal at 2026-03-20 04:05 UTC (a third of the lifetime left). Nothing changed."
        );
        assert_eq!(
            not_due("media.example", None, t(1), "backing off"),
            "not due: next attempt at 2026-03-01 04:05 UTC (backing off). Nothing changed."
        );
    }

    #[test]
    fn status_notes_a_served_certificate_that_is_not_ours() {
        let mut r = StatusLines {
            domain: "media.example".into(),
            port: 443,
            served: Some((true, "names media.example".into(), "02".into())),
            kept: Some(leaf("01")),
            next_renewal: Some((t(20), "ARI".into())),
            ..StatusLines::default()
        };
        let text = status(&r);
        assert!(
            text.contains("served (:443): valid: names media.example"),
            "{text}"
        );
        assert!(
            text.contains("not the one mastomedia installed last"),
            "{text}"
        );
        assert!(
            text.contains("next renewal:  2026-03-20 04:05 UTC (ARI)"),
            "{text}"
        );
        r.served = Some((false, "expired".into(), "01".into()));
        let text = status(&r);
        assert!(
            text.contains("NOT VALID: expired") && !text.contains("note:"),
            "{text}"
        );
        r.served = None;
        r.served_error = Some("refused".into());
        r.kept = None;
        let text = status(&r);
        assert!(text.contains("unreachable: refused"), "{text}");
        assert!(
            text.contains("nothing recorded in the state directory (none yet)"),
            "{text}"
        );
    }
}
