//! Issue 15.5: `--log-format json` makes every stderr line one JSON object (tracing's
//! events, the cron status lines, the final error), for log shippers; text stays the
//! default. Real PostgreSQL and S3 server.

use crate::support::seed::{Media, insert_media};
use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, mastomedia_env, s3_env_file};

/// Every non-empty stderr line, parsed; panics on a line that is not a JSON object with
/// `timestamp`, `level` and `fields.message`.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["timestamp"].is_string(), "{l}");
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap()),
                "{l}"
            );
            assert!(v["fields"]["message"].is_string(), "{l}");
            v
        })
        .collect()
}

#[tokio::test]
async fn log_format_json_gives_one_object_per_stderr_line() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    for i in 0..3_i64 {
        let id = 109_345_678_901_234_560 + i;
        let name = format!("{i:016x}.png");
        insert_media(&db, &Media::remote(id, &name, 30.0)).await;
        let p = "109/345/678/901/234/56";
        for style in ["original", "small"] {
            bucket
                .put(
                    &format!("cache/media_attachments/files/{p}{i}/{style}/{name}"),
                    b"png",
                )
                .await;
        }
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();

    // -v: tracing's info events, plus the status line every second and at the end.
    let run = mastomedia_env(
        &["--env-file", env, "--log-format", "json", "-v", "prune"],
        &[("MASTOMEDIA_STATUS_INTERVAL", "1")],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let lines = json_lines(&run.stderr);
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "prune starting" && v["fields"]["dry_run"] == false),
        "tracing's events with their fields: {}",
        run.stderr
    );
    let status = lines
        .iter()
        .find(|v| {
            v["fields"]["pass"]
                .as_str()
                .is_some_and(|p| p.contains("media"))
        })
        .unwrap_or_else(|| panic!("a status line: {}", run.stderr));
    assert_eq!(status["fields"]["done"], 3, "{status}");
    assert_eq!(status["fields"]["failed"], 0, "{status}");
    assert_eq!(status["fields"]["bytes"], 18, "{status}");
    // The summary on stdout is the human report, unchanged.
    assert!(!run.stdout.trim_start().starts_with('{'), "{}", run.stdout);

    // The final error is JSON too, with the exit code.
    let wrong = s3_env_file(&db, "no-such-bucket-here", &[]);
    let run = mastomedia(&[
        "--env-file",
        wrong.to_str().unwrap(),
        "--log-format",
        "json",
        "prune",
        "--dry-run",
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let lines = json_lines(&run.stderr);
    let last = lines.last().expect("an error line");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["fields"]["exit_code"], 3, "{last}");

    // Text stays the default.
    let run = mastomedia(&["--env-file", env, "prune", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.lines().all(|l| !l.starts_with('{')),
        "{}",
        run.stderr
    );
    let bad = mastomedia(&["--env-file", env, "--log-format", "xml", "prune"]);
    assert_eq!(bad.code, 2);
    // A usage error of a run asked for JSON logs is one JSON line as well.
    for args in [
        vec![
            "--env-file",
            env,
            "--log-format",
            "json",
            "prune",
            "--days",
            "0",
        ],
        vec!["--env-file", env, "--log-format=json", "--bogus", "prune"],
        vec![
            "--env-file",
            env,
            "--log-format",
            "json",
            "du",
            "--by",
            "year",
        ],
    ] {
        let run = mastomedia(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let lines = json_lines(&run.stderr);
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(lines[0]["fields"]["exit_code"], 2);
    }
    db.drop_db().await;
}
