//! Certificate keys, CSRs and certificate parsing.
//!
//! Keys: ECDSA P-256 (rcgen on ring) or RSA-2048 (generated with the `rsa` crate, because
//! rcgen on ring cannot generate RSA keys; signed with ring through rcgen). The key is kept
//! in the form uploaded to Linode: PKCS#1 (`BEGIN RSA PRIVATE KEY`, what the reference tool
//! uploads) for RSA, PKCS#8 for ECDSA. A fresh key per certificate; never the ACME account
//! key (RFC 8555 §11.1).
//!
//! Parsing (x509-parser): names, issuer, validity, serial and public key of a chain's
//! leaf, and the checks made before anything replaces an installed certificate.

use chrono::{DateTime, Utc};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde::Serialize;

use super::{CertError, normalize_name};

/// Which key the certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256.
    EcdsaP256,
    /// RSA, 2048-bit modulus, exponent 65537, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Rsa2048 => "rsa-2048",
        })
    }
}

/// A certificate's private key.
pub struct CertKey {
    pair: KeyPair,
    upload_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertKey([redacted])")
    }
}

impl CertKey {
    /// Generates a new key of `kind` from the operating system's RNG.
    pub fn generate(kind: KeyType) -> Result<Self, CertError> {
        let err = |e: String| CertError::Invalid(format!("cannot generate a {kind} key: {e}"));
        match kind {
            KeyType::EcdsaP256 => {
                let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| err(e.to_string()))?;
                let upload_pem = pair.serialize_pem();
                Ok(Self { pair, upload_pem })
            }
            KeyType::Rsa2048 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
                    .map_err(|e| err(e.to_string()))?;
                let pkcs8 = key.to_pkcs8_der().map_err(|e| err(e.to_string()))?;
                let der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
                let pair = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
                    .map_err(|e| err(e.to_string()))?;
                let upload_pem = key
                    .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                    .map_err(|e| err(e.to_string()))?
                    .to_string();
                Ok(Self { pair, upload_pem })
            }
        }
    }

    /// The key as PEM, in the form uploaded to Linode (PKCS#1 for RSA, PKCS#8 for ECDSA).
    pub fn pem(&self) -> &str {
        &self.upload_pem
    }

    /// The DER `SubjectPublicKeyInfo` of the key (RFC 5280 §4.1.2.7).
    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// A PKCS#10 CSR (RFC 2986) for `domain`: CN and the one SAN are the domain.
    pub fn csr_der(&self, domain: &str) -> Result<Vec<u8>, CertError> {
        let mut params = CertificateParams::new(vec![domain.to_owned()])
            .map_err(|e| CertError::Invalid(format!("{domain} is not a valid DNS name: {e}")))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, domain);
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&self.pair)
            .map_err(|e| CertError::Invalid(format!("cannot build the CSR: {e}")))?;
        Ok(csr.der().to_vec())
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// DNS names of the subjectAltName extension (the CN when there is none).
    pub names: Vec<String>,
    /// The issuer's common name (and organisation), e.g. `R11 (Let's Encrypt)`.
    pub issuer: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Serial number, hex with colons.
    pub serial: String,
    /// DER SubjectPublicKeyInfo, for matching against a key.
    #[serde(skip)]
    pub spki_der: Vec<u8>,
}

impl CertInfo {
    /// Whole days from `now` to `not_after` (negative once expired).
    pub fn days_left(&self, now: DateTime<Utc>) -> i64 {
        (self.not_after - now).num_days()
    }

    /// Whether the certificate covers `domain` (exact name, or a one-label wildcard).
    pub fn covers(&self, domain: &str) -> bool {
        let d = normalize_name(domain);
        self.names.iter().any(|n| {
            let n = normalize_name(n);
            n == d
                || n.strip_prefix("*.").is_some_and(|base| {
                    d.split_once('.')
                        .is_some_and(|(label, rest)| !label.is_empty() && rest == base)
                })
        })
    }
}

/// Every certificate of a PEM chain, leaf first. Errors: no certificate in it.
pub fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(CertError::Invalid(
            "no PEM certificate in the chain".to_owned(),
        ));
    }
    Ok(certs)
}

