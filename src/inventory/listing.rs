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

    /// One page below `prefix`, continuing at `token`.
    fn page(
        &self,
        store: &S,
        prefix: &str,
        delimiter: bool,
        token: Option<Self::Token>,
    ) -> impl Future<Output = Result<Page<Self::Item, Self::Token>, StoreError>> + Send;
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
        token: Option<String>,
    ) -> Result<Page<ObjectMeta, String>, StoreError> {
        let p = store.list_page(prefix, delimiter, None, token).await?;
        Ok(Page {
            items: p.objects,
            prefixes: p.common_prefixes,
            next: p.next,
        })
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
        token: Option<ListMarker>,
    ) -> Result<Page<VersionMeta, ListMarker>, StoreError> {
        let ext = store
            .as_s3ext()
            .ok_or_else(|| StoreError::s3_only("ListObjectVersions", &store.describe()))?;
        let p = ext.list_versions_page(prefix, delimiter, token).await?;
        Ok(Page {
            items: p.versions,
            prefixes: p.common_prefixes,
            next: p.next,
        })
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
            source.page(store, &prefix, delimiter, token.clone())
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

#[cfg(test)]
mod tests {
    use super::should_expand;

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
