//! Issue 9, case 7: `S3_READ_TIMEOUT` bounds each attempt of a short request (a stalled
//! listing is retried after it), while `DeleteObjects` keeps Mastodon's 120 s floor (a slow
//! batch delete is waited for, never sent twice).

use crate::support::seed::{Media, insert_media};
use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file};

fn count(stats: &serde_json::Value, op: &str) -> u64 {
    stats["ops"][op].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn case9_7_read_timeout_applies_to_short_requests_and_batch_deletes_keep_120_s() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    for i in 0..3_i64 {
        let id = 109_345_678_901_235_000 + i;
        let name = format!("{:016x}.png", 0xbeef_0000 + i);
        insert_media(&db, &Media::remote(id, &name, 30.0)).await;
        let p = crate::support::partition18(id);
        for style in ["original", "small"] {
            bucket
                .put(
                    &format!("cache/media_attachments/files/{p}/{style}/{name}"),
                    b"x",
                )
                .await;
        }
    }
    let env = s3_env_file(&db, &bucket.name, &[("S3_READ_TIMEOUT", "2")]);
    let env = env.to_str().unwrap();
    let prune = |extra: &[&str]| {
        let mut args = vec!["--env-file", env, "prune", "--days", "7", "--json"];
        args.extend_from_slice(extra);
        mastomedia(&args)
    };

    // The listings of a dry run, unhindered.
    bucket.reset_stats();
    let run = prune(&["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listings = count(&bucket.stats(), "ListObjectsV2");
    assert!(listings > 0);

    // One listing stalls for 20 s: its attempt times out after S3_READ_TIMEOUT (2 s) and
    // is retried, instead of waiting the 120 s that used to apply to every request.
    bucket.faults(
        serde_json::json!({"stall": {"count": 1, "ops": ["ListObjectsV2"], "seconds": 20}}),
    );
    bucket.reset_stats();
    let run = prune(&["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        count(&bucket.stats(), "ListObjectsV2"),
        listings + 1,
        "the stalled listing was retried: {}",
        bucket.stats()
    );

    // A batch delete that takes 6 s is waited for (the 120 s floor), never sent twice.
    bucket
        .faults(serde_json::json!({"stall": {"count": 1, "ops": ["DeleteObjects"], "seconds": 6}}));
    bucket.reset_stats();
    let run = prune(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        count(&bucket.stats(), "DeleteObjects"),
        1,
        "{}",
        bucket.stats()
    );
    assert!(bucket.keys().await.is_empty());
    db.drop_db().await;
}
