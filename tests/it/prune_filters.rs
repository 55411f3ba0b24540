//! Issue 14, items 2 and 4: `prune --domain` / `--exclude-domain` (media, profiles and cards
//! by the account's domain, subdomains as Mastodon's domain blocks cover them, exclusion
//! beats inclusion) and `--keep-interacted` exactly as Mastodon 4.6's
//! `MediaAttachment.without_local_interaction`, on the 4.6 and 4.2 schemas
//! (`docs/reference/prune-filters.md`). Real PostgreSQL, real S3 server on loopback; each
//! selection is checked by a dry run first, which must select what the real run clears.

use std::collections::BTreeSet;

use crate::support::seed::{Media, insert_account, insert_card, insert_media, media_names};
use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file};

/// Media ids of this module: 30 days old, so any default retention selects them.
const BASE: i64 = 109_345_678_901_230_000;

/// Runs `prune` with `args` (plus `--json`) against `db` and `bucket`; asserts exit 0.
fn prune(db: &TestDb, bucket: &TestBucket, args: &[&str]) -> serde_json::Value {
    let env = s3_env_file(db, &bucket.name, &[]);
    let mut all = vec!["--env-file", env.to_str().unwrap(), "prune", "--json"];
    all.extend_from_slice(args);
    let run = mastomedia(&all);
    assert_eq!(run.code, 0, "{args:?}\n{}\n{}", run.stdout, run.stderr);
    run.json()
}

/// The instance's newest upload: a local image, its row and its object, as every live
/// storage has them. prune refuses a storage that holds none of the database's newest
/// files (the ownership check, `inventory/owners.rs`); local rows are never selected, so
/// this changes no selection.
async fn live_storage(db: &TestDb, bucket: &TestBucket) {
    let id = BASE + 900_000;
    insert_media(db, &Media::local(id, "1234567890abcdef.png", 0.0)).await;
    bucket
        .put(
            "media_attachments/files/109/345/678/902/130/000/original/1234567890abcdef.png",
            b"png",
        )
        .await;
}

/// `passes[i]` of a summary, by pass name.
fn pass<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["passes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pass"] == name)
        .unwrap_or_else(|| panic!("no {name} pass in {summary}"))
}

/// The media ids (offsets from [`BASE`]) whose file is still stored.
async fn media_kept(db: &TestDb, offsets: &[i64]) -> BTreeSet<i64> {
    let mut kept = BTreeSet::new();
    for &o in offsets {
        if media_names(db, BASE + o).await.0.is_some() {
            kept.insert(o);
        }
    }
    kept
}

/// A status row with its links: `reply_to` (`in_reply_to_id`), `reblog_of`, `deleted`
/// (soft-deleted: `deleted_at` set). Local statuses have no `uri`, as Mastodon's do.
async fn status(
    db: &TestDb,
    id: i64,
    account: i64,
    local: bool,
    reply_to: Option<i64>,
    reblog_of: Option<i64>,
    deleted: bool,
) {
    sqlx::query(
        "INSERT INTO statuses (id, account_id, local, uri, in_reply_to_id, reblog_of_id, deleted_at, created_at, updated_at) \
         VALUES ($1, $2, $3, CASE WHEN $3 THEN NULL ELSE 'https://remote.example/s/' || $1::text END, $4, $5, \
         CASE WHEN $6 THEN now() AT TIME ZONE 'UTC' ELSE NULL END, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
    )
    .bind(id)
    .bind(account)
    .bind(local)
    .bind(reply_to)
    .bind(reblog_of)
    .bind(deleted)
    .execute(&db.pool)
    .await
    .expect("insert status");
}

/// A cached remote image of `account` (on `status`, if any), 30 days old.
async fn media(db: &TestDb, offset: i64, account: i64, status: Option<i64>) {
    let mut m = Media::remote(
        BASE + offset,
        &format!("{:016x}.png", 0xd0_0000 + offset),
        30.0,
    );
    m.account_id = Some(account);
    m.status_id = status;
    insert_media(db, &m).await;
}

