//! `mastomedia migrate` from a bucket into the local disk (admins leaving a provider): a
//! real source bucket on the moto server behind the SigV4-checking proxy, a real folder
//! as the target (the env file's `PAPERCLIP_ROOT_PATH`). Every file is read back from disk
//! and compared byte for byte with the object it came from, with its mode.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::stream::{self, StreamExt};

use crate::migrate::{GIF, JPEG, PNG, bytes, journal, migrate, ops, s};
use crate::support::{TestBucket, mastomedia, temp_dir};

const MIB: usize = 1024 * 1024;

/// An env file whose storage is the local folder `root` (no S3_ENABLED).
fn disk_env(root: &Path) -> PathBuf {
    let dir = temp_dir("env");
    let path = dir.join(".env.production");
    std::fs::write(
        &path,
        format!(
            "LOCAL_DOMAIN=example.social\nDATABASE_URL=postgres://mastodon@127.0.0.1:9/unused\nPAPERCLIP_ROOT_PATH={}\n",
            root.display()
        ),
    )
    .unwrap();
    path
}

/// The old provider's objects: key (below its `old-system` prefix) → bytes. A 6 MiB video
/// (many chunks of a GET stream), names with spaces and unicode, a zero-byte file, a
/// backup (always private).
fn source_tree() -> BTreeMap<String, Vec<u8>> {
    let p = "109/345/678/901/234/567";
    let mut t = BTreeMap::new();
    for (key, magic, len) in [
        (
            format!("media_attachments/files/{p}/original/8f3a2b1c4d5e6f70.png"),
            PNG,
            3000,
        ),
        (
            format!("media_attachments/files/{p}/small/8f3a2b1c4d5e6f70.png"),
            PNG,
            700,
        ),
        (
            format!("media_attachments/thumbnails/{p}/original/1122334455667788.jpeg"),
            JPEG,
            900,
        ),
        (
            "cache/accounts/avatars/109/345/678/901/234/570/original/aaaaaaaaaaaaaaa1.gif".into(),
            GIF,
            1200,
        ),
        (
            "custom_emojis/images/000/000/001/original/blob cat ü+%.png".into(),
            PNG,
            400,
        ),
        (
            "site_uploads/files/000/000/001/original/empty.png".into(),
            PNG,
            0,
        ),
        (
            format!("media_attachments/files/{p}/original/0a1b2c3d4e5f6072.mp4"),
            PNG,
            6 * MIB + 123,
        ),
        (
            "backups/000/000/001/original/archive-20240101.zip".into(),
            PNG,
            2000,
        ),
    ] {
        let body = bytes(magic, &key, len);
        t.insert(key, body);
    }
    t
}

/// A source bucket holding `tree` below `old-system/`, public-read as Mastodon writes media
/// (the backup too: the copy makes it private by its key), and its env file.
async fn source_bucket(tree: &BTreeMap<String, Vec<u8>>) -> (TestBucket, PathBuf) {
    let bucket = TestBucket::new().await;
    stream::iter(tree)
        .for_each_concurrent(16, |(k, body)| {
            let bucket = &bucket;
            async move {
                bucket
                    .client
                    .put_object()
                    .bucket(&bucket.name)
                    .key(format!("old-system/{k}"))
                    .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
                    .body(body.clone().into())
                    .send()
                    .await
                    .unwrap();
            }
        })
        .await;
    let env = crate::migrate::env_file(&bucket.name, &[("S3_KEY_PREFIX", "old-system")]);
    (bucket, env)
}

