//! The store conformance suite: one set of test functions, each run over the filesystem
//! backend (a temporary root) and the S3 backend (a fresh bucket on the moto server of
//! `tests/it/support`, behind its SigV4-checking proxy), through `Arc<dyn Store>` as the
//! commands hold it (`commands::open_store`). They pin what both backends promise
//! (`src/store/mod.rs`): get/put/head/copy, exact-key deletes (a missing key is already
//! gone, a refused key is never sent), `stat_many`, the ordered `list` stream with its
//! prefix, `start_after` and pagination, the limiter's counts, and migrate's `upload`
//! (from a file or a source bucket's GET stream) and `md5`.
//!
//! A missing S3 server fails the S3 half (never skipped, with `CI=true` or without):
//! `support::s3()` panics with how to start it.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use mastomedia::commands::{load_config, open_store};
use mastomedia::config::StorageConfig;
use mastomedia::model::ObjectKey;
use mastomedia::store::s3::S3Store;
use mastomedia::store::{
    Body, DeleteOutcome, Existing, INVALID_KEY, Limiter, ObjectHeaders, Store, StoreError,
    TARGET_DIFFERS,
};

use crate::support::{TestBucket, s3, temp_dir, unique};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Fs,
    S3,
}

/// One backend under test.
struct World {
    store: Arc<dyn Store>,
    /// The S3 bucket (its proxy counts what arrived), `None` on the filesystem.
    bucket: Option<TestBucket>,
    /// The filesystem root, `None` on S3.
    root: Option<PathBuf>,
}

impl World {
    async fn new(backend: Backend) -> Self {
        let dir = temp_dir("conformance-env");
        let (text, bucket, root) = match backend {
            Backend::Fs => {
                let root = std::fs::canonicalize(temp_dir("conformance-root")).unwrap();
                (
                    format!(
                        "DATABASE_URL=postgres://nobody@127.0.0.1:1/none\nPAPERCLIP_ROOT_PATH={}\n",
                        root.display()
                    ),
                    None,
                    Some(root),
                )
            }
            Backend::S3 => {
                let bucket = TestBucket::new().await;
                (s3_env_text(&bucket), Some(bucket), None)
            }
        };
        let env = dir.join(".env.production");
        std::fs::write(&env, text).unwrap();
        let cfg = load_config(&env).unwrap_or_else(|e| panic!("{:#}", e.error));
        let store = open_store(&cfg, Limiter::new(None, 8));
        store.check().await.unwrap();
        Self {
            store,
            bucket,
            root,
        }
    }

    /// Requests the provider saw (S3: the proxy's count; filesystem: the limiter's).
    fn seen(&self) -> u64 {
        match &self.bucket {
            Some(b) => b.stats()["total"].as_u64().unwrap_or(0),
            None => self.store.limiter().total(),
        }
    }

    fn count(&self, op: &str) -> u64 {
        self.store.limiter().counts().get(op).copied().unwrap_or(0)
    }

