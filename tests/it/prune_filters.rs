//! Issue 14, item 4: `--keep-interacted` exactly as Mastodon 4.6's
//! `MediaAttachment.without_local_interaction`, on the 4.6 and 4.2 schemas
//! (`docs/reference/prune-filters.md`). Real PostgreSQL, real S3 server on loopback; each
//! selection is checked by a dry run first, which must select what the real run clears.

use std::collections::BTreeSet;

use crate::support::seed::{Media, insert_account, insert_media, media_names};
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
