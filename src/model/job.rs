//! The identity of a job run: which job, against which storage, and which shard of it
//! (issue 13, `--shard K/N`). The advisory lock's keys, the journal's keys and the
//! partition rules (which rows and which keys a shard owns) are all derived here, so a
//! shard is a change in this one place.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;

/// Shard `index` of `count` (`--shard K/N`), counted from 0 like Kubernetes'
/// `JOB_COMPLETION_INDEX` of an Indexed Job: `0/4` … `3/4`. Invariant: `index < count`
/// (only [`Shard::new`] and [`Shard::parse`] build one).
///
/// Two partition rules, both deterministic and independent of the process, so every shard
/// of one job computes the same split and every row or key belongs to exactly one shard:
/// - database-driven work (prune's candidate rows): [`Shard::sql_filter`], `id mod N = K`;
/// - listing-driven work (du, orphans, migrate's source files): [`Shard::owns_key`], an
///   FNV-1a hash of the key's bytes mod N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a `--shard`, `--shards`, `JOB_COMPLETION_INDEX` or `MASTOMEDIA_SHARDS` value is
/// refused (a usage error, exit 2). Each message says what is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not of the form `K/N` with two non-negative integers.
    #[error(
        "--shard {0:?} is not K/N: give the shard index K and the number of shards N as integers, 0 <= K < N (e.g. --shard 0/4 … --shard 3/4)"
    )]
    Syntax(String),
    /// `N` is 0.
    #[error("--shard {0:?}: the number of shards N must be at least 1 (shards are 0/N … N-1/N)")]
    NoShards(String),
    /// `K` is not below `N`.
    #[error(
        "shard {index}/{count} does not exist: shards are counted from 0, so K must be 0 … {} for N = {count}",
        count.saturating_sub(1)
    )]
    OutOfRange {
        /// K.
        index: u32,
        /// N.
        count: u32,
    },
    /// `JOB_COMPLETION_INDEX` (or `MASTOMEDIA_SHARDS`, `--shards`) is not an integer.
    #[error("{name}={value:?} is not a non-negative integer")]
    NotANumber {
        /// The variable or flag.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// `JOB_COMPLETION_INDEX` is set but the number of shards is not known.
    #[error(
        "JOB_COMPLETION_INDEX={0} is set but the number of shards is not: pass --shards N or set MASTOMEDIA_SHARDS=N (the Indexed Job's completions), or pass --shard K/N"
    )]
    NoCount(u32),
    /// `--shards N` (or `MASTOMEDIA_SHARDS`) without an index to go with it.
    #[error(
        "--shards {0} needs the shard index: pass --shard K/{0}, or run in a Kubernetes Indexed Job, which sets JOB_COMPLETION_INDEX"
    )]
    NoIndex(u32),
    /// `--shard K/N` and `--shards M` disagree.
    #[error(
        "--shard {shard} and --shards {shards} disagree on the number of shards: give one of them"
    )]
    Disagree {
        /// `--shard`.
        shard: Shard,
        /// `--shards`.
        shards: u32,
    },
}

