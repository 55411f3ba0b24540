//! The one pipeline engine every long job runs on (prune passes, the orphan scan; built so
//! migrate's copy / verify / repair can too):
//!
//! ```text
//! producer ──items──▶ bounded channel ──▶ process × concurrency ──▶ reorder ──▶ commit (in order) ──▶ flush
//! ```
//!
//! - **Intake**: the producer hands items to [`Intake::send`]; the engine numbers them in
//!   the order sent. The first interrupt (the caller's `cancel`) or a fatal error stops
//!   intake at once: no new item is started; items already started run to completion
//!   (each stage decides, through [`Control`], what "finish" means for it: prune abandons
//!   a chunk still being sized, never one that has started deleting; ARCHITECTURE
//!   invariant 9).
//! - **Process**: at most `concurrency` items at once ([`super::bounded`]). An item either
//!   finishes (`Ok`: its own per-object failures are part of its result and the run goes
//!   on) or stops the run ([`Failed`]: a fatal error, with what the item had already done,
//!   which is still committed under [`AfterFatal::CommitFinished`]).
//! - **Commit**: finished items are handed to [`Commit::commit`] strictly in the order they
//!   were sent, so a journal position never passes an unfinished item (`docs/reference/provider-quirks.md#l1`, the orphan
//!   scan); the database side (row clears) and the counts live in the job's [`Commit`].
//! - **Flush**: [`Commit::flush`] (the journal checkpoint) runs after every
//!   [`FlushPolicy::every`] commits or once [`FlushPolicy::interval`] has passed since the
//!   last flush with commits waiting (on a timer, not only at the next commit), and once
//!   at the end for what is left.
//!
//! The engine names no backend: the job brings its store, its database side ([`RowSink`],
//! [`HeldLock`]) and its journal through traits, so it is tested with in-memory fakes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bounded;
use crate::mastodon::{ClearRequest, DbError};

/// The database side's proof that the run's advisory lock is still held, checked right
/// before every delete batch (ARCHITECTURE invariant 5).
pub trait HeldLock {
    /// `Ok` while the lock is held. Errors: [`DbError::LockLost`] when it is gone.
    fn ensure_held(&self) -> impl Future<Output = Result<(), DbError>> + Send;
}

/// The database side of a deleting job: guarded row clears (ARCHITECTURE invariant 4)
/// under the run's advisory lock. Called only through [`super::Gate::clear`].
pub trait RowSink: HeldLock + Sync {
    /// Clears the rows of `req` in one statement and returns the ids actually updated
    /// (rows changed since selection, or not remote, are left alone and not returned).
    /// `now` is the UTC wall time written to `updated_at`. Errors: the statement failed.
    fn clear_rows(
        &self,
        req: &ClearRequest,
        now: NaiveDateTime,
    ) -> impl Future<Output = Result<Vec<i64>, DbError>> + Send;
}

/// When the engine calls [`Commit::flush`] (the journal checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Flush after this many commits (at least 1).
    pub every: usize,
    /// Flush at the first commit at least this long after the last flush (`None`: by
    /// count only).
    pub interval: Option<Duration>,
}

impl FlushPolicy {
    /// A checkpoint after every committed item (the orphan scan's position, `docs/reference/provider-quirks.md#l1`).
    pub const EACH: Self = Self {
        every: 1,
        interval: None,
    };

    /// Whether `since` commits and `elapsed` time since the last flush call for one.
    pub fn due(&self, since: usize, elapsed: Duration) -> bool {
        since >= self.every.max(1) || (since > 0 && self.interval.is_some_and(|i| elapsed >= i))
    }
}

/// What happens to items that finish after a fatal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFatal {
    /// They are still committed, in order (prune: objects confirmed gone have their rows
    /// cleared, the guarded UPDATE making that safe).
    CommitFinished,
    /// They are dropped uncommitted (the orphan scan: the journal position stays before
    /// them, so the next run handles them again).
    Discard,
}

/// Settings of one engine run.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Items processed at once (at least 1); also the channel's capacity.
    pub concurrency: usize,
    /// When the journal checkpoint runs.
    pub flush: FlushPolicy,
    /// What happens to items finishing after a fatal error.
    pub after_fatal: AfterFatal,
}

/// The run's two stop signals, handed to every stage.
#[derive(Debug, Clone)]
pub struct Control {
    cancel: CancellationToken,
    fatal: CancellationToken,
    /// A child of `cancel`, also cancelled with `fatal`: intake stops on either, at once.
    stop: CancellationToken,
}

