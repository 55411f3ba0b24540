//! Issue 11's du line: `mastomedia du` lists a bucket in key ranges split while listing
//! (src/inventory/listing.rs, `walk_ranges`), so its requests stay near one chain of
//! full 1000-key pages, `ceil(objects / 1000)`, with the split chains' tails on top, while
//! the per-category and per-month figures stay exact. Counted by the SigV4 proxy
//! (`/__stats/<bucket>`); real PostgreSQL and S3 server.

use std::collections::BTreeMap;

use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file};

/// A snowflake id's partition path (`docs/reference/mastodon-schema.md#snowflake-ids`).
fn partition(id: u64) -> String {
    let d = format!("{id:018}");
    (0..6)
        .map(|i| &d[i * 3..i * 3 + 3])
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn du_lists_near_one_chain_of_full_pages_and_counts_exactly() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let day: u64 = 86_400_000 << 16;
    let now = (chrono::Utc::now().timestamp_millis() as u64) << 16;
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    // (class/attachment root, cache) -> (objects, bytes) as seeded.
    let mut want: BTreeMap<(String, bool), (u64, u64)> = BTreeMap::new();
    let mut add = |key: String, size: usize, cat: Option<(&str, bool)>| {
        if let Some((root, cache)) = cat {
            let e = want.entry((root.to_owned(), cache)).or_default();
            e.0 += 1;
            e.1 += size as u64;
        }
        objects.push((key, vec![b'x'; size]));
    };
    // A busy day of cached remote media a week ago (two styles each).
    for i in 0..2600u64 {
        let id = now - 8 * day + i * (day / 2600);
        for style in ["original", "small"] {
            let key = format!(
                "cache/media_attachments/files/{}/{style}/m.png",
                partition(id)
            );
            add(
                key,
                1 + (i % 7) as usize,
                Some(("media_attachments/files", true)),
            );
        }
    }
    // Local media over two years.
    for i in 0..1400u64 {
        let id = now - 730 * day + i * (730 * day / 1400);
        let key = format!("media_attachments/files/{}/original/l.jpeg", partition(id));
        add(
            key,
            3 + (i % 5) as usize,
            Some(("media_attachments/files", false)),
        );
    }
    // Serial-id avatars.
    for i in 1..=700u64 {
        let d = format!("{i:09}");
        let key = format!(
            "accounts/avatars/{}/{}/{}/original/a.png",
            &d[..3],
            &d[3..6],
            &d[6..]
        );
        add(key, 2, Some(("accounts/avatars", false)));
    }
    // Outside the layout, and keys that sort between folders.
    for key in [
        "robots.txt",
        "media_attachments/files/109-x/y",
        "media_attachments/files0/z",
        "other/a/b",
    ] {
        add(key.to_owned(), 5, None);
    }
    let seeded = objects.len() as u64;
    let seeded_bytes: u64 = objects.iter().map(|(_, b)| b.len() as u64).sum();
    bucket.put_many(&objects);
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();
    let floor = seeded.div_ceil(1000);
    for concurrency in [1u64, 8] {
        bucket.reset_stats();
        let run = mastomedia(&[
            "--env-file",
            env,
            "du",
            "--json",
            "--concurrency",
            &concurrency.to_string(),
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let v = run.json();
        assert_eq!(v["complete"], true);
        assert_eq!(v["total"]["objects"], seeded, "{v:#}");
        assert_eq!(v["total"]["bytes"], seeded_bytes, "{v:#}");
        for ((root, cache), (n, bytes)) in &want {
            let (class, att) = root.split_once('/').unwrap();
            let line = v["categories"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["class"] == *class && c["attachment"] == *att && c["cache"] == *cache)
                .unwrap_or_else(|| panic!("no line {root} cache={cache}: {v:#}"));
            assert_eq!(line["objects"], *n, "{root} cache={cache}");
            assert_eq!(line["bytes"], *bytes, "{root} cache={cache}");
        }
        assert_eq!(v["other"]["objects"], 4, "{v:#}");
        let stats = bucket.stats();
        let seen = stats["ops"]["ListObjectsV2"].as_u64().unwrap_or(0);
        // What du sent (one per request, however many attempts a loaded machine's
        // timeouts made), and what the proxy saw: du's attempts.
        let lists = v["requests"]["ListObjectsV2"].as_u64().unwrap();
        assert_eq!(
            v["attempts"]["ListObjectsV2"].as_u64(),
            Some(seen),
            "du's own count agrees with the proxy's"
        );
        // The store check (one ListObjectsV2 of one key), then at most one request more
        // than its share of full pages per chain: one chain, plus at most
        // SPLITS_PER_SLOT (2) splits per slot.
        let bound = 1 + floor + 1 + 2 * concurrency;
        eprintln!(
            "du --concurrency {concurrency}: {lists} listings ({seen} attempts) for {seeded} \
             objects (floor {floor}, bound {bound}); proxy total {}",
            stats["total"]
        );
        assert!(
            lists <= bound,
            "{lists} ListObjectsV2 for {seeded} objects: floor {floor}, bound {bound}"
        );
        if concurrency == 1 {
            assert_eq!(lists, 1 + floor, "the check, then one chain: the floor");
        }
    }
    db.drop_db().await;
}
