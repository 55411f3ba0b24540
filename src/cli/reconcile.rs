//! `mastomedia reconcile`.

use std::num::NonZeroU32;

/// Arguments of `reconcile`.
///
/// Finds rows whose stored file (any style, or the thumbnail) is missing from the storage:
/// media attachments, avatars, headers and preview cards, remote and local, reported per
/// category. With --apply, the REMOTE ones are cleared exactly as prune clears them (their
/// leftover objects deleted by exact key, then the file columns set to NULL), so Mastodon
/// fetches them again on demand. LOCAL rows are listed as lost files and never changed.
///
/// Refuses (exit 3) a storage the database cannot own (none of its newest files there, or
/// newer files than it knows), and --apply when more than half of the checked rows (and more
/// than 20) miss a file, unless --force-missing. Takes prune's advisory lock with --apply.
/// Resumable by running it again: a cleared row is no longer checked. Rows changed in the
/// last --min-age days are not checked: Mastodon saves a row before it stores its file.
///
/// Examples:
///
///   mastomedia reconcile
///
///   mastomedia reconcile --apply
///
///   mastomedia reconcile --json
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Clear the remote rows with a missing file (without it nothing is written).
    #[arg(long)]
    pub apply: bool,

    /// With --apply: clear even when most checked rows miss a file (only when the files
    /// really are gone, e.g. after restoring a backup without cache/).
    #[arg(long, requires = "apply")]
    pub force_missing: bool,

    /// Check only rows not changed (`updated_at`) for this many days: a row Mastodon is
    /// fetching or uploading right now names a file that is not stored yet.
    #[arg(long, value_name = "DAYS", default_value_t = 1.0, value_parser = super::orphans::non_negative_days)]
    pub min_age: f64,

    /// Listings (and delete batches) in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,

    /// Most storage requests per second (unlimited when not set).
    #[arg(long, value_name = "REQUESTS_PER_SECOND")]
    pub rate: Option<NonZeroU32>,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}