async fn exec(db: &TestDb, sql: &str) {
    sqlx::query(sql)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Accounts of the domain tests: id → domain (None = local).
const ACCOUNTS: [(i64, Option<&str>); 8] = [
    (1, Some("noisy.example")),
    (2, Some("cdn.noisy.example")),
    (3, Some("badnoisy.example")),
    (4, Some("keep.noisy.example")),
    (5, Some("other.example")),
    // Mastodon stores domains lower case; matching does not depend on it.
    (6, Some("Up.Noisy.Example")),
    (7, None),
    (8, Some("a.keep.noisy.example")),
];

#[tokio::test]
async fn domain_filters_select_media_by_exact_domain_subdomains_and_exclusion() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    let bucket = TestBucket::new().await;
    live_storage(&db, &bucket).await;
    for (id, domain) in ACCOUNTS {
        insert_account(&db, id, domain, None, None, Some(1), 1.0, 1.0).await;
        // One remote media row owned by each account (offset = account id).
        media(&db, id, id, None).await;
    }
    let all: Vec<i64> = ACCOUNTS.iter().map(|a| a.0).collect();
    let before = db.dump("media_attachments").await;
    for (args, want) in [
        // Exact domain, no subdomain of it exists.
        (vec!["--domain", "other.example"], vec![5]),
        // A domain covers its subdomains (any case), never a look-alike (`badnoisy`).
        (vec!["--domain", "noisy.example"], vec![1, 2, 4, 6, 8]),
        // A subdomain covers its own subdomains, not its parent.
        (vec!["--domain", "keep.noisy.example"], vec![4, 8]),
        // Repeatable; the argument is normalised (case, trailing dot).
        (
            vec!["--domain", "OTHER.example.", "--domain", "badnoisy.example"],
            vec![3, 5],
        ),
        // Exclusion beats inclusion, subdomains of the excluded domain included.
        (
            vec![
                "--domain",
                "noisy.example",
                "--exclude-domain",
                "keep.noisy.example",
            ],
            vec![1, 2, 6],
        ),
        (
            vec![
                "--domain",
                "other.example",
                "--exclude-domain",
                "other.example",
            ],
            vec![],
        ),
        // Exclusion alone: everything else, local rows' media included (here: account 7).
        (vec!["--exclude-domain", "noisy.example"], vec![3, 5, 7]),
    ] {
        let mut dry = args.clone();
        dry.push("--dry-run");
        let s = prune(&db, &bucket, &dry);
        assert_eq!(
            pass(&s, "media")["rows_selected"],
            want.len() as u64,
            "{args:?}: {s}"
        );
        assert_eq!(
            db.dump("media_attachments").await,
            before,
            "dry run changed nothing"
        );
    }
    // The human summary says which domains were selected.
    let env = s3_env_file(&db, &bucket.name, &[]);
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--dry-run",
        "--domain",
        "noisy.example",
        "--exclude-domain",
        "keep.noisy.example",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("domains: noisy.example and their subdomains")
            && run
                .stdout
                .contains("excluded domains: keep.noisy.example and their subdomains"),
        "{}",
        run.stdout
    );
    // The real run clears exactly what its dry run selected.
    let args = [
        "--domain",
        "noisy.example",
        "--exclude-domain",
        "keep.noisy.example",
    ];
    let s = prune(&db, &bucket, &args);
    assert_eq!(pass(&s, "media")["rows_cleared"], 3, "{s}");
    assert_eq!(s["domains"], serde_json::json!(["noisy.example"]));
    assert_eq!(
        s["exclude_domains"],
        serde_json::json!(["keep.noisy.example"])
    );
    let kept = media_kept(&db, &all).await;
    assert_eq!(kept, BTreeSet::from([3, 4, 5, 7, 8]));
    // A second run finds nothing more.
    let s = prune(&db, &bucket, &args);
    assert_eq!(pass(&s, "media")["rows_selected"], 0, "{s}");
    db.drop_db().await;
}

