//! `mastomedia prune`.

use std::num::NonZeroU32;

/// Arguments of `prune`.
///
/// Examples:
///
///   mastomedia --env-file /home/mastodon/live/.env.production prune --dry-run
///
///   mastomedia prune --days 14 --preview-cards --rate 200
///
///   mastomedia prune --no-media --prune-profiles --days 90 --dry-run
///
///   mastomedia prune --domain noisy.example --days 2 --exclude-domain partner.example
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Retention in days (1 to 36500). Default: the instance's "media cache retention
    /// period", else 7.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: Option<u32>,

    /// Select and size everything, change nothing (no delete request, no row update).
    #[arg(long)]
    pub dry_run: bool,

    /// Delete batches in flight at once.
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

    /// Also remove avatars and headers of remote accounts not webfingered or updated
    /// within the window (accounts with follows, or that posted since, are kept).
    #[arg(long, conflicts_with = "remove_headers")]
    pub prune_profiles: bool,

    /// Also remove headers (only) of such remote accounts.
    #[arg(long)]
    pub remove_headers: bool,

    /// With --prune-profiles/--remove-headers: include accounts that follow or are
    /// followed by anyone.
    #[arg(long)]
    pub include_follows: bool,

    /// Also remove preview card images older than --preview-cards-days.
    #[arg(long)]
    pub preview_cards: bool,

    /// Preview card retention in days (strictly older than the cutoff are removed).
    #[arg(long, default_value_t = 180, requires = "preview_cards", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub preview_cards_days: u32,

    /// Allow --preview-cards-days below 14, and --max-cache-size to take card images
    /// younger than 14 days (cards are re-fetched only after two weeks).
    #[arg(long)]
    pub force: bool,

    /// Keep media of posts a local account bookmarked, favourited, boosted, replied to or
    /// quoted, or that quote a local post (Mastodon 4.6's definition, on any 4.2–4.6).
    #[arg(long)]
    pub keep_interacted: bool,

    /// Prune only media, profiles and cards of accounts on DOMAIN or its subdomains
    /// (repeatable). Cards count as a domain's when every post linking them is. Give the
    /// domain only: `example.social`, no scheme, path or `*.`.
    #[arg(long = "domain", value_name = "DOMAIN", value_parser = domain_arg)]
    pub domain: Vec<String>,

    /// Never prune media, profiles or cards of accounts on DOMAIN or its subdomains
    /// (repeatable; beats --domain). A card is kept when any post linking it is from there.
    #[arg(long = "exclude-domain", value_name = "DOMAIN", value_parser = domain_arg)]
    pub exclude_domain: Vec<String>,

    /// Prune the cache down to SIZE: measure what the remote rows of the kinds pruned
    /// really hold in the storage, then remove the oldest first (across kinds) until it
    /// fits. SIZE: bytes, or a number with a unit: 150GiB, 200GB, 500MB (kB/MB/GB/TB are
    /// powers of 1000, KiB/MiB/GiB/TiB of 1024). With --days too, whichever removes more
    /// wins; without it the budget alone decides for media and profiles. Card images
    /// younger than 14 days stay (and count) unless --force.
    #[arg(long, value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    pub max_cache_size: Option<u64>,

    /// Skip the media attachments pass (run only the profile / preview card passes).
    #[arg(long)]
    pub no_media: bool,

    /// Where the run's record goes (state, rows, objects, bytes, failures; shown by
    /// `mastomedia status`): a SQLite file or a postgres:// URL. Default:
    /// MASTOMEDIA_JOURNAL, else a file under ~/.local/state/mastomedia. Dry runs are not
    /// recorded.
    #[arg(long, value_name = "PATH|URL")]
    pub journal: Option<std::ffi::OsString>,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--domain` / `--exclude-domain`: the normal form Mastodon stores in `accounts.domain`
/// (`crate::plan::domain::parse_domain`); a bad one is a usage error (exit 2).
fn domain_arg(s: &str) -> Result<String, String> {
    crate::plan::domain::parse_domain(s).map_err(|e| e.to_string())
}

/// `--max-cache-size`: [`crate::plan::budget::parse_size`]; a bad one is a usage error
/// (exit 2) saying what is accepted.
fn size_arg(s: &str) -> Result<u64, String> {
    crate::plan::budget::parse_size(s).map_err(|e| e.to_string())
}
