//! Issue 11 items 1 and 3: prune sizes runs of candidate keys with range listings merged
//! with the sorted keys, so a busy day costs about one listing page and one
//! `DeleteObjects` per 1000 keys, and `--json` reports `requests_per_deleted_key`. Counts
//! are the proxy's (`/__stats/<bucket>`); sizes and "already gone" stay exact, and objects
//! of other widths or other names inside a listed range survive.

use std::collections::BTreeSet;

use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, partition18, s3_env_file};

const FILES: &str = "cache/media_attachments/files";

/// Snowflake id of `ms` milliseconds since the epoch (Mastodon's `id = ms << 16 | seq`).
fn snowflake(ms: i64) -> i64 {
    ms << 16
}

/// Inserts remote PNG rows (schema 1, no thumbnail) in one statement: `(id, name,
/// created seconds ago)`.
async fn insert_rows(db: &TestDb, rows: &[(i64, String, f64)]) {
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let names: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    let ages: Vec<f64> = rows.iter().map(|r| r.2).collect();
    sqlx::query(
        "INSERT INTO media_attachments (id, remote_url, file_file_name, file_content_type, \
         file_file_size, file_storage_schema_version, created_at, updated_at, file_updated_at, \
         blurhash, description) \
         SELECT id, 'https://remote.example/media/' || id || '.png', name, 'image/png', 1234, 1, \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => age), \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => age), \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => age), 'LEHV6nWB2yk8', 'd' \
         FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS t(id, name, age)",
    )
    .bind(ids)
    .bind(names)
    .bind(ages)
    .execute(&db.pool)
    .await
    .expect("bulk insert media");
}

/// Puts every `(key, body)` straight into the S3 server's backend (not through the
/// counting proxy): [`TestBucket::put_many`].
fn put_all(bucket: &TestBucket, objects: &[(String, Vec<u8>)]) {
    bucket.put_many(objects);
}

fn keys_of(id: i64, name: &str) -> [String; 2] {
    let p = partition18(id);
    [
        format!("{FILES}/{p}/original/{name}"),
        format!("{FILES}/{p}/small/{name}"),
    ]
}

/// What a seed expects of the prune.
struct Expect {
    deleted: u64,
    already_gone: u64,
    bytes: u64,
    survivors: BTreeSet<String>,
}

impl Expect {
    /// A candidate's object of `len` bytes of `fill`, seeded into `objects`: expected
    /// deleted, or, when `gone`, deleted behind prune's back (listed in `gone_keys`) and
    /// expected already gone.
    fn candidate(
        &mut self,
        objects: &mut Vec<(String, Vec<u8>)>,
        gone_keys: &mut Vec<String>,
        key: String,
        fill: u8,
        len: usize,
        gone: bool,
    ) {
        objects.push((key.clone(), vec![fill; len]));
        if gone {
            self.already_gone += 1;
            gone_keys.push(key);
        } else {
            self.deleted += 1;
            self.bytes += len as u64;
        }
    }
}

