//! Trust and HTTP clients for every network call of `cert` and `doctor`: one rustls
//! configuration on the `ring` provider (the project's only crypto provider) that trusts
//! the built-in Mozilla roots (webpki-roots), the system store (which honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`) and every `--ca-file`. Verification is always on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::CertError;
use super::dns::{Dns, ReqwestDns};

/// The crypto provider of every TLS connection this module makes.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The root certificates a connection trusts.
#[derive(Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    /// The `--ca-file`s that were added.
    pub ca_files: Vec<PathBuf>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Trust({} roots, ca files {:?})",
            self.roots.len(),
            self.ca_files
        )
    }
}

impl Trust {
    /// Built-in roots + the system store + every certificate of every file in `ca_files`
    /// (PEM, any number of certificates each). Errors: a `--ca-file` that cannot be read or
    /// holds no certificate. Unreadable system certificates are skipped with a debug log.
    pub fn load(ca_files: &[PathBuf]) -> Result<Self, CertError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!("system trust store: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system trust store loaded");
        for path in ca_files {
            let certs = read_pem_certs(path)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(CertError::Setup(format!(
                    "--ca-file {}: no usable CA certificate in it",
                    path.display()
                )));
            }
        }
        Ok(Self {
            roots: Arc::new(roots),
            ca_files: ca_files.to_vec(),
        })
    }

    /// The root store.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// A client configuration (ring, TLS 1.2 and 1.3, no client certificate) trusting these
    /// roots.
    pub fn client_config(&self) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth()
    }
}

/// Every certificate in a PEM file. Errors: unreadable file, or no certificate in it.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = std::fs::read(path).map_err(|e| CertError::file(path, e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(CertError::Setup(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// An HTTP client for the Linode API, ACME and probes: TLS from `trust`, names resolved
/// through `dns` when given (`--resolver`), at most `redirects` redirects followed (probes
/// follow up to 10, as Let's Encrypt's validator does), 30 s per request.
pub fn http_client(
    trust: &Trust,
    dns: Option<&Dns>,
    redirects: usize,
) -> Result<reqwest::Client, CertError> {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(trust.client_config())
        .user_agent(concat!("mastomedia/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(if redirects == 0 {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::limited(redirects)
        });
    if let Some(d) = dns {
        b = b.dns_resolver(Arc::new(ReqwestDns(d.clone())));
    }
    b.build()
        .map_err(|e| CertError::Network(format!("cannot build the HTTP client: {e}")))
}

/// A one-line description of a reqwest error with its causes (connect refused, TLS
/// certificate problems, timeouts).
pub fn describe_http_error(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}
