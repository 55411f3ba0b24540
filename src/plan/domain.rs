//! Prune's domain filters (`--domain`, `--exclude-domain`): what a domain argument may be,
//! its normal form, and which account domains it covers
//! (`docs/reference/prune-filters.md#domains`).
//!
//! A domain covers itself and every subdomain, with a label boundary: `example.com` covers
//! `example.com` and `media.example.com`, never `badexample.com` — the rule Mastodon's
//! domain blocks apply (`DomainBlock.rule_for`, `Account.by_domain_and_subdomains`).
//! Arguments are normalised the way Mastodon normalises `accounts.domain` before it stores
//! it: trimmed, lower case, one trailing dot dropped, internationalised names in their
//! ASCII (`xn--`) form. The SQL form of the test lives in `inventory` (it binds these
//! normal forms; nothing is spliced into the SQL text).

use std::fmt;

/// The most bytes a domain name may have in its ASCII form (RFC 1035).
const MAX_DOMAIN_LEN: usize = 253;
/// The most bytes of one label.
const MAX_LABEL_LEN: usize = 63;

/// Why a `--domain` / `--exclude-domain` argument was refused. The message says what to
/// type instead; the CLI turns it into a usage error (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Empty or only spaces.
    #[error("the domain is empty: give a domain such as `example.social`")]
    Empty,
    /// `https://example.com`.
    #[error(
        "`{0}` has a scheme: give the domain only, e.g. `example.social`, not `https://example.social`"
    )]
    Scheme(String),
    /// `example.com/users/x`.
    #[error("`{0}` has a path: give the domain only, e.g. `example.social`")]
    Path(String),
    /// `*.example.com`.
    #[error(
        "`{0}` has a wildcard: a domain always covers its subdomains (as Mastodon's domain blocks do), so give `example.social`, not `*.example.social`"
    )]
    Wildcard(String),
    /// `user@example.com`.
    #[error("`{0}` is an account, not a domain: give the part after `@`")]
    Account(String),
    /// `.example.com`, `a..b`, or a label over 63 bytes.
    #[error(
        "`{0}` is not a domain name: labels must be 1 to 63 characters between single dots (subdomains are always covered, no leading dot needed)"
    )]
    Label(String),
    /// Spaces, quotes, or other characters no host name has, or an IDN that does not
    /// convert to ASCII.
    #[error(
        "`{0}` is not a domain name: only letters, digits, `-`, `_` and `.` (and an optional `:port`) are allowed"
    )]
    Characters(String),
    /// Over 253 bytes once in ASCII form.
    #[error("`{0}` is longer than a domain name can be ({MAX_DOMAIN_LEN} characters)")]
    TooLong(String),
}

/// Parses one `--domain` / `--exclude-domain` argument into the form Mastodon stores in
/// `accounts.domain`: trimmed, lower case, without a single trailing dot, an IDN in its
/// `xn--` ASCII form (`Bücher.Example.` → `xn--bcher-kva.example`), an optional `:port`
/// kept. Errors: see [`DomainError`].
pub fn parse_domain(arg: &str) -> Result<String, DomainError> {
    let raw = arg.trim();
    if raw.is_empty() {
        return Err(DomainError::Empty);
    }
    let owned = || raw.to_owned();
    if raw.contains("://") {
        return Err(DomainError::Scheme(owned()));
    }
    if raw.contains('/') || raw.contains('?') || raw.contains('#') {
        return Err(DomainError::Path(owned()));
    }
    if raw.contains('*') {
        return Err(DomainError::Wildcard(owned()));
    }
    if raw.contains('@') {
        return Err(DomainError::Account(owned()));
    }
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => {
            (h, Some(p))
        }
        Some(_) => return Err(DomainError::Characters(owned())),
        None => (raw, None),
    };
    // Addressable's `normalized_host` drops one trailing dot.
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err(DomainError::Label(owned()));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"'`\\%<>[]{}|^,;=+!$&()~".contains(c))
    {
        return Err(DomainError::Characters(owned()));
    }
    let ascii = if host.is_ascii() {
        host.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(host).map_err(|_| DomainError::Characters(owned()))?
    };
    if ascii.len() > MAX_DOMAIN_LEN {
        return Err(DomainError::TooLong(owned()));
    }
    for label in ascii.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(DomainError::Label(owned()));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(DomainError::Characters(owned()));
        }
    }
    Ok(match port {
        Some(p) => format!("{ascii}:{p}"),
        None => ascii,
    })
}

/// Whether `domain` (an `accounts.domain` value; compared case-insensitively) is `rule` or
/// one of its subdomains: equal, or ending in `.` + `rule`. The reference for the SQL test
/// in `inventory` (`docs/reference/prune-filters.md#domains`).
pub fn covers(rule: &str, domain: &str) -> bool {
    let d = domain.to_ascii_lowercase();
    d == rule
        || d.strip_suffix(rule)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1)
}

/// The domain filters of one prune run, each domain in [`parse_domain`]'s normal form.
/// Empty `include` means every domain; `exclude` beats `include` (a row whose domain both
/// cover is kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainFilter {
    /// `--domain`: only rows of these domains (and their subdomains) are pruned.
    pub include: Vec<String>,
    /// `--exclude-domain`: rows of these domains (and their subdomains) are never pruned.
    pub exclude: Vec<String>,
}

