//! `mastomedia migrate` end to end: real files on disk (and a real second bucket) copied
//! into a bucket on the moto server behind the SigV4-checking proxy. Every object is read
//! back straight from moto and compared byte for byte, with its ACL grants, Content-Type
//! and Cache-Control; request counts come from the proxy.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_s3::types::{Permission, Type as GranteeType};
use futures::stream::{self, StreamExt};

use crate::support::seed::{insert_account, insert_emoji};
use crate::support::{
    ACCESS_KEY, Mastodon, Run, SECRET_KEY, TestBucket, TestDb, mastomedia, mastomedia_env, s3,
    s3_env_file, temp_dir, unique,
};

pub(super) const CACHE_CONTROL: &str = "public, max-age=315576000, immutable";
const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const MIB: usize = 1024 * 1024;
/// `--multipart-threshold` of the tests: S3's 5 MiB minimum part.
const THRESHOLD: &str = "5242880";

pub(super) const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
pub(super) const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0";
pub(super) const GIF: &[u8] = b"GIF89a\x01\0\x01\0";
const MP4: &[u8] = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom";
const MP3: &[u8] = b"ID3\x04\0\0\0\0\0\0";
const WEBP: &[u8] = b"RIFF\x24\0\0\0WEBPVP8 ";
const ICO: &[u8] = b"\0\0\x01\0\x01\0\x10\x10";
const ZIP: &[u8] = b"PK\x03\x04\x14\0\0\0";

/// `magic` followed by bytes derived from `seed` (so no two test files are alike), `len`
/// bytes in all.
pub(super) fn bytes(magic: &[u8], seed: &str, len: usize) -> Vec<u8> {
    let mut x: u64 = seed.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let mut out = magic.to_vec();
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out.truncate(len);
    out
}

/// One file of a generated tree: key, bytes, the Content-Type its object must get.
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) body: Vec<u8>,
    pub(super) content_type: &'static str,
}

pub(super) fn entry(key: &str, magic: &[u8], len: usize, content_type: &'static str) -> Entry {
    Entry {
        key: key.to_owned(),
        body: bytes(magic, key, len),
        content_type,
    }
}

/// Every Mastodon folder, names with spaces, `+`, `%` and unicode, a zero-byte file and a
/// 12 MiB file (3 parts at a 5 MiB threshold).
fn mastodon_tree() -> Vec<Entry> {
    let p = "109/345/678/901/234/567";
    vec![
        entry(
            &format!("media_attachments/files/{p}/original/8f3a2b1c4d5e6f70.png"),
            PNG,
            3000,
            "image/png",
        ),
        entry(
            &format!("media_attachments/files/{p}/small/8f3a2b1c4d5e6f70.png"),
            PNG,
            700,
            "image/png",
        ),
        entry(
            &format!("media_attachments/thumbnails/{p}/original/1122334455667788.jpeg"),
            JPEG,
            900,
            "image/jpeg",
        ),
        entry(
            "media_attachments/files/109/345/678/901/234/568/original/0a1b2c3d4e5f6071.mp3",
            MP3,
            5000,
            "audio/mpeg",
        ),
        entry(
            "cache/media_attachments/files/109/345/678/901/234/569/original/0a1b2c3d4e5f6072.mp4",
            MP4,
            40_000,
            "video/mp4",
        ),
        entry(
            "cache/media_attachments/files/109/345/678/901/234/569/small/0a1b2c3d4e5f6072.png",
            PNG,
            600,
            "image/png",
        ),
        entry(
            "cache/media_attachments/thumbnails/109/345/678/901/234/569/original/99aabbccddeeff00.jpeg",
            JPEG,
            650,
            "image/jpeg",
        ),
        entry(
            "cache/accounts/avatars/109/345/678/901/234/570/original/aaaaaaaaaaaaaaa1.gif",
            GIF,
            1200,
            "image/gif",
        ),
        entry(
            "cache/accounts/avatars/109/345/678/901/234/570/static/aaaaaaaaaaaaaaa1.png",
            PNG,
            800,
            "image/png",
        ),
        entry(
            "cache/accounts/headers/109/345/678/901/234/570/original/aaaaaaaaaaaaaaa2.jpg",
            JPEG,
            2200,
            "image/jpeg",
        ),
        entry(
            "cache/custom_emojis/images/000/000/001/original/bbbbbbbbbbbbbbbb.png",
            PNG,
            300,
            "image/png",
        ),
        entry(
            "cache/custom_emojis/images/000/000/001/static/bbbbbbbbbbbbbbbb.png",
            PNG,
            280,
            "image/png",
        ),
        entry(
            "cache/preview_cards/images/000/000/042/original/cccccccccccccccc.webp",
            WEBP,
            1500,
            "image/webp",
        ),
        entry(
            "accounts/avatars/000/000/001/original/dddddddddddddddd.gif",
            GIF,
            1100,
            "image/gif",
        ),
        entry(
            "accounts/avatars/000/000/001/static/dddddddddddddddd.png",
            PNG,
            900,
            "image/png",
        ),
        entry(
            "accounts/headers/000/000/001/original/eeeeeeeeeeeeeeee.jpeg",
            JPEG,
            4000,
            "image/jpeg",
        ),
        entry(
            "custom_emojis/images/000/000/002/original/ffffffffffffffff.png",
            PNG,
            350,
            "image/png",
        ),
        entry(
            "preview_cards/images/000/000/043/original/0000000000000001.jpg",
            JPEG,
            2500,
            "image/jpeg",
        ),
        entry(
            "site_uploads/files/000/000/001/original/0000000000000002.png",
            PNG,
            1300,
            "image/png",
        ),
        entry(
            "site_uploads/files/000/000/002/favicon/0000000000000003.ico",
            ICO,
            400,
            "image/vnd.microsoft.icon",
        ),
        entry(
            "backups/dumps/000/000/001/original/archive-20240101120000-0123456789abcdef.zip",
            ZIP,
            6000,
            "application/zip",
        ),
        Entry {
            key: "imports/data/000/000/001/original/following_accounts.csv".into(),
            body: b"Account address,Show boosts\nalice@example.social,true\n".to_vec(),
            content_type: "text/csv",
        },
        entry(
            "media_attachments/files/000/000/009/original/name with spaces+plus%25pct ünïcødé 日本.png",
            PNG,
            1000,
            "image/png",
        ),
        entry(
            "media_attachments/files/000/000/009/small dir/a+b c%d.jpeg",
            JPEG,
            500,
            "image/jpeg",
        ),
        Entry {
            key: "media_attachments/files/000/000/010/original/empty.png".into(),
            body: Vec::new(),
            content_type: "image/png",
        },
        entry(
            "media_attachments/files/000/000/011/original/big.mp4",
            MP4,
            12 * MIB + 12345,
            "video/mp4",
        ),
    ]
}

