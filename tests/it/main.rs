//! The one integration-test binary. Every test talks to real components: PostgreSQL and
//! the S3 server started by `tests/it/support` (see `scripts/services.sh`).

mod bad_input;
mod cert;
mod doctor;
mod du_orphans;
mod faults;
mod migrate;
mod migrate_privacy;
mod prune;
mod support;
