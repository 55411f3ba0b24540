//! Issue 9 case 1: Mastodon behind PgBouncer in transaction pooling (`pool_mode =
//! transaction`, `PREPARED_STATEMENTS=false`), the set-up Mastodon's docs recommend. Real
//! PostgreSQL, real Debian PgBouncer started by the harness, real S3 server.

use std::collections::BTreeSet;

use crate::support::seed::{Media, insert_media, media_names};
use crate::support::{Mastodon, Run, TestBucket, TestDb, mastomedia, pgbouncer, s3_env_file};

/// The id partition of the seeded rows, without its last group.
const P15: &str = "109/345/678/901/234";

/// Old remote media rows (pruned) and one local upload (kept), with their objects.
struct World {
    gone: BTreeSet<String>,
    kept: BTreeSet<String>,
    pruned_ids: Vec<i64>,
}

async fn seed(db: &TestDb, bucket: &TestBucket) -> World {
    let mut gone = BTreeSet::new();
    let mut kept = BTreeSet::new();
    let mut pruned_ids = Vec::new();
    for (n, id) in [
        109345678901234567_i64,
        109345678901234568,
        109345678901234569,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("{n:016x}.png");
        insert_media(db, &Media::remote(id, &name, 30.0)).await;
        let part = format!("{P15}/{}", &id.to_string()[15..]);
        for style in ["original", "small"] {
            gone.insert(format!(
                "cache/media_attachments/files/{part}/{style}/{name}"
            ));
        }
        pruned_ids.push(id);
    }
    insert_media(
        db,
        &Media::local(109345678901234570, "aaaaaaaaaaaaaaaa.png", 30.0),
    )
    .await;
    for style in ["original", "small"] {
        kept.insert(format!(
            "media_attachments/files/{P15}/570/{style}/aaaaaaaaaaaaaaaa.png"
        ));
    }
    for k in gone.iter().chain(kept.iter()) {
        bucket.put(k, b"media").await;
    }
    World {
        gone,
        kept,
        pruned_ids,
    }
}