fn name_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    let cn = name
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    let org = name
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    match (cn, org) {
        (Some(c), Some(o)) if c != o => format!("{c} ({o})"),
        (Some(c), _) => c,
        (None, Some(o)) => o,
        (None, None) => name.to_string(),
    }
}

/// Parses one DER certificate. Errors: not a certificate.
pub fn info(der: &[u8]) -> Result<CertInfo, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::Invalid(format!("not an X.509 certificate: {e}")))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_owned());
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
    {
        names.push(cn.to_owned());
    }
    let ts = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
    Ok(CertInfo {
        names,
        issuer: name_text(cert.issuer()),
        not_before: ts(cert.validity().not_before.timestamp()),
        not_after: ts(cert.validity().not_after.timestamp()),
        serial: cert.raw_serial_as_string(),
        spki_der: cert.public_key().raw.to_vec(),
    })
}

/// The leaf of a PEM chain, parsed.
pub fn leaf_info(chain_pem: &str) -> Result<CertInfo, CertError> {
    info(&parse_chain(chain_pem)?[0])
}

/// The checks made before a new chain may replace the installed certificate: every block
/// parses, the leaf covers `domain`, the leaf's public key is `key`'s, and it is valid at
/// `now`. Returns the leaf's information.
pub fn validate_new(
    chain_pem: &str,
    key: &CertKey,
    domain: &str,
    now: DateTime<Utc>,
) -> Result<CertInfo, CertError> {
    let chain = parse_chain(chain_pem)?;
    for (i, c) in chain.iter().enumerate().skip(1) {
        info(c)
            .map_err(|e| CertError::Invalid(format!("certificate {} of the chain: {e}", i + 1)))?;
    }
    let leaf = info(&chain[0])?;
    if !leaf.covers(domain) {
        return Err(CertError::Invalid(format!(
            "the new certificate names {:?}, not {domain}",
            leaf.names
        )));
    }
    if leaf.spki_der != key.spki_der() {
        return Err(CertError::Invalid(
            "the new certificate's public key is not the key we generated".to_owned(),
        ));
    }
    if leaf.not_after <= now || leaf.not_before > now + chrono::Duration::minutes(10) {
        return Err(CertError::Invalid(format!(
            "the new certificate is not valid now ({} to {})",
            leaf.not_before, leaf.not_after
        )));
    }
    Ok(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(key: &CertKey, names: &[&str]) -> String {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key.pair).unwrap().pem()
    }

    #[test]
    fn ecdsa_key_csr_and_validation() {
        let key = CertKey::generate(KeyType::EcdsaP256).unwrap();
        assert!(key.pem().contains("BEGIN PRIVATE KEY"));
        assert!(!key.csr_der("media.example.social").unwrap().is_empty());
        let pem = self_signed(&key, &["media.example.social"]);
        let info = validate_new(&pem, &key, "media.example.social", Utc::now()).unwrap();
        assert_eq!(info.names, vec!["media.example.social"]);
        assert!(validate_new(&pem, &key, "other.example", Utc::now()).is_err());
        let other = CertKey::generate(KeyType::EcdsaP256).unwrap();
        assert!(validate_new(&pem, &other, "media.example.social", Utc::now()).is_err());
    }

    #[test]
    fn rsa_keys_are_pkcs1_for_linode() {
        let key = CertKey::generate(KeyType::Rsa2048).unwrap();
        assert!(key.pem().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let pem = self_signed(&key, &["media.example.social"]);
        validate_new(&pem, &key, "media.example.social", Utc::now()).unwrap();
    }

    #[test]
    fn wildcards_cover_one_label() {
        let info = CertInfo {
            names: vec!["*.us-east-1.linodeobjects.com".into()],
            issuer: String::new(),
            not_before: Utc::now(),
            not_after: Utc::now(),
            serial: String::new(),
            spki_der: Vec::new(),
        };
        assert!(info.covers("bucket.us-east-1.linodeobjects.com"));
        assert!(!info.covers("media.example.social.us-east-1.linodeobjects.com"));
        assert!(!info.covers("media.example.social"));
    }
}