/// Every regular file below `root`: key → bytes.
fn files_below(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                let key = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(key, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Whether a key's file name is one of the upload's temporary names (`.<name>.mastomedia-…`).
fn is_temp(key: &str) -> bool {
    key.rsplit('/').next().unwrap().starts_with('.')
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn bucket_to_disk_copies_byte_identical_files_and_a_rerun_copies_nothing() {
    let tree = source_tree();
    let (source, source_env) = source_bucket(&tree).await;
    let root = temp_dir("disk-target");
    let env = disk_env(&root);
    let journal = journal();
    let args = ["--from-env", s(&source_env)];

    // A dry run reads the source and writes nothing: no file, no folder, no journal entry.
    let r = migrate(&env, &journal, &[&args[..], &["--dry-run"]].concat(), 0);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["files_uploaded"], tree.len() as u64, "{r:#}");
    assert!(
        std::fs::read_dir(&root).unwrap().next().is_none(),
        "nothing written"
    );

    let r = migrate(&env, &journal, &args, 0);
    assert_eq!(r["files_total"], tree.len() as u64, "{r:#}");
    assert_eq!(
        r["files_uploaded"],
        tree.len() as u64,
        "the dry run journalled nothing"
    );
    assert_eq!(
        r["target"],
        format!("file://{}", root.canonicalize().unwrap().display())
    );
    assert_eq!(
        files_below(&root),
        tree,
        "same keys (minus the prefix), same bytes"
    );
    for key in tree.keys() {
        let want = if key.starts_with("backups/") {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode(&root.join(key)), want, "{key}");
        let mut dir = root.join(key).parent().unwrap().to_path_buf();
        while dir != root {
            assert_eq!(mode(&dir), 0o755, "{}", dir.display());
            dir = dir.parent().unwrap().to_path_buf();
        }
    }
    assert_eq!(source.stats()["mutating"], 0, "the source is only read");

    // A re-run copies nothing and reads no object.
    source.reset_stats();
    let r = migrate(&env, &journal, &args, 0);
    assert_eq!(r["files_uploaded"], 0, "{r:#}");
    assert_eq!(r["files_unchanged"], tree.len() as u64);
    let stats = source.stats();
    assert_eq!(ops(&stats, "GetObject"), 0, "{stats}");
    assert_eq!(files_below(&root), tree);
}

#[tokio::test]
async fn catch_up_never_recreates_what_was_deleted_on_disk_and_keeps_foreign_files() {
    let tree = source_tree();
    let (source, source_env) = source_bucket(&tree).await;
    let root = temp_dir("disk-target");
    let keys: Vec<&String> = tree.keys().collect();
    // Already on disk before the first copy, not written by migrate: one with other bytes,
    // one identical.
    let (foreign, same) = (keys[0].as_str(), keys[1].as_str());
    for (k, body) in [
        (foreign, b"someone else's file".to_vec()),
        (same, tree[same].clone()),
    ] {
        std::fs::create_dir_all(root.join(k).parent().unwrap()).unwrap();
        std::fs::write(root.join(k), body).unwrap();
    }
    let env = disk_env(&root);
    let journal = journal();
    let args = ["--from-env", s(&source_env)];

    // An empty journal with source files already at the target: refused, nothing written.
    let run = mastomedia(&[
        "--env-file",
        s(&env),
        "migrate",
        "--journal",
        s(&journal),
        "--from-env",
        s(&source_env),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--accept-empty-journal"),
        "{}",
        run.stderr
    );
    assert_eq!(files_below(&root).len(), 2);

    // Accepted: the identical file counts as copied, the other is never overwritten.
    let r = migrate(
        &env,
        &journal,
        &[&args[..], &["--accept-empty-journal"]].concat(),
        1,
    );
    assert_eq!(r["files_uploaded"], tree.len() as u64 - 1, "{r:#}");
    assert_eq!(r["failures"][0]["key"], foreign);
    assert_eq!(r["failures"][0]["code"], "TargetDiffers");
    assert_eq!(
        std::fs::read(root.join(foreign)).unwrap(),
        b"someone else's file"
    );
    std::fs::remove_file(root.join(foreign)).unwrap();
    let r = migrate(&env, &journal, &args, 0);
    assert_eq!(r["files_uploaded"], 1, "moved away, then copied: {r:#}");
    assert_eq!(files_below(&root), tree);

    // Deleted on disk after the copy: `unchanged` as it was, `changed` also rewritten at
    // the source since. `rewritten` is changed at the source and still on disk.
    let (unchanged, changed, rewritten) = (keys[2].as_str(), keys[3].as_str(), keys[4].as_str());
    std::fs::remove_file(root.join(unchanged)).unwrap();
    std::fs::remove_file(root.join(changed)).unwrap();
    let new_bytes = bytes(PNG, "new version", 321);
    source
        .put(&format!("old-system/{changed}"), &new_bytes)
        .await;
    source
        .put(&format!("old-system/{rewritten}"), &new_bytes)
        .await;
    let r = migrate(&env, &journal, &args, 0);
    assert_eq!(r["files_uploaded"], 1, "only the one still on disk: {r:#}");
    assert_eq!(r["deleted_in_bucket"], 1, "{r:#}");
    assert!(!root.join(unchanged).exists(), "not re-created");
    assert!(!root.join(changed).exists(), "not re-created");
    assert_eq!(
        std::fs::read(root.join(rewritten)).unwrap(),
        new_bytes,
        "the journal says we wrote it"
    );
}

#[tokio::test]
async fn verify_on_disk_catches_a_truncated_and_a_corrupted_file() {
    let tree = source_tree();
    let (_source, source_env) = source_bucket(&tree).await;
    let root = temp_dir("disk-target");
    let env = disk_env(&root);
    let journal = journal();
    let args = ["--from-env", s(&source_env), "--verify"];
    let r = migrate(&env, &journal, &args, 0);
    assert_eq!(r["verified"], tree.len() as u64, "{r:#}");
    assert_eq!(r["verify_mismatches"], 0, "{r:#}");

    let keys: Vec<&String> = tree.keys().filter(|k| tree[*k].len() > 100).collect();
    let (truncated, corrupted) = (keys[0].as_str(), keys[1].as_str());
    let body = &tree[truncated];
    std::fs::write(root.join(truncated), &body[..body.len() / 2]).unwrap();
    // Same size, other bytes: only the MD5 (the source ETag) can tell.
    let len = tree[corrupted].len();
    std::fs::write(root.join(corrupted), bytes(PNG, "corrupted", len)).unwrap();
    let r = migrate(&env, &journal, &args, 1);
    assert_eq!(r["verify_mismatches"], 2, "{r:#}");
    let codes: BTreeMap<String, String> = r["failures"]
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
    assert_eq!(codes[truncated], "SizeMismatch", "{r:#}");
    assert_eq!(codes[corrupted], "Md5Mismatch", "{r:#}");
}

#[tokio::test]
async fn a_disk_target_refuses_from_dir_repair_and_no_source() {
    let root = temp_dir("disk-target");
    let other = temp_dir("system");
    let env = disk_env(&root);
    let j = journal();
    let base = ["--env-file", s(&env), "migrate", "--journal", s(&j)];
    for (extra, says) in [
        (vec!["--from", s(&other)], "rsync"),
        (vec!["--repair"], "nothing to repair"),
        (vec!["--repair", "--repair-acl"], "nothing to repair"),
        (vec![], "--from-env"),
    ] {
        let run = mastomedia(&[&base[..], &extra[..]].concat());
        assert_eq!(run.code, 2, "{extra:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{extra:?}: {}", run.stderr);
    }
    assert!(std::fs::read_dir(&root).unwrap().next().is_none());
    assert!(!j.exists(), "no journal written");
}

#[tokio::test]
async fn kill_9_mid_copy_to_disk_leaves_no_partial_file_and_a_rerun_completes() {
    const N: usize = 600;
    let tree: BTreeMap<String, Vec<u8>> = (0..N)
        .map(|i| {
            let k = format!(
                "media_attachments/files/110/000/000/000/{:03}/{:03}/original/{i:016x}.png",
                i / 1000,
                i % 1000
            );
            let body = bytes(PNG, &k, 64 + i % 200);
            (k, body)
        })
        .collect();
    let (_source, source_env) = source_bucket(&tree).await;
    let root = temp_dir("disk-target");
    let env = disk_env(&root);
    let journal = journal();

    // 40 requests/s per store: two per file on each side, about 30 s for everything.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mastomedia"));
    cmd.env_clear();
    for k in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .env("MASTOMEDIA_STATUS_INTERVAL", "3600")
        .args([
            "--env-file",
            s(&env),
            "migrate",
            "--from-env",
            s(&source_env),
        ])
        .args(["--journal", s(&journal), "--rate", "40", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mastomedia");
    let mut started = false;
    for _ in 0..3000 {
        if files_below(&root).keys().any(|k| !is_temp(k)) {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started, "no file within 30 s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kill = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(
        child.wait().unwrap().signal(),
        Some(9),
        "killed mid-run, not finished"
    );

    // Every file under its final name is whole: byte-identical to its object.
    let left = files_below(&root);
    let whole: BTreeSet<&String> = left.keys().filter(|k| !is_temp(k)).collect();
    assert!(
        !whole.is_empty() && whole.len() < N,
        "the kill came mid-run: {}",
        whole.len()
    );
    for k in &whole {
        assert!(
            left[*k] == tree[*k],
            "{k}: a partial file under the final name"
        );
    }

    let r = migrate(&env, &journal, &["--from-env", s(&source_env)], 0);
    assert_eq!(r["files_total"], N as u64, "{r:#}");
    let uploaded = r["files_uploaded"].as_u64().unwrap();
    assert!(
        uploaded < N as u64,
        "what the journal had is not copied again: {r:#}"
    );
    assert_eq!(
        files_below(&root),
        tree,
        "complete, and no temporary file left"
    );
}
