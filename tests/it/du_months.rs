//! Issue 15.7: `du --by month` counts objects and bytes per month of creation, read from
//! the snowflake ids in the keys (cache/ or not), with everything else under `unknown`,
//! so the months add up to du's totals. Real PostgreSQL and S3 server.

use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file};

#[tokio::test]
async fn du_by_month_splits_the_listing_and_sums_to_the_totals() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    // 2024-01-01T00:00Z is id 111677748019200000 (docs/reference/mastodon-schema.md#snowflake-ids);
    // 2024-02-01T00:00Z is 111853279641600000.
    let objects: [(&str, usize); 6] = [
        (
            "cache/media_attachments/files/111/677/748/019/200/000/original/a.png",
            100,
        ),
        (
            "cache/media_attachments/files/111/677/748/019/200/000/small/a.png",
            10,
        ),
        (
            "media_attachments/files/111/853/279/641/600/000/original/b.jpeg",
            1000,
        ),
        (
            "cache/media_attachments/files/111/853/279/641/600/001/original/c.png",
            7,
        ),
        ("accounts/avatars/000/000/001/original/d.png", 50),
        ("robots.txt", 3),
    ];
    for (k, n) in objects {
        bucket.put(k, &vec![b'x'; n]).await;
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();
    let run = mastomedia(&["--env-file", env, "du", "--by", "month", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let months = v["months"].as_array().expect("months with --by month");
    let names: Vec<&str> = months
        .iter()
        .map(|m| m["month"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["2024-01", "2024-02", "unknown"],
        "oldest first, unknown last"
    );
    let sum = |field: &str| -> u64 {
        months
            .iter()
            .map(|m| m["total"][field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("objects"), v["total"]["objects"].as_u64().unwrap());
    assert_eq!(sum("bytes"), v["total"]["bytes"].as_u64().unwrap());
    assert_eq!(v["total"]["objects"], 6);
    assert_eq!(months[0]["cache"]["objects"], 2);
    assert_eq!(months[0]["cache"]["bytes"], 110);
    assert_eq!(months[1]["outside_cache"]["bytes"], 1000);
    assert_eq!(months[1]["cache"]["bytes"], 7);
    assert_eq!(
        months[2]["outside_cache"]["bytes"], 50,
        "a serial id has no month"
    );
    assert_eq!(months[2]["unrecognised"]["bytes"], 3);
    // Each month's parts add up.
    for m in months {
        for f in ["objects", "bytes"] {
            let parts: u64 = ["cache", "outside_cache", "unrecognised"]
                .iter()
                .map(|p| m[*p][f].as_u64().unwrap())
                .sum();
            assert_eq!(parts, m["total"][f].as_u64().unwrap(), "{m}");
        }
    }
    // Without --by the JSON shape is unchanged.
    let plain = mastomedia(&["--env-file", env, "du", "--json"]);
    assert!(plain.json().get("months").is_none());
    // The human table.
    let text = mastomedia(&["--env-file", env, "du", "--by", "month"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("2024-01") && l.contains(" 2 ")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("unknown"), "{}", text.stdout);
    let bad = mastomedia(&["--env-file", env, "du", "--by", "year"]);
    assert_eq!(bad.code, 2);
    db.drop_db().await;
}

/// A truncated ListObjectsV2 page without a continuation token (a broken provider or
/// proxy) used to end the listing quietly: du counted the first page only. It is an error
/// now (after the retry policy: exit 3), with the reason, instead of a wrong total.
#[tokio::test]
async fn a_truncated_page_without_a_token_is_an_error_not_the_end() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    // More than one page (1000 keys) of keys; what they are does not matter here.
    let objects: Vec<(String, Vec<u8>)> = (0..1005)
        .map(|i| (format!("unrelated/{i:05}.txt"), b"x".to_vec()))
        .collect();
    bucket.put_many(&objects);
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();
    let ok = mastomedia(&["--env-file", env, "du", "--json"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(ok.json()["total"]["objects"], 1005, "more than one page");
    bucket.faults(serde_json::json!({ "truncated_without_token": true }));
    let run = mastomedia(&["--env-file", env, "du", "--json"]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("truncated page without a continuation token"),
        "{}",
        run.stderr
    );
    db.drop_db().await;
}
