//! CAA evaluation (RFC 8659 §4, parameters of RFC 8657): given the relevant CAA record set
//! of a name (found by [`super::dns::Dns::relevant_caa`]), may a CA issue a non-wildcard
//! certificate for it with a given validation method and account? Pure; table-tested.

use serde::Serialize;

/// One CAA record: `flags tag "value"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaaRecord {
    /// Flag 128 (issuer critical): an unknown critical tag forbids issuance.
    pub critical: bool,
    /// Property tag, lower case (`issue`, `issuewild`, `iodef`, ...).
    pub tag: String,
    /// The value as text (`letsencrypt.org; validationmethods=http-01`).
    pub value: String,
}

impl std::fmt::Display for CaaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} \"{}\"",
            if self.critical { 128 } else { 0 },
            self.tag,
            self.value
        )
    }
}

/// The relevant record set of a name: the records and the name that holds them (RFC 8659
/// §3: the first non-empty set found climbing from the name towards the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaaSet {
    /// The name the set was found at (no trailing dot).
    pub at: String,
    /// The records.
    pub records: Vec<CaaRecord>,
}

/// The verdict for one CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum CaaVerdict {
    /// No CAA records anywhere up the tree: any CA may issue.
    NoPolicy,
    /// The set at `at` allows the CA.
    Allowed {
        /// Where the deciding set is.
        at: String,
    },
    /// The set at `at` forbids the CA; `record` is the exact record to add (beside the
    /// existing ones) to allow it.
    Forbidden {
        /// Where the deciding set is.
        at: String,
        /// Why (which records, which parameter).
        reason: String,
        /// The zone-file line that allows the CA, e.g.
        /// `example.social. IN CAA 0 issue "letsencrypt.org"`.
        record: String,
    },
}

/// Tags this evaluator understands; an unknown tag with the critical flag forbids issuance
/// (RFC 8659 §4.1).
const KNOWN_TAGS: &[&str] = &[
    "issue",
    "issuewild",
    "iodef",
    "contactemail",
    "contactphone",
    "issuemail",
    "issuevmc",
];

/// An `issue` value split into the issuer domain name and its parameters (RFC 8659 §4.2).
/// `issue ";"` yields an empty issuer (nobody may issue).
pub fn parse_issue_value(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = value.split(';');
    let issuer = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    (issuer, params)
}

/// Decides whether `ca` (an issuer domain name such as `letsencrypt.org`) may issue a
/// non-wildcard certificate validated by `method` (`http-01`) for an account whose URI is
/// `account` (unknown before the account exists: then an `accounturi` pin is not held
/// against it). `set` is `None` when no CAA records exist at or above the name.
pub fn evaluate(set: Option<&CaaSet>, ca: &str, method: &str, account: Option<&str>) -> CaaVerdict {
    let Some(set) = set.filter(|s| !s.records.is_empty()) else {
        return CaaVerdict::NoPolicy;
    };
    let record = format!("{}. IN CAA 0 issue \"{ca}\"", set.at);
    let forbidden = |reason: String| CaaVerdict::Forbidden {
        at: set.at.clone(),
        reason,
        record: record.clone(),
    };
    if let Some(r) = set
        .records
        .iter()
        .find(|r| r.critical && !KNOWN_TAGS.contains(&r.tag.to_ascii_lowercase().as_str()))
    {
        return forbidden(format!(
            "the record `{r}` has the critical flag and a tag CAs do not know, which forbids every CA"
        ));
    }
    let issue: Vec<&CaaRecord> = set
        .records
        .iter()
        .filter(|r| r.tag.eq_ignore_ascii_case("issue"))
        .collect();
    if issue.is_empty() {
        // Only issuewild/iodef/...: no restriction for non-wildcard names (RFC 8659 §4.2).
        return CaaVerdict::Allowed { at: set.at.clone() };
    }
    let ca = ca.to_ascii_lowercase();
    let mut why = Vec::new();
    for r in &issue {
        let (issuer, params) = parse_issue_value(&r.value);
        if issuer != ca {
            continue;
        }
        let mut ok = true;
        for (k, v) in &params {
            match k.as_str() {
                "validationmethods"
                    if !v.split(',').any(|m| m.trim().eq_ignore_ascii_case(method)) =>
                {
                    ok = false;
                    why.push(format!(
                        "`{r}` allows {ca} only with validation methods {v}, and this tool uses {method}"
                    ));
                }
                "accounturi" => {
                    if let Some(a) = account
                        && a != v
                    {
                        ok = false;
                        why.push(format!(
                            "`{r}` pins another ACME account ({v}, ours is {a})"
                        ));
                    }
                }
                _ => {}
            }
        }
        if ok {
            return CaaVerdict::Allowed { at: set.at.clone() };
        }
    }
    if why.is_empty() {
        let listed: Vec<String> = issue.iter().map(|r| format!("`{r}`")).collect();
        why.push(format!(
            "the CAA records at {} allow only other CAs ({})",
            set.at,
            listed.join(", ")
        ));
    }
    forbidden(why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(records: &[(bool, &str, &str)]) -> CaaSet {
        CaaSet {
            at: "example.social".into(),
            records: records
                .iter()
                .map(|(c, t, v)| CaaRecord {
                    critical: *c,
                    tag: (*t).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn verdicts() {
        let le = "letsencrypt.org";
        assert_eq!(evaluate(None, le, "http-01", None), CaaVerdict::NoPolicy);
        let allowed = |s: &CaaSet, acct| {
            matches!(
                evaluate(Some(s), le, "http-01", acct),
                CaaVerdict::Allowed { .. }
            )
        };
        type Case<'a> = (&'a [(bool, &'a str, &'a str)], bool);
        let cases: &[Case] = &[
            (&[(false, "issue", "letsencrypt.org")], true),
            (&[(false, "issue", "LetsEncrypt.org ")], true),
            (&[(false, "issue", "sectigo.com")], false),
            (
                &[
                    (false, "issue", "sectigo.com"),
                    (false, "issue", "letsencrypt.org"),
                ],
                true,
            ),
            (&[(false, "issue", ";")], false),
            (&[(false, "issuewild", "sectigo.com")], true),
            (&[(false, "iodef", "mailto:x@example.social")], true),
            (
                &[(true, "tbs", "x"), (false, "issue", "letsencrypt.org")],
                false,
            ),
            (
                &[(false, "tbs", "x"), (false, "issue", "letsencrypt.org")],
                true,
            ),
            (
                &[(false, "issue", "letsencrypt.org; validationmethods=dns-01")],
                false,
            ),
            (
                &[(
                    false,
                    "issue",
                    "letsencrypt.org; validationmethods=dns-01,http-01",
                )],
                true,
            ),
        ];
        for (records, want) in cases {
            assert_eq!(allowed(&set(records), None), *want, "{records:?}");
        }
        let pinned = set(&[(false, "issue", "letsencrypt.org; accounturi=https://a/1")]);
        assert!(allowed(&pinned, None));
        assert!(allowed(&pinned, Some("https://a/1")));
        assert!(!allowed(&pinned, Some("https://a/2")));
    }

    #[test]
    fn refusal_names_the_record_to_add() {
        match evaluate(
            Some(&set(&[(false, "issue", "sectigo.com")])),
            "letsencrypt.org",
            "http-01",
            None,
        ) {
            CaaVerdict::Forbidden { record, reason, .. } => {
                assert_eq!(record, "example.social. IN CAA 0 issue \"letsencrypt.org\"");
                assert!(reason.contains("sectigo.com"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
    }
}
