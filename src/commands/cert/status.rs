//! `mastomedia cert status`: the domain's served and stored certificates, their timing
//! and health (`cert::status`), printed by `report::cert`; exit 1 when unhealthy. Split
//! from `mod.rs` (renew) to keep each file of `commands/` wiring-sized.

use std::path::Path;

use chrono::Utc;

use super::super::{CommandError, load_config};
use super::{domain_of, fail, s3_config};
use crate::cert::dns::Dns;
use crate::cert::net::Trust;
use crate::cert::status::status as cert_status;
use crate::cli::cert::StatusArgs;
use crate::report::{ExitCode, cert as lines};

/// Runs `cert status` for the domain of `a` (or the env file's `S3_ALIAS_HOST`). Errors:
/// configuration (exit 2), a state directory or trust store that cannot be read.
pub(super) async fn status(env_file: &Path, a: StatusArgs) -> Result<ExitCode, CommandError> {
    let cfg = load_config(env_file)?;
    let s3 = s3_config(&cfg)?;
    let domain = domain_of(&a.net, &s3)?;
    let trust = Trust::load(&a.net.ca_file).map_err(fail)?;
    let dns = match a.net.resolver {
        Some(_) => Some(Dns::new(a.net.resolver).map_err(fail)?),
        None => None,
    };
    let now = Utc::now();
    let port = a.net.https_port;
    let state_base = a.net.state_dir.as_deref();
    let report = cert_status(&domain, port, &trust, dns.as_ref(), state_base, now)
        .await
        .map_err(fail)?;
    if a.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        crate::out!("{}", lines::status(&report.lines(port, now)));
    }
    Ok(if report.healthy() {
        ExitCode::Success
    } else {
        ExitCode::ItemsFailed
    })
}
