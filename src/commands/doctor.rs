//! `mastomedia doctor`: checks the whole setup and prints one line per check (ok / warn /
//! fail) with the fix in one sentence; exit 1 when any check fails. Read-only, except the
//! probe objects of `--write-test` (written and deleted through [`Gate::mutate`]).
//!
//! Order: env file → database (`mastodon::diagnose`: Mastodon version, columns, locking,
//! retention setting) → bucket (`store::diagnose`: credentials, ACL, checksum headers,
//! dotted names) → Linode API (when LINODE_TOKEN is set) → alias host (`cert::diagnose`:
//! path, DNS, CNAME rule of `cert::alias`, CAA, TLS, an object read anonymously) → write
//! test. A check whose prerequisite failed is reported as not checked. The report is
//! worded by `report::doctor`.

use std::path::Path;

use super::CommandError;
use crate::cert::diagnose::{self as cert_diag, Alias, AliasSetup};
use crate::cert::dns::Dns;
use crate::cert::linode::Linode;
use crate::cert::net::{Trust, http_client};
use crate::cli::doctor::Args;
use crate::config::{Config, LinodeConfig, StorageConfig};
use crate::mastodon::{Db, diagnose as db_diag};
use crate::model::check::{Check, Checks};
use crate::plan::layout::ObjectKey;
use crate::pool::Gate;
use crate::report::{ExitCode, doctor as report};
use crate::store::Limiter;
use crate::store::diagnose::{self as store_diag, BucketSetup};
use crate::store::s3::S3Store;

/// Runs `doctor`; prints the report (stdout) and returns 0, or 1 when a check failed.
pub async fn run(env_file: &Path, args: Args, _quiet: bool) -> Result<ExitCode, CommandError> {
    let mut checks = Checks::default();
    diagnose(env_file, &args, &mut checks).await;
    Ok(report::print(&checks.0, args.json))
}

async fn diagnose(env_file: &Path, args: &Args, c: &mut Checks) {
    let (cfg, vars) = match Config::load_with_vars(env_file) {
        Ok(x) => x,
        Err(e) => {
            c.fail(
                "env",
                e.to_string(),
                "fix the env file (or the variable named), then run doctor again",
            );
            return;
        }
    };
    c.ok(
        "env",
        format!(
            "{} parses; required variables are set ({})",
            env_file.display(),
            match &cfg.storage {
                StorageConfig::S3(s) => format!("S3 bucket {}", s.bucket),
                StorageConfig::Filesystem(f) => format!("local files in {}", f.root.display()),
            }
        ),
    );
    db_diag::database(Db::connect(&cfg.database, 2), &cfg.database.display, c).await;
    let StorageConfig::S3(s3) = &cfg.storage else {
        c.ok(
            "storage",
            "local filesystem storage: bucket, alias host and TLS checks do not apply",
        );
        return;
    };
    let store = S3Store::new(s3, Limiter::new(None, 4));
    let setup = BucketSetup {
        bucket: &s3.bucket,
        endpoint: s3.endpoint.as_deref(),
        permission: s3.permission.as_deref(),
        delete_checksum: s3.delete_checksum,
        virtual_host: vars.get("S3_OVERRIDE_PATH_STYLE") == Some("true"),
        alias_host: s3.alias_host.is_some(),
    };
    let bucket_ok = store_diag::bucket(&store, &setup, c).await;
    if let Some(dotted) = store_diag::dotted_name(&setup) {
        c.push(dotted);
    }
    let trust = match Trust::load(&args.ca_file) {
        Ok(t) => t,
        Err(e) => {
            c.fail(
                "trust",
                e.to_string(),
                "pass a readable PEM file to --ca-file",
            );
            return;
        }
    };
    let lcfg = LinodeConfig::from_vars(&vars);
    // No line without a token; a client that cannot be built is skipped as before.
    let linode = lcfg.token.clone().and_then(|token| {
        let http = http_client(&trust, None, 0).ok()?;
        Some(Linode::new(http, &lcfg.api_url, token))
    });
    let linode_bucket = cert_diag::linode(linode, &s3.bucket, lcfg.region.as_deref(), c).await;
    let dns = match Dns::new(args.resolver) {
        Ok(d) => d,
        Err(e) => {
            c.fail("dns", e.to_string(), "pass --resolver IP:PORT");
            return;
        }
    };
    let sample = if bucket_ok {
        store_diag::sample_object(&store).await
    } else {
        None
    };
    let alias_setup = AliasSetup {
        alias_host: s3.alias_host.as_deref(),
        protocol: &s3.protocol,
        bucket: &s3.bucket,
        endpoint: s3.endpoint.as_deref(),
        resolver: args.resolver.is_some(),
        https_port: args.https_port,
        caa_identity: &args.caa_identity,
    };
    let alias = cert_diag::alias_host(
        &alias_setup,
        &dns,
        &trust,
        linode_bucket.as_ref(),
        &store,
        sample.as_deref(),
        bucket_ok,
        c,
    )
    .await;
    if args.write_test {
        if bucket_ok {
            write_test(&store, &setup, alias.as_ref(), c).await;
        } else {
            c.skip("write test", "the bucket is not reachable");
        }
    }
}

/// `--write-test`: PUT a probe, HEAD it, read it through the alias host, PUT a second one
/// and delete both with one `DeleteObjects` as prune sends it (a single-key probe cannot
/// show a provider that refuses its checksum headers). Every write passes the gate.
async fn write_test(store: &S3Store, b: &BucketSetup<'_>, alias: Option<&Alias>, c: &mut Checks) {
    let gate = Gate::new(false);
    let (key, headers, body) = store_diag::probe(b.permission);
    if let Err(e) = gate
        .mutate(store.put_bytes(&key, body.clone(), &headers), || Ok(()))
        .await
    {
        return c.push(store_diag::put_failed(&key, &e));
    }
    c.push(store_diag::read_back(
        &key,
        body.len(),
        &store.head(&key).await,
    ));
    if let Some(a) = alias.filter(|a| a.tls_ok) {
        cert_diag::public_read(a, store, &key, "probe read", c).await;
    }
    let second = format!("{key}.2");
    if let Err(e) = gate
        .mutate(store.put_bytes(&second, body.clone(), &headers), || Ok(()))
        .await
    {
        c.warn(
            "batch delete",
            format!("PUT {second}: {e}"),
            "check write access",
        );
    }
    let keys = [ObjectKey::new(key.clone()), ObjectKey::new(second.clone())];
    let used = gate
        .mutate(store.delete_written_batch(&keys), || Ok(b.delete_checksum))
        .await;
    c.push(store_diag::batch_delete(
        [&key, &second],
        b.delete_checksum,
        &used,
    ));
    if used.is_err() {
        for k in [&key, &second] {
            if let Err(e) = gate.mutate(store.delete_written(k), || Ok(())).await {
                c.push(Check::warn(
                    "write test",
                    format!("could not delete {k}: {e}"),
                    "delete it by hand",
                ));
            }
        }
    }
}