    async fn put(&self, key: &str, body: &[u8]) {
        self.store
            .put(&k(key), Bytes::copy_from_slice(body), &headers())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
}

/// An env file's text for `bucket` on the proxy.
fn s3_env_text(bucket: &TestBucket) -> String {
    format!(
        "DATABASE_URL=postgres://nobody@127.0.0.1:1/none\nLOCAL_DOMAIN=example.social\n\
         S3_ENABLED=true\nS3_BUCKET={}\nS3_REGION=us-east-1\nS3_ENDPOINT={}\n\
         S3_PROTOCOL=http\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
        bucket.name,
        s3().proxy,
        crate::support::ACCESS_KEY,
        crate::support::SECRET_KEY
    )
}

/// A source bucket for `Body::Object`, as migrate's `--from-env` opens it.
async fn source_store() -> (TestBucket, S3Store) {
    let bucket = TestBucket::new().await;
    let env = temp_dir("conformance-source").join(".env.production");
    std::fs::write(&env, s3_env_text(&bucket)).unwrap();
    let cfg = load_config(&env).unwrap_or_else(|e| panic!("{:#}", e.error));
    let StorageConfig::S3(s3cfg) = &cfg.storage else {
        panic!("an S3 env file")
    };
    (bucket, S3Store::new(s3cfg, Limiter::new(None, 8)))
}

/// The MD5 of `b` in lowercase hex.
fn md5_hex(b: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn k(s: &str) -> ObjectKey {
    ObjectKey::new(s)
}

fn headers() -> ObjectHeaders {
    ObjectHeaders {
        content_type: "image/png".into(),
        cache_control: "public, max-age=315576000, immutable".into(),
        acl: Some("public-read".into()),
    }
}

/// Keys [`mastomedia::store::validate_key`] refuses.
const REFUSED: [&str; 4] = [
    "media_attachments/files/000/000/001/original/../../../../x.png",
    "/media_attachments/a.png",
    "a//b.png",
    "",
];

/// Runs one conformance function over both backends: `<name>::fs` and `<name>::s3`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn fs() {
                super::$name(super::World::new(super::Backend::Fs).await).await
            }
            #[tokio::test]
            async fn s3() {
                super::$name(super::World::new(super::Backend::S3).await).await
            }
        }
    )*};
}

both!(
    put_get_head_round_trip,
    put_replaces_atomically,
    copy_keeps_the_bytes,
    delete_many_counts_missing_keys_as_gone,
    refused_keys_never_reach_the_provider,
    stat_many_sizes_each_key,
    list_is_ordered_below_a_prefix_after_start_after,
    list_paginates_past_a_thousand_keys,
    requests_are_counted_per_operation,
    upload_streams_a_file_and_a_bucket_object,
    upload_keep_leaves_other_bytes_on_disk_and_s3_replaces,
);

async fn put_get_head_round_trip(w: World) {
    let key = "cache/media_attachments/files/109/345/678/901/234/567/original/a b+c%.png";
    w.put(key, b"hello").await;
    assert_eq!(
        w.store.get(&k(key)).await.unwrap(),
        Bytes::from_static(b"hello")
    );
    let head = w.store.head(&k(key)).await.unwrap().expect("exists");
    assert_eq!(head.size, 5);
    if w.bucket.is_some() {
        assert_eq!(head.content_type.as_deref(), Some("image/png"));
        assert_eq!(
            head.etag.as_deref(),
            Some("5d41402abc4b2a76b9719d911017c592"),
            "single-part ETag is the MD5"
        );
    }
    assert_eq!(w.store.head(&k("cache/nothing.png")).await.unwrap(), None);
    assert_eq!(
        w.store.get(&k("cache/nothing.png")).await,
        Err(StoreError::NotFound)
    );
    // An empty object is an object.
    w.put("empty.txt", b"").await;
    assert_eq!(
        w.store.head(&k("empty.txt")).await.unwrap().unwrap().size,
        0
    );
    assert!(w.store.get(&k("empty.txt")).await.unwrap().is_empty());
}

