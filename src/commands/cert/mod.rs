//! `mastomedia cert renew` and `cert status`: wiring of [`crate::cert`].
//!
//! Order of `renew`: config (S3 storage, LINODE_TOKEN, bucket = domain) → state directory
//! and its lock → the bucket through the Linode API → timing (`cert::renew::standing`: ARI or a
//! third of the lifetime; exit 0 "not due") → preflight (`cert::renew::preflight`: the
//! alias rule of `cert::alias`, CAA) → `--dry-run` stops here → account, key, order,
//! install (`cert::renew::issue_and_install`, the transaction of `cert::install`) → TLS
//! probe of the domain. The lines are worded by `report::cert`.

use std::path::Path;

use anyhow::anyhow;
use chrono::Utc;

mod status;

use super::CommandError;
use crate::cert::acme::Acme;
use crate::cert::dns::Dns;
use crate::cert::keys::KeyType;
use crate::cert::linode::Linode;
use crate::cert::net::{Trust, http_client};
use crate::cert::renew::{self, IssueJob};
use crate::cert::state::StateDir;
use crate::cert::status::cert_line;
use crate::cert::timing::{self, Decision};
use crate::cert::{CertError, normalize_name, split_alias_host};
use crate::cli::cert::{Args, CertCommand, KeyTypeArg, NetArgs, RenewArgs};
use crate::config::{Config, LinodeConfig, S3Config, StorageConfig};
use crate::pool::Gate;
use crate::report::{ExitCode, cert as lines};
use crate::store::Limiter;
use crate::store::s3::S3Store;
use status::status;

/// Runs `cert renew` or `cert status`; returns the exit code.
pub async fn run(env_file: &Path, args: Args, quiet: bool) -> Result<ExitCode, CommandError> {
    match args.command {
        CertCommand::Renew(a) => renew(env_file, a, quiet).await,
        CertCommand::Status(a) => status(env_file, a).await,
    }
}

fn fail(e: CertError) -> CommandError {
    CommandError {
        code: e.exit_code(),
        error: anyhow!(e),
    }
}

fn s3_config(cfg: &Config) -> Result<S3Config, CommandError> {
    match &cfg.storage {
        StorageConfig::S3(s) => Ok(s.clone()),
        StorageConfig::Filesystem(_) => Err(CommandError::usage(anyhow!(
            "cert needs object storage (S3_ENABLED=true): the certificate is installed on the bucket that serves S3_ALIAS_HOST"
        ))),
    }
}

/// The domain: `--domain`, else S3_ALIAS_HOST's host (which must have no path or port).
fn domain_of(net: &NetArgs, s3: &S3Config) -> Result<String, CommandError> {
    if let Some(d) = &net.domain {
        return Ok(normalize_name(d));
    }
    let alias = s3.alias_host.as_deref().ok_or_else(|| {
        CommandError::usage(anyhow!(
            "S3_ALIAS_HOST is not set: set it to the media domain (e.g. files.example.social), or pass --domain"
        ))
    })?;
    let (host, path) = split_alias_host(alias);
    if !path.is_empty() || host.contains(':') {
        return Err(CommandError::usage(anyhow!(
            "S3_ALIAS_HOST={alias} has a path or a port; a bucket certificate is for a bare host name: pass --domain"
        )));
    }
    Ok(normalize_name(host))
}

