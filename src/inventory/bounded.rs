//! The bounded executor every pipeline stage uses: at most `concurrency` futures in flight,
//! intake stopped by a cancellation token, results in completion order.

use std::future::Future;

use futures::stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

/// Maps `items` through `f` with at most `concurrency` futures running at once. When
/// `stop` is cancelled no new item is taken; futures already started run to completion and
/// their results are still yielded (in-flight work is never abandoned half-way).
pub fn bounded<S, F, Fut>(
    items: S,
    concurrency: usize,
    stop: CancellationToken,
    f: F,
) -> impl Stream<Item = Fut::Output>
where
    S: Stream,
    F: FnMut(S::Item) -> Fut,
    Fut: Future,
{
    items
        .take_until(stop.cancelled_owned())
        .map(f)
        .buffer_unordered(concurrency.max(1))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn limits_concurrency_and_stops_intake_on_cancel() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let s = bounded(futures::stream::iter(0..100), 3, stop.clone(), |i| {
            let (running, peak, stop) = (running.clone(), peak.clone(), stop.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                if i == 10 {
                    stop.cancel();
                }
                running.fetch_sub(1, Ordering::SeqCst);
                i
            }
        });
        let done: Vec<i32> = s.collect().await;
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(
            done.contains(&10),
            "the item that cancelled still completes"
        );
        assert!(
            done.len() < 100,
            "intake stopped after cancel: {}",
            done.len()
        );
    }
}
