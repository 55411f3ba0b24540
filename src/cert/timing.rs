//! When to renew. Pure functions, table-tested.
//!
//! - With ACME Renewal Information (RFC 9773 §4.2): a time chosen uniformly at random inside
//!   the CA's suggested window (kept, so daily runs agree), or now once the window has
//!   passed.
//! - Without: when a third of the lifetime is left, or half of it for certificates of less
//!   than ten days (`docs/reference/acme-and-linode.md#when-to-renew`). Works for 90-day, 64/45-day and 160-hour
//!   certificates alike.
//! - After failures: back off 1 min, 10 min, 100 min, then a day, so an hourly cron stays
//!   below Let's Encrypt's 5 failed authorizations per hour.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A renewal window suggested by the CA (RFC 9773 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Start of the window.
    pub start: DateTime<Utc>,
    /// End of the window.
    pub end: DateTime<Utc>,
}

impl Window {
    /// The point at `fraction` (0..1) of the window.
    pub fn pick(&self, fraction: f64) -> DateTime<Utc> {
        let span = (self.end - self.start).num_seconds().max(0) as f64;
        self.start + Duration::seconds((span * fraction.clamp(0.0, 1.0)) as i64)
    }
}

/// When to renew a certificate valid from `not_before` to `not_after` without ARI: when a
/// third of the lifetime is left (half for lifetimes under ten days).
pub fn lifetime_renewal(not_before: DateTime<Utc>, not_after: DateTime<Utc>) -> DateTime<Utc> {
    let lifetime = (not_after - not_before).max(Duration::zero());
    let left = if lifetime < Duration::days(10) {
        lifetime / 2
    } else {
        lifetime / 3
    };
    not_after - left
}

/// The wait after `failures` consecutive failed attempts: 1 min, 10 min, 100 min, 1 day.
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::zero(),
        1 => Duration::minutes(1),
        2 => Duration::minutes(10),
        3 => Duration::minutes(100),
        _ => Duration::days(1),
    }
}

/// What a run should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Renew now, for the reason given.
    Renew(String),
    /// Nothing to do before `at`; `why` says what the date is based on.
    Wait {
        /// The earliest time the next run will act.
        at: DateTime<Utc>,
        /// `"a third of the lifetime left"`, `"the CA's renewal window"`, `"backing off"`.
        why: String,
    },
}

/// The facts a decision is made from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The installed certificate's validity (`None`: nothing installed by us).
    pub validity: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The renewal time chosen inside the CA's ARI window, if the CA offers ARI.
    pub ari_time: Option<DateTime<Utc>>,
    /// Whether the bucket reports a certificate (Linode `GET …/ssl`); `None` if unknown.
    pub bucket_has_cert: Option<bool>,
    /// Consecutive failed attempts and the time of the last one.
    pub failures: Option<(u32, DateTime<Utc>)>,
    /// `--force`.
    pub force: bool,
}

/// Decides whether to renew at `now`.
pub fn decide(now: DateTime<Utc>, f: &Facts) -> Decision {
    if f.force {
        return Decision::Renew("--force".to_owned());
    }
    if let Some((n, last)) = f.failures {
        let next = last + backoff(n);
        if n > 0 && now < next {
            return Decision::Wait {
                at: next,
                why: format!("backing off after {n} failed attempt(s)"),
            };
        }
    }
    let Some((not_before, not_after)) = f.validity else {
        return Decision::Renew("no certificate installed by mastomedia yet".to_owned());
    };
    if f.bucket_has_cert == Some(false) {
        return Decision::Renew(
            "the bucket has no certificate (Linode reports ssl: false)".to_owned(),
        );
    }
    if not_after <= now {
        return Decision::Renew(format!("the certificate expired at {not_after}"));
    }
    let (at, why) = match f.ari_time {
        Some(t) => (t, "the CA's renewal window (ARI)"),
        None => (
            lifetime_renewal(not_before, not_after),
            if not_after - not_before < Duration::days(10) {
                "half of the lifetime left"
            } else {
                "a third of the lifetime left"
            },
        ),
    };
    if now >= at {
        Decision::Renew(format!("due since {at} ({why})"))
    } else {
        Decision::Wait {
            at,
            why: why.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn lifetimes() {
        let nb = t("2026-01-01T00:00:00Z");
        assert_eq!(
            lifetime_renewal(nb, nb + Duration::days(90)),
            nb + Duration::days(60)
        );
        assert_eq!(
            lifetime_renewal(nb, nb + Duration::days(45)),
            nb + Duration::days(30)
        );
        assert_eq!(
            lifetime_renewal(nb, nb + Duration::hours(160)),
            nb + Duration::hours(80)
        );
        assert_eq!(
            lifetime_renewal(nb, nb + Duration::hours(1)),
            nb + Duration::minutes(30)
        );
    }

    #[test]
    fn decisions() {
        let nb = t("2026-01-01T00:00:00Z");
        let na = nb + Duration::days(90);
        let base = Facts {
            validity: Some((nb, na)),
            bucket_has_cert: Some(true),
            ..Facts::default()
        };
        let at = |d: i64| nb + Duration::days(d);
        assert!(matches!(decide(at(10), &base), Decision::Wait { at: w, .. } if w == at(60)));
        assert!(matches!(decide(at(61), &base), Decision::Renew(_)));
        assert!(matches!(decide(at(91), &base), Decision::Renew(_)));
        let forced = Facts {
            force: true,
            ..base.clone()
        };
        assert!(matches!(decide(at(1), &forced), Decision::Renew(_)));
        let none = Facts::default();
        assert!(matches!(decide(at(1), &none), Decision::Renew(_)));
        let gone = Facts {
            bucket_has_cert: Some(false),
            ..base.clone()
        };
        assert!(matches!(decide(at(1), &gone), Decision::Renew(_)));
        let ari = Facts {
            ari_time: Some(at(20)),
            ..base.clone()
        };
        assert!(matches!(decide(at(10), &ari), Decision::Wait { at: w, .. } if w == at(20)));
        assert!(matches!(decide(at(21), &ari), Decision::Renew(_)));
        let failing = Facts {
            failures: Some((2, at(61))),
            ..base.clone()
        };
        match decide(at(61) + Duration::minutes(5), &failing) {
            Decision::Wait { at: w, .. } => assert_eq!(w, at(61) + Duration::minutes(10)),
            d => panic!("{d:?}"),
        }
        assert!(matches!(decide(at(62), &failing), Decision::Renew(_)));
    }

    #[test]
    fn window_pick_stays_inside() {
        let w = Window {
            start: t("2026-03-01T00:00:00Z"),
            end: t("2026-03-03T00:00:00Z"),
        };
        assert_eq!(w.pick(0.0), w.start);
        assert_eq!(w.pick(1.0), w.end);
        assert_eq!(w.pick(0.5), t("2026-03-02T00:00:00Z"));
        assert_eq!(backoff(4), Duration::days(1));
    }
}
