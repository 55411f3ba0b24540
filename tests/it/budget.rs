//! Issue 14, item 1: `prune --max-cache-size`. A seeded cache of known size (every object's
//! bytes written here, sizes read back by the binary from the storage's own listing or
//! `stat`), on S3 (the real S3 server on loopback) and on the filesystem, with real
//! PostgreSQL: the oldest rows go until the measured cache fits, rows `--keep-interacted`
//! keeps count but stay, a second run changes nothing, a dry run shows the same numbers,
//! `--days` and the budget together take whichever removes more.

use crate::support::backend::Backend;
use crate::support::seed::{Media, insert_account, insert_media, media_names};
use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, partition18, temp_dir};

/// Media ids of this module (2022: below any cutoff's snowflake bound).
const BASE: i64 = 109_345_678_901_230_000;
/// Cached rows, oldest first: row `i` was created `30 − i` days ago.
const ROWS: i64 = 10;
/// Bytes of a row's `original` and `small`.
const ORIGINAL: usize = 1000;
const SMALL: usize = 500;
const ROW_BYTES: u64 = (ORIGINAL + SMALL) as u64;
/// The bookmarked row (offset), older than every other: `--keep-interacted` keeps it.
const KEPT: i64 = 50;

fn name(offset: i64) -> String {
    format!("{:016x}.png", 0xb0_0000 + offset)
}

/// The two keys of a seeded remote row (schema version 1: under `cache/`).
fn keys(offset: i64) -> [String; 2] {
    let part = partition18(BASE + offset);
    let n = name(offset);
    [
        format!("cache/media_attachments/files/{part}/original/{n}"),
        format!("cache/media_attachments/files/{part}/small/{n}"),
    ]
}

/// Seeds the cache: [`ROWS`] remote images of [`ROW_BYTES`] each and the bookmarked one
/// (11 × 1500 = 16,500 bytes), plus the instance's newest local upload (not cache; the
/// ownership check needs a stored file of the database's).
async fn seed(db: &TestDb, store: &Backend) {
    insert_account(db, 1, Some("remote.example"), None, None, Some(1), 1.0, 1.0).await;
    insert_account(db, 2, None, None, None, Some(1), 1.0, 1.0).await;
    for i in (0..ROWS).chain([KEPT]) {
        let days = if i == KEPT { 40.0 } else { 30.0 - i as f64 };
        let mut m = Media::remote(BASE + i, &name(i), days);
        m.account_id = Some(1);
        if i == KEPT {
            m.status_id = Some(700);
        }
        if i == KEPT {
            sqlx::query(
                "INSERT INTO statuses (id, account_id, local, uri, created_at, updated_at) VALUES \
                 (700, 1, FALSE, 'https://remote.example/s/700', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
            )
            .execute(&db.pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO bookmarks (account_id, status_id, created_at, updated_at) VALUES (2, 700, now(), now())",
            )
            .execute(&db.pool)
            .await
            .unwrap();
        }
        insert_media(db, &m).await;
        let [original, small] = keys(i);
        store.put(&original, &vec![b'o'; ORIGINAL]).await;
        store.put(&small, &vec![b's'; SMALL]).await;
    }
    let local = BASE + 900_000;
    insert_media(db, &Media::local(local, "1234567890abcdef.png", 0.0)).await;
    store
        .put(
            &format!(
                "media_attachments/files/{}/original/1234567890abcdef.png",
                partition18(local)
            ),
            b"a local upload",
        )
        .await;
}

fn prune(db: &TestDb, store: &Backend, args: &[&str]) -> serde_json::Value {
    let env = store.env(db);
    let mut all = vec!["--env-file", env.to_str().unwrap(), "prune", "--json"];
    all.extend_from_slice(args);
    let run = mastomedia(&all);
    assert_eq!(run.code, 0, "{args:?}\n{}\n{}", run.stdout, run.stderr);
    run.json()
}

