//! `doctor`'s report on stdout: one line per [`Check`] (`ok  `, `warn`, `FAIL`, the check
//! name padded to 12, the detail, `→ fix`) and a count line, or with `--json`
//! `{"ok": bool, "checks": [...]}`. Exit 1 when a check failed, else 0.
//!
//! Must not: run checks (the modules that own them do).

use std::fmt::Write as _;

use super::ExitCode;
use crate::model::check::{Check, Status};

/// The human report: a line per check and `<n> checks: <f> failed, <w> warnings`.
pub fn human(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        let _ = match &c.fix {
            Some(f) => writeln!(s, "{status}  {:<12} {} → {f}", c.check, c.detail),
            None => writeln!(s, "{status}  {:<12} {}", c.check, c.detail),
        };
    }
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    let _ = writeln!(
        s,
        "{} checks: {} failed, {} warnings",
        checks.len(),
        count(Status::Fail),
        count(Status::Warn)
    );
    s
}

/// The `--json` report (pretty-printed).
pub fn json(checks: &[Check]) -> String {
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let v = serde_json::json!({ "ok": !failed, "checks": checks });
    serde_json::to_string_pretty(&v).expect("checks serialise")
}

/// Prints the report on stdout and returns the exit code: 1 when a check failed.
pub fn print(checks: &[Check], as_json: bool) -> ExitCode {
    if as_json {
        crate::outln!("{}", json(checks));
    } else {
        crate::out!("{}", human(checks));
    }
    if checks.iter().any(|c| c.status == Status::Fail) {
        ExitCode::ItemsFailed
    } else {
        ExitCode::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_check_and_a_count() {
        let checks = [
            Check::ok("env", "parses"),
            Check::warn("retention", "none set", "set it"),
            Check::fail("bucket", "no such bucket", "create it"),
            Check::skip("acl", "the bucket is not reachable"),
        ];
        assert_eq!(
            human(&checks),
            "ok    env          parses\n\
             warn  retention    none set → set it\n\
             FAIL  bucket       no such bucket → create it\n\
             warn  acl          not checked: the bucket is not reachable\n\
             4 checks: 1 failed, 2 warnings\n"
        );
        let v: serde_json::Value = serde_json::from_str(&json(&checks)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][2]["status"], "fail");
        assert_eq!(v["checks"][3]["fix"], serde_json::Value::Null);
        let fine = [Check::ok("env", "parses")];
        let v: serde_json::Value = serde_json::from_str(&json(&fine)).unwrap();
        assert_eq!(v["ok"], true);
    }
}
