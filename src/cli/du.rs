//! `mastomedia du`.

use std::num::NonZeroU32;

/// Arguments of `du`.
///
/// Lists the bucket (or walks PAPERCLIP_ROOT_PATH) and totals objects and bytes per
/// Mastodon category (class/attachment, cache/ or local), beside the database's own sums
/// as `tootctl media usage` computes them, plus keys outside Mastodon's layout. Read-only.
///
/// Examples:
///
///   mastomedia --env-file /home/mastodon/live/.env.production du
///
///   mastomedia du --versions --json > usage.json
///
///   mastomedia du --prefix cache/ --concurrency 16
///
///   mastomedia du --by month
///
///   mastomedia du --html /var/www/du.html
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Only keys below this prefix (relative to S3_KEY_PREFIX), e.g. `cache/` or
    /// `media_attachments/files/`.
    #[arg(long, value_name = "PREFIX", default_value = "", value_parser = super::listing_prefix)]
    pub prefix: String,

    /// Also count noncurrent versions, delete markers and unfinished multipart uploads
    /// (S3 only: ListObjectVersions, ListMultipartUploads, ListParts).
    #[arg(long)]
    pub versions: bool,

    /// Prefixes listed at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,

    /// Most storage requests per second (unlimited when not set). With --shard it is the
    /// total of all N shards (the provider's limit is per bucket): each shard takes rate/N,
    /// rounded down, at least 1.
    #[arg(long, value_name = "REQUESTS_PER_SECOND")]
    pub rate: Option<NonZeroU32>,

    /// `--shard K/N`, `--shards N`.
    #[command(flatten)]
    pub shard: super::shard::ShardArgs,

    /// Also break the listing down: `month` = objects and bytes per month of creation
    /// (from the snowflake ids in the keys), under cache/ or not.
    #[arg(long, value_enum, value_name = "GROUPING")]
    pub by: Option<DuBy>,

    /// Also write the report as one self-contained HTML file (charts of the categories
    /// and of the growth per month; nothing fetched from the network).
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,

    /// Print the report as JSON on stdout (exact bytes; shape documented in the README).
    #[arg(long)]
    pub json: bool,
}

/// `du --by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DuBy {
    /// Per month of creation.
    Month,
}
