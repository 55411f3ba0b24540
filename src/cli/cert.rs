//! `mastomedia cert renew` and `mastomedia cert status`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `cert`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: CertCommand,
}

/// `cert` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertCommand {
    /// Obtain or renew the media domain's certificate from Let's Encrypt and install it on
    /// the Linode bucket, when due.
    Renew(RenewArgs),
    /// Show the installed certificate: names, issuer, expiry, days left, next renewal.
    Status(StatusArgs),
}

/// Key type of the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyTypeArg {
    /// ECDSA P-256.
    EcdsaP256,
    /// RSA 2048 (uploaded as PKCS#1, the form known to work with Linode).
    Rsa2048,
}

/// Network seams shared by `cert renew` and `cert status`.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// The domain (default: S3_ALIAS_HOST).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,

    /// Also trust the CA certificates in this PEM file (a private ACME server's TLS
    /// certificate, or the issuer of a private certificate). Repeatable. The system store
    /// and SSL_CERT_FILE are always honoured.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Vec<PathBuf>,

    /// DNS server for the preflight checks and for reaching the domain (default: the
    /// system resolver).
    #[arg(long, value_name = "IP:PORT")]
    pub resolver: Option<SocketAddr>,

    /// Port of HTTPS on the domain, for the installed-certificate probe.
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    pub https_port: u16,

    /// Where certificates, keys (0600) and the ACME account are kept (default:
    /// $XDG_STATE_HOME/mastomedia/cert, else ~/.local/state/mastomedia/cert).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Arguments of `cert renew`.
///
/// Renews only when due: inside the CA's renewal window (ARI) when it offers one, else once
/// a third of the certificate's lifetime is left; otherwise says when it will act and exits
/// 0. Safe to run daily from cron. Needs LINODE_TOKEN (Object Storage read/write) in the env
/// file or the environment; LINODE_REGION is optional (found through the API), and
/// LINODE_API_URL overrides the API address (default `https://api.linode.com/v4`).
///
/// Before changing anything it checks that S3_BUCKET equals the domain, that the domain is
/// a CNAME to the bucket's host, and that CAA records allow the CA.
///
/// Examples:
///
///   mastomedia cert renew --dry-run
///
///   mastomedia cert renew --staging --email admin@example.social
///
///   mastomedia --env-file /home/mastodon/live/.env.production cert renew
///
///   mastomedia cert renew --directory https://127.0.0.1:14000/dir --ca-file pebble-ca.pem \
///       --resolver 127.0.0.1:8053 --http-port 5002 --https-port 8443 --state-dir /tmp/st
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RenewArgs {
    /// Network seams.
    #[command(flatten)]
    pub net: NetArgs,

    /// Contact address for the ACME account (expiry warnings are gone; optional).
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,

    /// Use Let's Encrypt's staging directory (untrusted certificates, high rate limits).
    #[arg(long, conflicts_with = "directory")]
    pub staging: bool,

    /// ACME directory URL of another CA (e.g. a private Pebble or step-ca).
    #[arg(long, value_name = "URL")]
    pub directory: Option<String>,

    /// Key type of the certificate.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::Rsa2048)]
    pub key_type: KeyTypeArg,

    /// Renew now even if not due.
    #[arg(long)]
    pub force: bool,

    /// Run the checks and say what would be done; no account, order, object or upload.
    #[arg(long)]
    pub dry_run: bool,

    /// Port of plain HTTP on the domain, for the challenge self-check (the CA uses 80).
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    pub http_port: u16,

    /// The CA's CAA identity checked in preflight.
    #[arg(long, value_name = "DOMAIN", default_value = "letsencrypt.org")]
    pub caa_identity: String,
}

/// Arguments of `cert status`.
///
/// Reads the live certificate over TLS and the state directory; exits 1 when the live
/// certificate is not valid for the domain (expired, wrong name, untrusted, unreachable).
///
/// Examples:
///
///   mastomedia cert status
///
///   mastomedia cert status --json
#[derive(Debug, Clone, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    /// Network seams.
    #[command(flatten)]
    pub net: NetArgs,

    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}