pub(super) fn write_file(root: &Path, key: &str, body: &[u8]) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, body).unwrap();
    // World-readable whatever the umask: a file that is not is copied private.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn write_tree(root: &Path, tree: &[Entry]) {
    for e in tree {
        write_file(root, &e.key, &e.body);
    }
}

/// Folders 0755 and files 0644 below `root`, whatever the umask.
fn open_up(path: &Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    if meta.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in std::fs::read_dir(path).unwrap() {
            open_up(&e.unwrap().path());
        }
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// An env file for `bucket` on the proxy, with `extra` lines appended (later lines win).
/// migrate reads the database only for `--repair-acl` (which uses `s3_env_file` and a
/// real TestDb); here DATABASE_URL names a server that is never contacted.
pub(super) fn env_file(bucket: &str, extra: &[(&str, &str)]) -> PathBuf {
    let dir = temp_dir("env");
    let mut text = format!(
        "LOCAL_DOMAIN=example.social\nDATABASE_URL=postgres://mastodon@127.0.0.1:9/unused\nS3_ENABLED=true\n\
         S3_BUCKET={bucket}\nS3_REGION=us-east-1\nS3_ENDPOINT={}\nS3_PROTOCOL=http\n\
         AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n",
        s3().proxy
    );
    for (k, v) in extra {
        text.push_str(&format!("{k}={v}\n"));
    }
    let path = dir.join(".env.production");
    std::fs::write(&path, text).unwrap();
    open_up(&dir);
    path
}

/// A journal path in a fresh, world-writable folder.
pub(super) fn journal() -> PathBuf {
    let dir = temp_dir("journal");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir.join("migrate.sqlite")
}

pub(super) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `mastomedia --env-file ENV migrate --journal J --json ARGS...`; asserts the exit code.
pub(super) fn migrate(env: &Path, journal: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec![
        "--env-file",
        s(env),
        "migrate",
        "--journal",
        s(journal),
        "--json",
    ];
    all.extend_from_slice(args);
    let run = mastomedia(&all);
    assert_eq!(
        run.code, code,
        "mastomedia {all:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run.json()
}

/// The binary with the clean environment of `support::mastomedia`.
fn command(bin: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_clear();
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.env("MASTOMEDIA_STATUS_INTERVAL", "3600");
    cmd
}

fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .expect("procfs: /proc/self")
        .uid()
}

/// Runs the binary as an unprivileged user, so that a mode-000 file is really unreadable:
/// as root (CI containers), through `setpriv` as nobody (65534) with a world-readable copy
/// of the binary; as any other user, directly.
fn mastomedia_unprivileged(args: &[&str]) -> Run {
    let out = if effective_uid() == 0 {
        let dir = temp_dir("bin");
        let bin = dir.join("mastomedia");
        std::fs::copy(env!("CARGO_BIN_EXE_mastomedia"), &bin).expect("copy the binary");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut full = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            s(&bin),
        ];
        full.extend_from_slice(args);
        command(Path::new("setpriv"), &full)
            .output()
            .expect("run setpriv (util-linux) to drop root")
    } else {
        command(Path::new(env!("CARGO_BIN_EXE_mastomedia")), args)
            .output()
            .expect("run mastomedia")
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An object as moto holds it.
pub(super) struct Stored {
    pub(super) body: Vec<u8>,
    pub(super) content_type: Option<String>,
    pub(super) cache_control: Option<String>,
    pub(super) etag: String,
}

pub(super) async fn get(bucket: &TestBucket, key: &str) -> Stored {
    let o = bucket
        .client
        .get_object()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    let content_type = o.content_type().map(str::to_owned);
    let cache_control = o.cache_control().map(str::to_owned);
    let etag = o.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    let body = o.body.collect().await.unwrap().into_bytes().to_vec();
    Stored {
        body,
        content_type,
        cache_control,
        etag,
    }
}

/// Whether AllUsers may READ the object; a private object must grant no group anything.
pub(super) async fn acl(bucket: &TestBucket, key: &str) -> bool {
    let out = bucket
        .client
        .get_object_acl()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObjectAcl {key}: {e:?}"));
    let group_grants: Vec<_> = out
        .grants()
        .iter()
        .filter(|g| {
            g.grantee()
                .is_some_and(|gr| gr.r#type() == &GranteeType::Group)
        })
        .collect();
    let public = group_grants.iter().any(|g| {
        g.permission() == Some(&Permission::Read)
            && g.grantee().and_then(|gr| gr.uri()) == Some(ALL_USERS)
    });
    if !public {
        assert!(
            group_grants.is_empty(),
            "{key}: private objects grant nothing to groups: {:?}",
            out.grants()
        );
    }
    public
}

fn private_key(key: &str) -> bool {
    key.starts_with("backups/") || key.starts_with("imports/")
}

/// The object at `key` holds exactly `body`, with `content_type`, Mastodon's Cache-Control
/// and the ACL Mastodon gives it (public-read; backups and imports private).
async fn assert_object(bucket: &TestBucket, key: &str, body: &[u8], content_type: &str) {
    assert_object_at(bucket, "", key, body, content_type).await;
}

/// [`assert_object`] for `key` stored below `prefix` (`S3_KEY_PREFIX` plus `/`).
async fn assert_object_at(
    bucket: &TestBucket,
    prefix: &str,
    key: &str,
    body: &[u8],
    content_type: &str,
) {
    let stored = format!("{prefix}{key}");
    let o = get(bucket, &stored).await;
    assert!(
        o.body == body,
        "{stored}: bytes differ ({} in the bucket, {} expected)",
        o.body.len(),
        body.len()
    );
    assert_eq!(o.content_type.as_deref(), Some(content_type), "{stored}");
    assert_ne!(o.content_type.as_deref(), Some("binary/octet-stream"));
    assert_eq!(o.cache_control.as_deref(), Some(CACHE_CONTROL), "{stored}");
    assert_eq!(
        acl(bucket, &stored).await,
        !private_key(key),
        "{stored}: public-read unless backups/ or imports/"
    );
}

async fn assert_tree(bucket: &TestBucket, tree: &[Entry]) {
    for e in tree {
        assert_object(bucket, &e.key, &e.body, e.content_type).await;
    }
}

pub(super) fn ops(stats: &serde_json::Value, op: &str) -> u64 {
    stats["ops"][op].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn migrate_tree_copies_every_folder_byte_exact_with_mastodon_headers() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let tree = mastodon_tree();
    write_tree(&root, &tree);
    // A symlink (skipped with a warning) and an unreadable file (failed, the rest goes on).
    let link = "media_attachments/files/000/000/012/original/link.png";
    std::fs::create_dir_all(root.join(link).parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("../../009/small dir/a+b c%d.jpeg", root.join(link)).unwrap();
    let secret = "media_attachments/files/000/000/013/original/1234123412341234.png";
    write_file(&root, secret, &bytes(PNG, secret, 100));
    // An unreadable folder: failed as a whole, named in the failures.
    let closed = "cache/preview_cards/images/000/000/099";
    write_file(
        &root,
        &format!("{closed}/original/9999999999999999.png"),
        PNG,
    );
    open_up(&root);
    std::fs::set_permissions(root.join(secret), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(root.join(closed), std::fs::Permissions::from_mode(0o000)).unwrap();
    let env = env_file(&bucket.name, &[]);
    let journal = journal();

    let run = mastomedia_unprivileged(&[
        "--env-file",
        s(&env),
        "migrate",
        "--from",
        s(&root),
        "--journal",
        s(&journal),
        "--multipart-threshold",
        THRESHOLD,
        "--json",
    ]);
    assert_eq!(
        run.code, 1,
        "a file and a folder failed: exit 1\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let r = run.json();
    assert_eq!(r["files_total"], tree.len() as u64 + 1, "{r:#}");
    assert_eq!(r["files_uploaded"], tree.len() as u64, "{r:#}");
    assert_eq!(
        r["bytes_uploaded"],
        tree.iter().map(|e| e.body.len() as u64).sum::<u64>()
    );
    assert_eq!(r["files_failed"], 2, "{r:#}");
    let failures: BTreeSet<(String, String)> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        failures.contains(&(secret.to_owned(), "EACCES".to_owned())),
        "{r:#}"
    );
    assert!(
        failures.iter().any(|(k, _)| k.starts_with(closed)),
        "the unreadable folder is listed: {r:#}"
    );
    assert_eq!(r["symlinks_skipped"], 1);
    assert!(
        run.stderr.contains(link) && run.stderr.contains("symlink"),
        "the symlink is named in a warning: {}",
        run.stderr
    );

    let want: BTreeSet<String> = tree.iter().map(|e| e.key.clone()).collect();
    assert_eq!(
        bucket.keys().await,
        want,
        "every regular readable file, nothing else"
    );
    assert_tree(&bucket, &tree).await;

    // The 12 MiB file went as a 3-part upload; nothing else did.
    let stats = bucket.stats();
    assert_eq!(ops(&stats, "CreateMultipartUpload"), 1, "{stats}");
    assert_eq!(ops(&stats, "UploadPart"), 3, "{stats}");
    assert_eq!(ops(&stats, "CompleteMultipartUpload"), 1, "{stats}");
    assert_eq!(ops(&stats, "AbortMultipartUpload"), 0, "{stats}");
    assert_eq!(ops(&stats, "PutObject"), tree.len() as u64 - 1, "{stats}");
    assert!(
        get(
            &bucket,
            "media_attachments/files/000/000/011/original/big.mp4"
        )
        .await
        .etag
        .ends_with("-3")
    );
    assert_eq!(r["requests"]["UploadPart"], 3);
    assert_eq!(r["requests"]["PutObject"], tree.len() as u64 - 1);
}

#[tokio::test]
async fn skip_cache_leaves_out_cache() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let tree: Vec<Entry> = mastodon_tree()
        .into_iter()
        .filter(|e| e.body.len() < MIB)
        .collect();
    write_tree(&root, &tree);
    let env = env_file(&bucket.name, &[]);
    let journal = journal();
    let cached = tree.iter().filter(|e| e.key.starts_with("cache/")).count() as u64;
    assert!(cached >= 5);

    let r = migrate(&env, &journal, &["--from", s(&root), "--skip-cache"], 0);
    assert_eq!(r["files_skipped_cache"], cached);
    assert_eq!(r["files_uploaded"], tree.len() as u64 - cached);
    let want: BTreeSet<String> = tree
        .iter()
        .filter(|e| !e.key.starts_with("cache/"))
        .map(|e| e.key.clone())
        .collect();
    assert_eq!(bucket.keys().await, want);
    let stats = bucket.stats();
    assert_eq!(ops(&stats, "PutObject"), tree.len() as u64 - cached);

    // Without the flag, a later run copies exactly what was left out.
    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], cached);
    assert_eq!(r["files_unchanged"], tree.len() as u64 - cached);
    assert_tree(&bucket, &tree).await;
}

/// The key of the `i`-th file of the kill -9 tree.
fn small_key(i: usize) -> String {
    format!(
        "media_attachments/files/110/000/000/000/{:03}/{:03}/original/{i:016x}.png",
        i / 1000,
        i % 1000
    )
}

/// Waits (at most 30 s) until the proxy has seen the first upload into `bucket`, so a
/// slow start on a loaded machine cannot make a signal arrive before the run began.
async fn wait_for_first_upload(bucket: &TestBucket) {
    for _ in 0..3000 {
        if ops(&bucket.stats(), "PutObject") > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no upload within 30 s: {}", bucket.stats());
}

async fn assert_identical_to(bucket: &TestBucket, root: &Path, keys: &BTreeSet<String>) {
    assert_eq!(&bucket.keys().await, keys);
    let mut checks = stream::iter(keys.iter().cloned())
        .map(|k| async move {
            let o = get(bucket, &k).await;
            (k, o)
        })
        .buffer_unordered(8);
    while let Some((k, o)) = checks.next().await {
        let file = std::fs::read(root.join(&k)).unwrap();
        assert!(o.body == file, "{k}: object differs from the file");
        assert_eq!(o.content_type.as_deref(), Some("image/png"), "{k}");
        assert_eq!(o.cache_control.as_deref(), Some(CACHE_CONTROL), "{k}");
    }
}

#[tokio::test]
async fn kill_9_mid_run_then_rerun_completes_and_catch_up_uploads_only_the_changes() {
    const N: usize = 2000;
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let mut keys = BTreeSet::new();
    for i in 0..N {
        let k = small_key(i);
        write_file(&root, &k, &bytes(PNG, &k, 64 + i % 200));
        keys.insert(k);
    }
    let env = env_file(&bucket.name, &[]);
    let journal = journal();

    // Slow run (50 requests/s: about 40 s for everything), SIGKILLed 1.5 s into the uploads.
    let mut child = command(
        Path::new(env!("CARGO_BIN_EXE_mastomedia")),
        &[
            "--env-file",
            s(&env),
            "migrate",
            "--from",
            s(&root),
            "--journal",
            s(&journal),
            "--rate",
            "50",
            "--json",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("start mastomedia");
    wait_for_first_upload(&bucket).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kill = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .expect("kill -9");
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed mid-run, not finished");
    let before = ops(&bucket.stats(), "PutObject");
    assert!(
        before > 0 && before < N as u64,
        "the kill came mid-run: {before} uploads"
    );

    // Re-run: completes, keeps what the journal had, never lists the bucket.
    bucket.reset_stats();
    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_total"], N as u64);
    let uploaded = r["files_uploaded"].as_u64().unwrap();
    let unchanged = r["files_unchanged"].as_u64().unwrap();
    assert_eq!(uploaded + unchanged, N as u64, "{r:#}");
    assert!(
        unchanged > 0,
        "uploads journalled before the kill are not repeated ({before} uploaded before it)"
    );
    let stats = bucket.stats();
    assert_eq!(ops(&stats, "PutObject"), uploaded, "{stats}");
    assert_eq!(
        ops(&stats, "ListObjectsV2"),
        1,
        "only the bucket check: {stats}"
    );
    assert_eq!(stats["total"], uploaded + 1, "{stats}");
    assert_identical_to(&bucket, &root, &keys).await;

    // Re-run after completion: no upload at all, one request (the bucket check).
    bucket.reset_stats();
    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], 0);
    assert_eq!(r["files_unchanged"], N as u64);
    assert_eq!(r["requests"], serde_json::json!({"ListObjectsV2": 1}));
    let stats = bucket.stats();
    assert_eq!(stats["mutating"], 0, "{stats}");
    assert_eq!(stats["total"], 1, "{stats}");
    assert_eq!(ops(&stats, "ListObjectsV2"), 1, "{stats}");

    // Catch-up pass: 3 new files, 1 modified (same size, new bytes), 1 deleted.
    let mut changed = Vec::new();
    for i in N..N + 3 {
        let k = small_key(i);
        write_file(&root, &k, &bytes(PNG, &k, 150));
        keys.insert(k.clone());
        changed.push(k);
    }
    let modified = small_key(7);
    let old_len = std::fs::metadata(root.join(&modified)).unwrap().len() as usize;
    write_file(&root, &modified, &bytes(PNG, "modified", old_len));
    changed.push(modified);
    let deleted = small_key(8);
    std::fs::remove_file(root.join(&deleted)).unwrap();
    bucket.reset_stats();
    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], 4, "{r:#}");
    assert_eq!(r["files_unchanged"], N as u64 - 2);
    assert_eq!(r["deleted_at_source"], 1);
    let stats = bucket.stats();
    assert_eq!(ops(&stats, "PutObject"), 4, "{stats}");
    assert_eq!(stats["mutating"], 4, "nothing deleted: {stats}");
    for k in &changed {
        let o = get(&bucket, k).await;
        assert!(o.body == std::fs::read(root.join(k)).unwrap(), "{k}");
    }
    let mut in_bucket = keys.clone();
    keys.remove(&deleted);
    assert!(
        bucket.keys().await.contains(&deleted),
        "deleted at the source, kept in the bucket"
    );
    in_bucket.insert(deleted);
    assert_eq!(bucket.keys().await, in_bucket);
}

#[tokio::test]
async fn bucket_to_bucket_from_a_prefixed_source_makes_keys_relative() {
    let source = TestBucket::new().await;
    let target = TestBucket::new().await;
    let tree = mastodon_tree();
    // As Mastodon wrote them: public-read, backups and imports private (a copy keeps the
    // source's ACL).
    for e in &tree {
        let acl = if private_key(&e.key) {
            aws_sdk_s3::types::ObjectCannedAcl::Private
        } else {
            aws_sdk_s3::types::ObjectCannedAcl::PublicRead
        };
        source
            .client
            .put_object()
            .bucket(&source.name)
            .key(format!("old-system/{}", e.key))
            .acl(acl)
            .body(e.body.clone().into())
            .send()
            .await
            .unwrap();
    }
    // Outside the source's prefix: not Mastodon's, not copied.
    source.put("elsewhere/not-ours.png", PNG).await;
    source.put("old-systemic/not-ours.png", PNG).await;
    let source_env = env_file(&source.name, &[("S3_KEY_PREFIX", "old-system")]);
    let target_env = env_file(&target.name, &[]);
    let journal = journal();

    let r = migrate(
        &target_env,
        &journal,
        &[
            "--from-env",
            s(&source_env),
            "--multipart-threshold",
            THRESHOLD,
        ],
        0,
    );
    assert_eq!(r["files_total"], tree.len() as u64, "{r:#}");
    assert_eq!(r["files_uploaded"], tree.len() as u64);
    let want: BTreeSet<String> = tree.iter().map(|e| e.key.clone()).collect();
    assert_eq!(target.keys().await, want);
    assert_tree(&target, &tree).await;
    let stats = target.stats();
    assert_eq!(ops(&stats, "UploadPart"), 3, "{stats}");
    assert_eq!(source.stats()["mutating"], 0, "the source is only read");

    // A second run copies nothing.
    target.reset_stats();
    let r = migrate(&target_env, &journal, &["--from-env", s(&source_env)], 0);
    assert_eq!(r["files_uploaded"], 0);
    assert_eq!(target.stats()["mutating"], 0);
}

#[tokio::test]
async fn dry_run_uploads_nothing_and_journals_nothing() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let tree: Vec<Entry> = mastodon_tree()
        .into_iter()
        .filter(|e| e.body.len() < MIB)
        .collect();
    write_tree(&root, &tree);
    let env = env_file(&bucket.name, &[]);
    let journal = journal();
    bucket.reset_stats();

    let r = migrate(&env, &journal, &["--from", s(&root), "--dry-run"], 0);
    assert_eq!(r["dry_run"], true);
    assert_eq!(
        r["files_uploaded"],
        tree.len() as u64,
        "reports what would be copied"
    );
    let stats = bucket.stats();
    assert_eq!(stats["mutating"], 0, "{stats}");
    assert!(bucket.keys().await.is_empty());

    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(
        r["files_uploaded"],
        tree.len() as u64,
        "the dry run journalled nothing"
    );
    assert_eq!(r["files_unchanged"], 0);
    assert_tree(&bucket, &tree).await;
}

