//! The one rule for the alias host's DNS (`S3_ALIAS_HOST`, the media domain): is it served
//! by the bucket? Used by `cert renew`'s preflight and by `doctor`, which differ only in what
//! they do with a verdict (cert refuses anything but [`AliasVerdict::Cname`] and
//! [`AliasVerdict::Flattened`]; doctor also tolerates a CDN in front, with a warning).
//!
//! [`AliasFacts::resolve`] gathers the facts (CNAME chain, addresses); [`decide`] is pure.
//! The rule: a CNAME chain passing through one of the bucket's host names (its `hostname`
//! or static-site form, [`super::linode::Bucket::cname_targets`]) is served by the bucket;
//! so is a name without a CNAME whose A/AAAA addresses are all among the bucket host's (a
//! flattened CNAME: Cloudflare and other DNS hosts answer a CNAME at the zone apex, or any
//! name with flattening on, with the target's addresses, RFC 1034 §3.6.2 allowing no CNAME
//! beside other records there).
//!
//! Must not: print anything, or decide severity for its callers.

use std::net::IpAddr;

use super::CertError;
use super::dns::Dns;

/// What DNS says about the alias host and the bucket's host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasFacts {
    /// The CNAME chain of the alias host, in order, normalised (empty without a CNAME).
    pub chain: Vec<String>,
    /// The alias host's A/AAAA addresses; looked up only when `chain` is empty.
    pub addresses: Vec<IpAddr>,
    /// The host names the bucket is served at, first the canonical one; empty when unknown
    /// (no `LINODE_TOKEN` and no usable `S3_ENDPOINT`).
    pub expected: Vec<String>,
    /// The addresses of `expected[0]`; looked up only for a name without a CNAME.
    pub bucket_addresses: Vec<IpAddr>,
}

impl AliasFacts {
    /// Resolves the facts for `host` against the bucket hosts `expected` (first the
    /// canonical one). Queries: the CNAME chain; without one, the host's addresses and,
    /// when they exist and `expected` is known, the bucket host's addresses.
    /// Errors: [`CertError::Dns`] when a lookup fails (SERVFAIL, timeout); "no records" is
    /// an empty answer.
    pub async fn resolve(dns: &Dns, host: &str, expected: Vec<String>) -> Result<Self, CertError> {
        let chain = dns.cname_chain(host).await?;
        let mut facts = Self {
            chain,
            expected,
            ..Self::default()
        };
        if facts.chain.is_empty() {
            facts.addresses = dns.addresses(host).await?;
            if let Some(bucket) = facts.expected.first()
                && !facts.addresses.is_empty()
            {
                facts.bucket_addresses = dns.addresses(bucket).await?;
            }
        }
        Ok(facts)
    }
}

/// The verdict on the alias host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasVerdict {
    /// A CNAME chain that passes through one of the bucket's host names.
    Cname {
        /// The chain, joined with ` → `.
        chain: String,
    },
    /// No CNAME, but every address is one of the bucket host's (a flattened CNAME).
    Flattened,
    /// A CNAME chain, but the bucket's host is unknown, so it cannot be compared.
    Unverified {
        /// The chain, joined with ` → `.
        chain: String,
    },
    /// A CNAME chain that never reaches the bucket's host.
    WrongTarget {
        /// The chain, joined with ` → `.
        chain: String,
        /// The bucket's canonical host name.
        expected: String,
    },
    /// No CNAME; addresses that are not (all) the bucket's, or the bucket's are unknown: an
    /// A record, a CDN, or a flattened CNAME to something else.
    NotCname,
    /// No CNAME and no address: NXDOMAIN, or a name without records.
    Missing,
}

/// Decides [`AliasVerdict`] from `f` (pure).
pub fn decide(f: &AliasFacts) -> AliasVerdict {
    let chain = f.chain.join(" → ");
    if !f.chain.is_empty() {
        return match f.expected.first() {
            None => AliasVerdict::Unverified { chain },
            Some(_) if f.chain.iter().any(|h| f.expected.contains(h)) => {
                AliasVerdict::Cname { chain }
            }
            Some(e) => AliasVerdict::WrongTarget {
                chain,
                expected: e.clone(),
            },
        };
    }
    if f.addresses.is_empty() {
        AliasVerdict::Missing
    } else if !f.bucket_addresses.is_empty()
        && f.addresses.iter().all(|ip| f.bucket_addresses.contains(ip))
    {
        AliasVerdict::Flattened
    } else {
        AliasVerdict::NotCname
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn facts(chain: &[&str], addrs: &[&str], expected: &[&str], bucket: &[&str]) -> AliasFacts {
        AliasFacts {
            chain: chain.iter().map(|s| s.to_string()).collect(),
            addresses: addrs.iter().map(|s| ip(s)).collect(),
            expected: expected.iter().map(|s| s.to_string()).collect(),
            bucket_addresses: bucket.iter().map(|s| ip(s)).collect(),
        }
    }

    #[test]
    fn the_alias_rule() {
        let b = "media.example.us-east-1.linodeobjects.com";
        let site = "media.example.website-us-east-1.linodeobjects.com";
        let cases: Vec<(AliasFacts, AliasVerdict)> = vec![
            (
                facts(&[b], &[], &[b, site], &[]),
                AliasVerdict::Cname { chain: b.into() },
            ),
            // The static-site form counts, and so does a hop further down the chain.
            (
                facts(&[site], &[], &[b, site], &[]),
                AliasVerdict::Cname { chain: site.into() },
            ),
            (
                facts(&["cdn.example.net", b], &[], &[b], &[]),
                AliasVerdict::Cname {
                    chain: format!("cdn.example.net → {b}"),
                },
            ),
            (
                facts(&["other.eu-central-1.linodeobjects.com"], &[], &[b], &[]),
                AliasVerdict::WrongTarget {
                    chain: "other.eu-central-1.linodeobjects.com".into(),
                    expected: b.into(),
                },
            ),
            (
                facts(&["x.example.net"], &[], &[], &[]),
                AliasVerdict::Unverified {
                    chain: "x.example.net".into(),
                },
            ),
            // Flattened: the same addresses as the bucket host (all of them, or a subset).
            (
                facts(&[], &["192.0.2.1"], &[b], &["192.0.2.1", "192.0.2.2"]),
                AliasVerdict::Flattened,
            ),
            (
                facts(
                    &[],
                    &["192.0.2.1", "2001:db8::1"],
                    &[b],
                    &["2001:db8::1", "192.0.2.1"],
                ),
                AliasVerdict::Flattened,
            ),
            // One address elsewhere, or the bucket's unknown: not the bucket.
            (
                facts(&[], &["192.0.2.1", "198.51.100.7"], &[b], &["192.0.2.1"]),
                AliasVerdict::NotCname,
            ),
            (facts(&[], &["192.0.2.1"], &[], &[]), AliasVerdict::NotCname),
            (
                facts(&[], &["192.0.2.1"], &[b], &[]),
                AliasVerdict::NotCname,
            ),
            (facts(&[], &[], &[b], &["192.0.2.1"]), AliasVerdict::Missing),
            (facts(&[], &[], &[], &[]), AliasVerdict::Missing),
        ];
        for (f, want) in cases {
            assert_eq!(decide(&f), want, "{f:?}");
        }
    }
}
