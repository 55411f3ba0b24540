//! Parallel, read-only listing of a bucket (or storage root) for `du`: the key space is cut
//! into prefixes along Mastodon's layout and the prefixes are listed concurrently.
//!
//! Discovery uses delimiter listings: the root, `cache/`, every known class
//! (`media_attachments/`, `accounts/`, ...) and every known `<class>/<attachment>/` are
//! listed with a `/` delimiter; the sub-folders found below an attachment (the first
//! partition groups, e.g. `.../files/109/`) and every folder outside the layout are then
//! listed in full, page by page, at most `concurrency` listings at a time (the pool's
//! [`bounded`] executor). Every object is visited exactly once: a delimiter listing visits
//! the objects directly at its level and hands each sub-folder to exactly one task.
//!
//! Memory holds counters and the queue of prefixes, never the listing. Every page is
//! retried at item level ([`retry_read`]) on top of the store's request-level retries
//! (SlowDown, 500, timeouts: `store::RetryPolicy`); the rate limit is the store's limiter.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{bounded, retry_read};
use crate::plan::parse::attachment_of;
use crate::store::{ListMarker, ObjectMeta, Store, StoreError, VersionMeta};

/// One page of a listing, whatever is listed.
#[derive(Debug)]
pub struct Page<I, T> {
    /// Entries of this page.
    pub items: Vec<I>,
    /// Sub-folders (delimiter listings only).
    pub prefixes: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<T>,
}

/// What a walk lists: current objects ([`Objects`]) or every version ([`Versions`]).
pub trait Source<S: Store + ?Sized>: Send + Sync {
    /// One listed entry.
    type Item: Send;
    /// Pagination token (cloned to retry a page).
    type Token: Send + Sync + Clone;

    /// One page below `prefix`, continuing at `token`, or (first page, `token` is `None`)
    /// starting after the key `start_after` when given.
    fn page(
        &self,
        store: &S,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        token: Option<Self::Token>,
    ) -> impl Future<Output = Result<Page<Self::Item, Self::Token>, StoreError>> + Send;

    /// The key of a listed entry (what [`walk_ranges`] bounds its ranges by).
    fn key(item: &Self::Item) -> &str;
}

/// Current objects (`ListObjectsV2`, or the filesystem walk).
#[derive(Debug, Clone, Copy, Default)]
pub struct Objects;

impl<S: Store + ?Sized> Source<S> for Objects {
    type Item = ObjectMeta;
    type Token = String;

    async fn page(
        &self,
        store: &S,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        token: Option<String>,
    ) -> Result<Page<ObjectMeta, String>, StoreError> {
        let start_after = start_after.filter(|_| token.is_none());
        let p = store
            .list_page(prefix, delimiter, start_after, token)
            .await?;
        Ok(Page {
            items: p.objects,
            prefixes: p.common_prefixes,
            next: p.next,
        })
    }

    fn key(item: &ObjectMeta) -> &str {
        item.key.as_str()
    }
}

/// Every version and delete marker (`ListObjectVersions`, S3 only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Versions;

impl<S: Store + ?Sized> Source<S> for Versions {
    type Item = VersionMeta;
    type Token = ListMarker;

    async fn page(
        &self,
        store: &S,
        prefix: &str,
        delimiter: bool,
        start_after: Option<&str>,
        token: Option<ListMarker>,
    ) -> Result<Page<VersionMeta, ListMarker>, StoreError> {
        let ext = store
            .as_s3ext()
            .ok_or_else(|| StoreError::s3_only("ListObjectVersions", &store.describe()))?;
        // The key marker is exclusive, like StartAfter: versions of later keys only.
        let token = token.or_else(|| {
            start_after.map(|k| ListMarker {
                key: k.to_owned(),
                id: None,
            })
        });
        let p = ext.list_versions_page(prefix, delimiter, token).await?;
        Ok(Page {
            items: p.versions,
            prefixes: p.common_prefixes,
            next: p.next,
        })
    }

    fn key(item: &VersionMeta) -> &str {
        item.key.as_str()
    }
}

/// A per-task accumulator, merged into the walk's total when the task ends.
pub trait Merge: Default + Send {
    /// Adds `other` into `self`.
    fn merge(&mut self, other: Self);
}