/// Runs migrate expecting `code`, and returns stderr.
fn failing(args: &[&str], code: i32) -> String {
    let run = mastomedia(args);
    assert_eq!(
        run.code, code,
        "mastomedia {args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run.stderr
}

#[tokio::test]
async fn bad_source_folder_exits_2() {
    let bucket = TestBucket::new().await;
    let env = env_file(&bucket.name, &[]);
    let missing = temp_dir("system").join("no-such-folder");
    let err = failing(
        &[
            "--env-file",
            s(&env),
            "migrate",
            "--journal",
            s(&journal()),
            "--from",
            s(&missing),
        ],
        2,
    );
    assert!(
        err.contains("no-such-folder") && err.contains("--from"),
        "{err}"
    );
    // A file is no folder either.
    let file = temp_dir("system").join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = failing(
        &[
            "--env-file",
            s(&env),
            "migrate",
            "--journal",
            s(&journal()),
            "--from",
            s(&file),
        ],
        2,
    );
    assert!(err.contains("--from"), "{err}");
    assert_eq!(bucket.stats()["mutating"], 0);
}

#[tokio::test]
async fn wrong_secret_exits_3() {
    let bucket = TestBucket::new().await;
    let env = env_file(&bucket.name, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]);
    let root = temp_dir("system");
    write_file(&root, "accounts/avatars/000/000/001/original/a.png", PNG);
    let err = failing(
        &[
            "--env-file",
            s(&env),
            "migrate",
            "--journal",
            s(&journal()),
            "--from",
            s(&root),
        ],
        3,
    );
    assert!(
        err.contains("AWS_SECRET_ACCESS_KEY") && err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "the secret is not echoed");
    assert!(bucket.keys().await.is_empty());
}

