//! Issue 15.4: `--metrics-file` writes the run's numbers in the Prometheus text format,
//! read back here by the reference parser (`prometheus_client.parser`, PyPI
//! prometheus-client in the test venv that `scripts/services.sh` installs). Real
//! PostgreSQL and S3 server.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::support::seed::{Media, insert_media};
use crate::support::{Mastodon, TestBucket, TestDb, mastomedia, s3_env_file, temp_dir};

/// `name{labels}` → value, as prometheus_client's parser reads the file.
fn parse(path: &Path) -> BTreeMap<String, f64> {
    let python = std::env::var("MASTOMEDIA_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/mastomedia/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    assert family.type == "gauge", family
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{python} (run scripts/services.sh): {e}"));
    assert!(
        out.status.success(),
        "the Prometheus parser refused the file: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn metrics_file_carries_the_runs_numbers_and_parses() {
    let db = TestDb::new(Mastodon::V4_6, "UTC").await;
    let bucket = TestBucket::new().await;
    for i in 0..4_i64 {
        let name = format!("{i:016x}.png");
        insert_media(
            &db,
            &Media::remote(109_345_678_901_234_560 + i, &name, 30.0),
        )
        .await;
        for style in ["original", "small"] {
            bucket
                .put(
                    &format!(
                        "cache/media_attachments/files/109/345/678/901/234/56{i}/{style}/{name}"
                    ),
                    b"0123456789",
                )
                .await;
        }
    }
    let env = s3_env_file(&db, &bucket.name, &[]);
    let env = env.to_str().unwrap();
    let dir = temp_dir("metrics");
    let file = dir.join("mastomedia-prune.prom");
    let file_s = file.to_str().unwrap();

    let run = mastomedia(&[
        "--env-file",
        env,
        "--metrics-file",
        file_s,
        "prune",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    let m = parse(&file);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} in {m:#?}"));
    let media = &report["passes"][0];
    assert_eq!(
        get(r#"mastomedia_passes_rows_cleared{command="prune",pass="media"}"#),
        media["rows_cleared"].as_f64().unwrap()
    );
    assert_eq!(
        get(r#"mastomedia_passes_rows_cleared{command="prune",pass="media"}"#),
        4.0
    );
    assert_eq!(
        get(r#"mastomedia_passes_objects_deleted{command="prune",pass="media"}"#),
        8.0
    );
    assert_eq!(
        get(r#"mastomedia_passes_bytes_freed{command="prune",pass="media"}"#),
        80.0
    );
    assert_eq!(
        get(r#"mastomedia_passes_rows_failed{command="prune",pass="media"}"#),
        0.0
    );
    let deletes = report["requests"]["DeleteObjects"].as_f64().unwrap();
    assert!(deletes >= 1.0);
    assert_eq!(
        get(r#"mastomedia_requests{command="prune",operation="DeleteObjects"}"#),
        deletes
    );
    assert_eq!(get(r#"mastomedia_exit_code{command="prune"}"#), 0.0);
    let success = get(r#"mastomedia_last_success_timestamp_seconds{command="prune"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - success).abs() < 120.0, "{success} vs {now}");
    assert!(get(r#"mastomedia_run_duration_seconds{command="prune"}"#) > 0.0);

    // A failing run (no such bucket) replaces the file: its exit code, no counters, and
    // the previous success time kept for the staleness alert.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let wrong = s3_env_file(&db, "no-such-bucket-here", &[]);
    let run = mastomedia(&[
        "--env-file",
        wrong.to_str().unwrap(),
        "--metrics-file",
        file_s,
        "prune",
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let m = parse(&file);
    assert_eq!(m[r#"mastomedia_exit_code{command="prune"}"#], 3.0);
    assert_eq!(
        m[r#"mastomedia_last_success_timestamp_seconds{command="prune"}"#],
        success
    );
    assert!(m[r#"mastomedia_last_run_timestamp_seconds{command="prune"}"#] > success);
    assert!(!m.keys().any(|k| k.contains("rows_cleared")), "{m:#?}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "no temporary file left: {files:?}");

    // du's categories become labels.
    let du_file = dir.join("mastomedia-du.prom");
    let run = mastomedia(&[
        "--env-file",
        env,
        "--metrics-file",
        du_file.to_str().unwrap(),
        "du",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = parse(&du_file);
    assert!(
        m.keys()
            .any(|k| k.starts_with("mastomedia_total_") && k.contains("command=\"du\"")),
        "{m:#?}"
    );

    // An unwritable place is said on stderr; the run's own exit code stands.
    let run = mastomedia(&[
        "--env-file",
        env,
        "--metrics-file",
        "/nonexistent/dir/x.prom",
        "du",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot write the metrics file /nonexistent/dir/x.prom"),
        "{}",
        run.stderr
    );
    db.drop_db().await;
}
