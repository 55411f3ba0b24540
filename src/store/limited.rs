//! The request limiter: a governor quota (`--rate` requests per second), a semaphore
//! (`--concurrency` requests in flight) and per-operation request counts. Applied once,
//! around every request a store sends; request-level retries belong to the SDK.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Requests sent per operation name (`DeleteObjects`, `ListObjectsV2`, `unlink`, ...).
pub type RequestCounts = BTreeMap<&'static str, u64>;

/// Rate and concurrency limits shared by every request of one store.
pub struct Limiter {
    rate: Option<DefaultDirectRateLimiter>,
    in_flight: Semaphore,
    counts: Mutex<RequestCounts>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rate_limited", &self.rate.is_some())
            .field("available", &self.in_flight.available_permits())
            .finish()
    }
}

impl Limiter {
    /// `rate`: requests per second, `None` for unlimited; `concurrency`: requests in flight
    /// at once (at least 1).
    pub fn new(rate: Option<NonZeroU32>, concurrency: usize) -> Self {
        Self {
            rate: rate.map(|r| RateLimiter::direct(Quota::per_second(r))),
            in_flight: Semaphore::new(concurrency.max(1)),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Waits for a slot (jittered by up to 50 ms when rate-limited, so parallel workers do
    /// not fire in lockstep), counts one `op` request, and returns the in-flight permit to
    /// hold while the request runs.
    pub async fn acquire(&self, op: &'static str) -> SemaphorePermit<'_> {
        if let Some(rate) = &self.rate {
            rate.until_ready_with_jitter(Jitter::up_to(Duration::from_millis(50)))
                .await;
        }
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed");
        *self
            .counts
            .lock()
            .expect("request counter poisoned")
            .entry(op)
            .or_default() += 1;
        permit
    }

    /// A copy of the request counts so far.
    pub fn counts(&self) -> RequestCounts {
        self.counts
            .lock()
            .expect("request counter poisoned")
            .clone()
    }

    /// Total requests so far.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_each_request_by_operation() {
        let l = Limiter::new(NonZeroU32::new(1000), 2);
        drop(l.acquire("DeleteObjects").await);
        drop(l.acquire("DeleteObjects").await);
        drop(l.acquire("ListObjectsV2").await);
        assert_eq!(l.counts().get("DeleteObjects"), Some(&2));
        assert_eq!(l.total(), 3);
    }

    #[tokio::test]
    async fn holds_concurrency() {
        let l = Limiter::new(None, 1);
        let p = l.acquire("a").await;
        let second = tokio::time::timeout(Duration::from_millis(50), l.acquire("b")).await;
        assert!(second.is_err(), "a second request waited for the first");
        drop(p);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), l.acquire("b"))
                .await
                .is_ok()
        );
    }
}