/// `n` candidate rows `spacing_ms` apart, the newest 8 days old; originals 100 bytes, smalls 10;
/// every `gone_every`-th row's small is uploaded and then deleted behind prune's back
/// (straight on moto: already gone). `noise` objects
/// that are no candidate's go right after each row's keys: a 17-digit (5-group)
/// neighbour sharing the row's first five groups, and other file names in the row's own
/// folder (a neighbour row's), all inside the listed range.
async fn seed(
    db: &TestDb,
    bucket: &TestBucket,
    n: i64,
    spacing_ms: i64,
    gone_every: i64,
    noise: usize,
) -> Expect {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let start_ms = now_ms - 8 * 86_400_000 - n * spacing_ms;
    let mut rows = Vec::new();
    let mut objects = Vec::new();
    let mut gone = Vec::new();
    let mut e = Expect {
        deleted: 0,
        already_gone: 0,
        bytes: 0,
        survivors: BTreeSet::new(),
    };
    for i in 0..n {
        let ms = start_ms + i * spacing_ms;
        let id = snowflake(ms) + i % 7;
        let name = format!("{:016x}.png", 0xa000_0000_i64 + i);
        rows.push((id, name.clone(), ((now_ms - ms) as f64) / 1000.0));
        let [original, small] = keys_of(id, &name);
        e.candidate(&mut objects, &mut gone, original, b'o', 100, false);
        let small_gone = i % gone_every == gone_every - 1;
        e.candidate(&mut objects, &mut gone, small, b's', 10, small_gone);
        let p = partition18(id);
        for j in 0..noise {
            let k = if j % 2 == 0 {
                // The 17-digit neighbour width: `…/<5 groups>/original/<name>`.
                format!("{FILES}/{}/original/{j:015x}n.png", &p[..19])
            } else {
                format!("{FILES}/{p}/original/{j:015x}o.png")
            };
            objects.push((k.clone(), b"neighbour".to_vec()));
            e.survivors.insert(k);
        }
    }
    // A local upload with an id inside the range: not a candidate, its files stay.
    let local_id = snowflake(start_ms + spacing_ms / 2) + 3;
    let local_name = "0000000000000001.png";
    sqlx::query(
        "INSERT INTO media_attachments (id, remote_url, file_file_name, file_content_type, \
         file_file_size, created_at, updated_at) VALUES ($1, '', $2, 'image/png', 1, \
         (now() AT TIME ZONE 'UTC') - interval '8 days', (now() AT TIME ZONE 'UTC') - interval '8 days')",
    )
    .bind(local_id)
    .bind(local_name)
    .execute(&db.pool)
    .await
    .expect("insert local");
    for k in keys_of(local_id, local_name) {
        let k = k.replacen("cache/", "", 1);
        objects.push((k.clone(), b"local".to_vec()));
        e.survivors.insert(k);
    }
    insert_rows(db, &rows).await;
    put_all(bucket, &objects);
    bucket.delete_behind_the_back(&gone).await;
    e
}

/// Runs the prune, checks exactness, and returns (requests, requests per deleted key).
async fn prune_and_check(db: &TestDb, bucket: &TestBucket, e: &Expect, rows: u64) -> (u64, f64) {
    let env = s3_env_file(db, &bucket.name, &[]);
    bucket.reset_stats();
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--days",
        "7",
        "--json",
    ]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_cleared"], rows, "{media:#}");
    assert_eq!(media["objects_deleted"], e.deleted, "{media:#}");
    assert_eq!(media["objects_already_gone"], e.already_gone, "{media:#}");
    assert_eq!(media["objects_failed"], 0, "{media:#}");
    assert_eq!(media["bytes_freed"], e.bytes, "{media:#}");
    assert_eq!(bucket.keys().await, e.survivors, "only candidate keys went");
    let stats = bucket.stats();
    let sum = |field: &str| -> u64 {
        report[field]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    let (total, attempts) = (sum("requests"), sum("attempts"));
    assert_eq!(
        attempts,
        stats["total"].as_u64().unwrap(),
        "what --json counts is what the server saw: {report:#}\n{stats}"
    );
    let ratio = report["requests_per_deleted_key"].as_f64().unwrap();
    assert!(
        (ratio - total as f64 / e.deleted as f64).abs() < 1e-9,
        "{ratio} {total} {}",
        e.deleted
    );
    // What the provider saw (and bills), retries included.
    let billed = report["attempts_per_deleted_key"].as_f64().unwrap();
    assert!(
        (billed - attempts as f64 / e.deleted as f64).abs() < 1e-9,
        "{billed} {attempts} {}",
        e.deleted
    );
    eprintln!(
        "prune of {rows} rows: {total} requests ({}) for {} deleted keys = {ratio:.5} per key; server: {}",
        report["requests"], e.deleted, stats["ops"]
    );
    (total, ratio)
}

#[tokio::test]
async fn busy_day_prunes_at_about_two_requests_per_thousand_keys() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    // 10,000 rows within one day (~8.6 s apart: at most two rows per coarse folder, so
    // the per-partition way took one listing per row), 200 smalls deleted behind prune's
    // back, a neighbour object of another width or name after every 300th row.
    let n = 10_000;
    let mut e = seed(&db, &bucket, n, 86_400_000 / n, 50, 0).await;
    let extra: Vec<(String, Vec<u8>)> = (0..n)
        .step_by(300)
        .map(|i| {
            let id = snowflake(
                chrono::Utc::now().timestamp_millis() - 8 * 86_400_000 - 86_400_000
                    + i * (86_400_000 / n),
            );
            let p = partition18(id);
            (
                format!("{FILES}/{}/original/n{i:015}.png", &p[..19]),
                b"n".to_vec(),
            )
        })
        .collect();
    for (k, _) in &extra {
        e.survivors.insert(k.clone());
    }
    put_all(&bucket, &extra);
    let (total, ratio) = prune_and_check(&db, &bucket, &e, n as u64).await;
    // Per 1000 keys one listing page and one DeleteObjects, plus the run's few checks:
    // issue 11's target, with nothing added for the checks.
    assert!(
        ratio <= 0.0025,
        "{total} requests for {} keys ({ratio})",
        e.deleted
    );
    db.drop_db().await;
}

