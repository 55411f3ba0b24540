//! The identity of a job run: which job, against which storage, and (issue 13, not yet
//! offered) which shard of it. The advisory lock's key and the journal's keys are all
//! derived here, so sharding a job is a change in this one place.

use std::borrow::Cow;
use std::fmt;

/// Shard `index` of `count` (`--shard K/N`, 1-based: `1/4` … `4/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based shard number, at most `count`.
    pub index: u32,
    /// Number of shards, at least 1.
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A job (`prune`, `orphans`, `migrate`) against a target storage, optionally one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobKey {
    job: &'static str,
    target: String,
    shard: Option<Shard>,
}

impl JobKey {
    /// Job `job` against `target` (the journal's name for the storage:
    /// `s3://<bucket>@<host>`, `file://<root>`, or a migration's target bucket).
    pub fn new(job: &'static str, target: impl Into<String>) -> Self {
        Self {
            job,
            target: target.into(),
            shard: None,
        }
    }

    /// The same job restricted to `shard`.
    pub fn with_shard(self, shard: Shard) -> Self {
        Self {
            shard: Some(shard),
            ..self
        }
    }

    /// The job's name.
    pub fn job(&self) -> &'static str {
        self.job
    }

    /// The shard, if any.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// The name the advisory lock is taken under (`Db::lock`, hashed by
    /// `mastodon::advisory_key`; tested in `pool/mod.rs`): the job name alone without a shard (as every release
    /// so far, so a run of an older version and one of this version exclude each other),
    /// `<job>#<K>/<N>` for a shard, so shards of one job run side by side. The target is
    /// not part of it: the lock lives in the one database all targets of a server share.
    pub fn lock_name(&self) -> Cow<'_, str> {
        match self.shard {
            None => Cow::Borrowed(self.job),
            Some(s) => Cow::Owned(format!("{}#{s}", self.job)),
        }
    }

    /// The target as the journal keys its rows (orphan scan positions, migrated files,
    /// run records): the target alone without a shard (the rows journals already hold),
    /// `<target>#shard=<K>/<N>` for a shard, so shards never resume each other's position.
    pub fn journal_target(&self) -> Cow<'_, str> {
        match self.shard {
            None => Cow::Borrowed(&self.target),
            Some(s) => Cow::Owned(format!("{}#shard={s}", self.target)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_shard_the_keys_are_those_of_today() {
        for job in ["prune", "orphans", "migrate"] {
            let k = JobKey::new(job, "s3://media@host");
            assert_eq!(k.lock_name(), job);
            assert_eq!(k.journal_target(), "s3://media@host");
            assert_eq!((k.job(), k.shard()), (job, None));
        }
    }

    #[test]
    fn shards_get_keys_of_their_own() {
        let base = JobKey::new("orphans", "file:///srv/media");
        let cases = [
            (
                Shard { index: 1, count: 4 },
                "orphans#1/4",
                "file:///srv/media#shard=1/4",
            ),
            (
                Shard { index: 4, count: 4 },
                "orphans#4/4",
                "file:///srv/media#shard=4/4",
            ),
        ];
        for (shard, lock, target) in cases {
            let k = base.clone().with_shard(shard);
            assert_eq!(k.lock_name(), lock);
            assert_eq!(k.journal_target(), target);
            assert_eq!(k.shard(), Some(shard));
            assert_eq!(k.job(), "orphans");
        }
    }
}