impl Control {
    /// Whether the user interrupted the run (the first Ctrl-C / SIGTERM).
    pub fn interrupted(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the user interrupts the run.
    pub async fn interrupt(&self) {
        self.cancel.cancelled().await
    }

    /// Whether a fatal error stopped the run.
    pub fn fatal(&self) -> bool {
        self.fatal.is_cancelled()
    }

    /// Resolves when a fatal error stops the run.
    pub async fn fatal_stop(&self) {
        self.fatal.cancelled().await
    }

    /// Stops the run at once, from inside a stage, before its error reaches the commit
    /// stage (a lost advisory lock: no other item may send another delete).
    pub fn stop_fatal(&self) {
        self.fatal.cancel();
        self.stop.cancel();
    }

    /// Whether intake is stopped (interrupt or fatal error).
    pub fn intake_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// The producer's end of the bounded channel.
#[derive(Debug)]
pub struct Intake<I> {
    tx: mpsc::Sender<(u64, I)>,
    next: u64,
    ctl: Control,
}

impl<I> Intake<I> {
    /// Hands `item` to the workers, waiting while the channel is full. Returns `false`
    /// (the item is dropped) when intake is stopped: the producer should stop too.
    pub async fn send(&mut self, item: I) -> bool {
        if self.ctl.intake_stopped() {
            return false;
        }
        let sent = tokio::select! {
            biased;
            _ = self.ctl.stop.cancelled() => false,
            r = self.tx.send((self.next, item)) => r.is_ok(),
        };
        if sent {
            self.next += 1;
        }
        sent
    }

    /// Whether intake is stopped (interrupt or fatal error).
    pub fn is_stopped(&self) -> bool {
        self.ctl.intake_stopped()
    }

    /// Resolves when intake stops (interrupt or fatal error): a producer's own read-only
    /// work before its next send (prune's window listings) is abandoned on it.
    pub async fn stopped(&self) {
        self.ctl.stop.cancelled().await
    }
}

/// An item that stops the run: the fatal `error`, and what the item had done before it
/// (`partial`, committed under [`AfterFatal::CommitFinished`]).
#[derive(Debug)]
pub struct Failed<D, E> {
    /// The item's results so far (e.g. rows whose objects are confirmed gone).
    pub partial: Option<D>,
    /// The fatal error.
    pub error: E,
}

impl<D, E> Failed<D, E> {
    /// A fatal error with nothing done.
    pub fn nothing(error: E) -> Self {
        Self {
            partial: None,
            error,
        }
    }
}

/// The commit stage of a job: applies finished items in order (row clears, counts,
/// progress) and checkpoints them (journal writes).
pub trait Commit<D, E> {
    /// Applies one finished item; items come in the order they were sent. Errors: fatal
    /// (the run stops; the item's own accounting is the commit's business).
    fn commit(&mut self, done: D) -> impl Future<Output = Result<(), E>> + Send;

    /// Writes what was committed since the last flush (the journal checkpoint), when
    /// [`FlushPolicy`] says so and once at the end. Errors: fatal.
    fn flush(&mut self) -> impl Future<Output = Result<(), E>> + Send {
        async { Ok(()) }
    }

    /// Whether a fatal error `new` of an item replaces `old` as the run's reported cause
    /// (default: the first one stays).
    fn supersedes(_new: &E, _old: &E) -> bool {
        false
    }
}

/// How a run ended: counts, the producer's answer and the fatal error, if any. The job's
/// own counts and failures are in its [`Commit`] (its report), which `report/` formats.
#[derive(Debug)]
pub struct Outcome<E> {
    /// Items handed to the workers.
    pub started: u64,
    /// Items committed.
    pub committed: u64,
    /// Items that finished but were dropped after a fatal error ([`AfterFatal::Discard`]).
    pub discarded: u64,
    /// Flushes that succeeded.
    pub flushes: u64,
    /// The producer's result: `Ok(true)` it reached the end of its input, `Ok(false)` it
    /// stopped early (intake stopped), `Err` it failed (the items already sent are still
    /// processed and committed).
    pub produced: Result<bool, E>,
    /// The fatal error of an item, a commit or a flush (`None`: none).
    pub fatal: Option<E>,
    /// The run was interrupted.
    pub interrupted: bool,
}

impl<E> Outcome<E> {
    /// Whether the producer reached its end and every item was committed, with no fatal
    /// error and no interrupt.
    pub fn complete(&self) -> bool {
        matches!(self.produced, Ok(true)) && self.fatal.is_none() && !self.interrupted
    }
}

/// Runs a job: `producer` feeds items through its [`Intake`]; `process` handles each,
/// `opts.concurrency` at a time; `commit` applies them in order and flushes per
/// `opts.flush`. `cancel` is the user's interrupt: it stops intake, in-flight items finish.
/// Never fails itself: errors come back in the [`Outcome`].
pub async fn run<I, D, E, P, PF, F, FF, C>(
    opts: &EngineOptions,
    cancel: &CancellationToken,
    producer: P,
    mut process: F,
    commit: &mut C,
) -> Outcome<E>
where
    P: FnOnce(Intake<I>) -> PF,
    PF: Future<Output = Result<bool, E>>,
    F: FnMut(I, Control) -> FF,
    FF: Future<Output = Result<D, Failed<D, E>>>,
    C: Commit<D, E>,
{
    let concurrency = opts.concurrency.max(1);
    let ctl = Control {
        cancel: cancel.clone(),
        fatal: CancellationToken::new(),
        stop: cancel.child_token(),
    };
    let (tx, mut rx) = mpsc::channel::<(u64, I)>(concurrency);
    let intake = Intake {
        tx,
        next: 0,
        ctl: ctl.clone(),
    };
    let produce = producer(intake);

    let started = AtomicU64::new(0);
    let consume = async {
        let items = stream::poll_fn(move |cx| rx.poll_recv(cx));
        // Intake stops on the interrupt or a fatal error; started items finish.
        let mut results = std::pin::pin!(bounded(
            items,
            concurrency,
            ctl.stop.clone(),
            |(seq, item)| {
                started.fetch_add(1, Ordering::Relaxed);
                let fut = process(item, ctl.clone());
                async move { (seq, fut.await) }
            }
        ));
        let mut out = Tally {
            committed: 0,
            discarded: 0,
            flushes: 0,
            fatal: None,
        };
        let mut waiting: BTreeMap<u64, Option<D>> = BTreeMap::new();
        let mut next = 0u64;
        let (mut since_flush, mut last_flush) = (0usize, Instant::now());
        // Every started item has been yielded (the stream is not polled again).
        let mut exhausted = false;
        loop {
            // While commits wait for their flush, the interval also runs on a timer: at a
            // low rate the next item may take long, and a kill would lose what waits.
            let deadline = opts
                .flush
                .interval
                .filter(|_| since_flush > 0)
                .map(|i| last_flush + i);
            if !exhausted {
                let arrived = match deadline {
                    None => Some(results.next().await),
                    Some(at) => tokio::select! {
                        arrived = results.next() => Some(arrived),
                        _ = tokio::time::sleep_until(at.into()) => None,
                    },
                };
                match arrived {
                    Some(Some((seq, r))) => accept::<D, E, C>(&ctl, &mut out, &mut waiting, seq, r),
                    Some(None) => exhausted = true,
                    None => {
                        since_flush = 0;
                        last_flush = Instant::now();
                        let flushed = flush_polling(
                            commit,
                            results.as_mut(),
                            &mut exhausted,
                            &ctl,
                            &mut out,
                            &mut waiting,
                        )
                        .await;
                        flushed_or_fatal(flushed, &ctl, &mut out);
                    }
                }
            }
            // Commit in order: nothing passes an unfinished item.
            while let Some(done) = waiting.remove(&next) {
                next += 1;
                let Some(done) = done else { continue };
                if out.fatal.is_some() && opts.after_fatal == AfterFatal::Discard {
                    out.discarded += 1;
                    continue;
                }
                if let Err(e) = commit.commit(done).await {
                    ctl.stop_fatal();
                    out.fatal.get_or_insert(e);
                    continue;
                }
                out.committed += 1;
                since_flush += 1;
                if opts.flush.due(since_flush, last_flush.elapsed()) {
                    since_flush = 0;
                    last_flush = Instant::now();
                    // The uploads in flight go on while the journal writes: the flush
                    // polls the stream too, and what finishes waits in `waiting`.
                    let flushed = flush_polling(
                        commit,
                        results.as_mut(),
                        &mut exhausted,
                        &ctl,
                        &mut out,
                        &mut waiting,
                    )
                    .await;
                    flushed_or_fatal(flushed, &ctl, &mut out);
                }
            }
            if exhausted && !waiting.contains_key(&next) {
                break;
            }
        }
        if since_flush > 0 {
            match commit.flush().await {
                Ok(()) => out.flushes += 1,
                Err(e) => {
                    out.fatal.get_or_insert(e);
                }
            }
        }
        out
    };
    let (produced, tally) = tokio::join!(produce, consume);
    Outcome {
        started: started.into_inner(),
        committed: tally.committed,
        discarded: tally.discarded,
        flushes: tally.flushes,
        produced,
        fatal: tally.fatal,
        interrupted: cancel.is_cancelled(),
    }
}

/// Takes one finished item into `waiting` (a fatal one stops the run and keeps what it
/// had done, as its `partial`).
fn accept<D, E, C: Commit<D, E>>(
    ctl: &Control,
    out: &mut Tally<E>,
    waiting: &mut BTreeMap<u64, Option<D>>,
    seq: u64,
    r: Result<D, Failed<D, E>>,
) {
    let done = match r {
        Ok(d) => Some(d),
        Err(Failed { partial, error }) => {
            ctl.stop_fatal();
            match &out.fatal {
                Some(old) if !C::supersedes(&error, old) => {}
                _ => out.fatal = Some(error),
            }
            partial
        }
    };
    waiting.insert(seq, done);
}

/// Runs `commit.flush()` while still polling `results`, so that the items in flight are
/// not stalled by the journal write (they are polled by this one task): what finishes
/// meanwhile goes to `waiting` and is committed after the flush, in order.
async fn flush_polling<D, E, C, S>(
    commit: &mut C,
    mut results: std::pin::Pin<&mut S>,
    exhausted: &mut bool,
    ctl: &Control,
    out: &mut Tally<E>,
    waiting: &mut BTreeMap<u64, Option<D>>,
) -> Result<(), E>
where
    C: Commit<D, E>,
    S: futures::Stream<Item = (u64, Result<D, Failed<D, E>>)>,
{
    let flush = commit.flush();
    let mut flush = std::pin::pin!(flush);
    loop {
        if *exhausted {
            return flush.await;
        }
        tokio::select! {
            biased;
            r = &mut flush => return r,
            arrived = results.next() => match arrived {
                Some((seq, r)) => accept::<D, E, C>(ctl, out, waiting, seq, r),
                None => *exhausted = true,
            },
        }
    }
}

/// Counts a flush, or stops the run on its error.
fn flushed_or_fatal<E>(flushed: Result<(), E>, ctl: &Control, out: &mut Tally<E>) {
    match flushed {
        Ok(()) => out.flushes += 1,
        Err(e) => {
            ctl.stop_fatal();
            out.fatal.get_or_insert(e);
        }
    }
}

/// The commit stage's counts.
struct Tally<E> {
    committed: u64,
    discarded: u64,
    flushes: u64,
    fatal: Option<E>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// An in-memory commit stage: the items in commit order, and each flush's batch.
    #[derive(Default)]
    struct Log {
        committed: Vec<u32>,
        pending: Vec<u32>,
        flushed: Vec<Vec<u32>>,
        fail_commit_at: Option<u32>,
        fail_flush_at: Option<usize>,
    }

    impl Commit<u32, String> for Log {
        async fn commit(&mut self, done: u32) -> Result<(), String> {
            if self.fail_commit_at == Some(done) {
                return Err(format!("commit {done} failed"));
            }
            self.committed.push(done);
            self.pending.push(done);
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), String> {
            if self.fail_flush_at == Some(self.flushed.len()) {
                return Err("journal is read-only".into());
            }
            self.flushed.push(std::mem::take(&mut self.pending));
            Ok(())
        }

        fn supersedes(new: &String, _old: &String) -> bool {
            new.starts_with("lock")
        }
    }

    fn opts(concurrency: usize, every: usize, after_fatal: AfterFatal) -> EngineOptions {
        EngineOptions {
            concurrency,
            flush: FlushPolicy {
                every,
                interval: None,
            },
            after_fatal,
        }
    }

    /// A producer of `0..n`, stopping when intake stops.
    fn numbers(
        n: u32,
    ) -> impl FnOnce(Intake<u32>) -> futures::future::BoxFuture<'static, Result<bool, String>> {
        move |mut intake: Intake<u32>| {
            Box::pin(async move {
                for i in 0..n {
                    if !intake.send(i).await {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
        }
    }

    /// Later items finish first (shorter sleeps); commits still come in order.
    async fn reversed(i: u32, _: Control) -> Result<u32, Failed<u32, String>> {
        tokio::time::sleep(Duration::from_millis(u64::from(20 - i % 20))).await;
        Ok(i)
    }

    #[tokio::test]
    async fn commits_in_order_whatever_the_completion_order() {
        for concurrency in [1, 3, 8] {
            let mut log = Log::default();
            let cancel = CancellationToken::new();
            let out = run(
                &opts(concurrency, 1, AfterFatal::Discard),
                &cancel,
                numbers(40),
                reversed,
                &mut log,
            )
            .await;
            assert_eq!(log.committed, (0..40).collect::<Vec<_>>(), "{concurrency}");
            assert!(out.complete());
            assert_eq!((out.started, out.committed, out.flushes), (40, 40, 40));
        }
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut log = Log::default();
        let out = run(
            &opts(3, 1, AfterFatal::Discard),
            &CancellationToken::new(),
            numbers(30),
            |i, _| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(i)
                }
            },
            &mut log,
        )
        .await;
        assert!(out.complete());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[tokio::test]
    async fn flush_policy_by_count_and_at_the_end() {
        // (items, every, flushed batch sizes)
        let cases: &[(u32, usize, &[usize])] = &[
            (10, 1, &[1; 10]),
            (10, 4, &[4, 4, 2]),
            (8, 4, &[4, 4]),
            (3, 100, &[3]),
            (0, 4, &[]),
        ];
        for &(n, every, sizes) in cases {
            let mut log = Log::default();
            let out = run(
                &opts(2, every, AfterFatal::Discard),
                &CancellationToken::new(),
                numbers(n),
                reversed,
                &mut log,
            )
            .await;
            let got: Vec<usize> = log.flushed.iter().map(Vec::len).collect();
            assert_eq!(got, sizes, "n={n} every={every}");
            assert_eq!(out.flushes, sizes.len() as u64);
            assert_eq!(log.flushed.concat(), (0..n).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn flush_interval_runs_on_a_timer_between_slow_items() {
        let mut log = Log::default();
        let policy = EngineOptions {
            concurrency: 1,
            flush: FlushPolicy {
                every: 100,
                interval: Some(Duration::from_millis(10)),
            },
            after_fatal: AfterFatal::CommitFinished,
        };
        let out = run(
            &policy,
            &CancellationToken::new(),
            numbers(3),
            |i, _| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(i)
            },
            &mut log,
        )
        .await;
        assert!(out.complete());
        // Each commit is flushed by the timer before the next item finishes.
        assert_eq!(log.flushed, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn flush_policy_by_interval() {
        let p = FlushPolicy {
            every: 100,
            interval: Some(Duration::from_secs(2)),
        };
        let cases = [
            (0, 5, false),
            (1, 1, false),
            (1, 2, true),
            (99, 0, false),
            (100, 0, true),
        ];
        for (since, secs, due) in cases {
            assert_eq!(
                p.due(since, Duration::from_secs(secs)),
                due,
                "{since} {secs}"
            );
        }
        assert!(FlushPolicy::EACH.due(1, Duration::ZERO));
        let zero = FlushPolicy {
            every: 0,
            interval: None,
        };
        assert!(!zero.due(0, Duration::ZERO) && zero.due(1, Duration::ZERO));
    }

    #[tokio::test]
    async fn interrupt_stops_intake_and_in_flight_items_finish_and_commit() {
        let cancel = CancellationToken::new();
        let finished = Arc::new(AtomicUsize::new(0));
        let mut log = Log::default();
        let out = run(
            &opts(4, 1, AfterFatal::Discard),
            &cancel,
            numbers(1000),
            |i, ctl: Control| {
                let (cancel, finished) = (cancel.clone(), finished.clone());
                async move {
                    if i == 10 {
                        cancel.cancel();
                    }
                    // In-flight work is not abandoned by the interrupt.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    assert!(ctl.interrupted() || i < 10);
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok(i)
                }
            },
            &mut log,
        )
        .await;
        assert!(out.interrupted && !out.complete());
        assert!(matches!(out.produced, Ok(false)));
        assert!(out.started < 20, "intake stopped: {}", out.started);
        assert_eq!(finished.load(Ordering::SeqCst) as u64, out.started);
        // Every started item finished and was committed, in order.
        assert_eq!(log.committed, (0..out.started as u32).collect::<Vec<_>>());
        assert_eq!(log.flushed.concat(), log.committed);
    }

    #[tokio::test]
    async fn item_failures_inside_a_result_keep_the_run_going() {
        // An item's own failures (a key that would not delete) are part of its result.
        let mut log = Log::default();
        let out = run(
            &opts(3, 1, AfterFatal::Discard),
            &CancellationToken::new(),
            numbers(20),
            |i, _| async move { Ok(if i % 3 == 0 { 1000 + i } else { i }) },
            &mut log,
        )
        .await;
        assert!(out.complete());
        assert_eq!(log.committed.len(), 20);
        assert_eq!(log.committed.iter().filter(|&&d| d >= 1000).count(), 7);
    }

    /// Item 5 fails fatally after doing part of its work; items run one at a time so the
    /// counts are exact.
    async fn fatal_at_5(i: u32, ctl: Control) -> Result<u32, Failed<u32, String>> {
        assert!(!ctl.fatal(), "no item starts after the fatal error");
        if i == 5 {
            return Err(Failed {
                partial: Some(500),
                error: "store: access denied".into(),
            });
        }
        Ok(i)
    }

    #[tokio::test]
    async fn fatal_error_stops_the_run_with_counts() {
        let cases = [
            (AfterFatal::Discard, vec![0, 1, 2, 3, 4], 1),
            (AfterFatal::CommitFinished, vec![0, 1, 2, 3, 4, 500], 0),
        ];
        for (after, committed, discarded) in cases {
            let mut log = Log::default();
            let out = run(
                &opts(1, 2, after),
                &CancellationToken::new(),
                numbers(100),
                fatal_at_5,
                &mut log,
            )
            .await;
            assert_eq!(out.fatal.as_deref(), Some("store: access denied"));
            assert_eq!(log.committed, committed, "{after:?}");
            assert_eq!(out.discarded, discarded);
            assert_eq!(out.started, 6, "intake stopped at the fatal item");
            assert!(matches!(out.produced, Ok(false)) && !out.complete());
            // What was committed is flushed, also after the fatal error.
            assert_eq!(log.flushed.concat(), log.committed);
        }
    }

    #[tokio::test]
    async fn a_stage_can_stop_the_others_at_once_and_name_the_cause() {
        // Item 2 loses the lock; item 1 (in flight) sees the stop and reports a
        // consequence, which must not replace the cause.
        let mut log = Log::default();
        let out = run(
            &opts(4, 1, AfterFatal::CommitFinished),
            &CancellationToken::new(),
            numbers(4),
            |i, ctl: Control| async move {
                match i {
                    2 => {
                        ctl.stop_fatal();
                        Err(Failed {
                            partial: Some(2),
                            error: "lock lost".into(),
                        })
                    }
                    _ => {
                        ctl.fatal_stop().await;
                        Err(Failed::nothing(format!("{i}: stopped by an earlier error")))
                    }
                }
            },
            &mut log,
        )
        .await;
        assert_eq!(out.fatal.as_deref(), Some("lock lost"));
        assert_eq!(log.committed, vec![2]);
    }

    #[tokio::test]
    async fn commit_and_flush_errors_are_fatal() {
        let mut log = Log {
            fail_commit_at: Some(3),
            ..Log::default()
        };
        let out = run(
            &opts(1, 1, AfterFatal::Discard),
            &CancellationToken::new(),
            numbers(50),
            |i, _| async move { Ok(i) },
            &mut log,
        )
        .await;
        assert_eq!(out.fatal.as_deref(), Some("commit 3 failed"));
        assert_eq!(log.committed, vec![0, 1, 2]);
        assert!(out.started < 10);

        let mut log = Log {
            fail_flush_at: Some(2),
            ..Log::default()
        };
        let out = run(
            &opts(1, 1, AfterFatal::Discard),
            &CancellationToken::new(),
            numbers(50),
            |i, _| async move { Ok(i) },
            &mut log,
        )
        .await;
        assert_eq!(out.fatal.as_deref(), Some("journal is read-only"));
        assert_eq!(log.flushed, vec![vec![0], vec![1]]);
        assert!(out.started < 10);
    }

    #[tokio::test]
    async fn producer_error_lets_sent_items_finish() {
        let mut log = Log::default();
        let out = run(
            &opts(2, 1, AfterFatal::Discard),
            &CancellationToken::new(),
            |mut intake: Intake<u32>| async move {
                for i in 0..5 {
                    intake.send(i).await;
                }
                Err::<bool, String>("listing failed".into())
            },
            reversed,
            &mut log,
        )
        .await;
        assert_eq!(
            out.produced.as_ref().err().map(String::as_str),
            Some("listing failed")
        );
        assert!(out.fatal.is_none());
        assert_eq!(log.committed, vec![0, 1, 2, 3, 4]);
    }
}
