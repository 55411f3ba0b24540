//! The request limiter and the one retry policy of every storage request.
//!
//! A governor quota (`--rate` attempts per second, no burst), a semaphore (`--concurrency`
//! attempts in flight) and per-operation counts: operations (what the tool asked for),
//! HTTP attempts (what the provider saw) and throttled answers (503 `SlowDown`, 429).
//! Every attempt takes one permit of each, retries included: the S3 client's own retries
//! are off, `Limiter::retrying` retries instead (full-jitter exponential backoff,
//! `Retry-After` honoured, [`RetryPolicy`]), so `--rate` bounds what the provider sees.
//!
//! No request can bypass it: an attempt runs under a [`Permit`], which only the limiter
//! mints (counting the attempt), and a backend's means of I/O (the S3 client) is held in a
//! `Gated` cell that hands it out only against a permit. `attempt`, `acquire` and
//! `retrying` are visible inside `store/` only, so code outside it reaches a backend
//! solely through the [`crate::store::Store`] methods, each of which runs through here.

use std::collections::BTreeMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::StoreError;

/// Counts per operation name (`DeleteObjects`, `ListObjectsV2`, `unlink`, ...).
pub type RequestCounts = BTreeMap<&'static str, u64>;

/// What a store sent: operations, HTTP attempts (retries included) and throttled answers,
/// as every summary and `--json` shows them (`requests`, `attempts`, `throttled`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestStats {
    /// Operations per name: one per request the tool made, however many attempts it took.
    pub requests: RequestCounts,
    /// HTTP attempts per operation name: what the provider saw (each took a rate permit).
    pub attempts: RequestCounts,
    /// Attempts the provider answered with a throttle (503 `SlowDown`, 429).
    pub throttled: u64,
    /// The `--rate` in force (attempts per second), for the hint; not serialised.
    #[serde(skip)]
    pub rate: Option<u32>,
}

impl RequestStats {
    /// Total operations.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Total attempts.
    pub fn total_attempts(&self) -> u64 {
        self.attempts.values().sum()
    }
}

/// How a failed attempt is retried: at most `max_attempts` attempts in all; before retry
/// `n` (1-based) a random wait in `[0, min(cap, base × 2^(n−1))]` (full jitter), or the
/// provider's `Retry-After` when that is longer (at most [`MAX_RETRY_AFTER`]). Only
/// retryable errors ([`StoreError::is_retryable`]: throttles, 500/503, timeouts, resets)
/// are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The first backoff cap.
    pub base: Duration,
    /// The largest backoff cap.
    pub cap: Duration,
}

/// The longest `Retry-After` honoured; a provider asking for more is asked again then.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);

impl RetryPolicy {
    /// The default: 8 attempts, caps 250 ms, 500 ms, … 8 s (at most ~24 s of waiting per
    /// request, ~12 s on average). Rides out a 30 % error rate (a request then fails with
    /// probability 0.3⁸ ≈ 7·10⁻⁵) and a few seconds of total outage, without a dead
    /// provider holding a request for minutes.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 8,
        base: Duration::from_millis(250),
        cap: Duration::from_secs(8),
    };

    /// The wait before retry `retry` (1-based), honouring `retry_after`.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let cap = self
            .base
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.cap);
        let wait = cap.mul_f64(fastrand::f64());
        wait.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A failed attempt: its classified error and the provider's `Retry-After`, if any.
#[derive(Debug, Clone)]
pub struct AttemptError {
    /// The error.
    pub error: StoreError,
    /// How long the provider asked us to wait (`Retry-After` seconds).
    pub retry_after: Option<Duration>,
}

impl From<StoreError> for AttemptError {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    requests: RequestCounts,
    attempts: RequestCounts,
    throttled: u64,
}

/// Rate and concurrency limits shared by every attempt of one store, and its counts.
pub struct Limiter {
    rate: Option<DefaultDirectRateLimiter>,
    rate_value: Option<u32>,
    in_flight: Semaphore,
    counts: Mutex<Counts>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rate", &self.rate_value)
            .field("available", &self.in_flight.available_permits())
            .finish()
    }
}

impl Limiter {
    /// `rate`: attempts per second, `None` for unlimited; `concurrency`: attempts in flight
    /// at once (at least 1). The quota has no burst: attempts are spaced `1/rate` apart, so
    /// no one-second window sees more than `rate` of them.
    pub fn new(rate: Option<NonZeroU32>, concurrency: usize) -> Self {
        Self {
            rate: rate
                .map(|r| RateLimiter::direct(Quota::per_second(r).allow_burst(NonZeroU32::MIN))),
            rate_value: rate.map(NonZeroU32::get),
            in_flight: Semaphore::new(concurrency.max(1)),
            counts: Mutex::new(Counts::default()),
        }
    }

    fn with_counts<T>(&self, f: impl FnOnce(&mut Counts) -> T) -> T {
        f(&mut self.counts.lock().expect("request counter poisoned"))
    }

