//! The one integration-test binary. Every test talks to real components: PostgreSQL and
//! the S3 server started by `tests/it/support` (see `scripts/services.sh`).

// A test harness: a failed `unwrap()` is a failed test, and its helpers are `pub` for the
// sibling modules (the package's lints deny both in the library).
#![allow(clippy::unwrap_used, unreachable_pub)]

mod bad_input;
mod budget;
mod cert;
mod cert_install;
mod cert_tokenless;
mod chaos;
mod chaos_fs;
mod chaos_more;
mod closed_stdout;
mod config_cmd;
mod docs_cli;
mod doctor;
mod du_html;
mod du_months;
mod du_orphans;
mod du_requests;
mod faults;
mod journal_pg;
mod log_format;
mod metrics;
mod migrate;
mod migrate_disk;
mod migrate_privacy;
mod orphans_ownership;
mod parsers;
mod pgbouncer;
mod provider_checksums;
mod prune;
mod prune_filters;
mod prune_ranges;
mod reconcile;
mod shards;
mod store_conformance;
mod storms;
mod support;
mod timeouts;
mod usage_errors;