#[tokio::test]
async fn missing_bucket_exits_3() {
    let name = unique("mm-missing").to_lowercase();
    let env = env_file(&name, &[]);
    let root = temp_dir("system");
    write_file(&root, "accounts/avatars/000/000/001/original/a.png", PNG);
    let err = failing(
        &[
            "--env-file",
            s(&env),
            "migrate",
            "--journal",
            s(&journal()),
            "--from",
            s(&root),
        ],
        3,
    );
    assert!(err.contains(&name) && err.contains("S3_BUCKET"), "{err}");
}

#[tokio::test]
async fn target_env_without_s3_enabled_exits_2() {
    let root = temp_dir("system");
    let dir = temp_dir("env");
    let env = dir.join(".env.production");
    std::fs::write(
        &env,
        format!(
            "DATABASE_URL=postgres://mastodon@127.0.0.1:9/unused\nPAPERCLIP_ROOT_PATH={}\n",
            root.display()
        ),
    )
    .unwrap();
    let err = failing(
        &["--env-file", s(&env), "migrate", "--journal", s(&journal())],
        2,
    );
    assert!(err.contains("S3_ENABLED=true"), "{err}");
    // The same file as a --from-env source: no bucket to read.
    let bucket = TestBucket::new().await;
    let target = env_file(&bucket.name, &[]);
    let err = failing(
        &[
            "--env-file",
            s(&target),
            "migrate",
            "--journal",
            s(&journal()),
            "--from-env",
            s(&env),
        ],
        2,
    );
    assert!(
        err.contains("S3_ENABLED") && err.contains("--from"),
        "{err}"
    );
}