async fn renew(env_file: &Path, a: RenewArgs, quiet: bool) -> Result<ExitCode, CommandError> {
    let (cfg, vars) = Config::load_with_vars(env_file)?;
    let s3 = s3_config(&cfg)?;
    let domain = domain_of(&a.net, &s3)?;
    let lcfg = LinodeConfig::from_vars(&vars);
    // A dry run without a token still checks what it can (timing, CNAME, CAA) and says
    // what it skipped; a real run needs the token.
    let token = match lcfg.token.clone() {
        Some(t) => Some(t),
        None if a.dry_run => None,
        None => {
            return Err(CommandError::usage(anyhow!(
                "LINODE_TOKEN is not set: add a Linode personal access token with Object Storage read/write scope to the env file or the environment (never a flag)"
            )));
        }
    };
    if s3.bucket != domain {
        return Err(CommandError::usage(anyhow!(
            "S3_BUCKET={} but the domain is {domain}: Linode serves a custom domain with its own certificate only from a bucket named exactly like the domain",
            s3.bucket
        )));
    }
    let directory = renew::directory_url(a.directory.as_deref(), a.staging);
    let key_type = match a.key_type {
        KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
        KeyTypeArg::Rsa2048 => KeyType::Rsa2048,
    };
    let gate = Gate::new(a.dry_run);
    let trust = Trust::load(&a.net.ca_file).map_err(fail)?;
    let dns = Dns::new(a.net.resolver).map_err(fail)?;
    let probe_dns = a.net.resolver.map(|_| &dns);
    let api_http = http_client(&trust, None, 0).map_err(fail)?;
    let probe_http = http_client(&trust, probe_dns, 10).map_err(fail)?;
    let state = StateDir::open(a.net.state_dir.as_deref(), &domain).map_err(fail)?;
    let _lock = state.lock().map_err(fail)?;
    let now = Utc::now();
    let (linode, bucket, has_ssl) = match token {
        Some(token) => {
            let linode = Linode::new(api_http.clone(), &lcfg.api_url, token).map_err(fail)?;
            let (bucket, has_ssl) = renew::linode_bucket(&linode, &domain, lcfg.region.as_deref())
                .await
                .map_err(fail)?;
            (Some(linode), bucket, Some(has_ssl))
        }
        None => {
            let bucket = renew::bucket_from_endpoint(s3.endpoint.as_deref(), &s3.bucket)
                .ok_or_else(|| {
                    CommandError::usage(anyhow!(
                        "without LINODE_TOKEN the bucket's host is derived from S3_ENDPOINT, which is not set: set S3_ENDPOINT (e.g. https://us-east-1.linodeobjects.com) or LINODE_TOKEN"
                    ))
                })?;
            crate::report::log::line(
                "WARN",
                &format!(
                    "dry run without LINODE_TOKEN: skipped the bucket lookup and the installed-certificate check through the Linode API; the CNAME target {} is derived from S3_ENDPOINT",
                    bucket.hostname
                ),
                serde_json::Map::new(),
            );
            (None, bucket, None)
        }
    };
    let (standing, mut acme) =
        renew::standing(&state, &directory, &api_http, has_ssl, a.force, now)
            .await
            .map_err(fail)?;
    let current = standing.current;
    let account_path = standing.account_path;
    let reason = match standing.decision {
        Decision::Wait { at, why } => {
            let kept = current.as_ref().map(|c| cert_line(&c.leaf, now));
            crate::outln!("{}", lines::not_due(&domain, kept.as_ref(), at, &why));
            return Ok(ExitCode::Success);
        }
        Decision::Renew(reason) => reason,
    };
    if !quiet {
        let verb = if a.dry_run { "would renew" } else { "renewing" };
        crate::report::log::line(
            "INFO",
            &format!("{verb} the certificate for {domain}: {reason}"),
            serde_json::Map::new(),
        );
    }
    if acme.is_none() {
        acme = Acme::load(api_http.clone(), &directory, &account_path)
            .await
            .map_err(fail)?;
    }
    let account = acme.as_ref().map(|x| x.account_uri());
    let notes = renew::preflight(&dns, &domain, &bucket, &a.caa_identity, account)
        .await
        .map_err(fail)?;
    for n in &notes {
        tracing::info!("preflight: {n}");
    }
    if gate.is_dry_run() {
        crate::outln!(
            "{}",
            lines::dry_run(&lines::DryRun {
                notes: &notes,
                new_account: acme.is_none(),
                key_type: key_type.to_string(),
                domain: &domain,
                directory: &directory,
                bucket: &bucket.label,
                region: bucket.region_id(),
                replaces: has_ssl,
                https_port: a.net.https_port,
            })
        );
        return Ok(ExitCode::Success);
    }
    let (Some(linode), Some(has_ssl)) = (linode, has_ssl) else {
        // Unreachable: only a dry run goes on without a token, and it stopped above.
        return Err(CommandError::usage(anyhow!("LINODE_TOKEN is not set")));
    };
    let store = S3Store::new(&s3, Limiter::new(None, 4));
    let outcome = renew::issue_and_install(IssueJob {
        domain: &domain,
        directory: &directory,
        email: a.email.as_deref(),
        key_type,
        gate,
        acme,
        api_http: &api_http,
        probe_http: &probe_http,
        account_path: &account_path,
        state: &state,
        store: &store,
        acl: s3.permission.as_ref().map(|_| "public-read".to_owned()),
        http_port: a.http_port,
        linode: &linode,
        bucket: &bucket,
        has_ssl,
        current: current.as_ref(),
    })
    .await;
    renew::record(&state, standing.meta, &outcome, &directory, key_type).map_err(fail)?;
    let leaf = outcome.map_err(fail)?;
    let next = timing::lifetime_renewal(leaf.not_before, leaf.not_after);
    let probe = renew::confirm_served(&domain, a.net.https_port, &trust, probe_dns, &leaf).await;
    let (Ok(line) | Err(line)) = &probe;
    let leaf_line = cert_line(&leaf, Utc::now());
    let (label, region) = (&bucket.label, bucket.region_id());
    let kt = key_type.to_string();
    let renewed = lines::renewed(&domain, &kt, &leaf_line, label, region, next);
    crate::outln!("{renewed}\n{line}");
    Ok(if probe.is_ok() {
        ExitCode::Success
    } else {
        ExitCode::ItemsFailed
    })
}