#[tokio::test]
async fn domain_filters_select_profiles_and_cards_on_4_2() {
    let db = TestDb::new(Mastodon::V4_2, "UTC").await;
    let bucket = TestBucket::new().await;
    live_storage(&db, &bucket).await;
    for (id, domain) in ACCOUNTS {
        // Stale profiles (40 days): every remote one is a --prune-profiles candidate.
        let avatar = domain.map(|_| ("aaaaaaaaaaaaaaa1.png", "image/png"));
        insert_account(&db, id, domain, avatar, None, Some(1), 40.0, 40.0).await;
    }
    // Cards (200 days old) and the statuses that link them (old ids: no "posted since").
    // card → accounts whose statuses link it.
    let cards: [(i64, &[i64]); 7] = [
        (1, &[1]),    // noisy only
        (2, &[1, 7]), // noisy and a local post
        (3, &[4]),    // keep.noisy only
        (4, &[2, 4]), // cdn.noisy and keep.noisy
        (5, &[]),     // linked by no status
        (6, &[5]),    // other only
        (7, &[1, 2]), // noisy and its subdomain
    ];
    let mut next_status = 900;
    for (card, linkers) in cards {
        insert_card(&db, card, Some(&format!("{card:015x}c.jpeg")), 200.0).await;
        for &account in linkers {
            next_status += 1;
            status(&db, next_status, account, account == 7, None, None, false).await;
            exec(
                &db,
                &format!(
                    "INSERT INTO preview_cards_statuses (preview_card_id, status_id) VALUES ({card}, {next_status})"
                ),
            )
            .await;
        }
    }
    let base = [
        "--no-media",
        "--prune-profiles",
        "--days",
        "7",
        "--preview-cards",
    ];
    let cases: [(&[&str], usize, usize); 4] = [
        // Profiles: 1, 2, 4, 6, 8. Cards whose every linking post is from noisy.example
        // or a subdomain: 1, 3, 4, 7 (2 is also linked by a local post; 5 by none).
        (&["--domain", "noisy.example"], 5, 4),
        // Cards: 1, 7 (4 is also linked from keep.noisy, which is excluded).
        (
            &[
                "--domain",
                "noisy.example",
                "--exclude-domain",
                "keep.noisy.example",
            ],
            3,
            2,
        ),
        // Profiles 3, 5 (7 is local); cards 5, 6 (no linking post from noisy.example or
        // a subdomain).
        (&["--exclude-domain", "noisy.example"], 2, 2),
        (&["--domain", "other.example"], 1, 1),
    ];
    let before = (db.dump("accounts").await, db.dump("preview_cards").await);
    for (extra, profiles, cards) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.push("--dry-run");
        let s = prune(&db, &bucket, &args);
        assert_eq!(
            pass(&s, "profiles")["rows_selected"],
            profiles as u64,
            "{extra:?}: {s}"
        );
        assert_eq!(
            pass(&s, "preview_cards")["rows_selected"],
            cards as u64,
            "{extra:?}: {s}"
        );
    }
    assert_eq!(
        (db.dump("accounts").await, db.dump("preview_cards").await),
        before
    );
    let mut args = base.to_vec();
    args.extend_from_slice(&[
        "--domain",
        "noisy.example",
        "--exclude-domain",
        "keep.noisy.example",
    ]);
    let s = prune(&db, &bucket, &args);
    assert_eq!(pass(&s, "profiles")["rows_cleared"], 3, "{s}");
    assert_eq!(pass(&s, "preview_cards")["rows_cleared"], 2, "{s}");
    let avatars: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM accounts WHERE avatar_file_name IS NOT NULL ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(avatars, vec![(3,), (4,), (5,), (8,)]);
    let images: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM preview_cards WHERE image_file_name IS NOT NULL ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(images, vec![(2,), (3,), (4,), (5,), (6,)]);
    db.drop_db().await;
}

/// The interaction world: every media row (offset) is attached to a remote account's
/// status 600 + offset, and one kind of interaction is seeded per row. Returns the
/// offsets Mastodon 4.6's `--keep-interacted` keeps.
async fn seed_interactions(db: &TestDb, quotes: bool) -> (Vec<i64>, BTreeSet<i64>) {
    insert_account(db, 1, Some("remote.example"), None, None, Some(1), 1.0, 1.0).await;
    insert_account(db, 2, None, None, None, Some(1), 1.0, 1.0).await;
    insert_account(db, 3, Some("third.example"), None, None, Some(1), 1.0, 1.0).await;
    let offsets: Vec<i64> = (1..=13).collect();
    for &o in &offsets {
        if o != 13 {
            status(db, 600 + o, 1, false, None, None, false).await;
            media(db, o, 1, Some(600 + o)).await;
        } else {
            // 13: not attached to any status.
            media(db, o, 1, None).await;
        }
    }
    let mut kept = BTreeSet::new();
    // 1: favourited by a local account → kept.
    exec(db, "INSERT INTO favourites (account_id, status_id, created_at, updated_at) VALUES (2, 601, now(), now())").await;
    kept.insert(1);
    // 2: favourited by a remote account only → pruned.
    exec(db, "INSERT INTO favourites (account_id, status_id, created_at, updated_at) VALUES (3, 602, now(), now())").await;
    // 3: bookmarked (bookmarks are always local) → kept.
    exec(db, "INSERT INTO bookmarks (account_id, status_id, created_at, updated_at) VALUES (2, 603, now(), now())").await;
    kept.insert(3);
    // 4: a local reply → kept.
    status(db, 704, 2, true, Some(604), None, false).await;
    kept.insert(4);
    // 5: a remote reply only → pruned.
    status(db, 705, 3, false, Some(605), None, false).await;
    // 6: a local boost → kept.
    status(db, 706, 2, true, None, Some(606), false).await;
    kept.insert(6);
    // 7: a remote boost only → pruned.
    status(db, 707, 3, false, None, Some(607), false).await;
    // 8: a local reply that was deleted (soft: deleted_at) → pruned, as `Status.local`
    // is under Status's `kept` default scope.
    status(db, 708, 2, true, Some(608), None, true).await;
    // 9, 10, 11: quotes (4.4+).
    if quotes {
        // 9: quoted by a local post → kept.
        status(db, 709, 2, true, None, None, false).await;
        exec(db, "INSERT INTO quotes (account_id, status_id, quoted_status_id, quoted_account_id, state, created_at, updated_at) VALUES (2, 709, 609, 1, 1, now(), now())").await;
        kept.insert(9);
        // 10: quotes a local post → kept.
        status(db, 710, 2, true, None, None, false).await;
        exec(db, "INSERT INTO quotes (account_id, status_id, quoted_status_id, quoted_account_id, state, created_at, updated_at) VALUES (1, 610, 710, 2, 1, now(), now())").await;
        kept.insert(10);
        // 11: quoted by a remote post only → pruned.
        status(db, 711, 3, false, None, None, false).await;
        exec(db, "INSERT INTO quotes (account_id, status_id, quoted_status_id, quoted_account_id, state, created_at, updated_at) VALUES (3, 711, 611, 1, 1, now(), now())").await;
    }
    // 12: no interaction at all; 13: no status → both pruned.
    (offsets, kept)
}