#[tokio::test]
async fn verify_reports_a_changed_object_and_the_next_run_uploads_it_again() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let tree: Vec<Entry> = mastodon_tree()
        .into_iter()
        .filter(|e| !e.key.starts_with("cache/"))
        .collect();
    write_tree(&root, &tree);
    let env = env_file(&bucket.name, &[]);
    let journal = journal();
    let args = ["--from", s(&root), "--multipart-threshold", THRESHOLD];
    migrate(&env, &journal, &args, 0);

    let mut with_verify = args.to_vec();
    with_verify.push("--verify");
    let r = migrate(&env, &journal, &with_verify, 0);
    assert_eq!(r["files_uploaded"], 0);
    assert_eq!(r["verified"], tree.len() as u64);
    assert_eq!(r["verify_mismatches"], 0, "{r:#}");

    // Another writer replaces one object with other bytes of the same size.
    let victim = &tree[0];
    let other = bytes(PNG, "other bytes", victim.body.len());
    assert_ne!(other, victim.body);
    bucket.put(&victim.key, &other).await;
    let r = migrate(&env, &journal, &with_verify, 1);
    assert_eq!(r["verify_mismatches"], 1, "{r:#}");
    assert_eq!(r["failures"][0]["key"], victim.key.as_str());
    assert_eq!(r["failures"][0]["code"], "Md5Mismatch");

    bucket.reset_stats();
    let r = migrate(&env, &journal, &args, 0);
    assert_eq!(r["files_uploaded"], 1, "{r:#}");
    assert_eq!(ops(&bucket.stats(), "PutObject"), 1);
    assert_object(&bucket, &victim.key, &victim.body, victim.content_type).await;
    let r = migrate(&env, &journal, &with_verify, 0);
    assert_eq!(r["verify_mismatches"], 0, "{r:#}");
}