impl DomainFilter {
    /// A filter from already parsed domains; duplicates dropped, order kept.
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> Self {
        fn dedup(v: Vec<String>) -> Vec<String> {
            let mut out: Vec<String> = Vec::with_capacity(v.len());
            for d in v {
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            out
        }
        Self {
            include: dedup(include),
            exclude: dedup(exclude),
        }
    }

    /// No filter at all (every domain, none excluded).
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether a row whose account has `domain` (`None`: a local account, or a row with no
    /// account) passes the filter. Local rows never match an include list and are never
    /// excluded. The reference for the SQL in `inventory`.
    pub fn admits(&self, domain: Option<&str>) -> bool {
        let excluded = domain.is_some_and(|d| self.exclude.iter().any(|r| covers(r, d)));
        let included = self.include.is_empty()
            || domain.is_some_and(|d| self.include.iter().any(|r| covers(r, d)));
        included && !excluded
    }
}

impl fmt::Display for DomainFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inc = if self.include.is_empty() {
            "all".to_owned()
        } else {
            self.include.join(",")
        };
        write!(f, "domains {inc}")?;
        if !self.exclude.is_empty() {
            write!(f, " except {}", self.exclude.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_normalise_like_accounts_domain() {
        for (arg, want) in [
            ("example.social", "example.social"),
            ("  Example.SOCIAL  ", "example.social"),
            ("example.social.", "example.social"),
            ("Bücher.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("localhost:3000", "localhost:3000"),
            ("my_host.example", "my_host.example"),
            ("a.b.c.d.example", "a.b.c.d.example"),
        ] {
            assert_eq!(parse_domain(arg).as_deref(), Ok(want), "{arg}");
        }
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        let long = format!("{}.example", "a".repeat(64));
        let too_long = vec!["abcdefghi"; 26].join(".");
        for (arg, want) in [
            ("", DomainError::Empty),
            ("   ", DomainError::Empty),
            (
                "https://example.social",
                DomainError::Scheme("https://example.social".into()),
            ),
            (
                "example.social/users/a",
                DomainError::Path("example.social/users/a".into()),
            ),
            (
                "example.social/",
                DomainError::Path("example.social/".into()),
            ),
            (
                "*.example.social",
                DomainError::Wildcard("*.example.social".into()),
            ),
            ("example.*", DomainError::Wildcard("example.*".into())),
            (
                "alice@example.social",
                DomainError::Account("alice@example.social".into()),
            ),
            (
                ".example.social",
                DomainError::Label(".example.social".into()),
            ),
            ("a..b", DomainError::Label("a..b".into())),
            (".", DomainError::Label(".".into())),
            (long.as_str(), DomainError::Label(long.clone())),
            (too_long.as_str(), DomainError::TooLong(too_long.clone())),
            (
                "exa mple.social",
                DomainError::Characters("exa mple.social".into()),
            ),
            (
                "example.social'; --",
                DomainError::Characters("example.social'; --".into()),
            ),
            ("host:port", DomainError::Characters("host:port".into())),
            ("a%b.example", DomainError::Characters("a%b.example".into())),
        ] {
            assert_eq!(parse_domain(arg), Err(want), "{arg:?}");
        }
        assert!(
            parse_domain("*.example.social")
                .unwrap_err()
                .to_string()
                .contains("subdomains")
        );
    }

    #[test]
    fn a_domain_covers_itself_and_its_subdomains_only() {
        assert!(covers("example.com", "example.com"));
        assert!(covers("example.com", "media.example.com"));
        assert!(covers("example.com", "a.b.example.com"));
        assert!(covers("example.com", "Media.Example.COM"));
        assert!(!covers("example.com", "badexample.com"));
        assert!(!covers("example.com", "example.com.evil"));
        assert!(!covers("media.example.com", "example.com"));
        assert!(!covers("example.com", ".example.com"));
    }

    #[test]
    fn exclusion_beats_inclusion_and_local_rows_are_never_included() {
        let f = DomainFilter::new(
            vec!["noisy.example".into(), "noisy.example".into()],
            vec!["keep.noisy.example".into()],
        );
        assert_eq!(f.include, vec!["noisy.example"]);
        assert!(f.admits(Some("noisy.example")));
        assert!(f.admits(Some("cdn.noisy.example")));
        assert!(!f.admits(Some("keep.noisy.example")));
        assert!(!f.admits(Some("a.keep.noisy.example")));
        assert!(!f.admits(Some("other.example")));
        assert!(!f.admits(None));
        let both = DomainFilter::new(vec!["x.example".into()], vec!["x.example".into()]);
        assert!(!both.admits(Some("x.example")));
        let only_exclude = DomainFilter::new(vec![], vec!["partner.example".into()]);
        assert!(only_exclude.admits(None));
        assert!(only_exclude.admits(Some("other.example")));
        assert!(!only_exclude.admits(Some("partner.example")));
        assert!(DomainFilter::default().admits(Some("any.example")));
        assert_eq!(
            f.to_string(),
            "domains noisy.example except keep.noisy.example"
        );
    }
}
