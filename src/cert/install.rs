//! The certificate install transaction on a Linode bucket: replace what the bucket serves
//! with a new chain and key, and never leave it without a certificate when that can be
//! avoided.
//!
//! Linode's API wants the installed certificate deleted before an upload (`POST …/ssl`
//! answers 400 while one is installed, see `tests/it/support/certlab.rs`), so the new chain
//! and key are already kept in `pending/` of the state directory before anything changes:
//!
//! ```text
//! DELETE …/ssl (if the bucket has one) → POST new ×3 (1 s, 2 s apart; not after a 401/403)
//!   → failed: POST previous ×3 (when mastomedia installed it) → CertError::Install
//! ```
//!
//! The decisions ([`fallback`], [`retryable`], [`backoff`], [`failure`]) are pure and
//! table-tested; [`install`] runs them, every change through [`Gate::mutate`].
//!
//! Must not: touch the state directory (the caller promotes `pending/` after success).

use std::time::Duration;

use super::CertError;
use super::linode::{Bucket, Linode};
use super::state::Installed;
use crate::pool::Gate;

/// Upload attempts of a new certificate before the previous one is restored, and restore
/// attempts after that.
pub const UPLOAD_ATTEMPTS: u32 = 3;

/// What can be put back when the new certificate cannot be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback<'a> {
    /// The certificate mastomedia installed last, deleted from the bucket: upload it again.
    Previous(&'a Installed),
    /// The bucket had no certificate: nothing to restore.
    NoneBefore,
    /// The bucket had a certificate mastomedia did not install (its key is unknown): it is
    /// deleted before the upload and cannot be restored.
    Foreign,
}

/// The fallback for a bucket that `had_ssl` (Linode's `GET …/ssl`), with `previous` the
/// pair kept in `current/` of the state directory.
pub fn fallback(previous: Option<&Installed>, had_ssl: bool) -> Fallback<'_> {
    match (had_ssl, previous) {
        (false, _) => Fallback::NoneBefore,
        (true, Some(p)) => Fallback::Previous(p),
        (true, None) => Fallback::Foreign,
    }
}

/// Whether an upload that failed with `e` is worth another attempt: not when the token is
/// refused (401/403), which no retry changes.
pub fn retryable(e: &CertError) -> bool {
    !matches!(e, CertError::LinodeAuth(_))
}

/// The wait after failed attempt `attempt` (1-based): 1 s, 2 s, 4 s, …
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1 << (attempt.saturating_sub(1)).min(10))
}

/// The error of a failed install: `err` is the last upload error of the new certificate,
/// `restored` whether the fallback was uploaded again (`None` when there was nothing to
/// restore). The message says what the bucket serves now and where the new pair is kept.
pub fn failure(err: &CertError, fallback: Fallback<'_>, restored: Option<bool>) -> CertError {
    let text = match (fallback, restored) {
        (Fallback::Previous(_), Some(true)) => format!(
            "the new certificate could not be installed ({err}); the previous certificate was restored and is served again. The new chain and key are kept in the state directory (pending/); the next run tries again"
        ),
        (Fallback::Previous(_), _) => format!(
            "the new certificate could not be installed ({err}) and the previous one could not be restored: THE BUCKET HAS NO CERTIFICATE NOW. Upload pending/cert.pem and pending/key.pem from the state directory in the Linode Cloud Manager, or run again"
        ),
        (Fallback::NoneBefore, _) => format!(
            "the new certificate could not be installed ({err}); the bucket had none before. The new chain and key are kept in the state directory (pending/); run again, or upload them in the Linode Cloud Manager"
        ),
        (Fallback::Foreign, _) => format!(
            "the new certificate could not be installed ({err}); the certificate it had was not installed by mastomedia, so it could not be restored: THE BUCKET HAS NO CERTIFICATE NOW. The new chain and key are kept in the state directory (pending/); run again, or upload them in the Linode Cloud Manager"
        ),
    };
    CertError::Install(text)
}

