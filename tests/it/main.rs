//! The one integration-test binary. Every test talks to real components: PostgreSQL and
//! the S3 server started by `tests/it/support` (see `scripts/services.sh`).

mod bad_input;
mod cert;
mod cert_tokenless;
mod doctor;
mod du_orphans;
mod faults;
mod migrate;
mod migrate_privacy;
mod orphans_ownership;
mod pgbouncer;
mod provider_checksums;
mod prune;
mod storms;
mod support;
mod timeouts;
mod usage_errors;
