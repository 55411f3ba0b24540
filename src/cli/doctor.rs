//! `mastomedia doctor`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `doctor`.
///
/// Checks the whole setup, one line per check (ok / warn / fail) with the fix in one
/// sentence: env file and required variables; database, Mastodon version and columns;
/// bucket and credentials; ACL and checksum-header compatibility; S3_ALIAS_HOST's DNS,
/// CNAME target and CAA; TLS on the alias host; an object read anonymously through it;
/// dotted bucket names; an alias host with a path; the media retention setting.
/// Exits 1 if any check fails. Read-only unless --write-test.
///
/// Examples:
///
///   mastomedia doctor
///
///   mastomedia doctor --write-test --json
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Also write, read (through the alias host too) and delete a probe object.
    #[arg(long)]
    pub write_test: bool,

    /// DNS server for the DNS checks and for reaching the alias host (default: system).
    #[arg(long, value_name = "IP:PORT")]
    pub resolver: Option<SocketAddr>,

    /// Port of HTTPS on the alias host.
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    pub https_port: u16,

    /// Also trust the CA certificates in this PEM file. Repeatable.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Vec<PathBuf>,

    /// The CA whose CAA permission is checked.
    #[arg(long, value_name = "DOMAIN", default_value = "letsencrypt.org")]
    pub caa_identity: String,
}
