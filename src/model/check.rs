//! One finding of `doctor`: a named check with its outcome, what was found and the fix.
//! Produced by the modules that own each check (`mastodon::diagnose`, `store::diagnose`,
//! `cert::diagnose`), worded for the admin by `report::doctor` (human lines or `--json`).

use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but something deserves attention (or could not be checked).
    Warn,
    /// Broken: the fix says what to do.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name (`database`, `cname`, `tls`, ...).
    pub check: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, in one sentence (for warn and fail).
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self::new(check, Status::Ok, detail.into(), None)
    }

    /// A warning with its fix.
    pub fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Status::Warn, detail.into(), Some(fix.into()))
    }

    /// A failure with its fix.
    pub fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Status::Fail, detail.into(), Some(fix.into()))
    }

    /// A check that could not run because `why` (a warning without a fix).
    pub fn skip(check: &'static str, why: &str) -> Self {
        Self::new(check, Status::Warn, format!("not checked: {why}"), None)
    }

    fn new(check: &'static str, status: Status, detail: String, fix: Option<String>) -> Self {
        Self {
            check,
            status,
            detail,
            fix,
        }
    }
}

/// The checks of one run, in the order they were made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks(pub Vec<Check>);

impl Checks {
    /// Appends a passed check.
    pub fn ok(&mut self, check: &'static str, detail: impl Into<String>) {
        self.0.push(Check::ok(check, detail));
    }

    /// Appends a warning.
    pub fn warn(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Check::warn(check, detail, fix));
    }

    /// Appends a failure.
    pub fn fail(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Check::fail(check, detail, fix));
    }

    /// Appends a check that could not run.
    pub fn skip(&mut self, check: &'static str, why: &str) {
        self.0.push(Check::skip(check, why));
    }

    /// Appends `c`.
    pub fn push(&mut self, c: Check) {
        self.0.push(c);
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.0.iter().any(|c| c.status == Status::Fail)
    }
}