async fn put_replaces_atomically(w: World) {
    let key = "accounts/avatars/000/000/001/original/me.png";
    w.put(key, b"old bytes").await;
    w.put(key, b"new").await;
    assert_eq!(
        w.store.get(&k(key)).await.unwrap(),
        Bytes::from_static(b"new")
    );
    // No temporary file is left beside it.
    let listed: Vec<String> = w
        .store
        .list("accounts/", None)
        .map_ok(|o| o.key.as_str().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed, [key]);
    if let Some(root) = &w.root {
        let dir = root.join("accounts/avatars/000/000/001/original");
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}

async fn copy_keeps_the_bytes(w: World) {
    w.put("a/src.png", b"copied bytes").await;
    w.store
        .copy(&k("a/src.png"), &k("b/c/dst.png"))
        .await
        .unwrap();
    assert_eq!(
        w.store.get(&k("b/c/dst.png")).await.unwrap(),
        Bytes::from_static(b"copied bytes")
    );
    assert!(
        w.store.head(&k("a/src.png")).await.unwrap().is_some(),
        "source kept"
    );
    // Over an existing object: replaced.
    w.put("a/other.png", b"x").await;
    w.store
        .copy(&k("a/other.png"), &k("b/c/dst.png"))
        .await
        .unwrap();
    assert_eq!(
        w.store.get(&k("b/c/dst.png")).await.unwrap(),
        Bytes::from_static(b"x")
    );
    let missing = w.store.copy(&k("a/missing.png"), &k("b/new.png")).await;
    assert_eq!(missing, Err(StoreError::NotFound));
    assert_eq!(w.store.head(&k("b/new.png")).await.unwrap(), None);
}

async fn delete_many_counts_missing_keys_as_gone(w: World) {
    w.put("m/1/original/a.png", b"1").await;
    w.put("m/1/small/a.png", b"22").await;
    let keys = [
        k("m/1/original/a.png"),
        k("m/1/never-there.png"),
        k(REFUSED[0]),
        k("m/1/small/a.png"),
    ];
    let out = w.store.delete_many(&keys).await;
    assert_eq!(out.len(), 4);
    assert_eq!(out[0], DeleteOutcome::Deleted);
    // S3 cannot tell a missing key from a deleted one (DeleteObjects answers both alike);
    // the filesystem can. Both mean "gone" to the pool.
    assert!(
        matches!(out[1], DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(&out[2], DeleteOutcome::Failed(e) if e.code() == INVALID_KEY),
        "{:?}",
        out[2]
    );
    assert_eq!(out[3], DeleteOutcome::Deleted);
    let left: Vec<_> = w.store.list("m/", None).try_collect().await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    // Deleting again: all already gone (or deleted), nothing fails.
    for o in w.store.delete_many(&keys[..2]).await {
        assert!(!matches!(o, DeleteOutcome::Failed(_)), "{o:?}");
    }
}

async fn refused_keys_never_reach_the_provider(w: World) {
    w.put("ok/a.png", b"a").await;
    let before = w.seen();
    let counts = w.store.limiter().counts();
    for bad in REFUSED {
        let key = k(bad);
        let refused = |r: Result<(), StoreError>| {
            assert_eq!(
                r.map_err(|e| e.code().to_owned()),
                Err(INVALID_KEY.to_owned()),
                "{bad:?}"
            )
        };
        refused(w.store.get(&key).await.map(|_| ()));
        refused(w.store.head(&key).await.map(|_| ()));
        refused(
            w.store
                .put(&key, Bytes::from_static(b"x"), &headers())
                .await,
        );
        refused(w.store.copy(&k("ok/a.png"), &key).await);
        refused(w.store.copy(&key, &k("ok/b.png")).await);
        let out = w.store.delete_many(std::slice::from_ref(&key)).await;
        assert!(
            matches!(&out[..], [DeleteOutcome::Failed(e)] if e.code() == INVALID_KEY),
            "{bad:?}: {out:?}"
        );
        // Sizing a refused key answers "nothing there" without asking.
        let sized = w.store.stat_many(std::slice::from_ref(&key), &[]).await;
        assert_eq!(sized, [Ok(None)], "{bad:?}");
    }
    assert_eq!(w.seen(), before, "no request for a refused key");
    assert_eq!(w.store.limiter().counts(), counts, "nothing counted either");
    assert_eq!(w.store.head(&k("ok/b.png")).await.unwrap(), None);
    if let Some(root) = &w.root {
        // A folder symlink leading outside the root is refused for reads and writes.
        let outside = temp_dir("conformance-outside");
        std::fs::write(outside.join("secret.png"), b"s").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        for r in [
            w.store.get(&k("link/secret.png")).await.map(|_| ()),
            w.store
                .put(&k("link/new.png"), Bytes::from_static(b"x"), &headers())
                .await,
            w.store
                .put(
                    &k("link/deeper/new.png"),
                    Bytes::from_static(b"x"),
                    &headers(),
                )
                .await,
            w.store.copy(&k("ok/a.png"), &k("link/copy.png")).await,
        ] {
            assert_eq!(
                r.map_err(|e| e.code().to_owned()),
                Err(INVALID_KEY.to_owned())
            );
        }
        assert!(!outside.join("new.png").exists() && !outside.join("deeper").exists());
        assert!(!outside.join("copy.png").exists());
    }
}

async fn stat_many_sizes_each_key(w: World) {
    let p = "media_attachments/files/109/345/678";
    for (key, body) in [
        (format!("{p}/901/234/567/original/a.png"), "aaaa"),
        (format!("{p}/901/234/567/small/a.png"), "aa"),
        (format!("{p}/955/000/123/original/c.png"), "c"),
        (
            "accounts/avatars/000/000/001/original/x.png".to_owned(),
            "xxx",
        ),
    ] {
        w.put(&key, body.as_bytes()).await;
    }
    let keys = [
        k(&format!("{p}/901/234/567/original/a.png")),
        k(&format!("{p}/901/234/567/small/a.png")),
        k(&format!("{p}/901/234/567/small/missing.png")),
        k(&format!("{p}/955/000/123/original/c.png")),
        k("accounts/avatars/000/000/001/original/x.png"),
        k(REFUSED[0]),
    ];
    let want = [Some(4), Some(2), None, Some(1), Some(3), None];
    // Grouped as the pool groups them, by one coarse prefix, and with no prefixes at all:
    // the answers are the same.
    let valid: Vec<&str> = keys[..5].iter().map(ObjectKey::as_str).collect();
    for prefixes in [
        mastomedia::plan::partition::listing_prefixes(valid),
        vec![format!("{p}/")],
        vec![],
    ] {
        let got: Vec<Option<u64>> = w
            .store
            .stat_many(&keys, &prefixes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want, "{prefixes:?}");
    }
    if w.bucket.is_some() {
        // One listing per given prefix that covers a key, one per key left uncovered.
        let before = w.count("ListObjectsV2");
        w.store.stat_many(&keys, &[format!("{p}/")]).await;
        assert_eq!(w.count("ListObjectsV2") - before, 2);
    }
}

async fn list_is_ordered_below_a_prefix_after_start_after(w: World) {
    let keys = [
        "cache/a/1.png",
        "cache/a/10.png",
        "cache/a/2.png",
        "cache/a b/x.png",
        "cache/ab/y.png",
        "cache/b/z/deep/er.png",
        "cached/not-below.png",
        "other/q.png",
    ];
    for key in keys.iter().rev() {
        w.put(key, key.as_bytes()).await;
    }
    let list = |prefix: &'static str, after: Option<&'static str>| {
        let store = w.store.clone();
        async move {
            store
                .list(prefix, after)
                .map_ok(|o| (o.key.as_str().to_owned(), o.size))
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        }
    };
    let all = list("", None).await;
    let mut sorted: Vec<(String, u64)> = keys
        .iter()
        .map(|k| (k.to_string(), k.len() as u64))
        .collect();
    sorted.sort();
    assert_eq!(all, sorted, "bytewise key order, sizes");
    let names = |v: Vec<(String, u64)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        names(list("cache/", None).await),
        [
            "cache/a b/x.png",
            "cache/a/1.png",
            "cache/a/10.png",
            "cache/a/2.png",
            "cache/ab/y.png",
            "cache/b/z/deep/er.png"
        ]
    );
    // A prefix may end inside a segment.
    assert_eq!(
        names(list("cache/a", None).await),
        [
            "cache/a b/x.png",
            "cache/a/1.png",
            "cache/a/10.png",
            "cache/a/2.png",
            "cache/ab/y.png"
        ]
    );
    assert_eq!(
        names(list("cache/", Some("cache/a/10.png")).await),
        ["cache/a/2.png", "cache/ab/y.png", "cache/b/z/deep/er.png"]
    );
    // start_after need not name an object.
    assert_eq!(
        names(list("cache/", Some("cache/a/1")).await),
        [
            "cache/a/1.png",
            "cache/a/10.png",
            "cache/a/2.png",
            "cache/ab/y.png",
            "cache/b/z/deep/er.png"
        ]
    );
    assert!(list("cache/", Some("cache/zzz")).await.is_empty());
    assert!(list("nothing/", None).await.is_empty());
    // Dropping the stream early stops the listing.
    let first = w.store.list("", None).next().await.unwrap().unwrap();
    assert_eq!(first.key.as_str(), sorted[0].0);
}

async fn list_paginates_past_a_thousand_keys(w: World) {
    const N: usize = 1005;
    let keys: Vec<String> = (0..N).map(|i| format!("p/{:04}/f.png", i)).collect();
    match &w.bucket {
        // Seeded straight into moto (not counted by the store under test).
        Some(b) => {
            futures::stream::iter(&keys)
                .for_each_concurrent(32, |key| b.put(key, b"x"))
                .await
        }
        None => {
            let root = w.root.as_ref().unwrap();
            for key in &keys {
                let path = root.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, b"x").unwrap();
            }
        }
    }
    let before = w.store.limiter().counts();
    let listed: Vec<String> = w
        .store
        .list("p/", None)
        .map_ok(|o| o.key.as_str().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed, keys);
    let after = w.store.limiter().counts();
    let delta =
        |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    if w.bucket.is_some() {
        assert_eq!(delta("ListObjectsV2"), 2, "1000 keys per page");
    } else {
        assert_eq!(delta("readdir"), 1, "the filesystem answers in one page");
    }
    // start_after across the page boundary.
    let tail: Vec<String> = w
        .store
        .list("p/", Some("p/0998/f.png"))
        .map_ok(|o| o.key.as_str().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(tail, keys[999..]);
}

async fn requests_are_counted_per_operation(w: World) {
    let start = w.store.limiter().stats();
    w.put("c/1.png", b"one").await;
    w.store.get(&k("c/1.png")).await.unwrap();
    w.store.head(&k("c/1.png")).await.unwrap();
    w.store.copy(&k("c/1.png"), &k("c/2.png")).await.unwrap();
    w.store.delete_many(&[k("c/1.png"), k("c/2.png")]).await;
    let s = w.store.limiter().stats();
    let delta = |op: &str| {
        s.requests.get(op).copied().unwrap_or(0) - start.requests.get(op).copied().unwrap_or(0)
    };
    if let Some(b) = &w.bucket {
        for op in [
            "PutObject",
            "GetObject",
            "HeadObject",
            "CopyObject",
            "DeleteObjects",
        ] {
            assert_eq!(delta(op), 1, "{op}: {:?}", s.requests);
        }
        assert_eq!(s.total_requests() - start.total_requests(), 5);
        assert_eq!(s.total_attempts() - start.total_attempts(), 5, "no retries");
        let ops = b.stats()["ops"].clone();
        assert_eq!(ops["DeleteObjects"], 1, "{ops}");
    } else {
        assert_eq!(delta("write"), 1, "{:?}", s.requests);
        assert_eq!(delta("read"), 1);
        assert_eq!(delta("copy"), 1);
        // head and each delete's resolution stat; then one unlink per key.
        assert_eq!(delta("stat"), 3);
        assert_eq!(delta("unlink"), 2);
        assert_eq!(s.attempts, s.requests, "the filesystem never retries");
    }
    assert_eq!(s.throttled, start.throttled);
    let _ = unique("unused");
}

/// `--multipart-threshold` of the tests: S3's 5 MiB minimum part.
const THRESHOLD: u64 = 5 * 1024 * 1024;

async fn upload_streams_a_file_and_a_bucket_object(w: World) {
    // From a local file, above the threshold (three parts on S3).
    let big: Vec<u8> = (0..12 * 1024 * 1024 + 77)
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    let file = temp_dir("conformance-body").join("big.mp4");
    std::fs::write(&file, &big).unwrap();
    let key = k("media_attachments/files/109/000/000/000/000/001/original/big.mp4");
    let body = Body::File(&file, big.len() as u64);
    w.store
        .upload(&key, body, &headers(), Existing::Replace, THRESHOLD)
        .await
        .unwrap();
    assert!(w.store.get(&key).await.unwrap() == big, "same bytes");
    assert_eq!(
        w.store.head(&key).await.unwrap().unwrap().size,
        big.len() as u64
    );
    let md5 = w.store.md5(&key).await.unwrap();
    match w.bucket {
        // A multipart ETag is not an MD5: not known without reading it.
        Some(_) => assert_eq!(md5, None),
        None => assert_eq!(md5.as_deref(), Some(md5_hex(&big).as_str())),
    }

    // From another bucket's object, streamed; over an existing object (replaced).
    let (source, src) = source_store().await;
    let small = b"\x89PNG from the old provider".to_vec();
    source.put("old/a b+ü.png", &small).await;
    let key = k("cache/accounts/avatars/000/000/001/original/a b+ü.png");
    w.put(key.as_str(), b"older bytes here").await;
    let body = Body::Object(&src, "old/a b+ü.png", small.len() as u64);
    w.store
        .upload(&key, body, &headers(), Existing::Replace, THRESHOLD)
        .await
        .unwrap();
    assert!(w.store.get(&key).await.unwrap() == small);
    assert_eq!(
        w.store.md5(&key).await.unwrap(),
        Some(md5_hex(&small)),
        "single part: known"
    );
    assert_eq!(w.store.md5(&k("cache/none.png")).await.unwrap(), None);
    assert_eq!(source.stats()["mutating"], 0, "the source is only read");

    // A size that is not the body's: refused, nothing under the key.
    let key = k("cache/short.png");
    let body = Body::Object(&src, "old/a b+ü.png", small.len() as u64 + 5);
    let err = w
        .store
        .upload(&key, body, &headers(), Existing::Replace, THRESHOLD)
        .await
        .expect_err("short body");
    assert!(!err.is_fatal(), "{err}");
    assert_eq!(w.store.head(&key).await.unwrap(), None);

    // A refused key is never sent.
    let before = w.seen();
    for bad in REFUSED {
        let body = Body::File(&file, big.len() as u64);
        let err = w
            .store
            .upload(&k(bad), body, &headers(), Existing::Replace, THRESHOLD)
            .await
            .expect_err(bad);
        assert_eq!(err.code(), INVALID_KEY, "{bad:?}");
        assert_eq!(w.store.md5(&k(bad)).await.unwrap_err().code(), INVALID_KEY);
    }
    assert_eq!(w.seen(), before, "nothing reached the provider");

    // No temporary file is left anywhere.
    if let Some(root) = &w.root {
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                assert!(
                    !name.starts_with('.'),
                    "left behind: {}",
                    e.path().display()
                );
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
}

async fn upload_keep_leaves_other_bytes_on_disk_and_s3_replaces(w: World) {
    let file = temp_dir("conformance-body").join("new.png");
    std::fs::write(&file, b"the source's bytes").unwrap();
    let key = k("media_attachments/files/1/original/kept.png");
    let upload = |existing| {
        let store = w.store.clone();
        let (key, file) = (key.clone(), file.clone());
        async move {
            store
                .upload(&key, Body::File(&file, 18), &headers(), existing, THRESHOLD)
                .await
        }
    };
    // Nothing there yet: written.
    upload(Existing::Keep).await.unwrap();
    assert_eq!(
        w.store.get(&key).await.unwrap(),
        Bytes::from_static(b"the source's bytes")
    );
    // The same bytes already there: counts as written.
    upload(Existing::Keep).await.unwrap();
    // Other bytes there: the filesystem keeps them; S3 has no such check and replaces.
    w.put(key.as_str(), b"an admin's file").await;
    match &w.root {
        Some(_) => {
            let err = upload(Existing::Keep).await.expect_err("kept");
            assert_eq!(err.code(), TARGET_DIFFERS, "{err}");
            assert_eq!(
                w.store.get(&key).await.unwrap(),
                Bytes::from_static(b"an admin's file")
            );
        }
        None => {
            upload(Existing::Keep).await.unwrap();
            assert_eq!(
                w.store.get(&key).await.unwrap(),
                Bytes::from_static(b"the source's bytes")
            );
        }
    }
    // Replace always writes.
    upload(Existing::Replace).await.unwrap();
    assert_eq!(
        w.store.get(&key).await.unwrap(),
        Bytes::from_static(b"the source's bytes")
    );
}
