//! The format of everything the tool writes to stderr (issue 15.5): human text (the
//! default), or with `--log-format json` one JSON object per line, for log shippers
//! (journald → Loki, Vector, Fluent Bit). tracing's events get tracing-subscriber's JSON
//! formatter (set up in `src/main.rs`); the lines written outside tracing — the cron
//! status line, the Ctrl-C notice, the final error — go through [`line()`], which writes
//! them in the same shape: `{"timestamp": RFC 3339 UTC, "level": "INFO"|"WARN"|"ERROR",
//! "fields": {"message": …, more fields…}}`, as tracing-subscriber's JSON does.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

static JSON: AtomicBool = AtomicBool::new(false);

/// The stderr format, `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human text (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets the process-wide stderr format; `src/main.rs` calls it once before any output.
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// Whether stderr carries JSON lines.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// One stderr line outside tracing: `message` as is in text mode; in JSON mode an object
/// with `level` (`"INFO"`, `"WARN"`, `"ERROR"`) and `fields` = `message` plus `fields`
/// (numbers for a status line, `exit_code` for the final error).
pub fn line(level: &str, message: &str, fields: Map<String, Value>) {
    eprintln!("{}", render(level, message, fields));
}

/// What [`line()`] writes, without the newline.
pub fn render(level: &str, message: &str, mut fields: Map<String, Value>) -> String {
    if !is_json() {
        return message.to_owned();
    }
    fields.insert("message".into(), Value::String(message.to_owned()));
    serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": level,
        "fields": fields,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_level_message_and_fields() {
        set_format(LogFormat::Json);
        let mut f = Map::new();
        f.insert("rows".into(), 3.into());
        let v: Value = serde_json::from_str(&render("INFO", "prune media: 3 rows", f)).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fields"]["message"], "prune media: 3 rows");
        assert_eq!(v["fields"]["rows"], 3);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        set_format(LogFormat::Text);
        assert_eq!(render("INFO", "plain", Map::new()), "plain");
    }
}