    /// Waits for an in-flight slot, then for a rate slot (jittered by up to 50 ms, so
    /// parallel workers do not fire in lockstep), counts one attempt of `op`, and returns
    /// the permit to hold while the attempt runs. Does not count an operation.
    pub(in crate::store) async fn attempt(&self, op: &'static str) -> Permit<'_> {
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed");
        if let Some(rate) = &self.rate {
            rate.until_ready_with_jitter(Jitter::up_to(Duration::from_millis(50)))
                .await;
        }
        self.with_counts(|c| *c.attempts.entry(op).or_default() += 1);
        Permit { _slot: permit }
    }

    /// One operation of one attempt (backends that never retry, e.g. the filesystem):
    /// [`Limiter::attempt`] plus one counted `op` operation.
    pub(in crate::store) async fn acquire(&self, op: &'static str) -> Permit<'_> {
        self.with_counts(|c| *c.requests.entry(op).or_default() += 1);
        self.attempt(op).await
    }

    /// Runs one `op` operation: `attempt(permit)` is called once per HTTP attempt, each
    /// under its own permit, and retried on retryable errors as `policy` says. Counts one
    /// operation, every attempt and every throttled answer. Returns the first success, or
    /// the last error (non-retryable, or the attempts ran out).
    pub(in crate::store) async fn retrying<T, F, Fut>(
        &self,
        op: &'static str,
        policy: &RetryPolicy,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(&Permit<'_>) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        self.with_counts(|c| *c.requests.entry(op).or_default() += 1);
        let mut n = 1;
        loop {
            let result = {
                let permit = self.attempt(op).await;
                attempt(&permit).await
            };
            let failed = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if failed.error.is_throttle() {
                self.with_counts(|c| c.throttled += 1);
            }
            if !failed.error.is_retryable() || n >= policy.max_attempts.max(1) {
                return Err(failed.error);
            }
            let wait = policy.backoff(n, failed.retry_after);
            tracing::debug!(op, attempt = n, ?wait, error = %failed.error, "retrying");
            tokio::time::sleep(wait).await;
            n += 1;
        }
    }

    /// Operations so far, per name.
    pub fn counts(&self) -> RequestCounts {
        self.with_counts(|c| c.requests.clone())
    }

    /// Operations, attempts and throttled answers so far.
    pub fn stats(&self) -> RequestStats {
        self.with_counts(|c| RequestStats {
            requests: c.requests.clone(),
            attempts: c.attempts.clone(),
            throttled: c.throttled,
            rate: self.rate_value,
        })
    }

    /// Total operations so far.
    pub fn total(&self) -> u64 {
        self.with_counts(|c| c.requests.values().sum())
    }
}

/// The right to make one attempt (one HTTP request, one filesystem call): an in-flight
/// slot and a spent rate slot, counted. Minted only by `Limiter::attempt` (and
/// `Limiter::acquire`, `Limiter::retrying`); the slot is freed when it is dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    _slot: SemaphorePermit<'a>,
}

/// A backend's means of I/O (the S3 client), reachable only with a [`Permit`]: a request
/// built without one does not compile, so none can skip the limiter's rate, concurrency,
/// counts and retry policy.
pub(in crate::store) struct Gated<T>(T);

impl<T> Gated<T> {
    /// Locks `inner` behind the limiter.
    pub(in crate::store) fn new(inner: T) -> Self {
        Self(inner)
    }

    /// The handle, for the attempt `permit` was taken for.
    pub(in crate::store) fn get(&self, permit: &Permit<'_>) -> &T {
        let _ = permit;
        &self.0
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
        assert_eq!(l.stats().attempts, l.counts());
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

    #[tokio::test]
    async fn retries_count_attempts_and_throttles_once_per_operation() {
        let l = Limiter::new(None, 4);
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let mut left = 3;
        let r: Result<u32, StoreError> = l
            .retrying("ListObjectsV2", &policy, |_| {
                left -= 1;
                let fail = left >= 0;
                async move {
                    if fail {
                        Err(StoreError::from_code("SlowDown", "storm".into()).into())
                    } else {
                        Ok(7)
                    }
                }
            })
            .await;
        assert_eq!(r, Ok(7));
        let s = l.stats();
        assert_eq!(s.requests.get("ListObjectsV2"), Some(&1));
        assert_eq!(s.attempts.get("ListObjectsV2"), Some(&4));
        assert_eq!(s.throttled, 3);
        // Non-retryable errors are not retried; attempts run out.
        let r: Result<(), StoreError> = l
            .retrying("HeadObject", &policy, |_| async {
                Err(StoreError::from_code("AccessDenied", "no".into()).into())
            })
            .await;
        assert!(matches!(r, Err(StoreError::AccessDenied { .. })));
        let r: Result<(), StoreError> = l
            .retrying("GetObject", &policy, |_| async {
                Err(StoreError::from_code("InternalError", "boom".into()).into())
            })
            .await;
        assert!(r.is_err());
        let s = l.stats();
        assert_eq!(s.attempts.get("HeadObject"), Some(&1));
        assert_eq!(s.attempts.get("GetObject"), Some(&5));
        assert_eq!(s.throttled, 3, "500s are not throttles");
    }

    #[test]
    fn backoff_is_capped_full_jitter_and_honours_retry_after() {
        let p = RetryPolicy::DEFAULT;
        for n in 1..20 {
            let cap = p.base.saturating_mul(1 << (n - 1).min(16)).min(p.cap);
            assert!(p.backoff(n, None) <= cap, "{n}");
        }
        assert!(p.backoff(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(3600))),
            MAX_RETRY_AFTER
        );
    }

    #[tokio::test]
    async fn no_one_second_window_sees_more_than_the_rate() {
        let l = Limiter::new(NonZeroU32::new(20), 8);
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..30 {
            drop(l.attempt("x").await);
            times.push(start.elapsed());
        }
        let most = (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i] + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap();
        assert!(most <= 20, "{most} attempts within one second at --rate 20");
    }
}
