//! [`Backend`]: the storage a test instance uses, S3 (a [`TestBucket`]) or the local disk
//! (a `public/system` folder), with the few object operations the budget and reconcile
//! tests need on both.

use std::path::PathBuf;

use super::{TestBucket, TestDb, fs_env_file, s3_env_file};

/// One test instance's storage.
pub enum Backend {
    /// A bucket on the test S3 server.
    S3(TestBucket),
    /// A `public/system` folder.
    Fs(PathBuf),
}

impl Backend {
    /// Stores `body` at `key`.
    pub async fn put(&self, key: &str, body: &[u8]) {
        match self {
            Backend::S3(b) => b.put(key, body).await,
            Backend::Fs(root) => {
                let p = root.join(key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, body).unwrap();
            }
        }
    }

    /// Whether `key` is stored (S3: from a multi-thread runtime, as it blocks on the listing).
    pub fn exists(&self, key: &str) -> bool {
        match self {
            Backend::S3(b) => {
                let rt = tokio::runtime::Handle::current();
                tokio::task::block_in_place(|| rt.block_on(b.keys())).contains(key)
            }
            Backend::Fs(root) => root.join(key).exists(),
        }
    }

    /// Every stored key, sorted.
    pub async fn keys(&self) -> Vec<String> {
        match self {
            Backend::S3(b) => b.keys().await.into_iter().collect(),
            Backend::Fs(root) => {
                let mut out = Vec::new();
                let mut dirs = vec![root.clone()];
                while let Some(d) = dirs.pop() {
                    for e in std::fs::read_dir(&d).unwrap() {
                        let p = e.unwrap().path();
                        if p.is_dir() {
                            dirs.push(p);
                        } else {
                            out.push(p.strip_prefix(root).unwrap().display().to_string());
                        }
                    }
                }
                out.sort();
                out
            }
        }
    }

    /// An env file of `db` on this storage.
    pub fn env(&self, db: &TestDb) -> PathBuf {
        match self {
            Backend::S3(b) => s3_env_file(db, &b.name, &[]),
            Backend::Fs(root) => fs_env_file(db, root),
        }
    }
}