#[tokio::test]
async fn sparse_days_list_ranges_not_partitions() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    // 500 rows an hour apart (a quiet instance), four objects that are no candidate's
    // after each row: ranges list six objects per row, still far below a listing per row.
    let e = seed(&db, &bucket, 500, 3_600_000, 25, 4).await;
    let (_, ratio) = prune_and_check(&db, &bucket, &e, 500).await;
    assert!(ratio <= 0.01, "{ratio}");
    db.drop_db().await;
}

#[tokio::test]
async fn filesystem_prune_stats_each_key_and_never_lists_a_folder() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let root = crate::support::temp_dir("ranges-fs");
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut rows = Vec::new();
    for i in 0..4_i64 {
        let id = snowflake(now_ms - 8 * 86_400_000 + i * 3_600_000);
        let name = format!("{:016x}.png", 0xf000 + i);
        for k in keys_of(id, &name) {
            let p = root.join(&k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"12345").unwrap();
        }
        rows.push((id, name, 8.0 * 86_400.0 - (i * 3600) as f64));
    }
    // A big folder next to them that a listing would walk.
    for j in 0..50 {
        let p = root.join(format!("{FILES}/999/original/{j}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
    }
    insert_rows(&db, &rows).await;
    let env = crate::support::fs_env_file(&db, &root);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["passes"][0]["objects_deleted"], 8, "{report:#}");
    assert_eq!(report["passes"][0]["bytes_freed"], 40, "{report:#}");
    assert!(report["requests"].get("readdir").is_none(), "{report:#}");
    assert_eq!(
        report["requests"]["stat"],
        1 + 1 + 8 + 8,
        "the root check, the ownership check's one stat (the newest stored file exists), then a stat to size and one to delete each key: {report:#}"
    );
    assert!(report["requests_per_deleted_key"].as_f64().unwrap() > 0.0);
    db.drop_db().await;
}

/// The Paperclip id partition of any id (`mastodon-storage.md` §3.4), written here
/// independently of the code under test: ids of at most 9 digits zero-padded to 9,
/// longer ones to 12, cut into groups of three from the left, a short last group dropped.
fn partition_of(id: i64) -> String {
    let digits = id.to_string();
    let digits = match digits.len() {
        0..=9 => format!("{id:09}"),
        10..=12 => format!("{id:012}"),
        _ => digits,
    };
    digits
        .as_bytes()
        .chunks_exact(3)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("/")
}

