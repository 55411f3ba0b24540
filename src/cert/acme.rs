//! The ACME client (RFC 8555) on instant-acme, over our own reqwest client so the CA's TLS
//! certificate is checked against the same trust as everything else (`--ca-file` for a
//! private CA such as Pebble).
//!
//! - The account key (ECDSA P-256, the only kind instant-acme handles) is created once per
//!   CA directory and kept 0600 in the state directory.
//! - Orders: one DNS identifier; authorizations already `valid` are skipped; each pending
//!   one is answered with HTTP-01 through a [`Responder`] (publish, self-check, ready);
//!   challenge objects are removed afterwards, on failure too.
//! - `badNonce` answers are retried (instant-acme retries each request three times; the
//!   order creation is retried three more times on top); problem documents are turned
//!   into messages that say what to fix ([`explain`]).
//! - ACME Renewal Information (RFC 9773) when the directory offers it.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse,
    CertificateIdentifier, ChallengeType, HttpClient, Identifier, NewAccount, NewOrder,
    OrderStatus, Problem, RetryPolicy,
};
use rustls::pki_types::CertificateDer;

use super::CertError;
use super::state::write_private;
use super::timing::Window;

/// instant-acme's HTTP client trait on reqwest.
struct ReqwestAcme(reqwest::Client);

impl HttpClient for ReqwestAcme {
    fn request(
        &self,
        req: http::Request<BodyWrapper<bytes::Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, reqwest::Body::wrap(body));
        Box::pin(async move {
            let req = reqwest::Request::try_from(req)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let rsp = client
                .execute(req)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(http::Response::<reqwest::Body>::from(
                rsp,
            )))
        })
    }
}

/// Publishes and removes HTTP-01 key authorizations where the CA will fetch them.
pub trait Responder {
    /// Makes `key_auth` available at `http://<domain>/.well-known/acme-challenge/<token>`.
    fn publish(&self, token: &str, key_auth: &str) -> impl Future<Output = Result<(), CertError>>;
    /// Fetches it the way the CA will and compares; errors say what is wrong.
    fn self_check(
        &self,
        token: &str,
        key_auth: &str,
    ) -> impl Future<Output = Result<(), CertError>>;
    /// Removes it (also after a failure).
    fn remove(&self, token: &str) -> impl Future<Output = Result<(), CertError>>;
}

/// An account on one CA directory.
pub struct Acme {
    account: Account,
    directory: String,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acme({}, account {})", self.directory, self.account.id())
    }
}

fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// Turns an ACME problem into a message that says what to do. `domain` is the name being
/// validated. Problem types: RFC 8555 §6.7 and Let's Encrypt's documentation.
pub fn explain(problem: &Problem, domain: &str) -> String {
    let detail = problem
        .subproblems
        .iter()
        .filter_map(|s| s.detail.clone())
        .chain(problem.detail.clone())
        .collect::<Vec<_>>()
        .join("; ");
    let kind = problem
        .r#type
        .as_deref()
        .unwrap_or("")
        .trim_start_matches("urn:ietf:params:acme:error:");
    let fix = match kind {
        "rateLimited" => "the CA's rate limit was reached; wait until the time it names (renewals inside the ARI window are exempt, and --staging has far higher limits)".to_owned(),
        "caa" => format!(
            "a CAA record forbids this CA for {domain}: add `<zone>. IN CAA 0 issue \"letsencrypt.org\"` beside the existing CAA records (run `mastomedia doctor` to see which name holds them)"
        ),
        "connection" => format!(
            "the CA could not fetch http://{domain}/.well-known/acme-challenge/…: check the CNAME to the bucket, that no stray AAAA record points elsewhere, and that port 80 answers"
        ),
        "dns" => format!("the CA's DNS lookup of {domain} failed: check the zone's name servers"),
        "unauthorized" => format!(
            "the CA fetched the challenge but got something else: check that {domain} is a CNAME to the bucket (not a CDN or a redirect to another host)"
        ),
        "incorrectResponse" => format!(
            "the CA got a different answer at http://{domain}/.well-known/acme-challenge/…: is the CNAME pointing at this bucket?"
        ),
        "rejectedIdentifier" => format!("the CA will not issue for {domain}"),
        "badNonce" => "the CA kept rejecting nonces; run again".to_owned(),
        "accountDoesNotExist" | "unauthorized_account" => {
            "the ACME account is unknown to the CA: delete its credentials file to create a new one".to_owned()
        }
        _ => String::new(),
    };
    let mut msg = if detail.is_empty() {
        format!("ACME error {kind}")
    } else {
        format!("ACME error {kind}: {detail}")
    };
    if !fix.is_empty() {
        msg.push_str(". ");
        msg.push_str(&fix);
    }
    msg
}

