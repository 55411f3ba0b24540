//! Item-level retries of deletes: one batch through the dry-run gate, then the keys whose
//! delete failed with a retryable error (SlowDown, InternalError, ...) again, with
//! full-jitter exponential backoff; and item-level retries of reads (listing pages,
//! sizes). Request-level retries (every HTTP attempt, `store::RetryPolicy`) happen
//! inside the store; these retry what is still failing after them.

use std::time::Duration;

use super::{Gate, HeldLock};
use crate::mastodon::DbError;
use crate::plan::layout::ObjectKey;
use crate::store::{DeleteOutcome, Store, StoreError};

/// Deletes exactly `keys` (at most the store's batch limit) through `gate`, then retries
/// the keys that failed with a retryable error, `attempts` tries in all, waiting a random
/// time up to `base`, `2 × base`, `4 × base`, ... between tries. `sizes[i]` is the listed
/// size of `keys[i]` (`None`: not there), used by the gate in a dry run. Returns one
/// outcome per key, in order; keys still failing keep their last error.
///
/// With a run's advisory `lock`, [`HeldLock::ensure_held`] passes right before the first
/// batch and before every retry batch. Errors: the lock is gone; then the outcomes so far
/// come back with it (`Failed` for keys never sent), and nothing more is sent.
pub async fn delete_with_retries_locked<S: Store + ?Sized, L: HeldLock>(
    gate: Gate,
    store: &S,
    keys: &[ObjectKey],
    sizes: &[Option<u64>],
    attempts: u32,
    base: Duration,
    lock: Option<&L>,
) -> Result<Vec<DeleteOutcome>, (Vec<DeleteOutcome>, DbError)> {
    let check = async || match lock {
        Some(l) => l.ensure_held().await,
        None => Ok(()),
    };
    if let Err(e) = check().await {
        let never = StoreError::Transport("not sent: the advisory lock was lost".into());
        return Err((
            keys.iter()
                .map(|_| DeleteOutcome::Failed(never.clone()))
                .collect(),
            e,
        ));
    }
    let mut outcomes = gate.delete(store, keys, sizes).await;
    for attempt in 1..attempts {
        let retry: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, DeleteOutcome::Failed(e) if e.is_retryable()))
            .map(|(i, _)| i)
            .collect();
        if retry.is_empty() {
            break;
        }
        let cap = base.saturating_mul(1 << (attempt - 1).min(6));
        let wait = cap.mul_f64(fastrand::f64());
        tracing::debug!(keys = retry.len(), ?wait, "retrying failed deletes");
        tokio::time::sleep(wait).await;
        if let Err(e) = check().await {
            return Err((outcomes, e));
        }
        let again: Vec<ObjectKey> = retry.iter().map(|&i| keys[i].clone()).collect();
        let sizes_again: Vec<Option<u64>> = retry.iter().map(|&i| sizes[i]).collect();
        let redo = gate.delete(store, &again, &sizes_again).await;
        for (i, o) in retry.into_iter().zip(redo) {
            outcomes[i] = o;
        }
    }
    Ok(outcomes)
}
