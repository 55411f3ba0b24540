//! `--metrics-file PATH` (issue 15.4): the run's numbers in the Prometheus text exposition
//! format, for node_exporter's textfile collector, written atomically (a temporary file
//! in the same folder, then `rename`), so the collector never reads half a file.
//!
//! The samples are the command's own summary (the `--json` object), flattened: every
//! number (and every boolean, as 0/1) becomes `mastomedia_<path>` with the label
//! `command`; an array of objects is labelled by each element's `pass` or `category`
//! field (other arrays, such as failure lists, are left out); the per-operation maps
//! `requests` and `attempts` get the label `operation`. Every file also carries
//! `mastomedia_exit_code`, `mastomedia_run_duration_seconds`,
//! `mastomedia_last_run_timestamp_seconds` and `mastomedia_last_success_timestamp_seconds`
//! (exit 0; carried over from the previous file after a failed run, so an alert on its
//! age works). A run that fails before its summary writes those four alone.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

static SUMMARY: Mutex<Option<Value>> = Mutex::new(None);
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the recording of summaries on (`--metrics-file` was given; `src/main.rs`), so
/// runs without it never build the summary's JSON twice.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Keeps `summary` (a command's `--json` object) for [`write()`]; [`super::Summary::print`]
/// calls it when [`enabled`].
pub fn record(summary: Value) {
    if let Ok(mut s) = SUMMARY.lock() {
        *s = Some(summary);
    }
}

/// One sample: metric name, labels (`command` first), value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `mastomedia_…`, `[a-z0-9_]`.
    pub name: String,
    /// Label pairs, in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

fn metric_name(path: &[String]) -> String {
    let mut name = String::from("mastomedia");
    for p in path {
        name.push('_');
        for c in p.chars() {
            name.push(if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            });
        }
    }
    name
}

fn flatten(v: &Value, path: &mut Vec<String>, labels: &[(String, String)], out: &mut Vec<Sample>) {
    let push = |out: &mut Vec<Sample>, path: &[String], labels: &[(String, String)], value: f64| {
        out.push(Sample {
            name: metric_name(path),
            labels: labels.to_vec(),
            value,
        });
    };
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                push(out, path, labels, x);
            }
        }
        Value::Bool(b) => push(out, path, labels, if *b { 1.0 } else { 0.0 }),
        Value::Object(map) => {
            let per_operation = matches!(
                path.last().map(String::as_str),
                Some("requests" | "attempts")
            ) && map.values().all(Value::is_number);
            for (k, child) in map {
                if per_operation {
                    let mut l = labels.to_vec();
                    l.push(("operation".into(), k.clone()));
                    flatten(child, path, &l, out);
                } else {
                    path.push(k.clone());
                    flatten(child, path, labels, out);
                    path.pop();
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let key = ["pass", "category"]
                    .into_iter()
                    .find_map(|k| item.get(k).and_then(Value::as_str).map(|v| (k, v)));
                if let Some((k, name)) = key {
                    let mut l = labels.to_vec();
                    l.push((k.to_owned(), name.to_owned()));
                    flatten(item, path, &l, out);
                }
            }
        }
        Value::String(_) | Value::Null => {}
    }
}

/// The samples of `summary` for `command` (see the module doc).
pub fn samples(command: &str, summary: &Value) -> Vec<Sample> {
    let mut out = Vec::new();
    flatten(
        summary,
        &mut Vec::new(),
        &[("command".to_owned(), command.to_owned())],
        &mut out,
    );
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text: samples grouped by name, each group with `# HELP` and
/// `# TYPE … gauge` (a run's values are gauges: each file replaces the last).
pub fn render(samples: &[Sample]) -> String {
    let mut names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut text = String::new();
    for name in names {
        let _ = writeln!(text, "# HELP {name} mastomedia run: {}", help(name));
        let _ = writeln!(text, "# TYPE {name} gauge");
        for s in samples.iter().filter(|s| s.name == name) {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(text, "{name}{{{}}} {}", labels.join(","), s.value);
        }
    }
    text
}

fn help(name: &str) -> &'static str {
    match name {
        "mastomedia_exit_code" => {
            "exit code (0 success, 1 some items failed, 2 usage, 3 fatal, 130 interrupted)"
        }
        "mastomedia_run_duration_seconds" => "wall time of the run in seconds",
        "mastomedia_last_run_timestamp_seconds" => "Unix time the run ended",
        "mastomedia_last_success_timestamp_seconds" => "Unix time of the last run that exited 0",
        _ => "a number of the command's --json summary (see the README)",
    }
}