impl Shard {
    /// Shard `index` of `count`. Errors: `count` 0 ([`ShardError::NoShards`]) or
    /// `index >= count` ([`ShardError::OutOfRange`]).
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards(format!("{index}/{count}")));
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// Parses `--shard K/N` (`0/4`; surrounding blanks allowed, nothing else). Errors:
    /// [`ShardError::Syntax`] (`a/b`, `-1/3`, `3`), [`ShardError::NoShards`] (`0/0`),
    /// [`ShardError::OutOfRange`] (`4/4`).
    pub fn parse(s: &str) -> Result<Self, ShardError> {
        let syntax = || ShardError::Syntax(s.to_owned());
        let (k, n) = s.trim().split_once('/').ok_or_else(syntax)?;
        let num = |t: &str| {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            t.parse::<u32>().map_err(|_| syntax())
        };
        let (index, count) = (num(k)?, num(n)?);
        if count == 0 {
            return Err(ShardError::NoShards(s.to_owned()));
        }
        Self::new(index, count)
    }

    /// The shard of this run from its flags and environment: `--shard K/N` (`flag`) beats
    /// the environment; else `JOB_COMPLETION_INDEX` (`index_env`, set by Kubernetes in an
    /// Indexed Job) with N from `--shards` (`count_flag`), else `MASTOMEDIA_SHARDS`
    /// (`count_env`). `Ok(None)`: no shard (the whole job). Blank variables count as unset.
    /// Errors: see [`ShardError`] (a `--shards` without an index, an index without N, an
    /// index `>= N`, `--shard` and `--shards` disagreeing).
    pub fn resolve(
        flag: Option<Shard>,
        count_flag: Option<u32>,
        index_env: Option<&str>,
        count_env: Option<&str>,
    ) -> Result<Option<Shard>, ShardError> {
        let number = |name: &'static str, v: &str| {
            let t = v.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ShardError::NotANumber {
                    name,
                    value: v.to_owned(),
                });
            }
            t.parse::<u32>().map_err(|_| ShardError::NotANumber {
                name,
                value: v.to_owned(),
            })
        };
        if let Some(shard) = flag {
            return match count_flag {
                Some(n) if n != shard.count => Err(ShardError::Disagree { shard, shards: n }),
                _ => Ok(Some(shard)),
            };
        }
        let count_env = count_env.filter(|v| !v.trim().is_empty());
        let index_env = index_env.filter(|v| !v.trim().is_empty());
        let count = match (count_flag, count_env) {
            (Some(n), _) => Some(n),
            (None, Some(v)) => Some(number("MASTOMEDIA_SHARDS", v)?),
            (None, None) => None,
        };
        match (index_env, count) {
            (None, None) => Ok(None),
            (None, Some(n)) => Err(ShardError::NoIndex(n)),
            (Some(i), None) => Err(ShardError::NoCount(number("JOB_COMPLETION_INDEX", i)?)),
            (Some(i), Some(n)) => {
                let index = number("JOB_COMPLETION_INDEX", i)?;
                if n == 0 {
                    return Err(ShardError::NoShards(format!("{index}/{n}")));
                }
                Self::new(index, n).map(Some)
            }
        }
    }

    /// K, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// N, at least 1.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The SQL condition selecting this shard's rows of a table aliased `alias`:
    /// `((<alias>.id % N) + N) % N = K` (the outer `+ N` keeps negative ids, such as the
    /// instance actor's `-99`, in range: `%` keeps the dividend's sign in PostgreSQL).
    /// Literals, not parameters: both are integers built here, and the statement's
    /// parameter numbering stays that of the unsharded query.
    ///
    /// Why `id mod N` and not id ranges: `media_attachments` ids are snowflakes
    /// (`timestamp_id`: milliseconds << 16 | 16 bits from a hash of table, time and a
    /// sequence), so a range split follows time and the shards get the uneven load of
    /// busy and quiet months, whereas the low bits are close to uniform: `id mod N` gives
    /// every shard the same share of every month. Serial ids (accounts before 4.x
    /// snowflakes, `preview_cards`) are uniform under `mod N` too. A keyset scan in id
    /// order still applies (`id > $1 ORDER BY id`).
    pub fn sql_filter(&self, alias: &str) -> String {
        let n = self.count;
        format!("(({alias}.id % {n}) + {n}) % {n} = {}", self.index)
    }

    /// Whether this shard owns `key` (relative to `S3_KEY_PREFIX`, e.g.
    /// `media_attachments/files/109/…/original/a.png`): [`key_hash`] mod N = K. Stable
    /// across processes, hosts and versions (never Rust's randomised std hasher).
    pub fn owns_key(&self, key: &str) -> bool {
        key_hash(key) % u64::from(self.count) == u64::from(self.index)
    }

    /// This shard's part of a per-bucket request budget of `total` requests per second
    /// (`--rate`, which is the total of all shards: the provider's limit is per bucket,
    /// not per host): `total / N` rounded down, at least 1.
    pub fn rate_share(&self, total: NonZeroU32) -> NonZeroU32 {
        NonZeroU32::new(total.get() / self.count).unwrap_or(NonZeroU32::MIN)
    }
}

