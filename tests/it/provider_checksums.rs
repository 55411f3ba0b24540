//! Issue 9, case 2: providers that refuse the SDK's checksum headers (Backblaze B2, OVH,
//! Cloudflare R2, older MinIO: "Unsupported header 'x-amz-checksum-crc32'") can be pruned.
//! `DeleteObjects` carries `Content-MD5` only by default; with
//! `MASTOMEDIA_DELETE_CHECKSUM=crc32` the first refusal switches the run back to it.

use std::collections::BTreeSet;

use crate::support::seed::{Media, insert_media};
use crate::support::{Mastodon, TestBucket, TestDb, s3_env_file};

/// 30 remote rows, 30 days old, 60 objects; `S3_BATCH_DELETE_LIMIT=10`, so 6 batches.
async fn world(db: &TestDb, bucket: &TestBucket) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for i in 0..30_i64 {
        let id = 109_345_678_901_234_000 + i;
        let name = format!("{:016x}.png", 0xfeed_0000 + i);
        insert_media(db, &Media::remote(id, &name, 30.0)).await;
        let p = crate::support::partition18(id);
        for style in ["original", "small"] {
            let k = format!("cache/media_attachments/files/{p}/{style}/{name}");
            bucket.put(&k, b"png bytes").await;
            keys.insert(k);
        }
    }
    keys
}

fn prune(env: &std::path::Path, extra_env: &[(&str, &str)]) -> crate::support::Run {
    crate::support::mastomedia_env(
        &[
            "--env-file",
            env.to_str().unwrap(),
            "prune",
            "--days",
            "7",
            "--json",
        ],
        extra_env,
    )
}

#[tokio::test]
async fn case9_2_provider_refusing_checksum_headers_is_pruned_with_content_md5_only() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Paris").await;
    let bucket = TestBucket::new().await;
    let keys = world(&db, &bucket).await;
    assert_eq!(keys.len(), 60);
    bucket
        .faults(serde_json::json!({"reject_checksum_headers": true, "require_content_md5": true}));
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "10")]);
    bucket.reset_stats();
    let run = prune(&env, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["passes"][0]["rows_cleared"], 30, "{r}");
    assert!(bucket.keys().await.is_empty());
    let stats = bucket.stats();
    assert_eq!(stats["injected"], 0, "no request was refused: {stats}");
    assert_eq!(stats["ops"]["DeleteObjects"], 6, "{stats}");
    db.drop_db().await;
}

#[tokio::test]
async fn case9_2_crc32_setting_falls_back_once_and_remembers_it() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    world(&db, &bucket).await;
    bucket.faults(serde_json::json!({"reject_checksum_headers": true}));
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "10")]);
    bucket.reset_stats();
    let run = prune(
        &env,
        &[
            ("MASTOMEDIA_DELETE_CHECKSUM", "crc32"),
            ("RUST_LOG", "warn"),
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("refused the DeleteObjects checksum headers"),
        "{}",
        run.stderr
    );
    assert!(bucket.keys().await.is_empty());
    let stats = bucket.stats();
    // Batches run concurrently: at most one refusal per batch already in flight when the
    // first refusal came back, never one per batch of the run.
    let refused = stats["injected"].as_u64().unwrap();
    assert!((1..=4).contains(&refused), "{stats}");
    assert_eq!(
        stats["ops"]["DeleteObjects"].as_u64().unwrap(),
        6 + refused,
        "{stats}"
    );
    // A bad value is a usage error that names the variable.
    let run = prune(&env, &[("MASTOMEDIA_DELETE_CHECKSUM", "sha1")]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("MASTOMEDIA_DELETE_CHECKSUM"),
        "{}",
        run.stderr
    );
    db.drop_db().await;
}

/// Issue 9, case 6: on a versioned bucket a delete keeps the bytes as a noncurrent version;
/// prune must say the space is freed only when those versions expire, and give the
/// lifecycle rule to add.
#[tokio::test]
async fn case9_6_versioned_bucket_says_space_is_freed_only_when_versions_expire() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    bucket.enable_versioning().await;
    world(&db, &bucket).await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run =
        crate::support::mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--days", "7"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("versioned bucket (versioning Enabled)")
            && run.stdout.contains("NoncurrentVersionExpiration"),
        "{}",
        run.stdout
    );
    // The JSON says it too; an unversioned bucket says nothing.
    let plain = TestBucket::new().await;
    let env2 = s3_env_file(&db, &plain.name, &[]);
    let r = prune(&env2, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["bucket_versioning"], serde_json::Value::Null);
    assert!(!r.stdout.contains("versioned bucket"));
    let r = crate::support::mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(r.json()["bucket_versioning"], "Enabled");
    db.drop_db().await;
}

/// Issue 9, case 7: a fatal error in the middle of a run (here the database refuses one
/// chunk's row update) used to drop the report: `--json` printed only `{error,
/// exit_code}` although objects had been deleted. The summary of what was done is printed,
/// with the error, and the run exits 3.
#[tokio::test]
async fn case9_7_fatal_error_mid_run_still_prints_what_was_done() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    world(&db, &bucket).await;
    // The test database's own trigger (never Mastodon's schema): the update of the 20th
    // row fails, as a dropped connection or a constraint would.
    sqlx::raw_sql(
        "CREATE FUNCTION mm_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'injected failure'; END $$; \
         CREATE TRIGGER mm_fail BEFORE UPDATE ON media_attachments FOR EACH ROW \
         WHEN (OLD.id = 109345678901234019) EXECUTE FUNCTION mm_fail();",
    )
    .execute(&db.pool)
    .await
    .expect("create the trigger");
    let env = s3_env_file(&db, &bucket.name, &[("S3_BATCH_DELETE_LIMIT", "10")]);
    let run = crate::support::mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--days",
        "7",
        "--concurrency",
        "1",
        "--json",
    ]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert!(
        r["fatal"]
            .as_str()
            .unwrap_or_default()
            .contains("injected failure"),
        "{r:#}"
    );
    let media = &r["passes"][0];
    let deleted = media["objects_deleted"].as_u64().unwrap();
    assert!(
        deleted >= 20,
        "the chunks before the failure are reported: {r:#}"
    );
    assert!(media["rows_cleared"].as_u64().unwrap() >= 10, "{r:#}");
    db.drop_db().await;
}
