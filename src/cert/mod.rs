//! The custom media domain's certificate, a flow of its own beside the prune pipeline:
//!
//! ```text
//! preflight (bucket = domain, CNAME → bucket host, CAA)  → timing (ARI or 1/3 lifetime)
//!   → ACME order (RFC 8555): HTTP-01 challenge object in the bucket, self-check, finalize
//!   → keep key + chain in the state directory → Linode API upload (restore on failure)
//!   → TLS probe of the domain
//! ```
//!
//! Owns: DNS lookups ([`dns`]), the one alias-host rule cert and doctor share ([`alias`])
//! and CAA evaluation ([`caa`]), keys and certificate parsing ([`keys`]), the ACME client
//! ([`acme`]), the Linode Object Storage API client ([`linode`]), trust and HTTP clients
//! ([`net`]), the TLS probe ([`tls`]), renewal timing ([`timing`]), the renewal flow
//! ([`renew`]), the install/restore transaction ([`install`]), `cert status`
//! ([`status`]), the state directory ([`state`]) and doctor's DNS/CAA/TLS/alias-host
//! checks ([`diagnose`]).
//!
//! Must not: import aws-sdk-s3 (challenge objects go through [`crate::store::s3::S3Store`]),
//! print the Linode token, or change anything (bucket objects, the CA's orders, the Linode
//! certificate) except through [`crate::pool::Gate::mutate`].

pub mod acme;
pub mod alias;
pub mod caa;
pub mod challenge;
pub mod diagnose;
pub mod dns;
pub mod install;
pub mod keys;
pub mod linode;
pub mod net;
pub mod renew;
pub mod state;
pub mod status;
pub mod timing;
pub mod tls;

use std::path::PathBuf;

use crate::report::ExitCode;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted roots, separate accounts, high limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The CAA issuer domain name of Let's Encrypt (RFC 8659 §4.2).
pub const LETS_ENCRYPT_CAA: &str = "letsencrypt.org";
/// Where the HTTP-01 challenge lives (RFC 8555 §8.3), relative to the bucket root.
pub const CHALLENGE_PREFIX: &str = ".well-known/acme-challenge/";

/// A failure of the certificate flow or of a diagnosis step. Messages say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A local file (state directory, `--ca-file`) cannot be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Something the admin must fix before anything can run (bucket name, CNAME, CAA, a
    /// missing variable). Maps to exit code 2.
    #[error("{0}")]
    Setup(String),
    /// A DNS query failed (SERVFAIL, REFUSED, timeout); "no records" is not an error.
    #[error("DNS: {0}")]
    Dns(String),
    /// Connecting, TLS or HTTP failed.
    #[error("{0}")]
    Network(String),
    /// The Linode API rejected the token (HTTP 401/403).
    #[error(
        "the Linode API rejected LINODE_TOKEN ({0}): create a personal access token with Object Storage read/write scope"
    )]
    LinodeAuth(String),
    /// The Linode API answered with another error.
    #[error("Linode API {call} answered HTTP {status}: {message}")]
    Linode {
        /// The call (`POST …/ssl`).
        call: String,
        /// HTTP status.
        status: u16,
        /// The `errors[].reason` texts.
        message: String,
    },
    /// A new certificate could not be installed; the message says what the bucket serves
    /// now (the restored previous certificate, or nothing) and where the new one is kept.
    #[error("{0}")]
    Install(String),
    /// The ACME server refused or failed; the message explains the problem type.
    #[error("{0}")]
    Acme(String),
    /// A certificate, chain or key is unusable.
    #[error("{0}")]
    Invalid(String),
    /// Another `cert renew` for this domain holds the lock.
    #[error(
        "another `mastomedia cert renew` for this domain is running (lock {0} held); try again when it has finished"
    )]
    Locked(PathBuf),
}

impl CertError {
    /// The exit code this error maps to: 2 for what the admin must fix first
    /// ([`CertError::Setup`]), 3 when something needed is unreachable or refuses us, 1 for
    /// a failed attempt (the CA, a certificate, the Linode upload).
    pub fn exit_code(&self) -> ExitCode {
        match self {
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

    pub(crate) fn file(path: &std::path::Path, source: std::io::Error) -> Self {
        CertError::File {
            path: path.to_owned(),
            source,
        }
    }
}

/// Normalises a DNS name for comparisons: lower case, no trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Splits an alias host such as `media.example.social/file/bucket` into the host and the
/// path prefix (`""` or `/file/bucket`, without a trailing slash). A port (`host:8443`) stays
/// in the host part.
pub fn split_alias_host(alias: &str) -> (&str, &str) {
    let alias = alias
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match alias.find('/') {
        Some(i) => (&alias[..i], alias[i..].trim_end_matches('/')),
        None => (alias, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_hosts_split_into_host_and_path() {
        assert_eq!(
            split_alias_host("files.example.com"),
            ("files.example.com", "")
        );
        assert_eq!(
            split_alias_host("cdn.example.com/file/bucket-a/"),
            ("cdn.example.com", "/file/bucket-a")
        );
        assert_eq!(split_alias_host("https://x.example/"), ("x.example", ""));
        assert_eq!(
            normalize_name("Media.Example.SOCIAL."),
            "media.example.social"
        );
    }
}
