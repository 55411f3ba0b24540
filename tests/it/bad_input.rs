//! Bad input and broken surroundings: every case fails with a message on stderr that names
//! what to fix, the documented exit code (2 usage/configuration, 3 fatal), never prints a
//! secret, and leaves the bucket and the database exactly as they were.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::support::seed::{Media, insert_media};
use crate::support::{
    Mastodon, Run, SECRET_KEY, TestBucket, TestDb, http, mastomedia, s3, s3_env_file, unique,
};

/// The database password written into every env file (the test cluster trusts loopback,
/// so it is accepted whatever it is). Must never be printed.
const DB_PASSWORD: &str = "db-pass-3e1f9a7c5d";

/// A small instance with prunable media: two remote rows 30 days old, four objects.
struct Instance {
    db: TestDb,
    bucket: TestBucket,
    keys: BTreeSet<String>,
    rows: Vec<String>,
}

impl Instance {
    async fn new() -> Self {
        let db = TestDb::new(Mastodon::V4_6, "Pacific/Kiritimati").await;
        let bucket = TestBucket::new().await;
        let mut keys = BTreeSet::new();
        for (id, name) in [
            (109345678901234567_i64, "8f3a2b1c4d5e6f70.png"),
            (109345678901234568, "8f3a2b1c4d5e6f71.png"),
        ] {
            insert_media(&db, &Media::remote(id, name, 30.0)).await;
            let p = crate::support::partition18(id);
            for style in ["original", "small"] {
                let k = format!("cache/media_attachments/files/{p}/{style}/{name}");
                bucket.put(&k, b"bytes").await;
                keys.insert(k);
            }
        }
        let rows = db.dump("media_attachments").await;
        bucket.reset_stats();
        Self {
            db,
            bucket,
            keys,
            rows,
        }
    }

    /// `db.url` with the user (and [`DB_PASSWORD`]) and database swapped as asked.
    fn url(&self, user: Option<&str>, database: Option<&str>) -> String {
        let (scheme, rest) = self.db.url.split_once("://").expect("url scheme");
        let (userinfo, host) = rest.split_once('@').expect("url user");
        let user = user.unwrap_or_else(|| userinfo.split(':').next().unwrap());
        let mut url = format!("{scheme}://{user}:{DB_PASSWORD}@{host}");
        if let Some(d) = database {
            url = url.replace(&format!("/{}", self.db.name), &format!("/{d}"));
            assert!(url.contains(&format!("/{d}")), "database swapped in {url}");
        }
        url
    }

    /// An env file for this instance (DATABASE_URL with a password), with overrides.
    fn env(&self, extra: &[(&str, &str)]) -> PathBuf {
        let url = self.url(None, None);
        let mut all = vec![("DATABASE_URL", url.as_str())];
        all.extend_from_slice(extra);
        s3_env_file(&self.db, &self.bucket.name, &all)
    }

    /// Nothing deleted, nothing changed, no mutating request sent.
    async fn assert_untouched(&self, run: &Run) {
        let stats = self.bucket.stats();
        assert_eq!(
            stats["mutating"], 0,
            "no mutating request: {stats}\n{run:?}"
        );
        assert_eq!(
            self.bucket.keys().await,
            self.keys,
            "nothing deleted\n{run:?}"
        );
        assert_eq!(
            self.db.dump("media_attachments").await,
            self.rows,
            "nothing changed\n{run:?}"
        );
    }
}

