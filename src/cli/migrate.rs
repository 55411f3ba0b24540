//! `mastomedia migrate`.

use std::num::NonZeroU32;
use std::path::PathBuf;

/// Arguments of `migrate`.
///
/// Copies public/system (or another provider's bucket) into the bucket of the env file,
/// with the ACL, Content-Type and Cache-Control Mastodon itself would have written. When
/// the env file keeps media on the local disk (S3_ENABLED not true), --from-env copies the
/// old bucket into that folder instead (leaving a provider).
/// Resumable: a journal records every file copied, so a re-run (after a crash, or as the
/// catch-up pass before switching Mastodon over) uploads only what is new or changed.
///
/// Examples:
///
///   mastomedia --env-file .env.production migrate --dry-run
///
///   mastomedia migrate --from /home/mastodon/live/public/system --skip-cache
///
///   mastomedia migrate --from-env /home/mastodon/old.env.production --rate 100
///
///   mastomedia --env-file .env.disk migrate --from-env old.env.production --verify
///
///   mastomedia migrate --verify --database
///
///   mastomedia migrate --repair --dry-run
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Source folder (default: PAPERCLIP_ROOT_PATH, else public/system beside the env file).
    /// Not with a disk target (use cp -a or rsync -a).
    #[arg(long, value_name = "DIR", conflicts_with = "from_env")]
    pub from: Option<PathBuf>,

    /// Source bucket: the one described by another Mastodon env file (provider to provider).
    #[arg(long, value_name = "OLD_ENV")]
    pub from_env: Option<PathBuf>,

    /// List what would be copied (and its size), upload nothing, write no journal entry.
    #[arg(long)]
    pub dry_run: bool,

    /// Leave out cache/ (remote copies Mastodon re-fetches on demand; often most of the bytes).
    #[arg(long)]
    pub skip_cache: bool,

    /// Uploads in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub concurrency: u32,

    /// Most storage requests per second (unlimited when not set). With --shard it is the
    /// total of all N shards (the provider's limit is per bucket): each shard takes rate/N,
    /// rounded down, at least 1.
    #[arg(long, value_name = "REQUESTS_PER_SECOND")]
    pub rate: Option<NonZeroU32>,

    /// `--shard K/N`, `--shards N`.
    #[command(flatten)]
    pub shard: super::shard::ShardArgs,

    /// The journal: a SQLite file, or a postgres:// URL shared by every shard and host
    /// (tables in its schema mastomedia). Default: MASTOMEDIA_JOURNAL, else a file under
    /// ~/.local/state/mastomedia, one per target bucket.
    #[arg(long, value_name = "PATH|URL")]
    pub journal: Option<std::ffi::OsString>,

    /// Files above this size (bytes) go as multipart uploads with equal parts; at least
    /// 5242880 (5 MiB, S3's smallest part). Default: the env file's
    /// S3_MULTIPART_THRESHOLD, as Mastodon uploads, else Mastodon's 15728640 (15 MiB).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(5_242_880..))]
    pub multipart_threshold: Option<u64>,

    /// After copying, HEAD every migrated object and compare size (and MD5 where the ETag is one).
    #[arg(long)]
    pub verify: bool,

    /// Instead of copying: fix Content-Type, Cache-Control and ACL of the objects already in
    /// the bucket (installs copied with another tool). Private objects stay private unless
    /// --repair-acl is given; backups and imports always stay private.
    #[arg(long, conflicts_with_all = ["from", "from_env", "skip_cache"])]
    pub repair: bool,

    /// With --repair: also make private objects public-read (S3_PERMISSION) when the
    /// database vouches for them: the key is in Mastodon's layout, its row exists, the
    /// account is not suspended and the post is not deleted or moderated. Never backups,
    /// imports or keys outside the layout (their ACL is left as it is); media of suspended
    /// accounts and moderated posts are made private.
    #[arg(long, requires = "repair")]
    pub repair_acl: bool,

    /// Also read Mastodon's database (DATABASE_URL or DB_* of the env file): a copy keeps
    /// media of suspended accounts and moderated posts private (and makes a private source
    /// object public only when its row is in good standing; a file whose standing the
    /// database cannot tell, down mid-run, is not copied but listed, exit 1, and the next
    /// run copies it); --verify owes no file whose
    /// row is gone, and fails on files a row still names but the bucket lacks;
    /// --reupload-missing then puts back only those.
    #[arg(long, conflicts_with = "repair")]
    pub database: bool,

    /// Upload again the files that --verify found deleted in the bucket since the copy.
    /// Catch-up passes never do: Mastodon (or an admin) deleted them there on purpose.
    #[arg(long, conflicts_with = "repair")]
    pub reupload_missing: bool,

    /// Go on although the journal knows nothing of this target while the bucket already
    /// holds some of the source's files (another user's or host's default journal, a lost
    /// journal): every file missing in the bucket is uploaded, which brings back what
    /// Mastodon deleted there since an earlier copy. Without it such a run refuses (exit 2);
    /// pass --journal with the first pass's journal instead.
    #[arg(long)]
    pub accept_empty_journal: bool,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}