/// 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3) of `key`'s
/// bytes: the listing partition's hash ([`Shard::owns_key`]). Fixed by its definition, so
/// every shard of every version places a key alike.
pub fn key_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
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

    /// The target, without any shard: what names the default journal file
    /// (`journal::default_path`), which the shards of one host share (their rows are
    /// keyed by [`JobKey::journal_target`]; SQLite in WAL mode with a busy timeout lets
    /// them write side by side).
    pub fn target(&self) -> &str {
        &self.target
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
                Shard::new(0, 4).unwrap(),
                "orphans#0/4",
                "file:///srv/media#shard=0/4",
            ),
            (
                Shard::new(3, 4).unwrap(),
                "orphans#3/4",
                "file:///srv/media#shard=3/4",
            ),
        ];
        for (shard, lock, target) in cases {
            let k = base.clone().with_shard(shard);
            assert_eq!(k.lock_name(), lock);
            assert_eq!(k.journal_target(), target);
            assert_eq!(k.target(), "file:///srv/media");
            assert_eq!(k.shard(), Some(shard));
            assert_eq!(k.job(), "orphans");
        }
    }

    #[test]
    fn shard_flags_parse_from_zero() {
        let ok = [
            ("0/4", (0, 4)),
            ("3/4", (3, 4)),
            ("0/1", (0, 1)),
            (" 2/3 ", (2, 3)),
        ];
        for (s, (k, n)) in ok {
            let shard = Shard::parse(s).unwrap();
            assert_eq!((shard.index(), shard.count()), (k, n), "{s}");
            assert_eq!(shard.to_string(), format!("{k}/{n}"));
        }
        let bad = [
            ("4/4", "K must be 0 … 3"),
            ("5/4", "K must be 0 … 3"),
            ("0/0", "at least 1"),
            ("a/b", "is not K/N"),
            ("-1/3", "is not K/N"),
            ("+1/3", "is not K/N"),
            ("3", "is not K/N"),
            ("1/2/3", "is not K/N"),
            ("", "is not K/N"),
            ("99999999999/4", "is not K/N"),
        ];
        for (s, msg) in bad {
            let e = Shard::parse(s).unwrap_err().to_string();
            assert!(e.contains(msg), "{s}: {e}");
        }
    }

    #[test]
    fn the_flag_beats_the_environment() {
        let flag = Shard::parse("1/4").ok();
        let r = |f, n, i, e| Shard::resolve(f, n, i, e).map(|s| s.map(|s| s.to_string()));
        assert_eq!(r(flag, None, Some("3"), Some("8")), Ok(Some("1/4".into())));
        assert_eq!(r(flag, Some(4), None, None), Ok(Some("1/4".into())));
        assert_eq!(r(None, None, Some("2"), Some("4")), Ok(Some("2/4".into())));
        assert_eq!(
            r(None, Some(5), Some("4"), Some("2")),
            Ok(Some("4/5".into()))
        );
        assert_eq!(r(None, None, None, None), Ok(None));
        assert_eq!(r(None, None, Some(" "), Some("")), Ok(None));
        let err = |f, n, i, e| Shard::resolve(f, n, i, e).unwrap_err();
        assert!(matches!(
            err(flag, Some(3), None, None),
            ShardError::Disagree { .. }
        ));
        assert_eq!(err(None, None, Some("2"), None), ShardError::NoCount(2));
        assert_eq!(err(None, Some(4), None, None), ShardError::NoIndex(4));
        assert_eq!(err(None, None, None, Some("4")), ShardError::NoIndex(4));
        assert_eq!(
            err(None, None, Some("4"), Some("4")),
            ShardError::OutOfRange { index: 4, count: 4 }
        );
        assert!(matches!(
            err(None, None, Some("x"), Some("4")),
            ShardError::NotANumber {
                name: "JOB_COMPLETION_INDEX",
                ..
            }
        ));
        assert!(matches!(
            err(None, None, Some("1"), Some("four")),
            ShardError::NotANumber {
                name: "MASTOMEDIA_SHARDS",
                ..
            }
        ));
        assert!(matches!(
            err(None, None, Some("0"), Some("0")),
            ShardError::NoShards(_)
        ));
        assert!(
            err(None, None, Some("2"), None)
                .to_string()
                .contains("MASTOMEDIA_SHARDS")
        );
    }

    #[test]
    fn every_key_belongs_to_exactly_one_shard_and_they_are_balanced() {
        // FNV-1a's published test vectors (64-bit): the hash is the documented one.
        assert_eq!(key_hash(""), 0xcbf29ce484222325);
        assert_eq!(key_hash("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(key_hash("foobar"), 0x85944171f73967e8);
        let n = 4;
        let shards: Vec<Shard> = (0..n).map(|k| Shard::new(k, n).unwrap()).collect();
        let mut per = [0u32; 4];
        for id in 0..4000u64 {
            let key = format!(
                "cache/media_attachments/files/{:03}/{:03}/{:03}/original/{id:x}.png",
                id % 1000,
                id / 7 % 1000,
                id / 13 % 1000
            );
            let owners: Vec<u32> = shards
                .iter()
                .filter(|s| s.owns_key(&key))
                .map(|s| s.index())
                .collect();
            assert_eq!(owners.len(), 1, "{key}");
            per[owners[0] as usize] += 1;
        }
        // Each about a quarter (1000 ± 10 %).
        assert!(per.iter().all(|&c| (900..=1100).contains(&c)), "{per:?}");
    }

    #[test]
    fn sql_filter_and_rate_share() {
        let s = Shard::new(2, 4).unwrap();
        assert_eq!(s.sql_filter("m"), "((m.id % 4) + 4) % 4 = 2");
        let r = |t: u32| s.rate_share(NonZeroU32::new(t).unwrap()).get();
        assert_eq!((r(200), r(10), r(7), r(3), r(1)), (50, 2, 1, 1, 1));
        assert_eq!(
            Shard::new(0, 1)
                .unwrap()
                .rate_share(NonZeroU32::new(9).unwrap())
                .get(),
            9
        );
    }
}
