//! `mastomedia orphans`.

use std::num::NonZeroU32;

/// Arguments of `orphans`.
///
/// Parses every key by Mastodon's layout, looks the rows up in batches and classifies each
/// object: referenced, orphan (row gone or attachment cleared), stale copy (the row exists
/// but this exact key is not one it owns now, e.g. the legacy copy left beside a cache/
/// one), or unrecognised (outside the layout). Reports only, unless --delete.
///
/// Never deleted: unrecognised keys, referenced keys (including any key of a local row,
/// and keys in a shared 13-17 digit partition that a neighbour row may own), objects
/// younger than --min-age. Resumable: the position is journalled after every batch, and
/// the next run continues after it.
///
/// Examples:
///
///   mastomedia orphans
///
///   mastomedia orphans --delete --dry-run
///
///   mastomedia orphans --delete --include-stale --min-age 7 --json
///
///   mastomedia orphans --prefix cache/media_attachments/ --start-after cache/media_attachments/files/109/
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Only keys below this prefix (relative to S3_KEY_PREFIX).
    #[arg(long, value_name = "PREFIX", default_value = "", value_parser = super::listing_prefix)]
    pub prefix: String,

    /// Start after this key (as listed, with any S3_KEY_PREFIX) instead of the journalled
    /// position.
    #[arg(long, value_name = "KEY")]
    pub start_after: Option<String>,

    /// Never delete objects younger than this many days (uploads in flight).
    #[arg(long, value_name = "DAYS", default_value_t = 1.0, value_parser = non_negative_days)]
    pub min_age: f64,

    /// Delete orphans (row gone or attachment cleared).
    #[arg(long)]
    pub delete: bool,

    /// With --delete: also delete stale copies (keys a live row no longer owns).
    #[arg(long, requires = "delete")]
    pub include_stale: bool,

    /// With --delete: classify and size everything, delete nothing.
    #[arg(long, requires = "delete")]
    pub dry_run: bool,

    /// With --delete: go on although the scan shows this sign that the database may not
    /// own the storage (repeatable). Without it a deleting run scans first, read-only,
    /// and refuses (exit 3, nothing deleted) when the database names no stored file
    /// (no-stored-files), objects sit above its highest id (newer-keys: a restored backup
    /// or staging copy), more than --max-share of the objects would go (large-share), or
    /// keys outside cache/ would go (local-keys: local uploads cannot be fetched again).
    #[arg(long, value_enum, value_name = "RISK", requires = "delete")]
    pub accept_risk: Vec<AcceptRisk>,

    /// With --delete: the largest share of the scanned objects a run may delete without
    /// --accept-risk large-share, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = crate::plan::ownership::DEFAULT_MAX_SHARE_PERCENT, value_parser = percent, requires = "delete")]
    pub max_share: f64,

    /// The journal: a SQLite file, or a postgres:// URL shared by every shard and host
    /// (tables in its schema mastomedia). Default: MASTOMEDIA_JOURNAL, else a file under
    /// $XDG_STATE_HOME/mastomedia, one per storage.
    #[arg(long, value_name = "PATH|URL")]
    pub journal: Option<std::ffi::OsString>,

    /// Batches looked up and deleted at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,

    /// Most storage requests per second (unlimited when not set). With --shard it is the
    /// total of all N shards (the provider's limit is per bucket): each shard takes rate/N,
    /// rounded down, at least 1.
    #[arg(long, value_name = "REQUESTS_PER_SECOND")]
    pub rate: Option<NonZeroU32>,

    /// `--shard K/N`, `--shards N`.
    #[command(flatten)]
    pub shard: super::shard::ShardArgs,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A sign that the database may not own the storage, accepted with `--accept-risk`
/// ([`crate::plan::ownership::OwnershipRisk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcceptRisk {
    /// The database names no stored file.
    NoStoredFiles,
    /// Objects sit above the database's highest id of their table.
    NewerKeys,
    /// More than --max-share of the scanned objects would be deleted.
    LargeShare,
    /// Keys outside cache/ (local uploads) would be deleted.
    LocalKeys,
}

impl From<AcceptRisk> for crate::plan::ownership::OwnershipRisk {
    fn from(r: AcceptRisk) -> Self {
        use crate::plan::ownership::OwnershipRisk as R;
        match r {
            AcceptRisk::NoStoredFiles => R::NoStoredFiles,
            AcceptRisk::NewerKeys => R::NewerKeys,
            AcceptRisk::LargeShare => R::LargeShare,
            AcceptRisk::LocalKeys => R::LocalKeys,
        }
    }
}

fn percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage (0 to 100)")),
    }
}

pub(crate) fn non_negative_days(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if d.is_finite() && d >= 0.0 => Ok(d),
        _ => Err(format!("{s:?} is not a number of days (0 or more)")),
    }
}