/// Replaces the bucket's certificate with `new` (see the module text). `previous` is the
/// pair mastomedia installed last, `had_ssl` whether the bucket has a certificate now.
/// Errors: the delete's error as is; after failed uploads, [`failure`]'s
/// [`CertError::Install`].
pub async fn install(
    linode: &Linode,
    bucket: &Bucket,
    new: &Installed,
    previous: Option<&Installed>,
    had_ssl: bool,
    gate: Gate,
) -> Result<(), CertError> {
    let fallback = fallback(previous, had_ssl);
    if had_ssl {
        if fallback == Fallback::Foreign {
            tracing::warn!(
                "the bucket has a certificate mastomedia did not install; it cannot be restored if the upload fails"
            );
        }
        gate.mutate(linode.delete_ssl(bucket), || Ok(())).await?;
    }
    let mut last: Option<CertError> = None;
    for attempt in 1..=UPLOAD_ATTEMPTS {
        match gate
            .mutate(
                linode.upload_ssl(bucket, &new.cert_pem, &new.key_pem),
                || Ok(()),
            )
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!("upload attempt {attempt}/{UPLOAD_ATTEMPTS} failed: {e}");
                let stop = !retryable(&e);
                last = Some(e);
                if stop {
                    break;
                }
                if attempt < UPLOAD_ATTEMPTS {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
    let err = last.unwrap_or_else(|| CertError::Install("no upload attempt was made".to_owned()));
    let Fallback::Previous(prev) = fallback else {
        return Err(failure(&err, fallback, None));
    };
    for attempt in 1..=UPLOAD_ATTEMPTS {
        match gate
            .mutate(
                linode.upload_ssl(bucket, &prev.cert_pem, &prev.key_pem),
                || Ok(()),
            )
            .await
        {
            Ok(()) => return Err(failure(&err, fallback, Some(true))),
            Err(e) => {
                tracing::warn!("restore attempt {attempt}/{UPLOAD_ATTEMPTS} failed: {e}");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    Err(failure(&err, fallback, Some(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Installed {
        Installed {
            cert_pem: "chain".into(),
            key_pem: "key".into(),
        }
    }

    #[test]
    fn what_a_failed_install_can_restore() {
        let p = pair();
        let cases = [
            (Some(&p), true, Fallback::Previous(&p)),
            (None, true, Fallback::Foreign),
            (Some(&p), false, Fallback::NoneBefore),
            (None, false, Fallback::NoneBefore),
        ];
        for (previous, had_ssl, want) in cases {
            assert_eq!(fallback(previous, had_ssl), want, "{previous:?} {had_ssl}");
        }
    }

    #[test]
    fn a_refused_token_is_not_retried() {
        assert!(!retryable(&CertError::LinodeAuth("401".into())));
        assert!(retryable(&CertError::Linode {
            call: "POST ssl".into(),
            status: 500,
            message: "x".into()
        }));
        assert!(retryable(&CertError::Network("reset".into())));
        let waits: Vec<u64> = (1..=4).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8]);
    }

    #[test]
    fn the_failure_says_what_the_bucket_serves_now() {
        let p = pair();
        let err = CertError::Network("boom".into());
        let cases: [(Fallback<'_>, Option<bool>, &str); 4] = [
            (
                Fallback::Previous(&p),
                Some(true),
                "previous certificate was restored",
            ),
            (
                Fallback::Previous(&p),
                Some(false),
                "could not be restored: THE BUCKET HAS NO CERTIFICATE NOW",
            ),
            (Fallback::NoneBefore, None, "the bucket had none before"),
            (
                Fallback::Foreign,
                None,
                "not installed by mastomedia, so it could not be restored: THE BUCKET HAS NO CERTIFICATE NOW",
            ),
        ];
        for (fb, restored, words) in cases {
            let text = failure(&err, fb, restored).to_string();
            assert!(text.contains(words), "{text}");
            assert!(
                text.contains("(boom)") && text.contains("pending/"),
                "{text}"
            );
        }
    }
}