/// Issue 11 item 1, ids of other widths: serial ids (3 groups), 17-digit snowflakes (5
/// groups, up to 100 ids per folder) and modern 18-digit snowflakes (6 groups) in one
/// chunk are each sized by a range of their own, one listing page each, while the
/// per-partition way would take one listing per row. An 18-digit key inside a 17-digit
/// folder and two 17-digit candidates sharing a folder are sized exactly; the neighbour
/// that shares that folder (a local upload) keeps its objects: a neighbour's object in a
/// shared folder is never deleted.
#[tokio::test]
async fn ids_of_every_width_are_each_their_own_range() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let prune = || {
        mastomedia(&[
            "--env-file",
            env.to_str().unwrap(),
            "prune",
            "--days",
            "7",
            "--json",
        ])
    };
    // The listings a run makes besides sizing (checks), from a run with nothing to size.
    bucket.reset_stats();
    let run = prune();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let baseline = run.json()["requests"]["ListObjectsV2"]
        .as_u64()
        .unwrap_or(0);

    let now_ms = chrono::Utc::now().timestamp_millis();
    let day_s = 86_400.0;
    let mut ids: Vec<i64> = Vec::new();
    // Serial ids 1000 apart (each its own coarse folder `000/00N/`).
    ids.extend((0..10).map(|i| 4242 + i * 1000));
    // 17-digit ids 10^9 apart, plus one sharing the first one's folder.
    let base17 = 10_000_000_000_000_000_i64;
    ids.extend((0..10).map(|i| base17 + i * 1_000_000_000));
    ids.push(base17 + 1);
    // An 18-digit id whose folder sits inside the first 17-digit folder
    // (`100/000/000/000/000/123/` below `100/000/000/000/000/`).
    ids.push(100_000_000_000_000_123);
    // Modern snowflakes an hour apart, ten days old.
    ids.extend((0..10).map(|i| snowflake(now_ms - 10 * 86_400_000 + i * 3_600_000)));
    let mut rows = Vec::new();
    let mut objects = Vec::new();
    let mut want_deleted = 0;
    for &id in &ids {
        let name = format!("{id:016x}.png");
        rows.push((id, name.clone(), 10.0 * day_s));
        for style in ["original", "small"] {
            objects.push((
                format!("{FILES}/{}/{style}/{name}", partition_of(id)),
                b"1234567".to_vec(),
            ));
            want_deleted += 1;
        }
    }
    // The shared 17-digit folder's local neighbour: its objects stay.
    let neighbour = base17 + 2;
    let neighbour_name = "cccccccccccccccc.png";
    crate::support::seed::insert_media(
        &db,
        &crate::support::seed::Media::local(neighbour, neighbour_name, 10.0),
    )
    .await;
    let survivors: BTreeSet<String> = ["original", "small"]
        .iter()
        .map(|style| {
            format!(
                "media_attachments/files/{}/{style}/{neighbour_name}",
                partition_of(neighbour)
            )
        })
        .chain(std::iter::once(format!(
            "{FILES}/{}/original/ccccccccccccccc9.png",
            partition_of(base17)
        )))
        .collect();
    assert_eq!(
        partition_of(base17),
        partition_of(neighbour),
        "shared folder"
    );
    for k in &survivors {
        objects.push((k.clone(), b"neighbour".to_vec()));
    }
    insert_rows(&db, &rows).await;
    put_all(&bucket, &objects);
    // One key removed behind prune's back: already gone, not deleted.
    let gone = format!(
        "{FILES}/{}/small/{:016x}.png",
        partition_of(base17 + 1),
        base17 + 1
    );
    bucket
        .delete_behind_the_back(std::slice::from_ref(&gone))
        .await;
    want_deleted -= 1;

    bucket.reset_stats();
    let run = prune();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    let media = &report["passes"][0];
    assert_eq!(media["rows_cleared"], ids.len(), "{media:#}");
    assert_eq!(media["objects_deleted"], want_deleted, "{media:#}");
    assert_eq!(media["objects_already_gone"], 1, "{media:#}");
    assert_eq!(media["bytes_freed"], 7 * want_deleted, "{media:#}");
    assert_eq!(bucket.keys().await, survivors, "only candidate keys went");
    let listings = report["requests"]["ListObjectsV2"].as_u64().unwrap();
    eprintln!(
        "widths: {listings} listings (baseline {baseline}), requests {}",
        report["requests"]
    );
    // The baseline's database named no stored file and had no media row, so its run
    // skipped the ownership checks; this run makes them: one listing of the newest
    // stored file's key, and one page of each media folder after the newest row
    // (`inventory/owners.rs` check_no_newer_media).
    let ownership_check = 1 + 2;
    assert_eq!(
        listings - baseline - ownership_check,
        3,
        "one range listing per width (serial, 17-digit, 18-digit): {report:#}"
    );
    db.drop_db().await;
}

/// A remote PNG row with an optional JPEG thumbnail: `(id, name, created seconds ago,
/// thumbnail name, thumbnail_storage_schema_version)`.
type ThumbRow = (i64, String, f64, Option<String>, Option<i32>);

/// Inserts [`ThumbRow`]s in one statement.
async fn insert_rows_with_thumbnails(db: &TestDb, rows: &[ThumbRow]) {
    sqlx::query(
        "INSERT INTO media_attachments (id, remote_url, file_file_name, file_content_type, \
         file_file_size, file_storage_schema_version, created_at, updated_at, file_updated_at, \
         thumbnail_file_name, thumbnail_content_type, thumbnail_file_size, \
         thumbnail_storage_schema_version, thumbnail_remote_url, blurhash, description) \
         SELECT id, 'https://remote.example/media/' || id || '.png', name, 'image/png', 1234, 1, \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => age), \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => age), \
         (now() AT TIME ZONE 'UTC') - make_interval(secs => age), \
         thumb, CASE WHEN thumb IS NULL THEN NULL ELSE 'image/jpeg' END, \
         CASE WHEN thumb IS NULL THEN NULL ELSE 30 END, tver, \
         CASE WHEN thumb IS NULL THEN NULL ELSE 'https://remote.example/thumbs/' || id || '.jpeg' END, \
         'LEHV6nWB2yk8', 'd' \
         FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[], $5::int[]) \
         AS t(id, name, age, thumb, tver)",
    )
    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
    .execute(&db.pool)
    .await
    .expect("bulk insert media with thumbnails");
}