async fn keep_interacted_on(version: Mastodon, quotes: bool) {
    let db = TestDb::new(version, "America/New_York").await;
    let bucket = TestBucket::new().await;
    live_storage(&db, &bucket).await;
    let (offsets, kept) = seed_interactions(&db, quotes).await;
    let before = db.dump("media_attachments").await;
    let s = prune(&db, &bucket, &["--keep-interacted", "--dry-run"]);
    let pruned = (offsets.len() - kept.len()) as u64;
    assert_eq!(pass(&s, "media")["rows_selected"], pruned, "{s}");
    assert_eq!(db.dump("media_attachments").await, before);
    let s = prune(&db, &bucket, &["--keep-interacted"]);
    assert_eq!(pass(&s, "media")["rows_cleared"], pruned, "{s}");
    assert_eq!(media_kept(&db, &offsets).await, kept);
    // Without the flag, the interacted rows go too.
    let s = prune(&db, &bucket, &[]);
    assert_eq!(pass(&s, "media")["rows_cleared"], kept.len() as u64, "{s}");
    assert_eq!(media_kept(&db, &offsets).await, BTreeSet::new());
    db.drop_db().await;
}

#[tokio::test]
async fn keep_interacted_matches_mastodon_4_6_per_kind_of_interaction() {
    keep_interacted_on(Mastodon::V4_6, true).await;
}

#[tokio::test]
async fn keep_interacted_works_on_4_2_without_a_quotes_table() {
    keep_interacted_on(Mastodon::V4_2, false).await;
}

#[tokio::test]
async fn keep_interacted_and_domain_filters_combine() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    live_storage(&db, &bucket).await;
    let (offsets, kept) = seed_interactions(&db, true).await;
    // A second remote domain's uninteracted media (offsets 20, 21).
    insert_account(
        &db,
        9,
        Some("media.partner.example"),
        None,
        None,
        Some(1),
        1.0,
        1.0,
    )
    .await;
    media(&db, 20, 9, None).await;
    media(&db, 21, 9, None).await;
    let s = prune(
        &db,
        &bucket,
        &["--keep-interacted", "--exclude-domain", "partner.example"],
    );
    assert_eq!(
        pass(&s, "media")["rows_cleared"],
        (offsets.len() - kept.len()) as u64,
        "{s}"
    );
    assert_eq!(
        media_kept(&db, &[20, 21]).await,
        BTreeSet::from([20, 21]),
        "the excluded domain's media stayed"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn bad_domain_arguments_are_usage_errors() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let env = s3_env_file(&db, &bucket.name, &[]);
    let before = db.dump("media_attachments").await;
    for (flag, value, says) in [
        ("--domain", "", "empty"),
        ("--domain", "https://noisy.example", "scheme"),
        ("--domain", "noisy.example/users/a", "path"),
        ("--domain", "*.noisy.example", "subdomains"),
        ("--exclude-domain", "*.partner.example", "wildcard"),
        ("--exclude-domain", "alice@partner.example", "account"),
        ("--domain", "bad domain", "not a domain"),
    ] {
        let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", flag, value]);
        assert_eq!(run.code, 2, "{flag} {value:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(flag) && run.stderr.contains(says),
            "{flag} {value:?}: {}",
            run.stderr
        );
    }
    assert_eq!(bucket.stats()["total"], 0, "nothing was sent");
    assert_eq!(db.dump("media_attachments").await, before);
    db.drop_db().await;
}