/// Whether a folder (relative to `S3_KEY_PREFIX`, ending with `/`) is split further with
/// a delimiter listing instead of being listed in full: the root, `cache/`, known classes
/// and known `<class>/<attachment>/` pairs, under one optional `cache/`.
pub fn should_expand(rel: &str) -> bool {
    if rel.is_empty() || rel == "cache/" {
        return true;
    }
    let Some(inner) = rel.strip_suffix('/') else {
        return false;
    };
    let inner = inner.strip_prefix("cache/").unwrap_or(inner);
    let segs: Vec<&str> = inner.split('/').collect();
    match segs.as_slice() {
        [class] => crate::plan::layout::Attachment::ALL
            .iter()
            .any(|a| a.class() == *class),
        [class, att] => attachment_of(class, att).is_some(),
        _ => false,
    }
}

/// The result of a walk.
#[derive(Debug)]
pub struct Walked<A> {
    /// Everything visited.
    pub acc: A,
    /// Whether every prefix was listed to the end (false after Ctrl-C).
    pub complete: bool,
    /// Listings (prefixes) run.
    pub prefixes: u64,
}

enum Task {
    Expand(String),
    Leaf(String),
}

/// Lists everything below `root` (a full key prefix; `layout_offset` bytes of it are the
/// `S3_KEY_PREFIX` part), `concurrency` prefixes at a time, calling `visit` once per entry
/// with the accumulator of the task that listed it. `cancel` stops intake: listings in
/// flight finish their current prefix. Errors: the first listing error that outlasts the
/// request-level and item-level retries stops the walk.
pub async fn walk<S, Src, A, F>(
    store: &S,
    source: &Src,
    root: &str,
    layout_offset: usize,
    concurrency: usize,
    cancel: &CancellationToken,
    visit: F,
) -> Result<Walked<A>, StoreError>
where
    S: Store + ?Sized,
    Src: Source<S>,
    A: Merge,
    F: Fn(&mut A, &Src::Item) + Sync,
{
    let rel = |p: &str| p.get(layout_offset..).unwrap_or("").to_owned();
    let first = if root.is_empty() || root.ends_with('/') && should_expand(&rel(root)) {
        Task::Expand(root.to_owned())
    } else {
        Task::Leaf(root.to_owned())
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Task>();
    tx.send(first).expect("receiver alive");
    let mut tx = Some(tx);
    let mut pending = 1usize;
    let stop = cancel.child_token();
    let tasks = stream::poll_fn(move |cx| rx.poll_recv(cx));
    let visit = &visit;
    let mut results = std::pin::pin!(bounded(tasks, concurrency, stop.clone(), |task| {
        run_task(store, source, task, visit)
    }));
    let mut acc = A::default();
    let mut error = None;
    let mut prefixes = 0u64;
    while let Some(result) = results.next().await {
        pending -= 1;
        prefixes += 1;
        match result {
            Ok((part, children)) => {
                acc.merge(part);
                for (prefix, delimited) in children {
                    let task = if delimited && should_expand(&rel(&prefix)) {
                        Task::Expand(prefix)
                    } else {
                        Task::Leaf(prefix)
                    };
                    if let Some(tx) = &tx {
                        pending += 1;
                        let _ = tx.send(task);
                    }
                }
            }
            Err(e) => {
                error.get_or_insert(e);
                stop.cancel();
            }
        }
        if pending == 0 {
            // Nothing queued or running: close the queue so the stream ends.
            tx = None;
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    Ok(Walked {
        acc,
        complete: pending == 0 && !cancel.is_cancelled(),
        prefixes,
    })
}

/// Lists one prefix to its end. Returns the accumulator and the sub-folders found (each
/// with `true`: it came from a delimiter listing).
async fn run_task<S, Src, A, F>(
    store: &S,
    source: &Src,
    task: Task,
    visit: &F,
) -> Result<(A, Vec<(String, bool)>), StoreError>
where
    S: Store + ?Sized,
    Src: Source<S>,
    A: Merge,
    F: Fn(&mut A, &Src::Item) + Sync,
{
    let (prefix, delimiter) = match task {
        Task::Expand(p) => (p, true),
        Task::Leaf(p) => (p, false),
    };
    let mut acc = A::default();
    let mut children = Vec::new();
    let mut token = None;
    loop {
        let page = retry_read("listing", || {
            source.page(store, &prefix, delimiter, None, token.clone())
        })
        .await?;
        for item in &page.items {
            visit(&mut acc, item);
        }
        children.extend(
            page.prefixes
                .into_iter()
                .filter(|p| p.len() > prefix.len() && p.starts_with(prefix.as_str()))
                .map(|p| (p, true)),
        );
        match page.next {
            Some(t) => token = Some(t),
            None => return Ok((acc, children)),
        }
    }
}

/// Most range splits per listed chain slot: [`walk_ranges`] splits at most
/// `SPLITS_PER_SLOT * concurrency` times, so it makes at most
/// `1 + SPLITS_PER_SLOT * concurrency` chains and, at most, that many requests more than
/// one chain of full pages would (`ceil(objects / 1000)`), before retries.
pub const SPLITS_PER_SLOT: usize = 2;

/// A chain is split only while it has about this many pages left (an estimate; see
/// [`walk_ranges`]): a split costs up to one request.
const MIN_SPLIT_PAGES: f64 = 4.0;

/// Where a range walk may cut the key space, and how much.
#[derive(Debug, Clone)]
pub struct RangePlan {
    /// The full key prefix everything listed starts with (`""`: the whole bucket).
    pub root: String,
    /// Bytes of `root` (and of every key) that are the `S3_KEY_PREFIX` part.
    pub layout_offset: usize,
    /// Chains listed at once.
    pub concurrency: usize,
    /// Splits allowed in all (see [`SPLITS_PER_SLOT`]).
    pub max_splits: usize,
    /// The snowflake id of "now" (Unix ms << 16): no Mastodon key below an attachment
    /// folder carries a later 18-digit id, so the time bisection of snowflake folders
    /// stops there.
    pub now_id: u64,
}

impl RangePlan {
    /// The plan for `root` now, `concurrency` chains at once, [`SPLITS_PER_SLOT`] splits
    /// per chain slot.
    pub fn new(root: &str, layout_offset: usize, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        RangePlan {
            root: root.to_owned(),
            layout_offset,
            concurrency,
            max_splits: SPLITS_PER_SLOT * concurrency,
            now_id: u64::try_from(super::snowflake_at(chrono::Utc::now())).unwrap_or(0),
        }
    }
}

/// Lists everything below `root` in key ranges without delimiter listings, at most
/// `concurrency` ranges at a time, calling `visit` once per entry with the accumulator of
/// the chain that listed it (S3: a chain is one `ListObjectsV2` or `ListObjectVersions`
/// continuation chain of ~1000-key pages).
///
/// It starts with one chain over `[root, end)`, like `rclone size`, and splits a running
/// chain whenever a slot is free: a chain whose range goes past the Mastodon folder it is
/// in (`[cache/]<class>/<attachment>/`, or the key's first folder outside the layout) is
/// cut at that folder's end; a chain inside an attachment folder is cut at the middle of
/// its remaining id range (the partition digits of its keys, as one 18-digit number;
/// snowflake ids are bisected by time up to `now`, other ids by doubling what the chain
/// has seen), the chain with the most estimated pages left first. Each range
/// `[lo, hi)` is listed with the longest folder prefix its bounds share and
/// `start_after` just below `lo`; keys below `lo` are skipped and the chain stops at the
/// first key at or past `hi`. A split lowers a running chain's `hi` only to a key past
/// the last key it visited, under the chain's lock, and the new chain takes `[m, hi)`:
/// the ranges always partition the key space, so every entry is visited exactly once.
/// Every chain costs at most one request more than its share of full pages.
///
/// `cancel` stops every chain before its next page (the walk is then incomplete).
/// Errors: the first listing error that outlasts the request-level and item-level
/// retries ends the walk.
pub async fn walk_ranges<S, Src, A, F>(
    store: &S,
    source: &Src,
    plan: &RangePlan,
    cancel: &CancellationToken,
    visit: F,
) -> Result<Walked<A>, StoreError>
where
    S: Store + ?Sized,
    Src: Source<S>,
    A: Merge,
    F: Fn(&mut A, &Src::Item) + Sync,
{
    let fetch = |prefix: String, start_after: Option<String>, token: Option<Src::Token>| async move {
        source
            .page(store, &prefix, false, start_after.as_deref(), token)
            .await
    };
    chains(&fetch, Src::key, plan, cancel, &visit).await
}

/// The state of one range chain, shared between the chain and the splitter.
#[derive(Debug)]
struct Chain {
    /// Inclusive lower bound (a full key).
    lo: String,
    /// Exclusive upper bound (`None`: the end of `root`); only lowered, by splits.
    hi: Option<String>,
    /// The last key visited.
    cur: Option<String>,
    /// Id units (see [`ids_of`]) one page of this chain spans, measured or inherited.
    span: Option<u64>,
    /// The id of the first key this chain visited (or of `lo`).
    origin: Option<u64>,
    /// Listed to its end (or to `hi`).
    done: bool,
}

type Cell = Arc<Mutex<Chain>>;

fn lock(c: &Cell) -> std::sync::MutexGuard<'_, Chain> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The range walk over any page source (`fetch(prefix, start_after, token)`), so the
/// exactly-once property is tested without a store.
async fn chains<I, T, A, Fetch, Fut, K, F>(
    fetch: &Fetch,
    key_of: K,
    plan: &RangePlan,
    cancel: &CancellationToken,
    visit: &F,
) -> Result<Walked<A>, StoreError>
where
    I: Send,
    T: Clone + Send,
    A: Merge,
    Fetch: Fn(String, Option<String>, Option<T>) -> Fut + Sync,
    Fut: Future<Output = Result<Page<I, T>, StoreError>> + Send,
    K: Fn(&I) -> &str + Copy + Sync,
    F: Fn(&mut A, &I) + Sync,
{
    let (progress, mut progressed) = mpsc::unbounded_channel::<()>();
    let mut live: Vec<Cell> = Vec::new();
    let mut running = stream::FuturesUnordered::new();
    let start = |c: &Cell, running: &mut stream::FuturesUnordered<_>| {
        let (prefix, start_after) = {
            let g = lock(c);
            range_request(&g.lo, g.hi.as_deref(), &plan.root)
        };
        running.push(run_chain(
            c.clone(),
            prefix,
            start_after,
            fetch,
            key_of,
            plan,
            cancel,
            visit,
            progress.clone(),
        ));
    };
    let first: Cell = Arc::new(Mutex::new(Chain {
        lo: plan.root.clone(),
        hi: None,
        cur: None,
        span: None,
        origin: None,
        done: false,
    }));
    live.push(first.clone());
    start(&first, &mut running);
    let mut acc = A::default();
    let mut complete = true;
    let mut splits = 0usize;
    let mut chains_run = 1u64;
    loop {
        while !cancel.is_cancelled() && running.len() < plan.concurrency && splits < plan.max_splits
        {
            let Some(new) = split_one(&live, plan) else {
                break;
            };
            splits += 1;
            chains_run += 1;
            live.push(new.clone());
            start(&new, &mut running);
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some(done) = running.next() => {
                let (cell, result): (Cell, Result<(A, bool), StoreError>) = done;
                live.retain(|c| !Arc::ptr_eq(c, &cell));
                let (part, finished) = result?;
                acc.merge(part);
                complete &= finished;
            }
            Some(()) = progressed.recv() => {
                while progressed.try_recv().is_ok() {}
            }
        }
    }
    Ok(Walked {
        acc,
        complete: complete && !cancel.is_cancelled(),
        prefixes: chains_run,
    })
}

/// The listing prefix and `start_after` of the range `[lo, hi)` below `root`: the
/// longest folder prefix (up to a `/`) `lo` and `hi` share, never shorter than `root`
/// (every key of the range starts with it), and [`just_below`] `lo` (every key at or past
/// `lo` sorts after it; `None` for `lo == root`).
fn range_request(lo: &str, hi: Option<&str>, root: &str) -> (String, Option<String>) {
    let common = match hi {
        Some(hi) => {
            let n = lo
                .bytes()
                .zip(hi.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            // Back to a character boundary, then to the last folder separator.
            let mut n = n.min(lo.len());
            while !lo.is_char_boundary(n) {
                n -= 1;
            }
            lo[..n].rfind('/').map_or(0, |i| i + 1)
        }
        None => 0,
    };
    let prefix = if common > root.len() {
        lo[..common].to_owned()
    } else {
        root.to_owned()
    };
    (prefix, (lo != root).then(|| just_below(lo)))
}

/// A string just below `key` (`start_after` for a range starting at `key`): its last
/// character, when printable ASCII, one lower and followed by `~` (the highest printable
/// ASCII character), so `…/files0` gives `…/files/~` and the keys of `…/files/` are not
/// listed again; otherwise `key` without its last character. Keys between it and `key`
/// are listed and skipped: correct either way, only the cost differs.
fn just_below(key: &str) -> String {
    let mut s = key.to_owned();
    match s.pop() {
        Some(c) if c.is_ascii_graphic() && c != '!' => {
            s.push(char::from(c as u8 - 1));
            s.push('~');
        }
        _ => {}
    }
    s
}

/// Lists one range to its (possibly lowered) end. Returns the chain, its accumulator and
/// whether it reached the end (false: cancelled).
#[allow(clippy::too_many_arguments)]
async fn run_chain<I, T, A, Fetch, Fut, K, F>(
    cell: Cell,
    prefix: String,
    start_after: Option<String>,
    fetch: &Fetch,
    key_of: K,
    plan: &RangePlan,
    cancel: &CancellationToken,
    visit: &F,
    progress: mpsc::UnboundedSender<()>,
) -> (Cell, Result<(A, bool), StoreError>)
where
    I: Send,
    T: Clone + Send,
    A: Merge,
    Fetch: Fn(String, Option<String>, Option<T>) -> Fut + Sync,
    Fut: Future<Output = Result<Page<I, T>, StoreError>> + Send,
    K: Fn(&I) -> &str + Copy + Sync,
    F: Fn(&mut A, &I) + Sync,
{
    let mut acc = A::default();
    let mut token: Option<T> = None;
    let lo = lock(&cell).lo.clone();
    loop {
        if cancel.is_cancelled() {
            return (cell, Ok((acc, false)));
        }
        let page = match retry_read("listing", || {
            let sa = if token.is_none() {
                start_after.clone()
            } else {
                None
            };
            fetch(prefix.clone(), sa, token.clone())
        })
        .await
        {
            Ok(p) => p,
            Err(e) => return (cell, Err(e)),
        };
        // Decide under the lock which entries are this chain's: a split only lowers `hi`
        // past `cur`, so what is taken here stays below `hi`.
        let (end, finished) = {
            let mut c = lock(&cell);
            let end = page
                .items
                .iter()
                .position(|i| c.hi.as_deref().is_some_and(|h| key_of(i) >= h))
                .unwrap_or(page.items.len());
            let taken: Vec<&str> = page.items[..end]
                .iter()
                .map(key_of)
                .filter(|k| *k >= lo.as_str())
                .collect();
            if let (Some(first), Some(last)) = (taken.first(), taken.last()) {
                let ids = (ids_of(first, plan), ids_of(last, plan));
                if let (Some((fa, a)), Some((fb, b))) = ids
                    && fa == fb
                    && taken.len() > 1
                    && b > a
                {
                    let per_page = u128::from(b - a) * 1000 / (taken.len() as u128 - 1);
                    c.span = Some(u64::try_from(per_page).unwrap_or(u64::MAX).max(1));
                    if c.cur.is_none() {
                        c.origin = Some(a);
                    }
                }
                c.cur = Some((*last).to_owned());
            }
            let finished = end < page.items.len() || page.next.is_none();
            c.done = finished;
            (end, finished)
        };
        for item in &page.items[..end] {
            if key_of(item) >= lo.as_str() {
                visit(&mut acc, item);
            }
        }
        let _ = progress.send(());
        if finished {
            return (cell, Ok((acc, true)));
        }
        token = page.next;
    }
}

/// Splits the live chain with the most estimated pages left, if any is worth it; returns
/// the new chain (not started).
fn split_one(live: &[Cell], plan: &RangePlan) -> Option<Cell> {
    let best = live
        .iter()
        .filter_map(|c| split_point(&lock(c), plan).map(|(est, _)| (est, c)))
        .max_by(|a, b| a.0.total_cmp(&b.0))?
        .1;
    let mut c = lock(best);
    // Computed again under the same lock that applies it.
    let (_, m) = split_point(&c, plan)?;
    let new = Chain {
        lo: m.clone(),
        hi: c.hi.clone(),
        cur: None,
        span: c.span,
        origin: ids_of(&m, plan).map(|(_, x)| x),
        done: false,
    };
    c.hi = Some(m);
    Some(Arc::new(Mutex::new(new)))
}

/// Where to cut a chain and how many pages it has left (an estimate; infinite for a cut
/// at a folder's end): `None` when it is done, has no position yet, or is not worth it.
/// The cut `m` always satisfies `lo < m`, `cur < m` and `m < hi`, and starts with `root`.
fn split_point(c: &Chain, plan: &RangePlan) -> Option<(f64, String)> {
    if c.done {
        return None;
    }
    let pos = match &c.cur {
        Some(k) => k.as_str(),
        None if c.span.is_some() => c.lo.as_str(),
        None => return None,
    };
    let rel = pos.get(plan.layout_offset..)?;
    let (len, known) = folder_of(rel)?;
    let folder = &pos[..plan.layout_offset + len];
    let end = format!("{}0", &folder[..folder.len() - 1]);
    let valid = |m: &str| {
        m > c.lo.as_str()
            && c.cur.as_deref().is_none_or(|k| m > k)
            && c.hi.as_deref().is_none_or(|h| m < h)
            && m.starts_with(plan.root.as_str())
    };
    if c.hi.as_deref().is_none_or(|h| h > end.as_str()) {
        // Past this folder: cut at its end first (where the next folder starts).
        return (c.cur.is_some() && valid(&end)).then_some((f64::INFINITY, end));
    }
    if !known {
        return None;
    }
    let (_, x) = ids_of(pos, plan)?;
    let span = c.span?;
    let top = match c.hi.as_deref().and_then(|h| ids_of(h, plan)) {
        Some((f, h)) if f == folder.len() => h,
        _ => id_cap(x, c.origin.unwrap_or(x), span, plan.now_id),
    };
    if top <= x.saturating_add(1) {
        return None;
    }
    let est = (top - x) as f64 / span as f64;
    if est < MIN_SPLIT_PAGES {
        return None;
    }
    let m = format!("{folder}{}", partition_path(x + (top - x) / 2));
    valid(&m).then_some((est, m))
}

/// The highest id a key at `x` in its folder is assumed to reach: `now` for snowflake ids
/// (18 digits, up to now), otherwise twice what the chain has covered since `origin` (at
/// least four pages), within the key's first partition group.
fn id_cap(x: u64, origin: u64, span: u64, now_id: u64) -> u64 {
    const GROUP: u64 = 1_000_000_000_000_000;
    let snowflake_floor = 100 * GROUP;
    if x >= snowflake_floor && x < now_id {
        return now_id;
    }
    let group_end = (x / GROUP + 1).saturating_mul(GROUP);
    let seen = x.saturating_sub(origin).max(span.saturating_mul(4));
    x.saturating_add(seen).min(group_end)
}

/// The folder of a key below `S3_KEY_PREFIX`: `[cache/]<class>/<attachment>/` when that is
/// a Mastodon attachment (`true`), else the key's first folder (`false`); its length.
fn folder_of(rel: &str) -> Option<(usize, bool)> {
    let inner = rel.strip_prefix("cache/").unwrap_or(rel);
    let offset = rel.len() - inner.len();
    let mut segs = inner.splitn(3, '/');
    if let (Some(class), Some(att), Some(_)) = (segs.next(), segs.next(), segs.next())
        && attachment_of(class, att).is_some()
    {
        return Some((offset + class.len() + att.len() + 2, true));
    }
    rel.find('/').map(|i| (i + 1, false))
}

/// The partition digits of a key below its attachment folder (`109/348/.../` groups of
/// three digits, at most six) as one 18-digit number, zero-filled on the right (so ids
/// sort as their keys do), with the length of the folder part of the key.
fn ids_of(key: &str, plan: &RangePlan) -> Option<(usize, u64)> {
    let rel = key.get(plan.layout_offset..)?;
    let (len, known) = folder_of(rel)?;
    if !known {
        return None;
    }
    let mut digits = String::with_capacity(18);
    for seg in rel[len..].split('/').take(6) {
        if seg.len() == 3 && seg.bytes().all(|b| b.is_ascii_digit()) {
            digits.push_str(seg);
        } else {
            break;
        }
    }
    if digits.is_empty() {
        return None;
    }
    while digits.len() < 18 {
        digits.push('0');
    }
    Some((plan.layout_offset + len, digits.parse().ok()?))
}

/// `x` as six partition groups: `ddd/ddd/ddd/ddd/ddd/ddd/`.
fn partition_path(x: u64) -> String {
    let d = format!("{:018}", x.min(999_999_999_999_999_999));
    let mut out = String::with_capacity(24);
    for i in 0..6 {
        out.push_str(&d[i * 3..i * 3 + 3]);
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::should_expand;

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::{Merge, Page, RangePlan, chains, ids_of, partition_path, range_request};
    use crate::store::StoreError;

    #[derive(Default)]
    struct Seen(HashMap<String, u32>);

    impl Merge for Seen {
        fn merge(&mut self, other: Self) {
            for (k, n) in other.0 {
                *self.0.entry(k).or_default() += n;
            }
        }
    }

    // 2026-01-01T00:00Z as a snowflake id.
    const NOW: u64 = 1_767_225_600_000 << 16;

    fn snowflake_key(folder: &str, id: u64, style: &str) -> String {
        let d = format!("{id:018}");
        let groups: Vec<&str> = (0..6).map(|i| &d[i * 3..i * 3 + 3]).collect();
        format!("{folder}{}/{style}/f.png", groups.join("/"))
    }

    /// A bucket shaped like an instance's: a dense day of cached media, local media
    /// spread over two years, serial-id avatars, keys outside the layout and keys that
    /// sort between folders.
    fn bucket(base: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let day: u64 = 86_400_000 << 16;
        for i in 0..6000u64 {
            let id = NOW - 8 * day + i * (day / 6000);
            keys.push(snowflake_key(
                "cache/media_attachments/files/",
                id,
                "original",
            ));
            keys.push(snowflake_key("cache/media_attachments/files/", id, "small"));
        }
        for i in 0..1500u64 {
            let id = NOW - 730 * day + i * (730 * day / 1500);
            keys.push(snowflake_key("media_attachments/files/", id, "original"));
        }
        for i in 1..=900u64 {
            let d = format!("{i:09}");
            keys.push(format!(
                "accounts/avatars/{}/{}/{}/original/a.png",
                &d[..3],
                &d[3..6],
                &d[6..]
            ));
        }
        for k in [
            "robots.txt",
            "backups/dumps/000/000/001/original/x.zip",
            "cache/custom_emojis/images/000/000/007/static/e.png",
            "media_attachments/files/stray.txt",
            "media_attachments/files/109-x/y",
            "media_attachments/files/109./y",
            "media_attachments/filesx",
            "media_attachments/files0/z",
            "other/a/b",
            "zzz",
        ] {
            keys.push(k.to_owned());
        }
        for i in 0..1200 {
            keys.push(format!("unrelated/{i:05}.txt"));
        }
        let mut keys: Vec<String> = keys.into_iter().map(|k| format!("{base}{k}")).collect();
        keys.push("outside-the-prefix".into());
        keys.sort();
        keys.dedup();
        keys
    }

    /// Lists `keys` like ListObjectsV2 (1000 keys a page, the token is the next index) and
    /// checks that every key below `root` is visited exactly once and that the requests
    /// stay within one request per chain of the floor.
    async fn check(keys: &[String], base: &str, root: &str, concurrency: usize) -> u64 {
        let requests = AtomicU64::new(0);
        let fetch = |prefix: String, start_after: Option<String>, token: Option<usize>| {
            requests.fetch_add(1, Ordering::Relaxed);
            let from = match (token, start_after) {
                (Some(t), _) => t,
                (None, Some(sa)) => keys.partition_point(|k| k.as_str() <= sa.as_str()),
                (None, None) => 0,
            };
            let mut items = Vec::new();
            let mut i = keys
                .partition_point(|k| k.as_str() < prefix.as_str())
                .max(from);
            while i < keys.len() && items.len() < 1000 {
                if keys[i].starts_with(prefix.as_str()) {
                    items.push(keys[i].clone());
                } else if keys[i].as_str() > prefix.as_str() {
                    break;
                }
                i += 1;
            }
            let more = i < keys.len() && keys[i].starts_with(prefix.as_str());
            async move {
                // Let the other chains (and splits) run between pages.
                tokio::task::yield_now().await;
                Ok::<_, StoreError>(Page {
                    items,
                    prefixes: Vec::new(),
                    next: more.then_some(i),
                })
            }
        };
        let mut plan = RangePlan::new(root, base.len(), concurrency);
        plan.now_id = NOW;
        let walked = chains(
            &fetch,
            |k: &String| k.as_str(),
            &plan,
            &CancellationToken::new(),
            &|s: &mut Seen, k: &String| *s.0.entry(k.clone()).or_default() += 1,
        )
        .await
        .expect("walk");
        assert!(walked.complete);
        let below: Vec<&String> = keys.iter().filter(|k| k.starts_with(root)).collect();
        for k in &below {
            assert_eq!(
                walked.acc.0.get(*k),
                Some(&1),
                "{k} visited once (root {root:?})"
            );
        }
        assert_eq!(walked.acc.0.len(), below.len(), "nothing outside {root:?}");
        let n = requests.load(Ordering::Relaxed);
        let floor = (below.len() as u64).div_ceil(1000).max(1);
        assert!(
            n <= floor + walked.prefixes,
            "{n} requests, floor {floor}, {} chains",
            walked.prefixes
        );
        assert!(walked.prefixes <= 1 + plan.max_splits as u64);
        walked.prefixes
    }

    #[tokio::test]
    async fn ranges_visit_every_object_exactly_once() {
        for base in ["", "pfx/"] {
            let keys = bucket(base);
            for concurrency in [1, 2, 8, 32] {
                let chains = check(&keys, base, base, concurrency).await;
                if concurrency > 1 {
                    assert!(chains > 1, "the dense folder is split ({concurrency})");
                }
                for sub in [
                    "cache/",
                    "cache/media_attachments/files/",
                    "media_attachments/files/1",
                    "accounts/",
                    "nothing/",
                ] {
                    check(&keys, base, &format!("{base}{sub}"), concurrency).await;
                }
            }
        }
    }

    #[test]
    fn range_requests_list_the_shared_folder_after_lo() {
        assert_eq!(range_request("", None, ""), (String::new(), None));
        assert_eq!(
            range_request("a/b/c/", Some("a/b/d/"), ""),
            ("a/b/".into(), Some("a/b/c.~".into()))
        );
        assert_eq!(
            range_request("m/files0", None, "m/"),
            ("m/".into(), Some("m/files/~".into()))
        );
        assert_eq!(
            range_request("p/x/1", Some("p/y"), "p/x/"),
            ("p/x/".into(), Some("p/x/0~".into()))
        );
        assert_eq!(range_request("p/é", None, "p/").1, Some("p/".into()));
    }

    #[test]
    fn partition_digits_round_trip() {
        let plan = RangePlan::new("", 0, 1);
        let k = "cache/media_attachments/files/111/677/748/019/200/000/original/a.png";
        assert_eq!(
            ids_of(k, &plan),
            Some((
                "cache/media_attachments/files/".len(),
                111_677_748_019_200_000
            ))
        );
        assert_eq!(
            partition_path(111_677_748_019_200_000),
            "111/677/748/019/200/000/"
        );
        assert_eq!(
            ids_of("accounts/avatars/000/000/001/original/a.png", &plan),
            Some(("accounts/avatars/".len(), 1_000_000_000))
        );
        assert_eq!(ids_of("other/000/1", &plan), None);
        assert_eq!(ids_of("media_attachments/files/x/1", &plan), None);
    }

    #[test]
    fn expands_along_the_layout_down_to_attachments() {
        for rel in [
            "",
            "cache/",
            "media_attachments/",
            "cache/media_attachments/",
            "media_attachments/files/",
            "cache/accounts/avatars/",
            "site_uploads/files/",
            "imports/data/",
        ] {
            assert!(should_expand(rel), "{rel}");
        }
        for rel in [
            "media_attachments/files/109/",
            "cache/cache/",
            "statuses/",
            "media_attachments/images/",
            "robots.txt",
            "media_attachments",
            "backups/dumps/000/",
        ] {
            assert!(!should_expand(rel), "{rel}");
        }
    }
}
