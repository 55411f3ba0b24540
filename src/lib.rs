//! mastomedia: prune, migrate, audit and certify the media storage of a Mastodon server.
//!
//! The pipeline, in the order data flows through the modules:
//!
//! ```text
//! cli → config → inventory → plan → pool → store | mastodon → report
//!                     commands/ wires them, one file per subcommand
//! ```
//!
//! - [`model`]: the shared nouns (object keys, attachment slots, candidate rows, secrets);
//!   imports nothing else of the crate.
//! - [`cli`]: clap argument types; reads neither files nor the environment.
//! - [`config`]: Mastodon's `.env.production` plus the process environment, validated into
//!   one [`config::Config`]; secrets wrapped in [`model::Secret`].
//! - [`inventory`]: read-only streams of candidate rows from Mastodon's database.
//! - [`plan`]: pure decisions: the key layout of every Paperclip attachment and the
//!   pruning policy (which keys a row owns, which columns to clear).
//! - [`pool`]: the staged worker pool and **the one dry-run gate** every destructive call
//!   passes through.
//! - [`store`]: the [`store::Store`] trait with the S3 and filesystem backends and the rate
//!   limiter.
//! - [`mastodon`]: Postgres connection, schema introspection, the advisory lock and the
//!   documented column updates. Never DDL.
//! - [`report`]: progress, summaries, `--json`, exit codes.
//! - [`cert`]: a flow of its own: the custom media domain's certificate (preflight, ACME
//!   order with a challenge object in the bucket, Linode upload, TLS probe) and the DNS/TLS
//!   checks `doctor` shares.

pub mod cert;
pub mod cli;
pub mod commands;
pub mod config;
pub mod inventory;
pub mod journal;
pub mod mastodon;
pub mod model;
pub mod plan;
pub mod pool;
pub mod report;
pub mod store;
