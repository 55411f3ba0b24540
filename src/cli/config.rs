//! `mastomedia config`.

/// Show the effective configuration: every variable mastomedia reads, its value (secrets
/// hidden) and where it came from (env file line, process environment, default), then the
/// storage, addressing style, key prefix, database and the Mastodon version its schema
/// looks like. Exit 2 when the configuration is invalid (the reason is shown).
///
/// Examples:
///
///   mastomedia config
///
///   mastomedia --env-file /home/mastodon/live/.env.production config --json
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Do not connect to the database (no Mastodon version).
    #[arg(long)]
    pub offline: bool,
}