#[tokio::test]
async fn repair_fixes_headers_keeps_private_and_repair_acl_publishes_media_only() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    // --repair-acl publishes only what a row in good standing vouches for: the local
    // account 1's avatar and header, and the local emoji 2.
    insert_account(
        &db,
        1,
        None,
        Some(("dddddddddddddddd.gif", "image/gif")),
        Some(("eeeeeeeeeeeeeeee.jpeg", "image/jpeg")),
        Some(1),
        1.0,
        1.0,
    )
    .await;
    insert_emoji(&db, 2, None, "ffffffffffffffff.png").await;
    let vouched = [
        "accounts/avatars/000/000/001/original/dddddddddddddddd.gif",
        "accounts/avatars/000/000/001/static/dddddddddddddddd.png",
        "accounts/headers/000/000/001/original/eeeeeeeeeeeeeeee.jpeg",
        "custom_emojis/images/000/000/002/original/ffffffffffffffff.png",
    ];
    // A suspended account's avatar must stay private even with --repair-acl.
    insert_account(
        &db,
        42,
        None,
        Some(("4242424242424242.png", "image/png")),
        None,
        Some(1),
        1.0,
        1.0,
    )
    .await;
    sqlx::query("UPDATE accounts SET suspended_at = now() WHERE id = 42")
        .execute(&db.pool)
        .await
        .unwrap();
    let suspended = "accounts/avatars/000/000/042/original/4242424242424242.png";
    let mut tree: Vec<Entry> = mastodon_tree()
        .into_iter()
        .filter(|e| e.body.len() < MIB && !e.key.starts_with("cache/"))
        .collect();
    tree.push(entry(suspended, PNG, 500, "image/png"));
    // Copied by "another tool": no ACL (private), the generic binary/octet-stream, no
    // Cache-Control.
    for e in &tree {
        bucket
            .client
            .put_object()
            .bucket(&bucket.name)
            .key(&e.key)
            .content_type("binary/octet-stream")
            .body(e.body.clone().into())
            .send()
            .await
            .unwrap();
    }
    let probe = get(&bucket, &tree[0].key).await;
    assert_eq!(probe.content_type.as_deref(), Some("binary/octet-stream"));
    assert_eq!(probe.cache_control, None);
    assert!(!acl(&bucket, &tree[0].key).await);
    let env = s3_env_file(&db, &bucket.name, &[]);
    let journal = journal();
    let n = tree.len() as u64;
    let private = tree.iter().filter(|e| private_key(&e.key)).count() as u64;
    assert_eq!(private, 2);

    // --repair: headers fixed, ACLs kept (private stays private).
    let r = migrate(&env, &journal, &["--repair"], 0);
    assert_eq!(r["repair_checked"], n, "{r:#}");
    assert_eq!(r["repaired"], n);
    assert_eq!(r["left_private"], n - private);
    for e in &tree {
        let o = get(&bucket, &e.key).await;
        assert!(o.body == e.body, "{}: bytes kept", e.key);
        assert_eq!(o.content_type.as_deref(), Some(e.content_type), "{}", e.key);
        assert_eq!(o.cache_control.as_deref(), Some(CACHE_CONTROL), "{}", e.key);
        assert!(!acl(&bucket, &e.key).await, "{} still private", e.key);
    }

    // --repair --repair-acl: what rows in good standing vouch for becomes public-read;
    // backups/imports, the suspended avatar and keys without a row do not.
    let r = migrate(&env, &journal, &["--repair", "--repair-acl"], 0);
    assert_eq!(r["repaired"], vouched.len() as u64, "{r:#}");
    assert_eq!(r["left_private"], n - private - vouched.len() as u64);
    for e in &tree {
        let want_public = vouched.contains(&e.key.as_str());
        assert!(!want_public || (!private_key(&e.key) && e.key != suspended));
        assert_eq!(acl(&bucket, &e.key).await, want_public, "{}", e.key);
        let o = get(&bucket, &e.key).await;
        assert!(o.body == e.body);
        assert_eq!(o.content_type.as_deref(), Some(e.content_type), "{}", e.key);
        assert_eq!(o.cache_control.as_deref(), Some(CACHE_CONTROL));
    }

    // Nothing left to fix: no CopyObject.
    bucket.reset_stats();
    let r = migrate(&env, &journal, &["--repair"], 0);
    assert_eq!(r["repaired"], 0, "{r:#}");
    let stats = bucket.stats();
    assert_eq!(ops(&stats, "CopyObject"), 0, "{stats}");
    assert_eq!(stats["mutating"], 0, "{stats}");
    let r = migrate(&env, &journal, &["--repair", "--repair-acl"], 0);
    assert_eq!(r["repaired"], 0, "{r:#}");
    assert_eq!(bucket.stats()["mutating"], 0);
    db.drop_db().await;
}

#[tokio::test]
async fn failed_multipart_upload_is_aborted_and_retried_next_run() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let big = entry(
        "media_attachments/files/000/000/011/original/big.mp4",
        MP4,
        11 * MIB,
        "video/mp4",
    );
    let small = entry(
        "media_attachments/files/000/000/012/original/small.png",
        PNG,
        2000,
        "image/png",
    );
    write_tree(&root, std::slice::from_ref(&big));
    write_tree(&root, std::slice::from_ref(&small));
    let env = env_file(&bucket.name, &[]);
    let journal = journal();
    let args = ["--from", s(&root), "--multipart-threshold", THRESHOLD];
    // Every UploadPart answers 503 SlowDown, more often than the SDK retries.
    bucket.faults(serde_json::json!({"slowdown": {"count": 1000, "ops": ["UploadPart"]}}));
    let r = migrate(&env, &journal, &args, 1);
    assert_eq!(r["files_failed"], 1, "{r:#}");
    assert_eq!(r["failures"][0]["key"], big.key.as_str());
    assert_eq!(r["files_uploaded"], 1, "the rest continues");
    let stats = bucket.stats();
    assert_eq!(ops(&stats, "CreateMultipartUpload"), 1, "{stats}");
    assert_eq!(ops(&stats, "AbortMultipartUpload"), 1, "{stats}");
    assert_eq!(ops(&stats, "CompleteMultipartUpload"), 0, "{stats}");
    let uploads = bucket
        .client
        .list_multipart_uploads()
        .bucket(&bucket.name)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "no incomplete upload left to bill: {uploads:?}"
    );
    assert_eq!(bucket.keys().await, BTreeSet::from([small.key.clone()]));

    // The failure was not journalled: the next run uploads exactly that file.
    bucket.faults(serde_json::json!({}));
    let r = migrate(&env, &journal, &args, 0);
    assert_eq!(r["files_uploaded"], 1, "{r:#}");
    assert_eq!(r["files_unchanged"], 1);
    assert_tree(&bucket, &[big, small]).await;
}

/// The multipart threshold is Mastodon's: the env file's `S3_MULTIPART_THRESHOLD`, else
/// 15 MiB (a 12 MiB video goes as one PutObject, as Mastodon uploads it), and the flag
/// beats both.
#[tokio::test]
async fn multipart_threshold_follows_s3_multipart_threshold_then_mastodons_default() {
    let root = temp_dir("system");
    let video = entry(
        "media_attachments/files/000/000/021/original/clip.mp4",
        MP4,
        12 * MIB,
        "video/mp4",
    );
    write_tree(&root, std::slice::from_ref(&video));
    let six_mib = (6 * MIB).to_string();
    for (extra, flag, parts) in [
        (None, None, 0),
        (Some(six_mib.as_str()), None, 2),
        (Some(six_mib.as_str()), Some("13000000"), 0),
        (None, Some(THRESHOLD), 3),
    ] {
        let bucket = TestBucket::new().await;
        let vars: Vec<(&str, &str)> = extra
            .map(|v| ("S3_MULTIPART_THRESHOLD", v))
            .into_iter()
            .collect();
        let env = env_file(&bucket.name, &vars);
        let mut args = vec!["--from", s(&root)];
        if let Some(f) = flag {
            args.extend(["--multipart-threshold", f]);
        }
        let r = migrate(&env, &journal(), &args, 0);
        assert_eq!(r["files_uploaded"], 1, "{extra:?} {flag:?}: {r:#}");
        let stats = bucket.stats();
        let what = format!("S3_MULTIPART_THRESHOLD {extra:?}, flag {flag:?}: {stats}");
        assert_eq!(ops(&stats, "UploadPart"), parts, "{what}");
        assert_eq!(
            ops(&stats, "CreateMultipartUpload"),
            u64::from(parts > 0),
            "{what}"
        );
        assert_eq!(ops(&stats, "PutObject"), u64::from(parts == 0), "{what}");
        assert_tree(&bucket, std::slice::from_ref(&video)).await;
    }
}