fn acme_err(e: instant_acme::Error, domain: &str) -> CertError {
    match e {
        instant_acme::Error::Api(p) => CertError::Acme(explain(&p, domain)),
        instant_acme::Error::Timeout(_) => CertError::Acme(
            "the CA did not finish in time (order still pending or processing); run again later"
                .to_owned(),
        ),
        instant_acme::Error::Other(inner) => {
            let mut msg = inner.to_string();
            let mut src = inner.source();
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            CertError::Network(format!("ACME request failed: {msg}"))
        }
        other => CertError::Acme(format!("ACME client error: {other}")),
    }
}

impl Acme {
    /// Loads the account whose credentials are kept at `path`; `None` when there is none
    /// yet. Fetches the directory (the only request).
    pub async fn load(
        http: reqwest::Client,
        directory: &str,
        path: &Path,
    ) -> Result<Option<Self>, CertError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CertError::file(path, e)),
        };
        let creds: AccountCredentials = serde_json::from_str(&text).map_err(|e| {
            CertError::Invalid(format!(
                "{}: not ACME account credentials ({e}); delete it to create a new account",
                path.display()
            ))
        })?;
        let account = Account::builder_with_http(Box::new(ReqwestAcme(http)))
            .from_credentials(creds)
            .await
            .map_err(|e| acme_err(e, ""))?;
        Ok(Some(Self {
            account,
            directory: directory.to_owned(),
        }))
    }

    /// Creates an account (agreeing to the CA's terms; contact `email` if given) and keeps
    /// its credentials at `path` (0600).
    pub async fn create(
        http: reqwest::Client,
        directory: &str,
        path: &Path,
        email: Option<&str>,
    ) -> Result<Self, CertError> {
        let contact = email.map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let mut attempt = 0;
        let (account, creds) = loop {
            attempt += 1;
            match Account::builder_with_http(Box::new(ReqwestAcme(http.clone())))
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    directory.to_owned(),
                    None,
                )
                .await
            {
                Ok(x) => break x,
                Err(e) if is_bad_nonce(&e) && attempt < 4 => continue,
                Err(e) => return Err(acme_err(e, "")),
            }
        };
        let text = serde_json::to_string_pretty(&creds).expect("credentials serialise");
        write_private(path, text.as_bytes())?;
        Ok(Self {
            account,
            directory: directory.to_owned(),
        })
    }

    /// The account URI (for CAA `accounturi`).
    pub fn account_uri(&self) -> &str {
        self.account.id()
    }

    /// The ARI certificate identifier of a certificate (RFC 9773 §4.1), as text.
    pub fn cert_id(leaf_der: &[u8]) -> Result<String, CertError> {
        let der = CertificateDer::from(leaf_der.to_vec());
        CertificateIdentifier::try_from(&der)
            .map(|id| id.to_string())
            .map_err(|e| CertError::Invalid(format!("cannot compute the ARI certificate id: {e}")))
    }

    /// The CA's suggested renewal window for a certificate, the time to ask again, and the
    /// explanation URL; `None` when the CA has no ARI.
    pub async fn renewal_window(
        &self,
        leaf_der: &[u8],
    ) -> Result<Option<(Window, Duration, Option<String>)>, CertError> {
        let der = CertificateDer::from(leaf_der.to_vec());
        let id = CertificateIdentifier::try_from(&der).map_err(|e| {
            CertError::Invalid(format!("cannot compute the ARI certificate id: {e}"))
        })?;
        match self.account.renewal_info(&id).await {
            Ok((info, retry)) => {
                let t = |s: i64, n: u32| chrono::DateTime::from_timestamp(s, n).unwrap_or_default();
                let w = info.suggested_window;
                let window = Window {
                    start: t(w.start.unix_timestamp(), w.start.nanosecond()),
                    end: t(w.end.unix_timestamp(), w.end.nanosecond()),
                };
                Ok(Some((window, retry, info.explanation_url)))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(acme_err(e, "")),
        }
    }

    /// Orders a certificate for `domain` with the CSR `csr_der`, answering HTTP-01 through
    /// `responder`; `replaces` is the ARI id of the certificate being replaced (only when the
    /// CA offers ARI). Returns the PEM chain. Challenge objects are removed on every path.
    pub async fn issue<R: Responder>(
        &self,
        domain: &str,
        csr_der: &[u8],
        replaces: Option<&str>,
        responder: &R,
    ) -> Result<String, CertError> {
        let ids = [Identifier::Dns(domain.to_owned())];
        let replaces_id = replaces.and_then(|r| {
            let (aki, serial) = r.split_once('.')?;
            Some(CertificateIdentifier {
                authority_key_identifier: aki.to_owned().into(),
                serial: serial.to_owned().into(),
            })
        });
        let mut attempt = 0;
        let mut order = loop {
            attempt += 1;
            let mut new = NewOrder::new(&ids);
            if let Some(r) = &replaces_id {
                new = new.replaces(r.clone());
            }
            match self.account.new_order(&new).await {
                Ok(o) => break o,
                Err(e) if is_bad_nonce(&e) && attempt < 4 => continue,
                Err(e) => return Err(acme_err(e, domain)),
            }
        };
        let mut published: Vec<String> = Vec::new();
        let result = async {
            {
                let mut auths = order.authorizations();
                while let Some(a) = auths.next().await {
                    let mut a = a.map_err(|e| acme_err(e, domain))?;
                    match a.status {
                        AuthorizationStatus::Valid => continue,
                        AuthorizationStatus::Pending => {}
                        s => {
                            return Err(CertError::Acme(format!(
                                "the authorization for {domain} is {s:?}; run again for a new order"
                            )));
                        }
                    }
                    let mut ch = a.challenge(ChallengeType::Http01).ok_or_else(|| {
                        CertError::Acme(
                            "the CA offers no http-01 challenge for this name".to_owned(),
                        )
                    })?;
                    let token = ch.token.clone();
                    let key_auth = ch.key_authorization().as_str().to_owned();
                    published.push(token.clone());
                    responder.publish(&token, &key_auth).await?;
                    responder.self_check(&token, &key_auth).await?;
                    ch.set_ready().await.map_err(|e| acme_err(e, domain))?;
                }
            }
            let policy = RetryPolicy::new()
                .initial_delay(Duration::from_millis(500))
                .backoff(1.5)
                .timeout(Duration::from_secs(180));
            let status = order
                .poll_ready(&policy)
                .await
                .map_err(|e| acme_err(e, domain))?;
            if status != OrderStatus::Ready {
                return Err(self.invalid_reason(&mut order, domain).await);
            }
            order
                .finalize_csr(csr_der)
                .await
                .map_err(|e| acme_err(e, domain))?;
            order
                .poll_certificate(&policy)
                .await
                .map_err(|e| acme_err(e, domain))
        }
        .await;
        for token in &published {
            if let Err(e) = responder.remove(token).await {
                tracing::warn!("could not remove the challenge object for token {token}: {e}");
            }
        }
        result
    }

    async fn invalid_reason(&self, order: &mut instant_acme::Order, domain: &str) -> CertError {
        let mut auths = order.authorizations();
        while let Some(Ok(mut a)) = auths.next().await {
            if let Ok(state) = a.refresh().await {
                for c in &state.challenges {
                    if let Some(p) = &c.error {
                        return CertError::Acme(explain(p, domain));
                    }
                }
            }
        }
        CertError::Acme(format!(
            "the order for {domain} became invalid without a reason from the CA"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(t: &str, detail: &str) -> Problem {
        serde_json::from_value(serde_json::json!({"type": t, "detail": detail})).unwrap()
    }

    #[test]
    fn problems_say_what_to_fix() {
        let m = explain(
            &problem(
                "urn:ietf:params:acme:error:caa",
                "CAA record forbids issuance",
            ),
            "media.example.social",
        );
        assert!(
            m.contains("CAA record forbids") && m.contains("issue \"letsencrypt.org\""),
            "{m}"
        );
        let m = explain(
            &problem(
                "urn:ietf:params:acme:error:rateLimited",
                "too many certificates, retry after 2026-05-01",
            ),
            "x",
        );
        assert!(
            m.contains("retry after 2026-05-01") && m.contains("rate limit"),
            "{m}"
        );
        let m = explain(
            &problem("urn:ietf:params:acme:error:connection", "refused"),
            "m.example",
        );
        assert!(m.contains("http://m.example/.well-known"), "{m}");
    }
}