/// Offsets of the seeded rows whose file is still named.
async fn still_cached(db: &TestDb) -> Vec<i64> {
    let mut out = Vec::new();
    for i in (0..ROWS).chain([KEPT]) {
        if media_names(db, BASE + i).await.0.is_some() {
            out.push(i);
        }
    }
    out
}

fn media_rows(s: &serde_json::Value) -> u64 {
    s["passes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pass"] == "media")
        .map(|p| p["rows_cleared"].as_u64().unwrap())
        .sum()
}

async fn oldest_go_until_the_cache_fits(store: Backend) {
    let db = TestDb::new(Mastodon::V4_6, "America/New_York").await;
    seed(&db, &store).await;
    // 16,500 bytes; a budget of 9,100 needs 7,500 gone: the five oldest prunable rows
    // (the bookmarked one is older still, but kept), leaving 9,000.
    let args = ["--max-cache-size", "9100", "--keep-interacted"];
    let before = db.dump("media_attachments").await;
    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let dry = prune(&db, &store, &dry_args);
    let b = &dry["budget"];
    assert_eq!(b["measured_bytes"], 11 * ROW_BYTES, "{dry}");
    assert_eq!(b["measured_objects"], 22, "{dry}");
    assert_eq!(b["measured_rows"], 11, "{dry}");
    assert_eq!(b["kept_bytes"], ROW_BYTES, "{dry}");
    assert_eq!(b["planned_rows"], 5, "{dry}");
    assert_eq!(b["planned_bytes"], 5 * ROW_BYTES, "{dry}");
    assert_eq!(b["left_bytes"], 6 * ROW_BYTES, "{dry}");
    assert_eq!(b["met"], true);
    assert_eq!(b["fits"], false);
    assert!(b["cutoff"].is_string(), "{dry}");
    assert_eq!(dry["passes"][0]["rows_cleared"], 5, "would clear: {dry}");
    assert_eq!(
        db.dump("media_attachments").await,
        before,
        "dry run changed a row"
    );
    for i in 0..ROWS {
        for k in keys(i) {
            assert!(store.exists(&k), "dry run deleted {k}");
        }
    }

    if matches!(store, Backend::Fs(_)) {
        // No second sizing: the delete pass takes the sizing pass's `stat`s. A plain run
        // selecting the same five rows stats their 10 keys; the budget run the 22 keys of
        // the whole cache, and not those 10 again (the ownership checks are the same).
        let plain = prune(
            &db,
            &store,
            &["--days", "26", "--keep-interacted", "--dry-run"],
        );
        assert_eq!(plain["passes"][0]["rows_selected"], 5, "{plain}");
        let stats = |s: &serde_json::Value| s["requests"]["stat"].as_u64().unwrap();
        assert_eq!(stats(&dry) - stats(&plain), 22 - 10, "{dry}\n{plain}");
    }
    let run = prune(&db, &store, &args);
    let rb = &run["budget"];
    for field in [
        "measured_bytes",
        "planned_rows",
        "planned_bytes",
        "left_bytes",
        "cutoff",
    ] {
        assert_eq!(rb[field], b[field], "{field}: dry run and run agree");
    }
    assert_eq!(media_rows(&run), 5);
    assert_eq!(run["passes"][0]["bytes_freed"], 5 * ROW_BYTES);
    // Only the oldest prunable rows went; the bookmarked one stayed.
    assert_eq!(still_cached(&db).await, vec![5, 6, 7, 8, 9, KEPT]);
    for i in (0..ROWS).chain([KEPT]) {
        for k in keys(i) {
            assert_eq!(store.exists(&k), i >= 5, "{k}");
        }
    }
    // The cache now measures at most the budget, and by less than one row below it.
    let again = prune(&db, &store, &args);
    let ab = &again["budget"];
    let left = ab["measured_bytes"].as_u64().unwrap();
    assert!(left <= 9100 && 9100 - left < ROW_BYTES, "{again}");
    assert_eq!(ab["fits"], true, "{again}");
    assert_eq!(
        media_rows(&again),
        0,
        "a second run changes nothing: {again}"
    );
    assert_eq!(still_cached(&db).await, vec![5, 6, 7, 8, 9, KEPT]);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_oldest_go_until_the_cache_fits() {
    oldest_go_until_the_cache_fits(Backend::S3(TestBucket::new().await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_oldest_go_until_the_cache_fits() {
    oldest_go_until_the_cache_fits(Backend::Fs(temp_dir("system"))).await;
}

async fn a_budget_above_the_cache_prunes_nothing_and_says_so(store: Backend) {
    let db = TestDb::new(Mastodon::V4_2, "Asia/Tokyo").await;
    seed(&db, &store).await;
    let before = db.dump("media_attachments").await;
    let env = store.env(&db);
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--max-cache-size",
        "1GiB",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("the cache fits the budget: nothing to prune"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("measured 16.11 KiB in 22 objects of 11 rows"),
        "{}",
        run.stdout
    );
    assert_eq!(db.dump("media_attachments").await, before);
    // The kept rows alone above the budget: every prunable row would go, and it says the
    // budget cannot be met.
    let s = prune(
        &db,
        &store,
        &["--max-cache-size", "1000", "--keep-interacted", "--dry-run"],
    );
    assert_eq!(s["budget"]["met"], false, "{s}");
    assert_eq!(s["budget"]["planned_rows"], ROWS, "{s}");
    assert_eq!(s["budget"]["left_bytes"], ROW_BYTES, "{s}");
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--max-cache-size",
        "1000",
        "--keep-interacted",
        "--dry-run",
    ]);
    assert!(
        run.stdout
            .contains("the budget cannot be met: rows the filters keep hold"),
        "{}",
        run.stdout
    );
    assert_eq!(db.dump("media_attachments").await, before);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_a_budget_above_the_cache_prunes_nothing_and_says_so() {
    a_budget_above_the_cache_prunes_nothing_and_says_so(Backend::S3(TestBucket::new().await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_a_budget_above_the_cache_prunes_nothing_and_says_so() {
    a_budget_above_the_cache_prunes_nothing_and_says_so(Backend::Fs(temp_dir("system"))).await;
}

async fn days_and_budget_the_one_that_removes_more_wins(store: Backend) {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    seed(&db, &store).await;
    let selected = |s: &serde_json::Value| s["passes"][0]["rows_selected"].as_u64().unwrap();
    // The budget needs five rows, --days 27 would take four (30 … 27 days old, the cutoff
    // inclusive): the budget wins.
    let s = prune(
        &db,
        &store,
        &[
            "--max-cache-size",
            "9100",
            "--keep-interacted",
            "--days",
            "27",
            "--dry-run",
        ],
    );
    assert_eq!(selected(&s), 5, "{s}");
    assert_eq!(s["days"], 27);
    // --days 23 takes eight (30 … 23 days old): more than the budget's five.
    let s = prune(
        &db,
        &store,
        &[
            "--max-cache-size",
            "9100",
            "--keep-interacted",
            "--days",
            "23",
            "--dry-run",
        ],
    );
    assert_eq!(selected(&s), 8, "{s}");
    assert_eq!(s["budget"]["planned_rows"], 8, "{s}");
    assert_eq!(s["budget"]["cutoff"], serde_json::Value::Null, "{s}");
    // And the real run does what the dry run said.
    let s = prune(
        &db,
        &store,
        &[
            "--max-cache-size",
            "9100",
            "--keep-interacted",
            "--days",
            "23",
        ],
    );
    assert_eq!(media_rows(&s), 8, "{s}");
    assert_eq!(still_cached(&db).await, vec![8, 9, KEPT]);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_days_and_budget_the_one_that_removes_more_wins() {
    days_and_budget_the_one_that_removes_more_wins(Backend::S3(TestBucket::new().await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_days_and_budget_the_one_that_removes_more_wins() {
    days_and_budget_the_one_that_removes_more_wins(Backend::Fs(temp_dir("system"))).await;
}

/// `0`, a negative size and a word are usage errors (exit 2) that say what is accepted;
/// nothing is read or changed (the env file does not even exist).
#[test]
fn bad_sizes_are_usage_errors() {
    for bad in ["0", "-5GB", "lots", "5 GBs"] {
        let run = mastomedia(&[
            "--env-file",
            "/nonexistent/.env.production",
            "prune",
            "--max-cache-size",
            bad,
        ]);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(
            run.stderr.contains("150GiB, 200GB, 500MB"),
            "{bad}: {}",
            run.stderr
        );
    }
}

/// Oldest first across kinds: media by `created_at`, profiles by the latest of
/// webfinger, update and newest post, cards by `updated_at`. Every row holds 1000 bytes.
async fn the_order_runs_across_kinds(store: Backend) {
    use crate::support::seed::insert_card;
    let db = TestDb::new(Mastodon::V4_6, "Europe/Lisbon").await;
    let bytes = |n: usize| vec![b'x'; n];
    // The newest upload for the ownership check (local, not cache).
    let local = BASE + 900_000;
    insert_media(&db, &Media::local(local, "1234567890abcdef.png", 0.0)).await;
    store
        .put(
            &format!(
                "media_attachments/files/{}/original/1234567890abcdef.png",
                partition18(local)
            ),
            b"local",
        )
        .await;
    for (o, days) in [(1, 30.0), (2, 20.0), (3, 10.0)] {
        insert_media(&db, &Media::remote(BASE + o, &name(o), days)).await;
        for k in keys(o) {
            store.put(&k, &bytes(500)).await;
        }
    }
    // Account 11: webfingered and updated 25 days ago. Account 12: 15 days ago, but it
    // posted 5 days ago, so its profile is 5 days "old" for the profile rule.
    for (id, days) in [(11, 25.0), (12, 15.0)] {
        let avatar = format!("{:016x}.png", 0xa0_0000 + id);
        insert_account(
            &db,
            id,
            Some("remote.example"),
            Some((&avatar, "image/png")),
            None,
            Some(1),
            days,
            days,
        )
        .await;
        store
            .put(
                &format!("cache/accounts/avatars/000/000/0{id}/original/{avatar}"),
                &bytes(1000),
            )
            .await;
    }
    let post = (chrono::Utc::now() - chrono::Duration::days(5)).timestamp_millis() << 16;
    sqlx::query(
        "INSERT INTO statuses (id, account_id, local, uri, created_at, updated_at) VALUES \
         ($1, 12, FALSE, 'https://remote.example/s/1', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
    )
    .bind(post)
    .execute(&db.pool)
    .await
    .unwrap();
    insert_card(&db, 21, Some("cccccccccccccccc.jpeg"), 22.0).await;
    store
        .put(
            "cache/preview_cards/images/000/000/021/original/cccccccccccccccc.jpeg",
            &bytes(1000),
        )
        .await;
    // 6000 bytes; 2500 allowed: media 30 d, profile 25 d, card 22 d, media 20 d go.
    let args = [
        "--max-cache-size",
        "2500",
        "--prune-profiles",
        "--preview-cards",
    ];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let d = prune(&db, &store, &dry);
    assert_eq!(d["budget"]["measured_bytes"], 6000, "{d}");
    assert_eq!(d["budget"]["planned_rows"], 4, "{d}");
    assert_eq!(d["budget"]["left_bytes"], 2000, "{d}");
    let s = prune(&db, &store, &args);
    let cleared = |pass: &str| {
        s["passes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pass"] == pass)
            .map_or(0, |p| p["rows_cleared"].as_u64().unwrap())
    };
    assert_eq!(
        (
            cleared("media"),
            cleared("profiles"),
            cleared("preview_cards")
        ),
        (2, 1, 1),
        "{s}"
    );
    assert_eq!(media_names(&db, BASE + 1).await.0, None);
    assert_eq!(media_names(&db, BASE + 2).await.0, None);
    assert!(
        media_names(&db, BASE + 3).await.0.is_some(),
        "the newest media stays"
    );
    let avatar = |id: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT avatar_file_name FROM accounts WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(avatar(11).await, None);
    assert!(
        avatar(12).await.is_some(),
        "a profile that posted 5 days ago is newer than the cutoff"
    );
    let card: Option<String> =
        sqlx::query_scalar("SELECT image_file_name FROM preview_cards WHERE id = 21")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(card, None);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_the_order_runs_across_kinds() {
    the_order_runs_across_kinds(Backend::S3(TestBucket::new().await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_the_order_runs_across_kinds() {
    the_order_runs_across_kinds(Backend::Fs(temp_dir("system"))).await;
}

/// The budget never takes a card image younger than two weeks without `--force`, as
/// `--preview-cards-days` below 14 needs `--force` (Mastodon re-fetches a card's image only
/// when its link is shared again after two weeks: `docs/reference/prune-filters.md#cards`).
/// The seeded media (16,500 bytes, every row older than the card) all goes, the card stays
/// and counts as kept; with `--force` it goes too.
async fn young_cards_need_force(store: Backend) {
    use crate::support::seed::insert_card;
    let db = TestDb::new(Mastodon::V4_6, "America/New_York").await;
    seed(&db, &store).await;
    insert_card(&db, 31, Some("dddddddddddddddd.jpeg"), 3.0).await;
    store
        .put(
            "cache/preview_cards/images/000/000/031/original/dddddddddddddddd.jpeg",
            &vec![b'c'; 1000],
        )
        .await;
    let card = || {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT image_file_name FROM preview_cards WHERE id = 31",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let args = ["--max-cache-size", "100", "--preview-cards"];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let d = prune(&db, &store, &dry);
    assert_eq!(d["budget"]["measured_bytes"], 17_500, "{d}");
    assert_eq!(d["budget"]["met"], false, "{d}");
    let s = prune(&db, &store, &args);
    assert_eq!(s["budget"], d["budget"], "dry run and run: same budget");
    assert_eq!(media_rows(&s), ROWS as u64 + 1, "{s}");
    assert!(card().await.is_some(), "a 3-day-old card image went: {s}");
    assert!(store.exists("cache/preview_cards/images/000/000/031/original/dddddddddddddddd.jpeg"));
    let forced = prune(
        &db,
        &store,
        &["--max-cache-size", "100", "--preview-cards", "--force"],
    );
    assert_eq!(card().await, None, "{forced}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_young_cards_need_force() {
    young_cards_need_force(Backend::S3(TestBucket::new().await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_young_cards_need_force() {
    young_cards_need_force(Backend::Fs(temp_dir("system"))).await;
}

/// Media fetched less than a day ago stay whatever the budget: a small budget must not
/// delete what timelines show right now (Mastodon would fetch it again at once). They
/// count toward the size, so the summary says the budget cannot be met.
async fn media_younger_than_a_day_stay(store: Backend) {
    let db = TestDb::new(Mastodon::V4_6, "America/New_York").await;
    seed(&db, &store).await;
    let young = 20;
    insert_media(&db, &Media::remote(BASE + young, &name(young), 0.1)).await;
    for k in keys(young) {
        store.put(&k, &vec![b'y'; 500]).await;
    }
    let s = prune(&db, &store, &["--max-cache-size", "100"]);
    assert_eq!(s["budget"]["met"], false, "{s}");
    assert_eq!(
        media_rows(&s),
        ROWS as u64 + 1,
        "the settled rows went: {s}"
    );
    for k in keys(young) {
        assert!(
            store.exists(&k),
            "{k} of a row fetched 2 hours ago went: {s}"
        );
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_media_younger_than_a_day_stay() {
    media_younger_than_a_day_stay(Backend::S3(TestBucket::new().await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_media_younger_than_a_day_stay() {
    media_younger_than_a_day_stay(Backend::Fs(temp_dir("system"))).await;
}