/// The last success recorded for `command` in an existing metrics file.
fn previous_success(text: &str, command: &str) -> Option<f64> {
    let prefix = format!(
        "mastomedia_last_success_timestamp_seconds{{command=\"{}\"}} ",
        escape(command)
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Writes the metrics of the run of `command` that ended with `exit_code` after
/// `duration_seconds`, at Unix time `now`, to `path` atomically. A symlink at `path` is
/// replaced by the file, not followed. Errors: the folder is not writable, or the rename
/// fails (the previous file, if any, is left as it was).
pub fn write(
    path: &Path,
    command: &str,
    exit_code: i32,
    duration_seconds: f64,
    now: f64,
) -> std::io::Result<()> {
    let summary = SUMMARY.lock().ok().and_then(|s| s.clone());
    let mut all = summary.map(|v| samples(command, &v)).unwrap_or_default();
    let label = vec![("command".to_owned(), command.to_owned())];
    let last_success = if exit_code == 0 {
        Some(now)
    } else {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| previous_success(&t, command))
    };
    for (name, value) in [
        ("mastomedia_exit_code", Some(f64::from(exit_code))),
        ("mastomedia_run_duration_seconds", Some(duration_seconds)),
        ("mastomedia_last_run_timestamp_seconds", Some(now)),
        ("mastomedia_last_success_timestamp_seconds", last_success),
    ] {
        if let Some(value) = value {
            all.retain(|s| s.name != name);
            all.push(Sample {
                name: name.to_owned(),
                labels: label.clone(),
                value,
            });
        }
    }
    super::write_atomically(path, &render(&all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_flatten_with_pass_category_and_operation_labels() {
        let v = serde_json::json!({
            "dry_run": false,
            "storage": "s3://b",
            "requests": {"requests": {"DeleteObjects": 2, "ListObjectsV2": 5}, "throttled": 1},
            "passes": [{"pass": "media", "rows_cleared": 7, "failures": [{"id": 1}]}],
            "categories": [{"category": "media_attachments", "objects": 3}],
            "deleted_keys": ["a", "b"],
            "elapsed_seconds": 1.5
        });
        let text = render(&samples("prune", &v));
        for line in [
            "mastomedia_dry_run{command=\"prune\"} 0",
            "mastomedia_requests_requests{command=\"prune\",operation=\"DeleteObjects\"} 2",
            "mastomedia_requests_throttled{command=\"prune\"} 1",
            "mastomedia_passes_rows_cleared{command=\"prune\",pass=\"media\"} 7",
            "mastomedia_categories_objects{command=\"prune\",category=\"media_attachments\"} 3",
            "mastomedia_elapsed_seconds{command=\"prune\"} 1.5",
            "# TYPE mastomedia_dry_run gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("failures") && !text.contains("deleted_keys"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_run_keeps_the_previous_success_time() {
        let dir = std::env::temp_dir().join(format!("mm-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prune.prom");
        write(&path, "prune", 0, 1.0, 1000.0).unwrap();
        write(&path, "prune", 3, 2.0, 2000.0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("mastomedia_last_success_timestamp_seconds{command=\"prune\"} 1000\n"),
            "{text}"
        );
        assert!(
            text.contains("mastomedia_exit_code{command=\"prune\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("mastomedia_last_run_timestamp_seconds{command=\"prune\"} 2000\n"),
            "{text}"
        );
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