/// Exit code as stated, every `mentions` on stderr, and none of `secrets` anywhere.
fn assert_fails(run: &Run, code: i32, mentions: &[&str], secrets: &[&str]) {
    assert_eq!(
        run.code, code,
        "exit code\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for m in mentions {
        assert!(
            run.stderr.contains(m),
            "stderr names {m:?}:\n{}",
            run.stderr
        );
    }
    for s in [SECRET_KEY, DB_PASSWORD].iter().chain(secrets) {
        assert!(
            !run.stderr.contains(s) && !run.stdout.contains(s),
            "secret {s:?} printed:\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
    }
}

#[tokio::test]
async fn missing_env_file_exits_2() {
    let inst = Instance::new().await;
    let missing = std::env::temp_dir()
        .join(unique("no-such-dir"))
        .join(".env.production");
    let run = mastomedia(&["--env-file", missing.to_str().unwrap(), "prune"]);
    assert_fails(
        &run,
        2,
        &[
            missing.to_str().unwrap(),
            "--env-file",
            "cannot read env file",
        ],
        &[],
    );
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn malformed_env_file_exits_2_naming_the_file() {
    let inst = Instance::new().await;
    let env = inst.env(&[]);
    let mut text = std::fs::read_to_string(&env).unwrap();
    text.push_str("THIS IS NOT VALID\n");
    std::fs::write(&env, &text).unwrap();
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(&run, 2, &[env.to_str().unwrap(), "Fix that line"], &[]);
    inst.assert_untouched(&run).await;

    // A broken line that holds a secret: named by position, its value never echoed.
    let secret = "unterminated-secret-9b2d";
    let mut text = std::fs::read_to_string(&env).unwrap();
    text = text.replace("THIS IS NOT VALID\n", "");
    text.push_str(&format!("SMTP_PASSWORD='{secret}\n"));
    std::fs::write(&env, &text).unwrap();
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(
        &run,
        2,
        &[env.to_str().unwrap(), "Fix that line"],
        &[secret],
    );
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn unknown_option_exits_2() {
    let inst = Instance::new().await;
    let env = inst.env(&[]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--frobnicate"]);
    assert_fails(&run, 2, &["--frobnicate"], &[]);
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn invalid_batch_delete_limit_exits_2_naming_the_variable() {
    let inst = Instance::new().await;
    let env = inst.env(&[("S3_BATCH_DELETE_LIMIT", "5000")]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(&run, 2, &["S3_BATCH_DELETE_LIMIT", "5000", "1000"], &[]);
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn preview_card_days_below_14_without_force_exits_2() {
    let inst = Instance::new().await;
    let env = inst.env(&[]);
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--preview-cards",
        "--preview-cards-days",
        "7",
    ]);
    assert_fails(&run, 2, &["--preview-cards-days 7", "--force"], &[]);
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn include_follows_without_prune_profiles_exits_2() {
    let inst = Instance::new().await;
    let env = inst.env(&[]);
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--include-follows",
    ]);
    assert_fails(&run, 2, &["--include-follows", "--prune-profiles"], &[]);
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn unreachable_database_exits_3() {
    let inst = Instance::new().await;
    let url = format!("postgres://mastodon:{DB_PASSWORD}@127.0.0.1:1/mastodon_production");
    let env = inst.env(&[("DATABASE_URL", &url)]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(
        &run,
        3,
        &[
            "cannot connect to Mastodon's database",
            "postgres://mastodon@127.0.0.1:1/mastodon_production",
            "DATABASE_URL",
        ],
        &[],
    );
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn database_that_is_not_mastodon_exits_3() {
    let inst = Instance::new().await;
    let empty = unique("mmempty").replace('-', "_");
    sqlx::query(&format!("CREATE DATABASE {empty}"))
        .execute(&inst.db.pool)
        .await
        .expect("create empty database");
    let url = inst.url(None, Some(&empty));
    let env = inst.env(&[("DATABASE_URL", &url)]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(
        &run,
        3,
        &["not a supported Mastodon database", "media_attachments"],
        &[],
    );
    inst.assert_untouched(&run).await;
    sqlx::query(&format!("DROP DATABASE {empty} WITH (FORCE)"))
        .execute(&inst.db.pool)
        .await
        .expect("drop empty database");
    inst.db.drop_db().await;
}

#[tokio::test]
async fn wrong_secret_key_exits_3_naming_the_variable() {
    let inst = Instance::new().await;
    let wrong = "wrong-secret-4c8e2f";
    let env = inst.env(&[("AWS_SECRET_ACCESS_KEY", wrong)]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(
        &run,
        3,
        &["SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"],
        &[wrong],
    );
    assert!(
        inst.bucket.stats()["auth_failures"].as_u64().unwrap() >= 1,
        "the proxy refused the signature"
    );
    inst.assert_untouched(&run).await;

    // With --json, scripts still get one JSON object on stdout, with the reason.
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune", "--json"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["exit_code"], 3);
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(!run.stdout.contains(wrong), "no secret in the JSON");
    inst.db.drop_db().await;
}

#[tokio::test]
async fn unknown_access_key_exits_3_naming_the_variable() {
    let inst = Instance::new().await;
    let env = inst.env(&[("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(&run, 3, &["InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"], &[]);
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn missing_bucket_exits_3_naming_the_variable() {
    let inst = Instance::new().await;
    let missing = "does-not-exist-xyz";
    let env = inst.env(&[("S3_BUCKET", missing)]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(&run, 3, &[missing, "S3_BUCKET"], &[]);
    let (status, body) = http(&s3().proxy, "GET", &format!("/__stats/{missing}"), None);
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        stats["mutating"], 0,
        "nothing sent that changes anything: {stats}"
    );
    inst.assert_untouched(&run).await;
    inst.db.drop_db().await;
}

#[tokio::test]
async fn read_only_database_user_exits_3_before_any_delete() {
    let inst = Instance::new().await;
    let role = unique("mmreader").replace('-', "_");
    for sql in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{DB_PASSWORD}'"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&sql)
            .execute(&inst.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let url = inst.url(Some(&role), None);
    let env = inst.env(&[("DATABASE_URL", &url)]);
    let run = mastomedia(&["--env-file", env.to_str().unwrap(), "prune"]);
    assert_fails(
        &run,
        3,
        &[
            &format!("database user {role} may not update media_attachments("),
            "nothing was deleted",
            &format!("GRANT UPDATE ON media_attachments TO {role}"),
        ],
        &[],
    );
    assert_eq!(
        inst.bucket.stats()["total"],
        0,
        "the storage was not even contacted"
    );
    inst.assert_untouched(&run).await;
    // Issue 9.7: a dry run changes nothing, so the same read-only user may audit: it warns
    // and goes on (it used to stop with the same error).
    let run = mastomedia(&[
        "--env-file",
        env.to_str().unwrap(),
        "prune",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("may not update") && run.stderr.contains("this dry run goes on"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.json()["passes"][0]["rows_cleared"],
        2,
        "would clear both rows"
    );
    assert_eq!(inst.bucket.stats()["mutating"], 0);
    inst.assert_untouched(&run).await;
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(&sql)
            .execute(&inst.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    inst.db.drop_db().await;
}
