//! Item-level retries of reads (listing pages, sizes): a read still failing with a
//! retryable error after the store's request-level retries (`store::RetryPolicy`) is run
//! again a few times. The pool's delete retries (`src/pool/retry.rs`) sit beside it.

use std::future::Future;
use std::time::Duration;

use crate::store::{RetryPolicy, StoreError};

/// Attempts of one listing page at item level (each is a whole request with its own
/// request-level retries), and the first backoff between them.
pub const READ_ATTEMPTS: u32 = 3;
/// The first item-level backoff of a read (full jitter, doubling).
pub const READ_RETRY_BASE: Duration = Duration::from_secs(1);

/// The item-level read retry as a [`RetryPolicy`] (the store's one backoff rule): caps
/// [`READ_RETRY_BASE`], then twice that; never capped lower within [`READ_ATTEMPTS`].
pub const READ_POLICY: RetryPolicy = RetryPolicy {
    max_attempts: READ_ATTEMPTS,
    base: READ_RETRY_BASE,
    cap: Duration::from_secs(60),
};

/// Runs one read (`read()`: a listing page) and, while it fails with a retryable error,
/// runs it again, [`READ_ATTEMPTS`] times in all, waiting a random time up to
/// [`READ_RETRY_BASE`], then twice that, between tries. Returns the first success or the
/// last error.
pub async fn retry_read<T, F, Fut>(what: &str, mut read: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Err(e) if e.is_retryable() && attempt < READ_POLICY.max_attempts => {
                let wait = READ_POLICY.backoff(attempt, None);
                tracing::warn!(error = %e, ?wait, "{what} failed; trying again");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}
