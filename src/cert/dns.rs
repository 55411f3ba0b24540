//! DNS lookups for preflight and diagnosis (hickory-resolver): the CNAME chain of a name,
//! its addresses, and the relevant CAA record set found by climbing the tree as RFC 8659 §3
//! says. "No records" (NXDOMAIN, NODATA) is an empty answer; SERVFAIL, REFUSED and
//! timeouts are errors, because they block issuance at the CA too.
//!
//! Must not: cache across runs (each run builds a fresh resolver).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use super::caa::{CaaRecord, CaaSet};
use super::{CertError, normalize_name};

/// Most CNAME hops followed before giving up (a loop, or a misconfiguration).
const MAX_HOPS: usize = 16;

/// A resolver: the system's (`/etc/resolv.conf`) or one DNS server given with `--resolver`.
#[derive(Clone)]
pub struct Dns {
    resolver: Arc<TokioResolver>,
    server: Option<SocketAddr>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dns({})", self.describe())
    }
}

impl Dns {
    /// Builds a resolver that asks `server` (UDP, then TCP) or, when `None`, the servers of
    /// the system configuration. Errors: the system configuration cannot be read.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, CertError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
            }
            None => Resolver::builder(provider).map_err(|e| {
                CertError::Dns(format!(
                    "cannot read the system resolver configuration: {e}; pass --resolver IP:PORT"
                ))
            })?,
        };
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        opts.cache_size = 0;
        let resolver = builder
            .build()
            .map_err(|e| CertError::Dns(format!("cannot build the resolver: {e}")))?;
        Ok(Self {
            resolver: Arc::new(resolver),
            server,
        })
    }

    /// `"the system resolver"` or `"DNS server 127.0.0.1:8053"`, for messages.
    pub fn describe(&self) -> String {
        match self.server {
            Some(s) => format!("DNS server {s}"),
            None => "the system resolver".to_owned(),
        }
    }

    async fn query(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, CertError> {
        let fqdn = format!("{}.", normalize_name(name));
        match self.resolver.lookup(fqdn.as_str(), rtype).await {
            Ok(lookup) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(CertError::Dns(format!(
                "{rtype} lookup of {name} via {} failed: {}",
                self.describe(),
                describe_error(&e)
            ))),
        }
    }

    /// The CNAME chain starting at `name`: every target in order (no trailing dots). Empty
    /// when `name` has no CNAME (an A record, or a flattened CNAME at a zone apex).
    pub async fn cname_chain(&self, name: &str) -> Result<Vec<String>, CertError> {
        let mut chain: Vec<String> = Vec::new();
        let mut current = normalize_name(name);
        for _ in 0..MAX_HOPS {
            let target = self
                .query(&current, RecordType::CNAME)
                .await?
                .into_iter()
                .find_map(|d| match d {
                    RData::CNAME(c) => Some(normalize_name(&c.0.to_ascii())),
                    _ => None,
                });
            match target {
                Some(t) if t != current && !chain.contains(&t) => {
                    chain.push(t.clone());
                    current = t;
                }
                _ => return Ok(chain),
            }
        }
        Err(CertError::Dns(format!(
            "the CNAME chain of {name} is longer than {MAX_HOPS} hops (a loop?): {}",
            chain.join(" → ")
        )))
    }

    /// The A and AAAA addresses of `name` (after CNAMEs). Empty when it has none.
    pub async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, CertError> {
        let mut out = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            for d in self.query(name, rtype).await? {
                match d {
                    RData::A(a) => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The CAA records at exactly `name`, with CNAMEs followed as the resolver does (so a
    /// CNAME yields its target's records). Empty when there are none.
    pub async fn caa_at(&self, name: &str) -> Result<Vec<CaaRecord>, CertError> {
        Ok(self
            .query(name, RecordType::CAA)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::CAA(c) => Some(CaaRecord {
                    critical: c.issuer_critical,
                    tag: c.tag.to_ascii_lowercase(),
                    value: String::from_utf8_lossy(&c.value).trim().to_owned(),
                }),
                _ => None,
            })
            .collect())
    }

    /// The relevant CAA set of `name` (RFC 8659 §3): the records at `name` (following its
    /// CNAMEs), else at its parent, and so on up to (not including) the root; climbing uses
    /// the **original** name's parents, never a CNAME target's. `None` when no set exists.
    /// Errors: any lookup that fails (SERVFAIL, timeout) — a CA refuses to issue then too.
    pub async fn relevant_caa(&self, name: &str) -> Result<Option<CaaSet>, CertError> {
        let name = normalize_name(name);
        let mut current: &str = &name;
        loop {
            let records = self.caa_at(current).await?;
            if !records.is_empty() {
                return Ok(Some(CaaSet {
                    at: current.to_owned(),
                    records,
                }));
            }
            match current.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => {
                    current = parent;
                }
                _ => return Ok(None),
            }
        }
    }
}

/// A short description of a resolver error: the response code for server failures.
fn describe_error(e: &NetError) -> String {
    match e {
        NetError::Timeout => "timed out".to_owned(),
        other => other.to_string(),
    }
}

/// A reqwest resolver that asks [`Dns`] (so probes use `--resolver` too).
#[derive(Debug, Clone)]
pub struct ReqwestDns(pub Dns);

impl reqwest::dns::Resolve for ReqwestDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = dns
                .addresses(&host)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            if addrs.is_empty() {
                return Err(
                    format!("{host} has no A or AAAA record via {}", dns.describe()).into(),
                );
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
