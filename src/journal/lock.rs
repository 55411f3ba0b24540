//! [`RunLock`]: the lock that keeps two runs of the same job (or the same shard) apart
//! when the job has no Mastodon database to take an advisory lock in: `migrate` copies
//! from a folder or another bucket and may run without `DATABASE_URL` (issue 13: "two
//! runs of the SAME shard still exclude each other"). It lives where the job's journal
//! lives, so every process that could overwrite the same journal rows sees it.
//!
//! The scheme is the one prune's advisory locks use (`mastodon::LockSpec`): an unsharded
//! run holds the job's lock exclusively; a shard `K/N` holds the job's lock shared and its
//! own `K/N` lock exclusively. So shards run side by side, the same shard twice refuses,
//! and an unsharded run and a shard refuse each other.
//! - SQLite journal: lock files beside the journal file (`<file>.<name>.lock`), locked
//!   with the operating system's advisory file locks (`flock`, `std::fs::File::try_lock`),
//!   released by the kernel when the process ends, however it ends. Processes on other
//!   hosts have other files: use a PostgreSQL journal for shards on several hosts.
//! - PostgreSQL journal: session advisory locks (`pg_try_advisory_lock[_shared]`) on a
//!   connection of their own, held until the lock is dropped or the process ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use sqlx::{Connection as _, PgConnection};

use super::JournalError;
use crate::model::{JobKey, key_hash};

/// A held run lock; dropping it releases it.
#[derive(Debug)]
pub struct RunLock {
    _held: Held,
}

#[derive(Debug)]
enum Held {
    Files(#[allow(dead_code)] Vec<File>),
    Postgres(#[allow(dead_code)] Box<PgConnection>),
}

/// The locks a run takes: `(name, exclusive)`, the job's first.
fn names(key: &JobKey) -> Vec<(String, bool)> {
    match key.shard() {
        None => vec![(key.job().to_owned(), true)],
        Some(_) => vec![
            (key.job().to_owned(), false),
            (key.lock_name().into_owned(), true),
        ],
    }
}

/// Why the lock is refused, as the admin reads it (exit 3).
fn held_message(key: &JobKey, name: &str, exclusive: bool) -> String {
    match (key.shard(), exclusive) {
        (Some(s), true) => format!(
            "another mastomedia {} of shard {s} is running against this target (it holds {name}): wait for it to finish, or stop it; a second run of the same shard would redo and overwrite its work",
            key.job()
        ),
        (Some(_), false) => format!(
            "an unsharded mastomedia {} is running against this target: shards cannot run beside it; wait for it to finish",
            key.job()
        ),
        (None, _) => format!(
            "another mastomedia {} (or a shard of it, --shard K/N) is running against this target: wait for it to finish, or stop it",
            key.job()
        ),
    }
}

/// `<file>.<name>.lock`, with `/` and other characters outside `[A-Za-z0-9._#-]` as `-`.
fn lock_path(journal: &Path, name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._#-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut os = journal.as_os_str().to_owned();
    os.push(format!(".{safe}.lock"));
    PathBuf::from(os)
}

/// Takes `key`'s locks beside the SQLite journal `journal`, without waiting. Errors:
/// [`JournalError::Locked`] when a conflicting run holds one, [`JournalError::Open`] when
/// a lock file cannot be created.
pub(super) fn lock_files(journal: &Path, key: &JobKey) -> Result<RunLock, JournalError> {
    let mut held = Vec::new();
    for (name, exclusive) in names(key) {
        let path = lock_path(journal, &name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| JournalError::Open {
                path: path.clone(),
                source: sqlx::Error::Io(e),
            })?;
        let got = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match got {
            Ok(()) => held.push(file),
            Err(TryLockError::WouldBlock) => {
                return Err(JournalError::Locked(held_message(key, &name, exclusive)));
            }
            Err(TryLockError::Error(e)) => {
                return Err(JournalError::Open {
                    path,
                    source: sqlx::Error::Io(e),
                });
            }
        }
    }
    Ok(RunLock {
        _held: Held::Files(held),
    })
}

/// The advisory lock key of `name` against `target` in the journal database: FNV-1a of
/// `mastomedia journal lock <name> <target>` as a signed 64-bit key.
fn pg_key(name: &str, target: &str) -> i64 {
    i64::from_ne_bytes(key_hash(&format!("mastomedia journal lock {name} {target}")).to_ne_bytes())
}

/// Takes `key`'s locks as session advisory locks on `conn` (a connection of its own to
/// the journal database), without waiting. Errors: [`JournalError::Locked`], a query.
pub(super) async fn lock_postgres(
    mut conn: PgConnection,
    key: &JobKey,
) -> Result<RunLock, JournalError> {
    // A host that dies without closing its connection (a node crash, a partition) would
    // keep its locks until the server's TCP keepalive gives up, two hours by default, and
    // its shard could not be resumed elsewhere before: ask the server to probe this
    // session after 30 s idle, every 10 s, 3 times (ignored on Unix sockets; best effort).
    for set in [
        "SET tcp_keepalives_idle = 30",
        "SET tcp_keepalives_interval = 10",
        "SET tcp_keepalives_count = 3",
    ] {
        if let Err(e) = sqlx::query(set).execute(&mut conn).await {
            tracing::debug!("{set} on the run lock's connection: {e}");
        }
    }
    for (name, exclusive) in names(key) {
        let sql = if exclusive {
            "SELECT pg_try_advisory_lock($1)"
        } else {
            "SELECT pg_try_advisory_lock_shared($1)"
        };
        let got: bool = sqlx::query_scalar(sql)
            .bind(pg_key(&name, key.target()))
            .fetch_one(&mut conn)
            .await
            .map_err(|source| JournalError::Query {
                what: "taking the run lock",
                source,
            })?;
        if !got {
            let _ = conn.close().await;
            return Err(JournalError::Locked(held_message(key, &name, exclusive)));
        }
    }
    Ok(RunLock {
        _held: Held::Postgres(Box::new(conn)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Shard;

    #[test]
    fn lock_files_exclude_as_advisory_locks_do() {
        let dir = std::env::temp_dir().join(format!("mm-runlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let journal = dir.join("migrate-x.sqlite");
        let base = JobKey::new("migrate", "aws/media");
        let shard = |k| base.clone().with_shard(Shard::new(k, 4).unwrap());

        let s0 = lock_files(&journal, &shard(0)).unwrap();
        let s1 = lock_files(&journal, &shard(1)).unwrap();
        // The same shard twice, and an unsharded run beside shards: refused.
        let again = lock_files(&journal, &shard(0)).unwrap_err().to_string();
        assert!(again.contains("shard 0/4"), "{again}");
        assert!(lock_files(&journal, &base).is_err());
        drop((s0, s1));
        // Once the shards are gone, the unsharded run locks, and then no shard does.
        let whole = lock_files(&journal, &base).unwrap();
        let beside = lock_files(&journal, &shard(2)).unwrap_err().to_string();
        assert!(
            beside.contains("an unsharded mastomedia migrate"),
            "{beside}"
        );
        drop(whole);
        assert!(lock_files(&journal, &shard(2)).is_ok());
        assert!(lock_path(&journal, "migrate#1/4").ends_with("migrate-x.sqlite.migrate#1-4.lock"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