#[tokio::test]
async fn a_new_target_key_prefix_is_a_new_target() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let tree: Vec<Entry> = mastodon_tree()
        .into_iter()
        .filter(|e| e.body.len() < MIB && !e.key.starts_with("cache/"))
        .collect();
    write_tree(&root, &tree);
    let journal = journal();
    let env_a = env_file(&bucket.name, &[("S3_KEY_PREFIX", "a")]);
    let r = migrate(&env_a, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], tree.len() as u64);
    // The admin fixes S3_KEY_PREFIX: the same journal must not claim the files are there.
    let env_b = env_file(&bucket.name, &[("S3_KEY_PREFIX", "b/")]);
    let r = migrate(&env_b, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], tree.len() as u64, "{r:#}");
    let want: BTreeSet<String> = ["a", "b"]
        .iter()
        .flat_map(|p| tree.iter().map(move |e| format!("{p}/{}", e.key)))
        .collect();
    assert_eq!(bucket.keys().await, want);
    for e in &tree {
        assert_object_at(&bucket, "b/", &e.key, &e.body, e.content_type).await;
    }
    // Back to "a": still known there.
    let r = migrate(&env_a, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_uploaded"], 0);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_uploads_and_journals_every_one() {
    const N: usize = 400;
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let mut keys = BTreeSet::new();
    for i in 0..N {
        let k = small_key(i);
        write_file(&root, &k, &bytes(PNG, &k, 100));
        keys.insert(k);
    }
    let env = env_file(&bucket.name, &[]);
    let journal = journal();
    let child = command(
        Path::new(env!("CARGO_BIN_EXE_mastomedia")),
        &[
            "--env-file",
            s(&env),
            "migrate",
            "--from",
            s(&root),
            "--journal",
            s(&journal),
            "--rate",
            "40",
            "--json",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start mastomedia");
    wait_for_first_upload(&bucket).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(r["interrupted"], true);
    let put = ops(&bucket.stats(), "PutObject");
    assert!(put > 0 && put < N as u64, "{put}");
    assert_eq!(r["files_uploaded"], put, "every started upload finished");

    // Every upload of the interrupted run was journalled: the re-run does exactly the rest.
    bucket.reset_stats();
    let r = migrate(&env, &journal, &["--from", s(&root)], 0);
    assert_eq!(r["files_unchanged"], put, "{r:#}");
    assert_eq!(r["files_uploaded"], N as u64 - put);
    assert_eq!(ops(&bucket.stats(), "PutObject"), N as u64 - put);
    assert_identical_to(&bucket, &root, &keys).await;
}

#[tokio::test]
async fn default_source_is_public_system_beside_the_env_file_and_journal_under_state_dir() {
    let bucket = TestBucket::new().await;
    let env = env_file(&bucket.name, &[]);
    let root = env.parent().unwrap().join("public/system");
    let tree: Vec<Entry> = mastodon_tree()
        .into_iter()
        .filter(|e| e.body.len() < MIB)
        .collect();
    write_tree(&root, &tree);
    let state = temp_dir("state");
    let vars = [("XDG_STATE_HOME", s(&state))];

    // Human summary on stdout, status lines on stderr (not a terminal, as under cron).
    let run = mastomedia_env(
        &["--env-file", s(&env), "migrate", "--rate", "20"],
        &[vars[0], ("MASTOMEDIA_STATUS_INTERVAL", "1")],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let n = tree.len();
    assert!(
        run.stdout.contains(&format!("files: {n} at the source"))
            && run.stdout.contains(&format!("{n} uploaded")),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(&format!("/{n} files (")),
        "a periodic status line: {}",
        run.stderr
    );
    let journals: Vec<_> = std::fs::read_dir(state.join("mastomedia"))
        .expect("the journal is under $XDG_STATE_HOME/mastomedia")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sqlite")) // beside its -wal and -shm files
        .collect();
    assert_eq!(journals.len(), 1, "{journals:?}");
    assert!(
        journals[0].starts_with("migrate-") && journals[0].contains(&bucket.name),
        "{journals:?}"
    );
    assert_tree(&bucket, &tree).await;

    // The same default journal: nothing to do.
    let run = mastomedia_env(&["--env-file", s(&env), "migrate", "--json"], &vars);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["files_uploaded"], 0);
    assert_eq!(r["files_unchanged"], n as u64);
    assert!(
        r["journal"]
            .as_str()
            .unwrap()
            .starts_with(s(&state.join("mastomedia"))),
        "{r:#}"
    );
}

#[tokio::test]
async fn bad_source_bucket_errors_name_the_old_env_file() {
    let source = TestBucket::new().await;
    let target = TestBucket::new().await;
    let target_env = env_file(&target.name, &[]);
    // The old provider's env file with a wrong secret: exit 3, naming that file.
    let wrong = env_file(&source.name, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]);
    let err = failing(
        &[
            "--env-file",
            s(&target_env),
            "migrate",
            "--journal",
            s(&journal()),
            "--from-env",
            s(&wrong),
        ],
        3,
    );
    assert!(
        err.contains(s(&wrong)) && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    // The target's own env file as the source: exit 2, pointing at --repair.
    let same = env_file(&target.name, &[]);
    let err = failing(
        &[
            "--env-file",
            s(&target_env),
            "migrate",
            "--journal",
            s(&journal()),
            "--from-env",
            s(&same),
        ],
        2,
    );
    assert!(err.contains("--repair"), "{err}");
    assert_eq!(target.stats()["mutating"], 0);
}

/// Issue 9, case 7: a kill during a multipart upload leaves an unfinished upload that is
/// billed as stored parts. The next run aborts this tool's stale uploads for the keys it
/// writes (started before it), and leaves every other key's upload alone.
#[tokio::test]
async fn case9_7_stale_multipart_upload_of_a_key_it_writes_is_aborted() {
    let bucket = TestBucket::new().await;
    let root = temp_dir("system");
    let big = "media_attachments/files/000/000/001/original/aaaaaaaaaaaaaaaa.mp4";
    write_file(
        &root,
        big,
        &bytes(b"\x00\x00\x00\x18ftypmp42", big, 6 * 1024 * 1024),
    );
    // What a killed run left: an unfinished upload of `big` with one part, and an upload
    // of another key (someone else's) that must stay.
    let other = "backups/dumps/000/000/009/original/archive.zip";
    let mut ids = Vec::new();
    for key in [big, other] {
        let up = bucket
            .client
            .create_multipart_upload()
            .bucket(&bucket.name)
            .key(key)
            .send()
            .await
            .expect("start multipart");
        bucket
            .client
            .upload_part()
            .bucket(&bucket.name)
            .key(key)
            .upload_id(up.upload_id().unwrap())
            .part_number(1)
            .body(vec![1u8; 1024].into())
            .send()
            .await
            .expect("upload part");
        ids.push(up.upload_id().unwrap().to_owned());
    }
    let env = env_file(&bucket.name, &[]);
    let journal = journal();
    let r = migrate(
        &env,
        &journal,
        &["--from", s(&root), "--multipart-threshold", THRESHOLD],
        0,
    );
    assert_eq!(r["stale_uploads_aborted"], 1, "{r:#}");
    assert_eq!(r["files_uploaded"], 1, "{r:#}");
    let left = bucket
        .client
        .list_multipart_uploads()
        .bucket(&bucket.name)
        .send()
        .await
        .expect("list uploads");
    let left: Vec<(String, String)> = left
        .uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap().to_owned(),
                u.upload_id().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(left, vec![(other.to_owned(), ids[1].clone())]);
}

/// Issue 11's streamed copy: the empty-journal sample (invariant 11) is picked while the
/// source streams by, and must stay spread over the whole source, not its first 16 files
/// (a rejected attempt HEADed those, all `accounts/…`). A tree whose only files already in
/// the bucket are under `media_attachments/`, the last quarter in key order: refused with
/// exit 2 before anything is uploaded; `--accept-empty-journal` then copies what is missing.
#[tokio::test]
async fn the_empty_journal_sample_spans_the_whole_source() {
    let bucket = TestBucket::new().await;
    let env = env_file(&bucket.name, &[]);
    let root = temp_dir("spread");
    let early: Vec<String> = (0..300)
        .map(|i| format!("accounts/avatars/000/000/{i:03}/original/{i:016x}.png"))
        .collect();
    let late: Vec<String> = (0..100)
        .map(|i| format!("media_attachments/files/000/000/{i:03}/original/{i:016x}.png"))
        .collect();
    for k in early.iter().chain(&late) {
        write_file(&root, k, b"\x89PNG\r\n\x1a\n");
    }
    for k in &late {
        bucket.put(k, b"\x89PNG\r\n\x1a\n").await;
    }
    bucket.reset_stats();
    let fresh = journal();
    let run = mastomedia(&[
        "--env-file",
        s(&env),
        "migrate",
        "--journal",
        s(&fresh),
        "--from",
        s(&root),
    ]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("knows nothing of this target")
            && run.stderr.contains("media_attachments/"),
        "{}",
        run.stderr
    );
    assert_eq!(
        bucket.stats()["mutating"],
        0,
        "nothing uploaded before the verdict"
    );
    assert_eq!(bucket.keys().await.len(), late.len());
    // At most 16 + 2 × 2 HEADs: the spread sample and the first and last file of each
    // top-level folder, no presence check per file.
    assert!(
        ops(&bucket.stats(), "HeadObject") <= 16 + 2 * 2,
        "{}",
        bucket.stats()
    );
    let r = migrate(
        &env,
        &fresh,
        &["--from", s(&root), "--accept-empty-journal"],
        0,
    );
    assert_eq!(r["files_total"], 400, "{r:#}");
    assert_eq!(bucket.keys().await.len(), 400);
}

/// An object Mastodon deleted in the bucket stays deleted when its source file gets a new
/// mtime (a restored backup, a `touch`): the catch-up pass HEADs it and finds it gone,
/// on the first pass after the deletion and on every later one (the hostile test's F3: a
/// record journalled deleted-in-bucket was uploaded again after a touch).
#[tokio::test]
async fn a_deleted_object_stays_deleted_when_its_source_is_touched() {
    let bucket = TestBucket::new().await;
    let env = env_file(&bucket.name, &[]);
    let root = temp_dir("touched");
    let gone = "media_attachments/files/000/002/001/original/gone.png";
    let kept = "media_attachments/files/000/002/002/original/kept.png";
    for k in [gone, kept] {
        write_file(&root, k, b"\x89PNG\r\n\x1a\n");
    }
    let journal = journal();
    let args = ["--from", s(&root)];
    migrate(&env, &journal, &args, 0);
    bucket
        .client
        .delete_object()
        .bucket(&bucket.name)
        .key(gone)
        .send()
        .await
        .expect("delete");
    let touch = |secs: u64| {
        let t = std::time::SystemTime::now() + Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(root.join(gone))
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    for secs in [10, 20] {
        touch(secs);
        bucket.reset_stats();
        let r = migrate(&env, &journal, &args, 0);
        assert_eq!(r["files_uploaded"], 0, "after touch +{secs} s: {r:#}");
        assert_eq!(ops(&bucket.stats(), "PutObject"), 0, "{}", bucket.stats());
        assert_eq!(
            bucket.keys().await,
            BTreeSet::from([kept.to_owned()]),
            "the deleted object stays deleted"
        );
    }
}

/// The spread alone picked nothing in the last ~6 % of the source (its last pick lies at
/// about 94 %): 500 `accounts/` files before 40 `media_attachments/` files, only the latter
/// already in the bucket (the journal of their copy lost), was uploaded in full, and a
/// media file Mastodon had deleted in the bucket came back. The first and last file of
/// every top-level folder join the sample: refused, nothing written.
#[tokio::test]
async fn the_empty_journal_sample_covers_a_small_last_folder() {
    let bucket = TestBucket::new().await;
    let env = env_file(&bucket.name, &[]);
    let root = temp_dir("spread-tail");
    let early: Vec<String> = (0..500)
        .map(|i| format!("accounts/avatars/000/001/{i:03}/original/{i:016x}.png"))
        .collect();
    let late: Vec<String> = (0..40)
        .map(|i| format!("media_attachments/files/000/001/{i:03}/original/m.jpg"))
        .collect();
    for k in early.iter().chain(&late) {
        write_file(&root, k, b"\xff\xd8\xff\xe0");
    }
    // Copied before; one of them deleted since by Mastodon.
    for k in &late[1..] {
        bucket.put(k, b"\xff\xd8\xff\xe0").await;
    }
    bucket.reset_stats();
    let run = mastomedia(&[
        "--env-file",
        s(&env),
        "migrate",
        "--journal",
        s(&journal()),
        "--from",
        s(&root),
    ]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("knows nothing of this target"),
        "{}",
        run.stderr
    );
    assert_eq!(
        bucket.stats()["mutating"],
        0,
        "nothing uploaded: {}",
        bucket.stats()
    );
    assert!(
        !bucket.keys().await.contains(&late[0]),
        "the deleted object stays deleted"
    );
}
