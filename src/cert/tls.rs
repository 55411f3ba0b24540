//! The TLS probe: connect to `host:port` with SNI `host`, record the chain the server
//! presents, and verify it (always) against [`super::net::Trust`]. The chain is reported
//! even when verification fails, so a diagnosis can say *why* (expired on a date, issued
//! for other names, unknown issuer).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use tokio::net::TcpStream;

use super::CertError;
use super::dns::Dns;
use super::keys::{CertInfo, info};
use super::net::{Trust, provider};

/// Why a served certificate is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TlsFault {
    /// Past its notAfter.
    Expired,
    /// Not yet valid.
    NotYetValid,
    /// Does not name the host.
    WrongName,
    /// Chains to no trusted root (self-signed, a private CA, or a missing intermediate).
    UnknownIssuer,
    /// Anything else rustls rejected.
    Other {
        /// rustls' description.
        detail: String,
    },
}

/// What the server presented.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The leaf, parsed.
    pub leaf: CertInfo,
    /// Certificates sent (leaf first).
    pub chain_len: usize,
    /// DER of the leaf, for comparing with a certificate we installed.
    #[serde(skip)]
    pub leaf_der: Vec<u8>,
    /// `None` when the chain verified for the host name.
    pub fault: Option<TlsFault>,
}

impl Probe {
    /// One line: names, issuer, expiry, and the fault if any.
    pub fn describe(&self, host: &str, now: chrono::DateTime<chrono::Utc>) -> String {
        let l = &self.leaf;
        let base = format!(
            "names {}, issuer {}, expires {} ({} days)",
            l.names.join(", "),
            l.issuer,
            l.not_after.format("%Y-%m-%d %H:%M UTC"),
            l.days_left(now)
        );
        match &self.fault {
            None => base,
            Some(TlsFault::Expired) => {
                format!(
                    "the certificate expired on {} ({base})",
                    l.not_after.format("%Y-%m-%d %H:%M UTC")
                )
            }
            Some(TlsFault::NotYetValid) => format!("the certificate is not valid yet ({base})"),
            Some(TlsFault::WrongName) => format!("the certificate does not name {host} ({base})"),
            Some(TlsFault::UnknownIssuer) => {
                format!("the certificate chains to no trusted root ({base})")
            }
            Some(TlsFault::Other { detail }) => format!("{detail} ({base})"),
        }
    }
}

#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Vec<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        {
            let mut seen = self.seen.lock().expect("not poisoned");
            seen.push(end_entity.clone().into_owned());
            seen.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn fault_of(e: &rustls::Error) -> TlsFault {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFault::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFault::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFault::WrongName
            }
            CertificateError::UnknownIssuer => TlsFault::UnknownIssuer,
            other => TlsFault::Other {
                detail: format!("{other:?}"),
            },
        },
        other => TlsFault::Other {
            detail: other.to_string(),
        },
    }
}

/// Connects to `host:port` (addresses from `dns` when given, else the system resolver)
/// with SNI `host` and returns what the server presented. Errors: no address, connection
/// refused or timed out (10 s), or a handshake that failed before any certificate arrived.
pub async fn probe(
    host: &str,
    port: u16,
    trust: &Trust,
    dns: Option<&Dns>,
) -> Result<Probe, CertError> {
    let addrs: Vec<std::net::SocketAddr> = match dns {
        Some(d) => d
            .addresses(host)
            .await?
            .into_iter()
            .map(|ip| std::net::SocketAddr::new(ip, port))
            .collect(),
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| CertError::Network(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(CertError::Network(format!("{host} has no address")));
    }
    let mut last = String::new();
    let mut tcp = None;
    for a in &addrs {
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => last = format!("{a}: {e}"),
            Err(_) => last = format!("{a}: timed out"),
        }
    }
    let tcp =
        tcp.ok_or_else(|| CertError::Network(format!("cannot connect to {host}:{port} ({last})")))?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner = WebPkiServerVerifier::builder_with_provider(trust.roots(), provider())
        .build()
        .map_err(|e| CertError::Network(format!("cannot build the certificate verifier: {e}")))?;
    let mut config = trust.client_config();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(Recording {
            inner,
            seen: seen.clone(),
        }));
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| CertError::Setup(format!("{host} is not a valid host name")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let result = tokio::time::timeout(Duration::from_secs(15), connector.connect(name, tcp)).await;
    let fault = match result {
        Err(_) => {
            return Err(CertError::Network(format!(
                "TLS handshake with {host}:{port} timed out"
            )));
        }
        Ok(Ok(_stream)) => None,
        Ok(Err(e)) => {
            let fault = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map(fault_of)
                .unwrap_or(TlsFault::Other {
                    detail: e.to_string(),
                });
            Some(fault)
        }
    };
    let chain = seen.lock().expect("not poisoned").clone();
    let Some(leaf_der) = chain.first() else {
        return Err(CertError::Network(format!(
            "TLS handshake with {host}:{port} failed before a certificate arrived: {}",
            match fault {
                Some(TlsFault::Other { detail }) => detail,
                f => format!("{f:?}"),
            }
        )));
    };
    Ok(Probe {
        leaf: info(leaf_der)?,
        chain_len: chain.len(),
        leaf_der: leaf_der.to_vec(),
        fault,
    })
}
