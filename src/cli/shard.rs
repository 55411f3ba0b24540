//! `--shard K/N` and `--shards N`, shared by `prune`, `migrate`, `du` and `orphans`
//! (issue 13). Parsing only: `commands::shard` adds `JOB_COMPLETION_INDEX` and
//! `MASTOMEDIA_SHARDS` from the environment ([`crate::model::Shard::resolve`]).

use crate::model::Shard;

/// The shard flags of a job.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ShardArgs {
    /// Run only shard K of N (0 <= K < N, counted from 0 like Kubernetes'
    /// JOB_COMPLETION_INDEX), side by side with the other shards on other hosts or pods.
    /// Rows go by id mod N, listed keys by a hash of the key. Each shard has its own
    /// advisory lock and journal keys; --rate is the total of all shards, each takes
    /// rate/N. Without it: JOB_COMPLETION_INDEX with --shards or MASTOMEDIA_SHARDS.
    #[arg(long, value_name = "K/N", value_parser = shard_arg)]
    pub shard: Option<Shard>,

    /// The number of shards N when the index comes from JOB_COMPLETION_INDEX (an Indexed
    /// Job's completions); default: MASTOMEDIA_SHARDS.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: Option<u32>,
}

/// `--shard`: [`Shard::parse`]; a bad value is a usage error (exit 2) saying what is valid.
fn shard_arg(s: &str) -> Result<Shard, String> {
    Shard::parse(s).map_err(|e| e.to_string())
}