/// Issue 11's busy-seed target with the mix `scripts/seed.py` makes: 12,000 candidate
/// rows created within one day, every 12th with a thumbnail (every 5th of those a pre-4.6
/// one, `thumbnail_storage_schema_version` NULL, so outside `cache/`), five 17-digit
/// (pre-2018) ids, smalls and thumbnails deleted behind prune's back, and a local upload
/// inside the range. Per chunk of 1000 keys that is 3–4 classes of range (files,
/// `cache/` thumbnails, old thumbnails, 17-digit files), so sizing each chunk on its own
/// took 3–4 listings per chunk (0.0044 requests per key on main's code); the window of
/// chunks (`pool::WINDOW_CHUNKS`) lists each class about once per 1000 objects.
#[tokio::test]
async fn busy_mixed_seed_prunes_at_the_request_floor() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let n = 12_000_i64;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let start_ms = now_ms - 8 * 86_400_000 - 86_400_000;
    let spacing_ms = 86_400_000 / n;
    let mut rows = Vec::new();
    let (mut objects, mut gone) = (Vec::new(), Vec::new());
    let mut e = Expect {
        deleted: 0,
        already_gone: 0,
        bytes: 0,
        survivors: BTreeSet::new(),
    };
    let base17 = 10_000_000_000_000_000_i64;
    for i in 0..n {
        let ms = start_ms + i * spacing_ms;
        // Five 17-digit ids, each in its own folder; the rest modern snowflakes.
        let id = if i < 5 {
            base17 + i * 1_000_000_000
        } else {
            snowflake(ms) + i % 7
        };
        let p = partition_of(id);
        let name = format!("{:016x}.png", 0xb000_0000_i64 + i);
        let thumb = (i % 12 == 11).then(|| format!("{:016x}.jpeg", 0xc000_0000_i64 + i));
        let old_thumb = i % 60 == 59;
        let tver = (thumb.is_some() && !old_thumb).then_some(1);
        rows.push((
            id,
            name.clone(),
            ((now_ms - ms) as f64) / 1000.0,
            thumb.clone(),
            tver,
        ));
        let original = format!("{FILES}/{p}/original/{name}");
        e.candidate(&mut objects, &mut gone, original, b'o', 100, false);
        let small = format!("{FILES}/{p}/small/{name}");
        e.candidate(&mut objects, &mut gone, small, b's', 10, i % 50 == 49);
        if let Some(t) = thumb {
            let folder = if old_thumb {
                "media_attachments/thumbnails"
            } else {
                "cache/media_attachments/thumbnails"
            };
            let key = format!("{folder}/{p}/original/{t}");
            e.candidate(&mut objects, &mut gone, key, b't', 30, i % 84 == 83);
        }
    }
    // A local upload with an id inside the range: not a candidate, its files stay.
    let local_id = snowflake(start_ms + 40 * spacing_ms) + 3;
    let local_name = "0000000000000002.png";
    crate::support::seed::insert_media(
        &db,
        &crate::support::seed::Media::local(local_id, local_name, 9.0),
    )
    .await;
    for style in ["original", "small"] {
        let k = format!(
            "media_attachments/files/{}/{style}/{local_name}",
            partition_of(local_id)
        );
        objects.push((k.clone(), b"local".to_vec()));
        e.survivors.insert(k);
    }
    insert_rows_with_thumbnails(&db, &rows).await;
    put_all(&bucket, &objects);
    bucket.delete_behind_the_back(&gone).await;
    let (total, ratio) = prune_and_check(&db, &bucket, &e, n as u64).await;
    assert!(
        ratio <= 0.0025,
        "{total} requests for {} keys ({ratio})",
        e.deleted
    );
    db.drop_db().await;
}