/// An env file whose `DATABASE_URL` reaches `db` through the transaction-mode PgBouncer,
/// with `PREPARED_STATEMENTS=false` (as Mastodon's docs say), plus `extra`.
fn env_through_pgbouncer(db: &TestDb, bucket: &TestBucket, extra: &[(&str, &str)]) -> String {
    let mut vars = vec![("PREPARED_STATEMENTS", "false")];
    vars.extend_from_slice(extra);
    let path = s3_env_file(db, &bucket.name, &vars);
    let text = std::fs::read_to_string(&path).expect("read env file");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("DATABASE_URL=") {
                format!("DATABASE_URL={}\n", pgbouncer().url(db))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(text.contains(&pgbouncer().url(db)), "{text}");
    std::fs::write(&path, text).expect("write env file");
    path.to_str().unwrap().to_owned()
}

fn run(env: &str, args: &[&str]) -> Run {
    let mut all = vec!["--env-file", env];
    all.extend_from_slice(args);
    mastomedia(&all)
}

/// Advisory locks held in `db` by any session with mastomedia's `prune` or `orphans` key,
/// once the backends of finished runs have had up to 10 s to notice their client is gone
/// (a lock left on a pooled server session stays, and would block every later run).
async fn mastomedia_locks_held(db: &TestDb) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = locks_held_now(db).await;
        if n == 0 || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn locks_held_now(db: &TestDb) -> i64 {
    let mut n = 0;
    for job in ["prune", "orphans"] {
        let key = mastomedia::mastodon::advisory_key(job);
        n += sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid = (($1 >> 32) & 4294967295)::oid AND objid = ($1 & 4294967295)::oid \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .expect("read pg_locks");
    }
    n
}

#[tokio::test]
async fn issue9_1_prune_du_orphans_through_transaction_pooling_with_a_direct_lock_url() {
    let db = TestDb::new(Mastodon::V4_6, "Europe/Berlin").await;
    let bucket = TestBucket::new().await;
    let world = seed(&db, &bucket).await;
    let env = env_through_pgbouncer(&db, &bucket, &[("MASTOMEDIA_LOCK_DATABASE_URL", &db.url)]);

    let du = run(&env, &["du", "--json"]);
    assert_eq!(du.code, 0, "du: {}\n{}", du.stderr, pgbouncer().log());
    assert_eq!(du.json()["total"]["objects"], 8, "{}", du.stdout);

    let orphans = run(&env, &["orphans", "--json"]);
    assert_eq!(orphans.code, 0, "orphans: {}", orphans.stderr);

    let prune = run(&env, &["prune", "--json"]);
    assert_eq!(prune.code, 0, "prune: {}", prune.stderr);
    let p = &prune.json()["passes"][0];
    assert_eq!(p["rows_cleared"], 3, "{}", prune.stdout);
    assert_eq!(p["objects_deleted"], 6, "{}", prune.stdout);
    for id in &world.pruned_ids {
        assert_eq!(media_names(&db, *id).await.0, None, "row {id} cleared");
    }
    assert_eq!(
        media_names(&db, 109345678901234570).await.0.as_deref(),
        Some("aaaaaaaaaaaaaaaa.png")
    );
    assert_eq!(bucket.keys().await, world.kept);
    assert!(world.gone.is_disjoint(&bucket.keys().await));

    // A second run finds nothing, and no run left its lock on a pooled session.
    let again = run(&env, &["prune", "--json"]);
    assert_eq!(again.code, 0, "second prune: {}", again.stderr);
    assert_eq!(again.json()["passes"][0]["rows_cleared"], 0);
    assert_eq!(mastomedia_locks_held(&db).await, 0);
    db.drop_db().await;
}

#[tokio::test]
async fn issue9_1_prune_through_transaction_pooling_without_a_lock_url_refuses() {
    let db = TestDb::new(Mastodon::V4_6, "Asia/Kathmandu").await;
    let bucket = TestBucket::new().await;
    let world = seed(&db, &bucket).await;
    let before = db.dump("media_attachments").await;
    let env = env_through_pgbouncer(&db, &bucket, &[]);

    let prune = run(&env, &["prune", "--json"]);
    assert_eq!(prune.code, 3, "prune: {}\n{}", prune.stderr, prune.stdout);
    for needle in ["transaction pooling", "MASTOMEDIA_LOCK_DATABASE_URL"] {
        assert!(prune.stderr.contains(needle), "{needle}: {}", prune.stderr);
    }
    assert_eq!(db.dump("media_attachments").await, before);
    let all: BTreeSet<String> = world.gone.union(&world.kept).cloned().collect();
    assert_eq!(bucket.keys().await, all);

    // Read-only runs go ahead with a warning: nothing to lock.
    let dry = run(&env, &["prune", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "prune --dry-run: {}", dry.stderr);
    assert_eq!(dry.json()["passes"][0]["rows_cleared"], 3, "{}", dry.stdout);
    assert!(
        dry.stderr.contains("MASTOMEDIA_LOCK_DATABASE_URL"),
        "{}",
        dry.stderr
    );
    let du = run(&env, &["du", "--json"]);
    assert_eq!(du.code, 0, "du: {}", du.stderr);
    let orphans = run(&env, &["orphans", "--json"]);
    assert_eq!(orphans.code, 0, "orphans: {}", orphans.stderr);
    let delete = run(&env, &["orphans", "--delete", "--json"]);
    assert_eq!(delete.code, 3, "orphans --delete: {}", delete.stderr);
    assert!(
        delete.stderr.contains("MASTOMEDIA_LOCK_DATABASE_URL"),
        "{}",
        delete.stderr
    );

    assert_eq!(db.dump("media_attachments").await, before);
    assert_eq!(bucket.keys().await, all);
    assert_eq!(mastomedia_locks_held(&db).await, 0);
    db.drop_db().await;
}

#[tokio::test]
async fn issue9_1_doctor_reports_transaction_pooling_and_whether_locking_works() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    let check = |run: &Run, name: &str| -> serde_json::Value {
        run.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check: {}", run.stdout))
    };

    let env = env_through_pgbouncer(&db, &bucket, &[]);
    let doctor = run(&env, &["doctor", "--json"]);
    assert_eq!(doctor.code, 1, "{}\n{}", doctor.stdout, doctor.stderr);
    assert_eq!(
        check(&doctor, "database")["status"],
        "ok",
        "{}",
        doctor.stdout
    );
    let locking = check(&doctor, "locking");
    assert_eq!(locking["status"], "fail", "{locking}");
    assert!(
        locking["detail"]
            .as_str()
            .unwrap()
            .contains("transaction pooling"),
        "{locking}"
    );
    assert!(
        locking["fix"]
            .as_str()
            .unwrap()
            .contains("MASTOMEDIA_LOCK_DATABASE_URL"),
        "{locking}"
    );

    let env = env_through_pgbouncer(&db, &bucket, &[("MASTOMEDIA_LOCK_DATABASE_URL", &db.url)]);
    let doctor = run(&env, &["doctor", "--json"]);
    let locking = check(&doctor, "locking");
    assert_eq!(locking["status"], "ok", "{}", doctor.stdout);
    assert!(
        locking["detail"]
            .as_str()
            .unwrap()
            .contains("MASTOMEDIA_LOCK_DATABASE_URL"),
        "{locking}"
    );

    // Straight to PostgreSQL: session, locking works.
    let direct = s3_env_file(&db, &bucket.name, &[]);
    let doctor = run(direct.to_str().unwrap(), &["doctor", "--json"]);
    assert_eq!(
        check(&doctor, "locking")["status"],
        "ok",
        "{}",
        doctor.stdout
    );
    assert_eq!(mastomedia_locks_held(&db).await, 0);
    db.drop_db().await;
}
